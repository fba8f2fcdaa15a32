rule kae:
    """Train one Koopman autoencoder from L0 to the last layer at one isometry weight and seed."""
    input:
        reps=P.partial(P.REPS, split="train"),
        preprocessing=P.PREPROCESSING,
    output:
        model=P.KAE_MODEL,
        losses=P.KAE_LOSSES,
        metrics=P.KAE_METRICS,
    params:
        ds=ds_subset("kae"),
    log:
        "results/logs/kae/{dataset}_iso{lam}_seed{seed}.log",
    benchmark:
        "results/benchmarks/kae/{dataset}_iso{lam}_seed{seed}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=240,
        gpu=1,
    conda:
        "../envs/kaepipe.yaml"
    script:
        "../scripts/kae.py"


rule surrogate_accuracy:
    """Classify through the KAE (L0 -> phi -> K^k -> psi -> output layer) under every protocol."""
    input:
        kae=P.KAE_MODEL,
        base=P.BASE_MODEL,
        preprocessing=P.PREPROCESSING,
        train=P.partial(P.REPS, split="train"),
        test=P.partial(P.REPS, split="test"),
    output:
        P.KAE_ACCURACY,
    params:
        ds=ds_subset("base", "kae"),
    log:
        "results/logs/surrogate_accuracy/{dataset}_iso{lam}_seed{seed}.log",
    benchmark:
        "results/benchmarks/surrogate_accuracy/{dataset}_iso{lam}_seed{seed}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=20,
        gpu=1,
    conda:
        "../envs/kaepipe.yaml"
    script:
        "../scripts/surrogate_accuracy.py"
