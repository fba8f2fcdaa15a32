rule base_model:
    """Train one draw of the dataset's base network (its seed: the draw), or take base.weights; measure every split."""
    input:
        unpack(data_paths),
        weights=base_weights,
    output:
        model=P.BASE_MODEL,
        curve=P.BASE_CURVE,
        metrics=P.BASE_METRICS,
    log:
        "results/logs/base_model/{dataset}_draw{draw}.log",
    benchmark:
        "results/benchmarks/base_model/{dataset}_draw{draw}.tsv"
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=1,
    params:
        ds=ds_subset("base", "splits"),
    script:
        "../scripts/base_model.py"
