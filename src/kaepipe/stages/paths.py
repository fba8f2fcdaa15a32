"""Every result path of the workflow, in one place: templates, the grid expansions and the final outputs.

The rule files (`workflow/rules/*.smk`) build their inputs and outputs from these templates, and the
input helpers below expand them over the configured grid; nothing else spells a result path. Templates
use Snakemake's wildcard syntax (``{dataset}``, ``{draw}``, ``{split}``, ``{lam}``, ``{seed}``, ``{target}``,
``{baseline}``, ``{name}``) and :func:`fill` fills them in Python. This module imports no heavy library
(the Snakefile imports it at parse time).

A dataset's splits are shared; everything from the base network on lives under one base-network draw,
``results/{dataset}/draw{draw}/`` (``draw`` is the draw's base seed, one of ``base.seeds``). The
expansions run over every draw of ``base.seeds``; the figures show a dataset's first draw.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from kaepipe.config import base_seeds, dataset_config, lambda_tag
from kaepipe.data import SOURCES, IdxSource
from kaepipe.settings import evaluation_split, pick_lambdas, unlearn_settings

RESULTS = "results"

# data (shared by the draws)
SPLIT = "results/{dataset}/data/{split}.parquet"
# one base-network draw (its seed) and everything built on it
DRAW_DIR = "results/{dataset}/draw{draw}"
BASE_MODEL = DRAW_DIR + "/base/model.safetensors"
BASE_CURVE = DRAW_DIR + "/base/curve.parquet"
BASE_METRICS = DRAW_DIR + "/base/metrics.json"
# representations
REPS_PARQUET = DRAW_DIR + "/reps/{split}.parquet"
REPS = DRAW_DIR + "/reps/{split}.pt"
PREPROCESSING = DRAW_DIR + "/reps/preprocessing.safetensors"
# one KAE of the grid (isometry weight x seed)
KAE_DIR = DRAW_DIR + "/kae/iso{lam}/seed{seed}"
KAE_MODEL = KAE_DIR + "/model.safetensors"
KAE_LOSSES = KAE_DIR + "/losses.parquet"
KAE_METRICS = KAE_DIR + "/metrics.json"
KAE_ACCURACY = KAE_DIR + "/accuracy.json"
# topology
TOPOLOGY_LAYERS = DRAW_DIR + "/topology/layers.parquet"
TOPOLOGY_LAYER_CURVES = DRAW_DIR + "/topology/layers_curves.parquet"
TOPOLOGY_ITERATES = DRAW_DIR + "/topology/iterates/iso{lam}/seed{seed}.parquet"
TOPOLOGY_ITERATE_CURVES = DRAW_DIR + "/topology/iterates/iso{lam}/seed{seed}_curves.parquet"
ISOMETRY_ORIGINAL = DRAW_DIR + "/topology/isometry/original_diagram.parquet"
ISOMETRY_DIR = DRAW_DIR + "/topology/isometry/iso{lam}"
ISOMETRY_DIAGRAMS = ISOMETRY_DIR + "/diagrams.parquet"
ISOMETRY_CURVES = ISOMETRY_DIR + "/betti_curves.parquet"
ISOMETRY_RESULTS = ISOMETRY_DIR + "/metrics.json"
# unlearning
EDIT_DIR = DRAW_DIR + "/unlearn/iso{lam}/seed{seed}/class{target}"
EDIT = EDIT_DIR + "/edit.json"
EDITED_MODEL = EDIT_DIR + "/edited.safetensors"
STUDY = EDIT_DIR + "/study.parquet"
BASELINE_DIR = DRAW_DIR + "/unlearn/baselines/{baseline}/class{target}"
BASELINE_MODEL = BASELINE_DIR + "/model.safetensors"
BASELINE_METRICS = BASELINE_DIR + "/metrics.json"
# tables, figures, summary
TABLE = "results/tables/{name}"
FIGURE = "results/figures/{name}_{dataset}.{ext}"
SUMMARY = "results/summary.md"
TIMINGS = "results/timings.md"
IDX_CACHE = "{cache}/{source}/{name}"
LOG = "results/logs/{rule}/{name}.log"
BENCHMARK = "results/benchmarks/{rule}/{name}.tsv"


def fill(template: str, **wildcards: Any) -> str:
    """A template with its wildcards filled in (`fill(KAE_MODEL, dataset="mnist", draw=0, lam="0.001", seed=21)`)."""
    return template.format(**wildcards)


def table(name: str) -> str:
    """results/tables/<name> (name with its extension)."""
    return fill(TABLE, name=name)


def log(rule: str, name: str = "{dataset}") -> str:
    """The log of a rule's job (name in wildcard syntax)."""
    return LOG.replace("{rule}", rule).replace("{name}", name)


def benchmark(rule: str, name: str = "{dataset}") -> str:
    """The benchmark file of a rule's job (name in wildcard syntax)."""
    return BENCHMARK.replace("{rule}", rule).replace("{name}", name)


def figure(name: str, ext: str, dataset: str = "{dataset}") -> str:
    return FIGURE.replace("{name}", name).replace("{ext}", ext).replace("{dataset}", dataset)


# ---------------------------------------------------------------------------------------------
# Expansions over the configured grid
# ---------------------------------------------------------------------------------------------

def draws(config: Mapping[str, Any], dataset: str) -> list[int]:
    """The dataset's base-network draws (`base.seeds`, or `[base.seed]`), in config order."""
    return base_seeds(config["datasets"][dataset])


def first_draw(config: Mapping[str, Any], dataset: str) -> int:
    """The draw the figures show: the dataset's first."""
    return draws(config, dataset)[0]


def draw_paths(config: Mapping[str, Any], datasets: Sequence[str], template: str, **wildcards: Any) -> list[str]:
    """A template filled for every draw of the datasets (and the given wildcards), without duplicates."""
    out: list[str] = []
    for d in datasets:
        for draw in draws(config, d):
            path = template.format(dataset=d, draw=draw, **wildcards)
            if path not in out:
                out.append(path)
    return out


def kae_paths(config: Mapping[str, Any], datasets: Sequence[str], template: str, main_only: bool = False,
              lambda_tags: Sequence[str] | None = None, only_draws: Sequence[int | str] | None = None) -> list[str]:
    """A template with {dataset}, {draw}, {lam} and {seed} filled for every KAE of the datasets (every draw,
    or `only_draws`), without duplicates.

    lambda_iso: the whole grid, the main one only (`main_only`), or the given tags (`lambda_tags`).
    A template without {seed} gives one path per dataset, draw and lambda_iso.
    """
    out: list[str] = []
    for d in datasets:
        kae = config["datasets"][d]["kae"]
        lams = [kae["main_lambda_iso"]] if main_only else kae["lambda_iso"]
        tags = list(lambda_tags) if lambda_tags is not None else [lambda_tag(lam) for lam in lams]
        chosen = draws(config, d) if only_draws is None else [int(x) for x in only_draws]
        for draw in chosen:
            for tag in tags:
                for s in kae["seeds"]:
                    path = template.format(dataset=d, draw=draw, lam=tag, seed=s)
                    if path not in out:
                        out.append(path)
    return out


PACKS = ("grid", "lambda", "seed")


def kae_pack_mode(config: Mapping[str, Any], dataset: str) -> str:
    """How the dataset's KAEs are packed into jobs (`kae.pack`): grid | lambda | seed."""
    return config["datasets"][dataset]["kae"].get("pack", "lambda")


def kae_packs(config: Mapping[str, Any], dataset: str) -> list[tuple[str, list[tuple[str, int]]]]:
    """The dataset's KAE packs within one base-network draw: (pack name, members [(lambda tag, seed)]), in
    grid order (every draw has the same packs, one job each).

    grid: one pack of every KAE; lambda: one pack per isometry weight (its seeds); seed: one KAE per
    pack (the wildcard rule `kae` trains those).
    """
    kae = config["datasets"][dataset]["kae"]
    tags, seeds = [lambda_tag(x) for x in kae["lambda_iso"]], [int(s) for s in kae["seeds"]]
    mode = kae_pack_mode(config, dataset)
    if mode == "grid":
        return [("grid", [(t, s) for t in tags for s in seeds])]
    if mode == "lambda":
        return [(f"iso{t}", [(t, s) for s in seeds]) for t in tags]
    return [(f"iso{t}_seed{s}", [(t, s)]) for t in tags for s in seeds]


def rule_name(*parts: str) -> str:
    """A Snakemake rule name from parts (kae, dataset, pack): letters, digits and underscores only."""
    return "_".join(re.sub(r"[^A-Za-z0-9]+", "_", str(p)).strip("_") for p in parts)


def topology_reps_path(config: Mapping[str, Any], dataset: str, draw: int | str) -> str:
    """The reps file (of a draw) of the split that the dataset's topology.protocol measures."""
    return fill(REPS, dataset=dataset, draw=draw, split=evaluation_split(dataset_config(config, dataset)))


def unlearn_datasets(config: Mapping, study: bool = False) -> list[str]:
    """The datasets of `run` with an `unlearn` block (with a `study` too, when `study`)."""
    out = []
    for d in config["run"]:
        u = config["datasets"][d].get("unlearn")
        if u and (not study or u.get("study")):
            out.append(d)
    return out


def edit_paths(config: Mapping, template: str, study: bool = False) -> list[str]:
    """A template of EDIT_DIR filled for every configured edit (every draw; main lambda_iso, every seed and
    target)."""
    out = []
    for d in unlearn_datasets(config, study):
        kae = config["datasets"][d]["kae"]
        lam = lambda_tag(kae["main_lambda_iso"])
        for draw in draws(config, d):
            for seed in kae["seeds"]:
                for target in config["datasets"][d]["unlearn"]["target_classes"]:
                    out.append(fill(template, dataset=d, draw=draw, lam=lam, seed=seed, target=target))
    return out


def edit_items(config: Mapping, dataset: str, draw: int | str, study: bool = False) -> list[dict[str, Any]]:
    """Every configured edit of a dataset's draw (main lambda_iso, each seed and target): its KAE, target class
    and output files (edit, edited, study), in the order of `edit_paths`."""
    u = config["datasets"][dataset].get("unlearn")
    if not u or (study and not u.get("study")):
        return []
    kae = config["datasets"][dataset]["kae"]
    lam = lambda_tag(kae["main_lambda_iso"])
    out = []
    for seed in kae["seeds"]:
        for target in u["target_classes"]:
            w = {"dataset": dataset, "draw": draw, "lam": lam, "seed": seed, "target": target}
            out.append({"target": int(target), "kae": fill(KAE_MODEL, **w), "edit": fill(EDIT, **w),
                        "edited": fill(EDITED_MODEL, **w), "study": fill(STUDY, **w)})
    return out


def baseline_paths(config: Mapping, template: str) -> list[str]:
    """A template of BASELINE_DIR filled for every configured baseline and target of every draw."""
    out = []
    for d in unlearn_datasets(config):
        u = unlearn_settings(config["datasets"][d])
        for draw in draws(config, d):
            for kind in u["baselines"]["run"]:
                for target in u["target_classes"]:
                    out.append(fill(template, dataset=d, draw=draw, baseline=kind, target=target))
    return out


def paper_split(config: Mapping, dataset: str) -> str:
    """The split the paper shows: that of the dataset's `paper` protocol (Yin-Yang train, MNIST test)."""
    evaluation = config["datasets"][dataset]["evaluation"]
    return evaluation.get("paper", next(iter(evaluation.values())))


def first_draw_file(config: Mapping, template: str, dataset: str, **wildcards: Any) -> str:
    """A template filled for the dataset's first draw (the one the figures show)."""
    return fill(template, dataset=dataset, draw=first_draw(config, dataset), **wildcards)


def main_kae_file(config: Mapping, dataset: str, template: str = KAE_MODEL) -> str:
    """A file of the dataset's first-seed KAE at its main lambda_iso, on its first draw."""
    kae = config["datasets"][dataset]["kae"]
    return first_draw_file(config, template, dataset, lam=lambda_tag(kae["main_lambda_iso"]), seed=kae["seeds"][0])


def reps_files(config: Mapping, dataset: str, splits: Sequence[str] = ("train", "test")) -> dict[str, str]:
    """{reps_<split>: path} of every split of the first draw (figures of the topology stage measure the split
    it names)."""
    return {f"reps_{s}": first_draw_file(config, REPS, dataset, split=s) for s in splits}


def isometry_lambdas(config: Mapping, dataset: str) -> list[float]:
    """The isometry weights the isometry figure shows (see pick_lambdas)."""
    return pick_lambdas(config["datasets"][dataset]["kae"]["lambda_iso"])


def isometry_inputs(config: Mapping, dataset: str) -> dict[str, str]:
    """KAE (first seed) and Betti-curve files of the topology stage for each lambda_iso shown (first draw)."""
    seed = config["datasets"][dataset]["kae"]["seeds"][0]
    out = {}
    for lam in isometry_lambdas(config, dataset):
        tag = lambda_tag(lam)
        out[f"kae_{tag}"] = first_draw_file(config, KAE_MODEL, dataset, lam=tag, seed=seed)
        out[f"curves_{tag}"] = first_draw_file(config, ISOMETRY_CURVES, dataset, lam=tag)
    return out


def iterate_tables(config: Mapping, dataset: str) -> list[str]:
    """The topology stage's beta_0 tables of every seed's KAE at the main lambda_iso (first draw)."""
    return kae_paths(config, [dataset], TOPOLOGY_ITERATES, main_only=True, only_draws=[first_draw(config, dataset)])


def figure_files(names: Sequence[str], datasets: Sequence[str]) -> list[str]:
    """results/figures/<name>_<dataset>.{png,pdf} of every figure name and dataset."""
    return [figure(n, e, d) for n in names for d in datasets for e in ("png", "pdf")]


def editing_target(config: Mapping, dataset: str, preferred: int = 4) -> int:
    """The class the editing figure forgets: the paper's (4) when edited, else the first edited class."""
    targets = [int(t) for t in unlearn_settings(config["datasets"][dataset])["target_classes"]]
    if not targets:
        raise ValueError(f"datasets.{dataset}.unlearn.target_classes is empty: no edit to draw")
    return preferred if preferred in targets else targets[0]


def edited_file(config: Mapping, dataset: str) -> str:
    """The unlearning stage's edited model of the first-seed KAE (main lambda_iso, first draw) for the
    figure's class."""
    kae = config["datasets"][dataset]["kae"]
    return first_draw_file(config, EDITED_MODEL, dataset, lam=lambda_tag(kae["main_lambda_iso"]),
                           seed=kae["seeds"][0], target=editing_target(config, dataset))


def edited_datasets(config: Mapping, datasets: Sequence[str]) -> list[str]:
    """The datasets with an `unlearn` block (those the unlearning stage edits)."""
    return [d for d in datasets if config["datasets"][d].get("unlearn")]


# ---------------------------------------------------------------------------------------------
# The final outputs
# ---------------------------------------------------------------------------------------------

def summary_inputs(config: Mapping) -> dict[str, str]:
    """The stage tables the summary compares with the paper: those of the stages this config runs."""
    out = {"accuracy": table("accuracy.csv"), "topology": table("topology.csv"), "isometry": table("isometry.csv")}
    if unlearn_datasets(config):
        out.update(editing=table("editing.csv"), baselines=table("unlearning_baselines.csv"))
    return out


def timing_inputs(config: Mapping) -> dict[str, str]:
    """The timing tables of the stages that measure their own times (the edits and baselines), when run."""
    if not unlearn_datasets(config):
        return {}
    return {"editing": table("timings_editing.csv"), "baselines": table("timings_unlearning_baselines.csv")}


def idx_sources() -> list[str]:
    """The data sources read from IDX files (those rule download_idx can fetch)."""
    return [name for name, src in SOURCES.items() if isinstance(src, IdxSource)]


def idx_file_names() -> list[str]:
    """The official IDX file names (every IDX source uses MNIST's four names)."""
    return sorted({n for name in idx_sources() for pair in SOURCES[name].files.values() for n in pair})


def final_outputs(config: Mapping, summary: bool = True) -> list[str]:
    """Everything a full run produces for the datasets of `run`; the summary and the timings last (unless
    `summary` is False: then neither)."""
    datasets = list(config["run"])
    out = draw_paths(config, datasets, BASE_METRICS)
    out += [fill(t, dataset=d, draw=draw, split=s)
            for d in datasets for draw in draws(config, d) for s in ("train", "test") for t in (REPS_PARQUET, REPS)]
    out += list(summary_inputs(config).values())
    out += figure_files(["layers", "training", "path", "isometry", "topology"], datasets)
    out += figure_files(["editing"], edited_datasets(config, datasets))
    if summary:
        out += [SUMMARY, TIMINGS]
    return out


def partial(template: str, **wildcards: Any) -> str:
    """A template with only the named wildcards filled (the others stay for Snakemake)."""
    for k, v in wildcards.items():
        template = template.replace("{" + k + "}", str(v))
    return template
