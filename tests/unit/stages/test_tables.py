"""The table stages aggregate over base-network draws and KAE seeds (issue 17, item 12): small synthetic per-draw
metric files in, the tables' mean (population std) cells checked against values computed by hand, with how many
draws and seeds went into each cell."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kaepipe.io import write_json
from kaepipe.stages import paths as P
from kaepipe.stages.tables import run_accuracy_table, run_unlearn_tables

CONFIG = {
    "run": ["yinyang", "mnist"],
    "datasets": {
        "yinyang": {"source": "yinyang", "base": {"seeds": [0, 1]},
                    "kae": {"lambda_iso": [1, 0], "main_lambda_iso": 1, "seeds": [21, 365]},
                    "unlearn": {"target_classes": [2]}},
        "mnist": {"source": "mnist", "base": {"seeds": [0]},
                  "kae": {"lambda_iso": [0.001], "main_lambda_iso": 0.001, "seeds": [21]}},
    },
}
# macro accuracy (paper, heldout) per base draw, and per (draw, KAE seed) at lambda_iso 1 and 0
BASE = {("yinyang", 0): (99.0, 98.0), ("yinyang", 1): (99.4, 98.6), ("mnist", 0): (96.5, 96.5)}
KAE = {("yinyang", 0, 21): 98.0, ("yinyang", 0, 365): 98.4, ("yinyang", 1, 21): 98.8, ("yinyang", 1, 365): 99.2,
       ("mnist", 0, 21): 96.7}
SPLITS = {"yinyang": ("train", "test"), "mnist": ("test", "test")}


def protocols(ds: str, paper: float, heldout: float) -> dict:
    train, test = SPLITS[ds]
    return {"paper": {"split": train, "macro": paper}, "heldout": {"split": test, "macro": heldout}}


@pytest.fixture
def accuracy_files(tmp_path):
    """Every draw's base metrics.json and every KAE's accuracy.json where the pipeline writes them."""
    base, kae = [], []
    for (ds, draw), (paper, heldout) in BASE.items():
        path = tmp_path / P.fill(P.BASE_METRICS, dataset=ds, draw=draw)
        write_json({"dataset": ds, "draw": draw, "protocols": protocols(ds, paper, heldout)}, path)
        base.append(str(path))
    for (ds, draw, seed), acc in KAE.items():
        for lam, offset in ((CONFIG["datasets"][ds]["kae"]["main_lambda_iso"], 0.0), (0, -1.0)):
            if lam not in CONFIG["datasets"][ds]["kae"]["lambda_iso"]:
                continue
            path = tmp_path / P.fill(P.KAE_ACCURACY, dataset=ds, draw=draw, lam=f"{lam:g}", seed=seed)
            write_json({"dataset": ds, "draw": draw, "lambda_iso": lam, "seed": seed,
                        "protocols": protocols(ds, acc + offset, acc - 0.5 + offset)}, path)
            kae.append(str(path))
    return base, kae


def test_accuracy_table_aggregates_over_draws_and_seeds(tmp_path, accuracy_files):
    base, kae = accuracy_files
    out = {k: str(tmp_path / f"accuracy.{k}") for k in ("csv", "md", "tex", "long")}
    run_accuracy_table(CONFIG, base, kae, out)
    table = pd.read_csv(out["csv"]).set_index(["dataset", "protocol", "model"])
    # MLP: mean (population std) over the two draws
    mlp = table.loc[("yinyang", "paper", "MLP")]
    assert (mlp.draws, mlp.n_seeds) == (2, 2) and math.isnan(mlp.seeds)
    assert mlp.acc_mean == pytest.approx(99.2) and mlp.acc_std == pytest.approx(0.2)
    assert mlp.cell == "99.20 (0.20)"
    # KAE: over the four (draw, seed) pairs 98.0, 98.4, 98.8, 99.2: mean 98.6, variance 0.2 (ddof 0)
    k = table.loc[("yinyang", "paper", "KAE")]
    assert (k.draws, k.seeds, k.n_seeds, k.lambda_iso) == (2, 2, 4, 1.0)
    assert k.acc_mean == pytest.approx(98.6) and k.acc_std == pytest.approx(math.sqrt(0.2), abs=1e-6)
    assert k.cell == "98.60 (0.45)"
    held = table.loc[("yinyang", "heldout", "KAE")]
    assert held.acc_mean == pytest.approx(98.1) and held.acc_std == pytest.approx(np.std([97.5, 97.9, 98.3, 98.7]))
    # one draw: the network's own number, no std shown, as before draws existed
    one = table.loc[("mnist", "paper", "MLP")]
    assert (one.draws, one.n_seeds, one.acc_std, one.cell) == (1, 1, 0.0, "96.50")
    kae_one = table.loc[("mnist", "paper", "KAE")]
    assert (kae_one.draws, kae_one.seeds, kae_one.cell) == (1, 1, "96.70 (0.00)")
    long = pd.read_csv(out["long"])
    zero = long[(long.dataset == "yinyang") & (long.lambda_iso == 0) & (long.protocol == "paper")].iloc[0]
    assert (zero.draws, zero.seeds) == (2, 2) and zero.acc_mean == pytest.approx(97.6)
    md = (tmp_path / "accuracy.md").read_text()
    assert "| draws " in md and "| seeds " in md


def test_one_draw_gives_the_numbers_of_a_run_without_draws(tmp_path, accuracy_files):
    """Records without a draw (the files of a run before draws) and the one-draw files give the same cells."""
    base, kae = accuracy_files
    keep = [p for p in base if "/yinyang/draw0/" in p or "/mnist/" in p]
    kae_keep = [p for p in kae if "/yinyang/draw0/" in p or "/mnist/" in p]
    out = {k: str(tmp_path / f"a.{k}") for k in ("csv", "md", "tex", "long")}
    with_draws = run_accuracy_table(CONFIG, keep, kae_keep, out)
    for p in keep + kae_keep:
        record = json.loads(Path(p).read_text())
        record.pop("draw")
        write_json(record, p)
    out2 = {k: str(tmp_path / f"b.{k}") for k in ("csv", "md", "tex", "long")}
    without = run_accuracy_table(CONFIG, keep, kae_keep, out2)
    pd.testing.assert_frame_equal(with_draws, without)
    assert (with_draws.draws == 1).all() and with_draws.loc[with_draws.model == "MLP", "cell"].tolist() == [
        "96.50", "96.50", "98.00", "99.00"]


def edit_record(draw: int, seed: int, after: float) -> dict:
    report = {"split": "train", "target_before": 100.0, "target_after": after, "retained_before": 98.0,
              "retained_after": 97.0, "per_class_before": [98.0, 98.0, 100.0], "per_class_after": [97.0, 97.0, after]}
    return {"dataset": "yinyang", "draw": draw, "seed": seed, "target_class": 2, "lambda_iso": 1,
            "methods": {"paper": {"protocols": {"paper": report}, "edit_seconds": 0.002, "edit_cpu_seconds": 0.002,
                                  "prepare_seconds": 0.01, "settings_text": "reg=0.1"}}}


def baseline_record(draw: int, after: float, seconds: float) -> dict:
    report = {"split": "train", "target_before": 100.0, "target_after": after, "retained_before": 98.0,
              "retained_after": 98.5}
    return {"dataset": "yinyang", "draw": draw, "method": "retrain", "target_class": 2, "seconds": seconds,
            "cpu_seconds": seconds, "protocols": {"paper": report}}


def test_editing_and_baseline_tables_aggregate_over_draws(tmp_path):
    edits, baselines = [], []
    for (draw, seed), after in {(0, 21): 60.0, (0, 365): 64.0, (1, 21): 70.0, (1, 365): 66.0}.items():
        path = tmp_path / P.fill(P.EDIT, dataset="yinyang", draw=draw, lam="1", seed=seed, target=2)
        write_json(edit_record(draw, seed, after), path)
        edits.append(str(path))
    for draw, after, seconds in ((0, 1.0, 10.0), (1, 3.0, 20.0)):
        path = tmp_path / P.fill(P.BASELINE_METRICS, dataset="yinyang", draw=draw, baseline="retrain", target=2)
        write_json(baseline_record(draw, after, seconds), path)
        baselines.append(str(path))
    names = ("editing", "editing_md", "editing_tex", "per_class", "baselines", "baselines_md", "baselines_tex",
             "timings_editing", "timings_editing_md", "timings_baselines", "timings_baselines_md")
    out = {k: str(tmp_path / f"{k}.txt") for k in names}
    editing, table = run_unlearn_tables(CONFIG, edits, baselines, out)
    row = editing.iloc[0]
    # target after: 60, 64, 70, 66 -> mean 65, variance (25 + 1 + 25 + 1) / 4 = 13
    assert (row.n_seeds, row.draws, row.seeds) == (4, 2, 2)
    assert row.target_after_mean == pytest.approx(65.0) and row.target_after_std == pytest.approx(math.sqrt(13),
                                                                                                    abs=1e-6)
    assert row.target == "100.00 (0.00) -> 65.00 (3.61)"
    retrain = table[table.method == "retrain"].iloc[0]
    assert (retrain.n_seeds, retrain.draws) == (2, 2) and math.isnan(retrain.seeds)
    assert retrain.target == "100.00 (0.00) -> 2.00 (1.00)"
    times = pd.read_csv(out["timings_baselines"]).set_index("method")
    assert times.loc["retrain", "seconds"] == pytest.approx(15.0)  # mean over the draws
    assert times.loc["edit:paper", "speedup_vs_retrain"] == pytest.approx(15.0 / 0.002, rel=1e-3)
    assert {"draws", "seeds"} <= set(times.columns)
    per_class = pd.read_csv(out["per_class"])
    assert (per_class.draws == 2).all() and (per_class.seeds == 2).all()
