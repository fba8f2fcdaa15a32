"""The published numbers have one home (kaepipe.published) and every consumer agrees with it.

Expectations are the paper's printed values (docs/method.md section 11), typed in here by hand, not read
back from the module."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from kaepipe.published import editing_text, paper_eps, published_accuracy, published_editing
from kaepipe.report.summary import accuracy_comparison, editing_comparison, topology_comparison
from kaepipe.report.tables import editing_tables, topology_tables


def test_the_papers_numbers_as_printed():
    assert published_accuracy("yinyang", "KAE", "paper") == (98.75, 0.15)
    assert published_accuracy("mnist", "MLP", "paper") == (99.03, None)
    assert math.isnan(published_accuracy("mnist", "MLP", "heldout")[0])
    assert editing_text("yinyang", 2) == "99.97 (0.05) -> 62.52 (1.35)"
    assert editing_text("mnist", 4) == "98.29 (0.08) -> 0.0 (0.0)"
    assert editing_text("mnist", 4, method="region") == "" and published_editing("mnist", 3) is None
    assert paper_eps("mnist") == {"layers": 0.166, "iterates": 0.14} and paper_eps("yinyang") is None


def _topology_parts(dataset: str, eps_layers: float, eps_iterates: float) -> list[pd.DataFrame]:
    def part(source, seed, values, eps, lam=None):
        return pd.DataFrame({"dataset": dataset, "source": source, "seed": pd.array([seed] * len(values), "Int64"),
                             "step": range(len(values)), "eps": eps, "betti0": values,
                             "lambda_iso": np.nan if lam is None else lam, "n": 10000, "metric": "euclidean"})
    return [part("mlp", 0, [7000, 1500, 200, 40, 15], eps_layers),
            part("kae", 21, [100, 30], eps_iterates, 1e-3), part("kae", 53, [90, 34], eps_iterates, 1e-3)]


@pytest.mark.parametrize(("name", "n_train", "scale"), [("mnist", 60000, 1.0), ("mnist", 10000, math.sqrt(6)),
                                                       ("digits", 10000, math.sqrt(6))])
def test_topology_table_and_summary_show_the_same_published_values(name, n_train, scale):
    """The stage's topology_summary table and the summary's comparison agree, at the paper's eps and at the
    eps carried to a smaller training fit, whatever the dataset's name (the data source decides)."""
    parts = _topology_parts(name, 0.166 * scale, 0.14 * scale)
    sources, sizes = {name: "mnist"}, {name: n_train}
    long, summary = topology_tables(parts, sources, sizes)
    comparison = topology_comparison(long, sizes, sources)
    mlp = summary[summary.source == "mlp"].sort_values("step")["published"].tolist()
    kae = summary[summary.source == "kae"].sort_values("step")["published"].tolist()
    assert mlp == [368, 10, 1, 1, 1] and kae == [8633, 7655]
    assert comparison[comparison.model == "mlp"]["published_mean"].tolist() == mlp
    assert comparison[comparison.model == "kae"]["published_mean"].tolist() == kae


def test_topology_without_a_published_setting_shows_none():
    long, summary = topology_tables(_topology_parts("mnist", 0.25, 0.25), {"mnist": "mnist"}, {"mnist": 10000})
    assert summary["published"].isna().all()
    assert topology_comparison(long, {"mnist": 10000})["published"].eq("-").all()


def test_editing_table_and_summary_show_the_same_published_values():
    def edit(seed, before, after):
        report = {"split": "train", "target_before": before, "target_after": after,
                  "per_class_before": [97.0, 97.0, before], "per_class_after": [96.0, 96.0, after],
                  "retained_before": 97.0, "retained_after": 96.0}
        return {"dataset": "yy", "target_class": 2, "seed": seed,
                "methods": {"paper": {"protocols": {"paper": report}, "edit_seconds": 0.001,
                                      "prepare_seconds": 0.01, "settings_text": "reg 0.1"}}}
    editing, _ = editing_tables([edit(21, 99.9, 60.0), edit(53, 100.0, 64.0)], {"yy": "yinyang"})
    assert editing["published"].tolist() == ["99.97 (0.05) -> 62.52 (1.35)"]
    comparison = editing_comparison(editing, {"yy": "yinyang"})
    assert comparison["published_before"].tolist() == ["99.97 (0.05)"]
    assert comparison["published_after"].tolist() == ["62.52 (1.35)"]
    assert comparison["difference_after"].iloc[0] == pytest.approx(62.0 - 62.52)


def test_accuracy_comparison_uses_the_data_source():
    acc = pd.DataFrame([{"dataset": "yy", "protocol": "paper", "split": "train", "model": "KAE", "lambda_iso": 1.0,
                         "n_seeds": 5, "acc_mean": 98.5, "acc_std": 0.1, "cell": "98.50 (0.10)"}])
    assert accuracy_comparison(acc, {"yy": "yinyang"})["published"].tolist() == ["98.75 (0.15)"]
    assert accuracy_comparison(acc)["published"].tolist() == ["-"]
