rule representations:
    """Record every layer of the frozen base network and fit the preprocessing on the training split."""
    input:
        unpack(data_paths),
        model="results/{dataset}/base/model.safetensors",
    output:
        train_parquet="results/{dataset}/reps/train.parquet",
        test_parquet="results/{dataset}/reps/test.parquet",
        train_pt="results/{dataset}/reps/train.pt",
        test_pt="results/{dataset}/reps/test.pt",
        preprocessing="results/{dataset}/reps/preprocessing.safetensors",
    log:
        "results/logs/representations/{dataset}.log",
    benchmark:
        "results/benchmarks/representations/{dataset}.tsv"
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
        gpu=1,
    params:
        ds=ds_subset("base", "preprocess"),
    script:
        "../scripts/representations.py"


FINAL_TARGETS.extend(
    expand(
        "results/{dataset}/reps/{split}.{ext}",
        dataset=DATASETS,
        split=SPLITS,
        ext=["parquet", "pt"],
    )
)
