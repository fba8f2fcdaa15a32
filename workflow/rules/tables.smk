rule accuracy_table:
    """Aggregate MLP and KAE surrogate accuracies into the paper's accuracy table: mean (std) over the base
    draws (MLP) and over every (draw, KAE seed) pair (KAE), with how many of each."""
    input:
        base=P.draw_paths(config, DATASETS, P.BASE_METRICS),
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
