rule kae:
    """Train one Koopman autoencoder from L0 to the last layer at one isometry weight and seed."""
    input:
        reps="results/{dataset}/reps/train.pt",
        preprocessing="results/{dataset}/reps/preprocessing.safetensors",
    output:
        model="results/{dataset}/kae/iso{lam}/seed{seed}/model.safetensors",
        losses="results/{dataset}/kae/iso{lam}/seed{seed}/losses.parquet",
        metrics="results/{dataset}/kae/iso{lam}/seed{seed}/metrics.json",
    log:
        "results/logs/kae/{dataset}_iso{lam}_seed{seed}.log",
    benchmark:
        "results/benchmarks/kae/{dataset}_iso{lam}_seed{seed}.tsv"
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=1,
    params:
        ds=ds_subset("kae"),
    script:
        "../scripts/kae.py"


rule surrogate_accuracy:
    """Classify through the KAE (L0 -> phi -> K^k -> psi -> output layer) under every protocol."""
    input:
        kae="results/{dataset}/kae/iso{lam}/seed{seed}/model.safetensors",
        base="results/{dataset}/base/model.safetensors",
        preprocessing="results/{dataset}/reps/preprocessing.safetensors",
        train="results/{dataset}/reps/train.pt",
        test="results/{dataset}/reps/test.pt",
    output:
        "results/{dataset}/kae/iso{lam}/seed{seed}/accuracy.json",
    log:
        "results/logs/surrogate_accuracy/{dataset}_iso{lam}_seed{seed}.log",
    benchmark:
        "results/benchmarks/surrogate_accuracy/{dataset}_iso{lam}_seed{seed}.tsv"
    conda:
        "../envs/kaepipe.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
        gpu=1,
    params:
        ds=ds_subset("base", "kae"),
    script:
        "../scripts/surrogate_accuracy.py"
