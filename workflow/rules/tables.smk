rule accuracy_table:
    """Aggregate MLP and KAE surrogate accuracies into the paper's accuracy table, mean (std) over seeds."""
    input:
        base=expand("results/{dataset}/base/metrics.json", dataset=DATASETS),
        kae=kae_outputs("accuracy.json"),
    output:
        csv="results/tables/accuracy.csv",
        md="results/tables/accuracy.md",
        tex="results/tables/accuracy.tex",
        long="results/tables/accuracy_long.csv",
    log:
        "results/logs/tables/accuracy.log",
    benchmark:
        "results/benchmarks/tables/accuracy.tsv"
    localrule: True
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/accuracy_table.py"


FINAL_TARGETS.append("results/tables/accuracy.csv")
