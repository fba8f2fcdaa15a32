rule dataset:
    """Generate (Yin-Yang) or read and verify (IDX) one split of a dataset and write it to Parquet."""
    output:
        P.SPLIT,
    log:
        "results/logs/dataset/{dataset}_{split}.log",
    benchmark:
        "results/benchmarks/dataset/{dataset}_{split}.tsv"
    localrule: True  # cheap, and the only rule that may download (compute nodes often have no internet)
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        ds=ds_subset("root", "features", "splits"),
        cache_dir=config.get("cache_dir", "results/cache"),
    script:
        "../scripts/dataset.py"
