rule representations:
    """Record every layer of the frozen base network and fit the preprocessing on the training split."""
    input:
        unpack(data_paths),
        model=P.BASE_MODEL,
    output:
        train_parquet=P.partial(P.REPS_PARQUET, split="train"),
        test_parquet=P.partial(P.REPS_PARQUET, split="test"),
        train_pt=P.partial(P.REPS, split="train"),
        test_pt=P.partial(P.REPS, split="test"),
        preprocessing=P.PREPROCESSING,
    log:
        "results/logs/representations/{dataset}_draw{draw}.log",
    benchmark:
        "results/benchmarks/representations/{dataset}_draw{draw}.tsv"
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=1,
    params:
        ds=ds_subset("base", "preprocess", "represent"),
    script:
        "../scripts/representations.py"
