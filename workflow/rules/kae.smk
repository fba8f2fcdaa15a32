# KAE training. Per dataset and base-network draw, `kae.pack` decides how its isometry-weight x seed grid is
# split into jobs: each pack trains as one vectorised ensemble (kaepipe.nn.ensemble) and writes every
# member's files, the same files a one-KAE job writes. `seed` packs use the wildcard rule `kae`, one KAE
# per job. Pack rules are made per (dataset, draw, pack): kae_<dataset>_draw<draw>_<pack>.
SINGLE_KAE_DATASETS = [d for d in DATASETS if P.kae_pack_mode(config, d) == "seed"]


if SINGLE_KAE_DATASETS:

    rule kae:
        """Train one Koopman autoencoder from L0 to the last layer at one isometry weight and seed."""
        input:
            reps=P.partial(P.REPS, split="train"),
            preprocessing=P.PREPROCESSING,
        output:
            model=P.KAE_MODEL,
            losses=P.KAE_LOSSES,
            metrics=P.KAE_METRICS,
        log:
            "results/logs/kae/{dataset}_draw{draw}_iso{lam}_seed{seed}.log",
        benchmark:
            "results/benchmarks/kae/{dataset}_draw{draw}_iso{lam}_seed{seed}.tsv"
        wildcard_constraints:
            dataset="|".join(SINGLE_KAE_DATASETS),
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


for _dataset in DATASETS:
    if _dataset in SINGLE_KAE_DATASETS:
        continue
    for _draw in P.draws(config, _dataset):
        _w = {"dataset": _dataset, "draw": _draw}
        for _pack, _members in P.kae_packs(config, _dataset):

            rule:
                name:
                    P.rule_name("kae", _dataset, f"draw{_draw}", _pack)
                input:
                    reps=P.fill(P.REPS, **_w, split="train"),
                    preprocessing=P.fill(P.PREPROCESSING, **_w),
                output:
                    model=[
                        P.fill(P.KAE_MODEL, **_w, lam=t, seed=s) for t, s in _members
                    ],
                    losses=[
                        P.fill(P.KAE_LOSSES, **_w, lam=t, seed=s) for t, s in _members
                    ],
                    metrics=[
                        P.fill(P.KAE_METRICS, **_w, lam=t, seed=s) for t, s in _members
                    ],
                log:
                    f"results/logs/kae/{_dataset}_draw{_draw}_{_pack}.log",
                benchmark:
                    f"results/benchmarks/kae/{_dataset}_draw{_draw}_{_pack}.tsv"
                conda:
                    "../envs/kaepipe.yaml"
                threads: 1
                resources:
                    mem_mb=4000,
                    runtime=60 + 60 * len(_members),
                    gpu=1,
                params:
                    ds=ds_params(_dataset, "kae", draw=_draw),
                    members=[[t, s] for t, s in _members],
                script:
                    "../scripts/kae_pack.py"


if SINGLE_KAE_DATASETS:

    rule surrogate_accuracy:
        """Classify through the KAE (L0 -> phi -> K^k -> psi -> output layer) under every protocol."""
        input:
            kae=[P.KAE_MODEL],  # a list, as in a pack: the script takes lists
            base=P.BASE_MODEL,
            preprocessing=P.PREPROCESSING,
            train=P.partial(P.REPS, split="train"),
            test=P.partial(P.REPS, split="test"),
        output:
            [P.KAE_ACCURACY],
        log:
            "results/logs/surrogate_accuracy/{dataset}_draw{draw}_iso{lam}_seed{seed}.log",
        benchmark:
            "results/benchmarks/surrogate_accuracy/{dataset}_draw{draw}_iso{lam}_seed{seed}.tsv"
        wildcard_constraints:
            dataset="|".join(SINGLE_KAE_DATASETS),
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


for _dataset in DATASETS:
    if _dataset in SINGLE_KAE_DATASETS:
        continue
    for _draw in P.draws(config, _dataset):
        _w = {"dataset": _dataset, "draw": _draw}
        for _pack, _members in P.kae_packs(config, _dataset):

            rule:
                name:
                    P.rule_name("surrogate_accuracy", _dataset, f"draw{_draw}", _pack)
                input:
                    kae=[P.fill(P.KAE_MODEL, **_w, lam=t, seed=s) for t, s in _members],
                    base=P.fill(P.BASE_MODEL, **_w),
                    preprocessing=P.fill(P.PREPROCESSING, **_w),
                    train=P.fill(P.REPS, **_w, split="train"),
                    test=P.fill(P.REPS, **_w, split="test"),
                output:
                    [P.fill(P.KAE_ACCURACY, **_w, lam=t, seed=s) for t, s in _members],
                log:
                    f"results/logs/surrogate_accuracy/{_dataset}_draw{_draw}_{_pack}.log",
                benchmark:
                    f"results/benchmarks/surrogate_accuracy/{_dataset}_draw{_draw}_{_pack}.tsv"
                conda:
                    "../envs/kaepipe.yaml"
                threads: 1
                resources:
                    mem_mb=4000,
                    runtime=20,
                    gpu=1,
                params:
                    ds=ds_params(_dataset, "base", "kae", draw=_draw),
                script:
                    "../scripts/surrogate_accuracy.py"
