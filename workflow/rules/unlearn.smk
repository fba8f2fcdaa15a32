# Class unlearning by editing the Koopman operator (METHOD section 8): one edit per dataset, target
# class and KAE seed (at the main isometry weight), the two baselines that retrain or fine-tune the base
# network without the class, the trade-off study, and the tables. Settings: the optional `unlearn`
# block of a dataset (defaults in kaepipe.settings.UNLEARN_DEFAULTS); without any, no rule of this file exists.
from kaepipe.stages.paths import baseline_paths, edit_paths, unlearn_datasets


wildcard_constraints:
    target=r"\d+",
    baseline="retrain|finetune",


# Only when a dataset of `run` has an `unlearn` block: otherwise no editing rules, tables or figures.
UNLEARN_DATASETS = unlearn_datasets(config)

if UNLEARN_DATASETS:

    rule unlearn_edit:
        """Edit the KAE's k-step operator to forget one class (every configured method); evaluate before/after."""
        input:
            kae="results/{dataset}/kae/iso{lam}/seed{seed}/model.safetensors",
            base="results/{dataset}/base/model.safetensors",
            preprocessing="results/{dataset}/reps/preprocessing.safetensors",
            train="results/{dataset}/reps/train.pt",
            test="results/{dataset}/reps/test.pt",
        output:
            json="results/{dataset}/unlearn/iso{lam}/seed{seed}/class{target}/edit.json",
            model="results/{dataset}/unlearn/iso{lam}/seed{seed}/class{target}/edited.safetensors",
        params:
            ds=ds_subset("base", "kae", "unlearn", drop=("unlearn.baselines",)),
        log:
            "results/logs/unlearn_edit/{dataset}_iso{lam}_seed{seed}_class{target}.log",
        benchmark:
            "results/benchmarks/unlearn_edit/{dataset}_iso{lam}_seed{seed}_class{target}.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=20,
            gpu=1,
        conda:
            "../envs/kaepipe.yaml"
        script:
            "../scripts/unlearn_edit.py"

    rule unlearn_study:
        """The trade-off study of one edit: target vs retained accuracy over targets x reg x strength x rank."""
        input:
            kae="results/{dataset}/kae/iso{lam}/seed{seed}/model.safetensors",
            base="results/{dataset}/base/model.safetensors",
            preprocessing="results/{dataset}/reps/preprocessing.safetensors",
            train="results/{dataset}/reps/train.pt",
            test="results/{dataset}/reps/test.pt",
        output:
            "results/{dataset}/unlearn/iso{lam}/seed{seed}/class{target}/study.parquet",
        params:
            ds=ds_subset("base", "kae", "unlearn", drop=("unlearn.baselines",)),
        log:
            "results/logs/unlearn_study/{dataset}_iso{lam}_seed{seed}_class{target}.log",
        benchmark:
            "results/benchmarks/unlearn_study/{dataset}_iso{lam}_seed{seed}_class{target}.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
            gpu=1,
        conda:
            "../envs/kaepipe.yaml"
        script:
            "../scripts/unlearn_study.py"

    rule unlearn_baseline:
        """Retrain the base network without the class (gold standard) or fine-tune it on the retained classes."""
        input:
            unpack(data_paths),
            base="results/{dataset}/base/model.safetensors",
        output:
            json="results/{dataset}/unlearn/baselines/{baseline}/class{target}/metrics.json",
            model="results/{dataset}/unlearn/baselines/{baseline}/class{target}/model.safetensors",
        params:
            ds=ds_subset("base", "splits", "unlearn", drop=("unlearn.study", "unlearn.region", "unlearn.methods")),
        log:
            "results/logs/unlearn_baseline/{dataset}_{baseline}_class{target}.log",
        benchmark:
            "results/benchmarks/unlearn_baseline/{dataset}_{baseline}_class{target}.tsv"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=240,
            gpu=1,
        conda:
            "../envs/kaepipe.yaml"
        script:
            "../scripts/unlearn_baseline.py"

    rule unlearn_tables:
        """The editing table (target and retained accuracy before -> after, mean (std) over seeds), the
        per-class table, the baselines and the trade-off study; the edits' and baselines' times and speed-ups
        in timing tables of their own."""
        input:
            edits=edit_paths(config, "edit.json"),
            baselines=baseline_paths(config, "metrics.json"),
            studies=edit_paths(config, "study.parquet", study=True),
        output:
            editing="results/tables/editing.csv",
            editing_md="results/tables/editing.md",
            editing_tex="results/tables/editing.tex",
            per_class="results/tables/editing_per_class.csv",
            study="results/tables/unlearning_study.csv",
            baselines="results/tables/unlearning_baselines.csv",
            baselines_md="results/tables/unlearning_baselines.md",
            baselines_tex="results/tables/unlearning_baselines.tex",
            # measured times (edit, preparation and baseline seconds, speed-ups), apart from the results
            timings_editing="results/tables/timings_editing.csv",
            timings_editing_md="results/tables/timings_editing.md",
            timings_baselines="results/tables/timings_unlearning_baselines.csv",
            timings_baselines_md="results/tables/timings_unlearning_baselines.md",
        log:
            "results/logs/unlearn_tables/tables.log",
        benchmark:
            "results/benchmarks/unlearn_tables/tables.tsv"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=5,
        localrule: True
        conda:
            "../envs/kaepipe.yaml"
        script:
            "../scripts/unlearn_tables.py"

    FINAL_TARGETS.extend(["results/tables/editing.csv", "results/tables/unlearning_baselines.csv"])
