# Class unlearning by editing the Koopman operator (docs/method.md section 8): one edit per dataset, base
# draw, target class and KAE seed (at the main isometry weight), the two baselines that retrain or
# fine-tune each draw's base network without the class, the trade-off study, and the tables. Settings: the optional `unlearn`
# block of a dataset (defaults: the config schema; no block, no unlearning).


wildcard_constraints:
    target=r"\d+",
    baseline="retrain|finetune",


# Only when a dataset of `run` has an `unlearn` block: otherwise no editing rules, tables or figures.
UNLEARN_DATASETS = P.unlearn_datasets(config)

if UNLEARN_DATASETS and SINGLE_KAE_DATASETS:

    rule unlearn_edit:
        """Edit the KAE's k-step operator to forget one class (every configured method); evaluate before/after."""
        input:
            kae=[P.KAE_MODEL],  # a list, as in a pack: the script takes lists
            base=P.BASE_MODEL,
            preprocessing=P.PREPROCESSING,
            train=P.partial(P.REPS, split="train"),
            test=P.partial(P.REPS, split="test"),
        output:
            json=[P.EDIT],
            model=[P.EDITED_MODEL],
        log:
            "results/logs/unlearn_edit/{dataset}_draw{draw}_iso{lam}_seed{seed}_class{target}.log",
        benchmark:
            "results/benchmarks/unlearn_edit/{dataset}_draw{draw}_iso{lam}_seed{seed}_class{target}.tsv"
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
            ds=ds_subset("base", "kae", "unlearn", drop=("unlearn.baselines",)),
            targets=lambda w: [int(w.target)],
        script:
            "../scripts/unlearn_edit.py"

    rule unlearn_study:
        """The trade-off study of one edit: target vs retained accuracy over targets x reg x strength x rank."""
        input:
            kae=[P.KAE_MODEL],  # a list, as in a pack: the script takes lists
            base=P.BASE_MODEL,
            preprocessing=P.PREPROCESSING,
            train=P.partial(P.REPS, split="train"),
            test=P.partial(P.REPS, split="test"),
        output:
            [P.STUDY],
        log:
            "results/logs/unlearn_study/{dataset}_draw{draw}_iso{lam}_seed{seed}_class{target}.log",
        benchmark:
            "results/benchmarks/unlearn_study/{dataset}_draw{draw}_iso{lam}_seed{seed}_class{target}.tsv"
        wildcard_constraints:
            dataset="|".join(SINGLE_KAE_DATASETS),
        conda:
            "../envs/kaepipe.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
            gpu=1,
        params:
            ds=ds_subset("base", "kae", "unlearn", drop=("unlearn.baselines",)),
            targets=lambda w: [int(w.target)],
        script:
            "../scripts/unlearn_study.py"


# With KAE packs (kae.pack grid or lambda) every edit of a dataset's draw, and every study, runs in one job.
for _dataset in P.unlearn_datasets(config):
    if _dataset in SINGLE_KAE_DATASETS:
        continue
    for _draw in P.draws(config, _dataset):
        _w = {"dataset": _dataset, "draw": _draw}
        _edits = P.edit_items(config, _dataset, _draw)

        rule:
            name:
                P.rule_name("unlearn_edit", _dataset, f"draw{_draw}")
            input:
                kae=[item["kae"] for item in _edits],
                base=P.fill(P.BASE_MODEL, **_w),
                preprocessing=P.fill(P.PREPROCESSING, **_w),
                train=P.fill(P.REPS, **_w, split="train"),
                test=P.fill(P.REPS, **_w, split="test"),
            output:
                json=[item["edit"] for item in _edits],
                model=[item["edited"] for item in _edits],
            log:
                f"results/logs/unlearn_edit/{_dataset}_draw{_draw}.log",
            benchmark:
                f"results/benchmarks/unlearn_edit/{_dataset}_draw{_draw}.tsv"
            conda:
                "../envs/kaepipe.yaml"
            threads: 1
            resources:
                mem_mb=4000,
                runtime=10 + 10 * len(_edits),
                gpu=1,
            params:
                ds=ds_params(
                    _dataset,
                    "base",
                    "kae",
                    "unlearn",
                    draw=_draw,
                    drop=("unlearn.baselines",),
                ),
                targets=[item["target"] for item in _edits],
            script:
                "../scripts/unlearn_edit.py"

        _studies = P.edit_items(config, _dataset, _draw, study=True)
        if _studies:

            rule:
                name:
                    P.rule_name("unlearn_study", _dataset, f"draw{_draw}")
                input:
                    kae=[item["kae"] for item in _studies],
                    base=P.fill(P.BASE_MODEL, **_w),
                    preprocessing=P.fill(P.PREPROCESSING, **_w),
                    train=P.fill(P.REPS, **_w, split="train"),
                    test=P.fill(P.REPS, **_w, split="test"),
                output:
                    [item["study"] for item in _studies],
                log:
                    f"results/logs/unlearn_study/{_dataset}_draw{_draw}.log",
                benchmark:
                    f"results/benchmarks/unlearn_study/{_dataset}_draw{_draw}.tsv"
                conda:
                    "../envs/kaepipe.yaml"
                threads: 1
                resources:
                    mem_mb=4000,
                    runtime=10 + 20 * len(_studies),
                    gpu=1,
                params:
                    ds=ds_params(
                        _dataset,
                        "base",
                        "kae",
                        "unlearn",
                        draw=_draw,
                        drop=("unlearn.baselines",),
                    ),
                    targets=[item["target"] for item in _studies],
                script:
                    "../scripts/unlearn_study.py"


if UNLEARN_DATASETS:

    rule unlearn_baseline:
        """Retrain a draw's base network without the class (gold standard; the draw's seed) or fine-tune it on
        the retained classes."""
        input:
            unpack(data_paths),
            base=P.BASE_MODEL,
        output:
            json=P.BASELINE_METRICS,
            model=P.BASELINE_MODEL,
        log:
            "results/logs/unlearn_baseline/{dataset}_draw{draw}_{baseline}_class{target}.log",
        benchmark:
            "results/benchmarks/unlearn_baseline/{dataset}_draw{draw}_{baseline}_class{target}.tsv"
        conda:
            "../envs/kaepipe.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=240,
            gpu=1,
        params:
            ds=ds_subset(
                "base",
                "splits",
                "unlearn",
                drop=("unlearn.study", "unlearn.region", "unlearn.methods"),
            ),
        script:
            "../scripts/unlearn_baseline.py"

    rule unlearn_tables:
        """The editing table (target and retained accuracy before -> after, mean (std) over every (draw, KAE
        seed) pair), the per-class table, the baselines (over draws) with the edits' speed-ups and the
        trade-off study.
        """
        input:
            edits=P.edit_paths(config, P.EDIT),
            baselines=P.baseline_paths(config, P.BASELINE_METRICS),
            studies=P.edit_paths(config, P.STUDY, study=True),
        output:
            editing=P.table("editing.csv"),
            editing_md=P.table("editing.md"),
            editing_tex=P.table("editing.tex"),
            per_class=P.table("editing_per_class.csv"),
            study=P.table("unlearning_study.csv"),
            baselines=P.table("unlearning_baselines.csv"),
            baselines_md=P.table("unlearning_baselines.md"),
            baselines_tex=P.table("unlearning_baselines.tex"),
            # measured times (edit, preparation and baseline seconds, speed-ups), apart from the results
            timings_editing=P.table("timings_editing.csv"),
            timings_editing_md=P.table("timings_editing.md"),
            timings_baselines=P.table("timings_unlearning_baselines.csv"),
            timings_baselines_md=P.table("timings_unlearning_baselines.md"),
        log:
            "results/logs/unlearn_tables/tables.log",
        benchmark:
            "results/benchmarks/unlearn_tables/tables.tsv"
        localrule: True
        conda:
            "../envs/kaepipe.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        script:
            "../scripts/unlearn_tables.py"
