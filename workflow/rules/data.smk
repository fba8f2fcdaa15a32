from kaepipe.data import MNIST

IDX_FILES = [name for pair in MNIST.files.values() for name in pair]  # Fashion-MNIST uses the same names


rule download_idx:
    """Download a source's four official IDX files into the cache (datasets without a folder of their own)."""
    output:
        expand("{cache}/{{source}}/{name}", cache=config.get("cache_dir", "results/cache"),
               name=IDX_FILES),
    wildcard_constraints:
        source="mnist|fashion_mnist",
    log:
        "results/logs/download_idx/{source}.log",
    benchmark:
        "results/benchmarks/download_idx/{source}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    localrule: True  # the only rule that downloads (compute nodes often have no internet)
    conda:
        "../envs/kaepipe.yaml"
    script:
        "../scripts/download_idx.py"


rule dataset:
    """Generate (Yin-Yang) or read and verify (IDX) one split of a dataset and write it to Parquet."""
    input:
        source_files,  # the split's IDX files (and MD5SUMS): a changed file reruns the split
    output:
        "results/{dataset}/data/{split}.parquet",
    params:
        ds=ds_subset("root", "features", "splits"),
        cache_dir=config.get("cache_dir", "results/cache"),
    log:
        "results/logs/dataset/{dataset}_{split}.log",
    benchmark:
        "results/benchmarks/dataset/{dataset}_{split}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    localrule: True  # cheap
    conda:
        "../envs/kaepipe.yaml"
    script:
        "../scripts/dataset.py"
