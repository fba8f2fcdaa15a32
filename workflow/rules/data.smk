# Data: the splits of every dataset, from a generator or from IDX files. The files a split is read from
# are the dataset rule's inputs (a changed or damaged file reruns the split and what depends on it); when
# no folder is given, rule download_idx fetches them into the cache first.
IDX_FILES = P.idx_file_names()


rule download_idx:
    """Download a source's four official IDX files into the cache (datasets without a folder of their own)."""
    output:
        [
            P.partial(
                P.IDX_CACHE, cache=config.get("cache_dir", "results/cache"), name=n
            )
            for n in IDX_FILES
        ],
    log:
        "results/logs/download_idx/{source}.log",
    benchmark:
        "results/benchmarks/download_idx/{source}.tsv"
    wildcard_constraints:
        source="|".join(P.idx_sources()),
    localrule: True  # the only rule that downloads (compute nodes often have no internet)
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    script:
        "../scripts/download_idx.py"


rule dataset:
    """Generate (Yin-Yang) or read and verify (IDX) one split of a dataset and write it to Parquet."""
    input:
        source_files,  # the split's IDX files (and MD5SUMS): a changed file reruns the split
    output:
        P.SPLIT,
    log:
        "results/logs/dataset/{dataset}_{split}.log",
    benchmark:
        "results/benchmarks/dataset/{dataset}_{split}.tsv"
    localrule: True  # cheap
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    params:
        ds=ds_subset("root", "path", "sha256", "features", "splits"),
        cache_dir=config.get("cache_dir", "results/cache"),
    script:
        "../scripts/dataset.py"
