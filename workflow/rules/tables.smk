rule accuracy_table:
    """Aggregate MLP and KAE surrogate accuracies into the paper's accuracy table, mean (std) over seeds."""
    input:
        base=expand(P.BASE_METRICS, dataset=DATASETS),
        kae=kae_outputs(P.KAE_ACCURACY),
    output:
        csv=P.table("accuracy.csv"),
        md=P.table("accuracy.md"),
        tex=P.table("accuracy.tex"),
        long=P.table("accuracy_long.csv"),
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
