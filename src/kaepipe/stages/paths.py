"""TODO."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kaepipe.config import dataset_config, lambda_tag
from kaepipe.settings import evaluation_split, pick_lambdas, unlearn_settings


def topology_reps_path(config: Mapping[str, Any], dataset: str) -> str:
    """results/{dataset}/reps/{split}.pt of the split that the dataset's topology.protocol measures."""

    return f"results/{dataset}/reps/{evaluation_split(dataset_config(config, dataset))}.pt"


def kae_paths(config: Mapping[str, Any], datasets: Sequence[str], pattern: str, main_only: bool = False,
              lambda_tags: Sequence[str] | None = None) -> list[str]:
    """Paths from a pattern with {d}, {lam} and {seed} for every KAE of the datasets, without duplicates.

    lambda_iso: the whole grid, the main one only (`main_only`), or the given tags (`lambda_tags`).
    A pattern without {seed} gives one path per dataset and lambda_iso.
    """

    out: list[str] = []
    for d in datasets:
        kae = config["datasets"][d]["kae"]
        lams = [kae["main_lambda_iso"]] if main_only else kae["lambda_iso"]
        tags = list(lambda_tags) if lambda_tags is not None else [lambda_tag(lam) for lam in lams]
        for tag in tags:
            for s in kae["seeds"]:
                path = pattern.format(d=d, lam=tag, seed=s)
                if path not in out:
                    out.append(path)
    return out


def unlearn_datasets(config: Mapping, study: bool = False) -> list[str]:
    """The datasets of `run` with an `unlearn` block (with a `study` too, when `study`)."""
    out = []
    for d in config["run"]:
        u = config["datasets"][d].get("unlearn")
        if u and (not study or u.get("study")):
            out.append(d)
    return out


def edit_paths(config: Mapping, name: str, study: bool = False) -> list[str]:
    """results/{dataset}/unlearn/iso{main}/seed{seed}/class{target}/<name> for every configured edit."""

    out = []
    for d in unlearn_datasets(config, study):
        kae = config["datasets"][d]["kae"]
        lam = lambda_tag(kae["main_lambda_iso"])
        for seed in kae["seeds"]:
            for target in config["datasets"][d]["unlearn"]["target_classes"]:
                out.append(f"results/{d}/unlearn/iso{lam}/seed{seed}/class{target}/{name}")
    return out


def baseline_paths(config: Mapping, name: str) -> list[str]:
    """results/{dataset}/unlearn/baselines/{baseline}/class{target}/<name> for every configured baseline."""
    out = []
    for d in unlearn_datasets(config):
        u = unlearn_settings(config["datasets"][d])
        for kind in u["baselines"]["run"]:
            for target in u["target_classes"]:
                out.append(f"results/{d}/unlearn/baselines/{kind}/class{target}/{name}")
    return out


def paper_split(config: Mapping, dataset: str) -> str:
    """The split the paper shows: that of the dataset's `paper` protocol (Yin-Yang train, MNIST test)."""
    evaluation = config["datasets"][dataset]["evaluation"]
    return evaluation.get("paper", next(iter(evaluation.values())))


def main_kae_file(config: Mapping, dataset: str, name: str = "model.safetensors") -> str:
    """A file of the dataset's first-seed KAE at its main lambda_iso."""

    kae = config["datasets"][dataset]["kae"]
    return f"results/{dataset}/kae/iso{lambda_tag(kae['main_lambda_iso'])}/seed{kae['seeds'][0]}/{name}"


def reps_files(dataset: str, splits: Sequence[str] = ("train", "test")) -> dict[str, str]:
    """{reps_<split>: path} of every split (figures of the topology stage measure the split it names)."""
    return {f"reps_{s}": f"results/{dataset}/reps/{s}.pt" for s in splits}


def isometry_lambdas(config: Mapping, dataset: str) -> list[float]:
    """The isometry weights the isometry figure shows (see pick_lambdas)."""
    return pick_lambdas(config["datasets"][dataset]["kae"]["lambda_iso"])


def isometry_inputs(config: Mapping, dataset: str) -> dict[str, str]:
    """KAE (first seed) and Betti-curve files of the topology stage for each lambda_iso shown."""

    seed = config["datasets"][dataset]["kae"]["seeds"][0]
    out = {}
    for lam in isometry_lambdas(config, dataset):
        tag = lambda_tag(lam)
        out[f"kae_{tag}"] = f"results/{dataset}/kae/iso{tag}/seed{seed}/model.safetensors"
        out[f"curves_{tag}"] = f"results/{dataset}/topology/isometry/iso{tag}/betti_curves.parquet"
    return out


def iterate_tables(config: Mapping, dataset: str) -> list[str]:
    """The topology stage's beta_0 tables of every seed's KAE at the main lambda_iso."""

    kae = config["datasets"][dataset]["kae"]
    lam = lambda_tag(kae["main_lambda_iso"])
    return [f"results/{dataset}/topology/iterates/iso{lam}/seed{s}.parquet" for s in kae["seeds"]]


def figure_files(names: Sequence[str], datasets: Sequence[str]) -> list[str]:
    """results/figures/<name>_<dataset>.{png,pdf} of every figure name and dataset."""
    return [f"results/figures/{n}_{d}.{e}" for n in names for d in datasets for e in ("png", "pdf")]


def editing_target(config: Mapping, dataset: str, preferred: int = 4) -> int:
    """The class the editing figure forgets: the paper's (4) when edited, else the first edited class."""

    targets = [int(t) for t in unlearn_settings(config["datasets"][dataset])["target_classes"]]
    if not targets:
        raise ValueError(f"datasets.{dataset}.unlearn.target_classes is empty: no edit to draw")
    return preferred if preferred in targets else targets[0]


def edited_file(config: Mapping, dataset: str) -> str:
    """The unlearning stage's edited model of the first-seed KAE (main lambda_iso) for the figure's class."""

    kae = config["datasets"][dataset]["kae"]
    return (f"results/{dataset}/unlearn/iso{lambda_tag(kae['main_lambda_iso'])}/seed{kae['seeds'][0]}/"
            f"class{editing_target(config, dataset)}/edited.safetensors")


def edited_datasets(config: Mapping, datasets: Sequence[str]) -> list[str]:
    """The datasets with an `unlearn` block (those the unlearning stage edits)."""
    return [d for d in datasets if config["datasets"][d].get("unlearn")]
