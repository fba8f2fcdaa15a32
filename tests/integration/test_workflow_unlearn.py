"""The unlearning stage end to end on the tiny config: edits, baselines, study and tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from kaepipe.nn.checkpoints import load_kae
from kaepipe.represent import load_preprocessing, load_reps
from kaepipe.unlearn import load_edited

pytestmark = pytest.mark.slow

EDIT = "results/yinyang/draw0/unlearn/iso1/seed{seed}/class2"


def test_study_at_the_edits_settings_reproduces_the_edit(tiny_run):
    """The study job recomputes the paper edit's grid point (nearest targets, reg 0.1, strength 1, full
    rank) by another path (outputs Z O' through the head, not the edited model): the same accuracies,
    up to one sample of a class."""
    res = tiny_run / "results/yinyang/draw0"
    counts = {split: np.bincount(load_reps(res / f"reps/{split}.pt")[1]) for split in ("train", "test")}
    for seed in (21, 365):
        paper = json.loads((tiny_run / EDIT.format(seed=seed) / "edit.json").read_text())["methods"]["paper"]
        assert paper["settings"] == {"targets": "nearest", "reg": 0.1, "strength": 1.0}
        study = pd.read_parquet(tiny_run / EDIT.format(seed=seed) / "study.parquet")
        at = study[(study.targets == "nearest") & (study.reg == 0.1) & (study.strength == 1.0) & (study["rank"] == -1)]
        assert sorted(at.protocol) == ["heldout", "paper"]
        for protocol, rec in paper["protocols"].items():
            row = at[at.protocol == protocol].iloc[0]
            n = counts[rec["split"]]
            one_target, one_retained = 100 / n[2], 100 / n[:2].min() / 2  # one sample of the target / a retained class
            assert row.split == rec["split"]
            for key, tol in (("target_before", one_target), ("target_after", one_target),
                             ("retained_before", one_retained), ("retained_after", one_retained)):
                assert abs(row[key] - rec[key]) <= tol + 1e-6, (seed, protocol, key, row[key], rec[key])


def test_edit_diagnostics_recomputed_from_the_edited_operator(tiny_run):
    """fit_fraction, constraint_residual and the targets of edit.json, recomputed here from the KAE, the
    saved edited operator (float64) and brute-force nearest clean neighbours in observable space."""
    res = tiny_run / "results/yinyang/draw0"
    pre = load_preprocessing(res / "reps/preprocessing.safetensors", [0])
    layers, labels = load_reps(res / "reps/train.pt")
    for seed in (21, 365):
        kae, _ = load_kae(res / f"kae/iso1/seed{seed}/model.safetensors")
        edited, _ = load_edited(tiny_run / EDIT.format(seed=seed) / "edited.safetensors", "paper")
        diag = json.loads((tiny_run / EDIT.format(seed=seed) / "edit.json").read_text())["methods"]["paper"]["diagnostics"]
        Z = kae.observables(pre[0].apply(layers[0]))
        O, O_new = kae.operator_matrix(), edited.operator_matrix()
        forget = labels == 2
        clean = np.flatnonzero(~forget)
        nearest = clean[((Z[forget][:, None] - Z[clean][None]) ** 2).sum(-1).argmin(1)]
        H = Z[forget]
        R = (Z @ O)[nearest] - H @ O  # targets: the outputs of the nearest clean samples
        moved = H @ (O_new - O)
        assert diag["n_forget"] == forget.sum() and diag["n_clean"] == (~forget).sum()
        assert diag["targets_distinct"] == len(np.unique(nearest))
        assert diag["fit_fraction"] == pytest.approx((moved * R).sum() / (R * R).sum(), rel=1e-4)
        assert diag["constraint_residual"] == pytest.approx(np.linalg.norm(moved - R) / np.linalg.norm(R), rel=1e-4)
        assert 0 < diag["fit_fraction"] <= 1


def test_edit_json_records_both_protocols_and_methods(tiny_run):
    e = json.loads((tiny_run / EDIT.format(seed=21) / "edit.json").read_text())
    assert e["target_class"] == 2 and e["seed"] == 21 and e["lambda_iso"] == 1
    assert set(e["methods"]) == {"paper", "region"}
    paper = e["methods"]["paper"]
    assert paper["settings"] == {"targets": "nearest", "reg": 0.1, "strength": 1.0}
    assert e["methods"]["region"]["settings"]["targets"] == "centroid"
    for m in e["methods"].values():
        assert set(m["protocols"]) == {"paper", "heldout"}
        assert m["protocols"]["paper"]["split"] == "train" and m["protocols"]["heldout"]["split"] == "test"
        r = m["protocols"]["heldout"]
        assert len(r["per_class_before"]) == len(r["per_class_after"]) == 3
        assert r["target_before"] == r["per_class_before"][2]
        assert r["retained_after"] == pytest.approx(np.mean(r["per_class_after"][:2]))
        assert m["edit_seconds"] > 0 and m["diagnostics"]["n_forget"] > 0
    mnist = json.loads((tiny_run / "results/mnist/draw0/unlearn/iso0.001/seed21/class4/edit.json").read_text())
    assert mnist["methods"]["paper"]["settings"]["targets"] == "shared"


def test_edited_model_reproduces_the_recorded_accuracy(tiny_run):
    from kaepipe.evaluate import accuracy_report, surrogate_predictions
    from kaepipe.nn.checkpoints import load_base_model, load_kae
    from kaepipe.represent import load_preprocessing, load_reps
    from kaepipe.unlearn import load_edited

    res = tiny_run / "results/yinyang/draw0"
    e = json.loads((tiny_run / EDIT.format(seed=365) / "edit.json").read_text())
    kae, _ = load_kae(res / "kae/iso1/seed365/model.safetensors")
    base = load_base_model(res / "base/model.safetensors")
    pre = load_preprocessing(res / "reps/preprocessing.safetensors", [0, 5])
    layers, labels = load_reps(res / "reps/test.pt")
    before = accuracy_report(surrogate_predictions(kae, base, pre[0], pre[5], layers[0]), labels, 3)
    for method in ("paper", "region"):
        edited, meta = load_edited(tiny_run / EDIT.format(seed=365) / "edited.safetensors", method)
        assert meta["target_class"] == 2
        after = accuracy_report(surrogate_predictions(edited, base, pre[0], pre[5], layers[0]), labels, 3)
        rec = e["methods"][method]["protocols"]["heldout"]
        assert after["per_class"] == rec["per_class_after"]
        assert before["per_class"] == rec["per_class_before"]


def test_editing_table(tiny_run):
    t = pd.read_csv(tiny_run / "results/tables/editing.csv")
    assert {"dataset", "protocol", "method", "target_class", "n_seeds", "target", "retained",
            "published", "target_after_mean", "target_after_std"} <= set(t.columns)
    times = pd.read_csv(tiny_run / "results/tables/timings_editing.csv")  # measured times, apart
    assert "edit_seconds" in times.columns and times[list(t.columns[:5])].equals(t[list(t.columns[:5])])
    assert len(t) == 2 * 2 * 2  # datasets x protocols x methods, one target each
    assert (t.n_seeds == 2).all()
    row = t[(t.dataset == "yinyang") & (t.protocol == "heldout") & (t.method == "paper")].iloc[0]
    accs = [json.loads((tiny_run / EDIT.format(seed=s) / "edit.json").read_text())
            ["methods"]["paper"]["protocols"]["heldout"] for s in (21, 365)]
    after = [a["target_after"] for a in accs]
    before = [a["target_before"] for a in accs]
    assert row.target_after_mean == pytest.approx(np.mean(after), abs=1e-4)
    assert row.target_after_std == pytest.approx(np.std(after), abs=1e-4)
    assert row.target == f"{np.mean(before):.2f} ({np.std(before):.2f}) -> {np.mean(after):.2f} ({np.std(after):.2f})"
    published = t[(t.dataset == "yinyang") & (t.protocol == "paper") & (t.method == "paper")].published.iloc[0]
    assert published == "99.97 (0.05) -> 62.52 (1.35)"
    assert (tiny_run / "results/tables/editing.md").read_text().split("|")[1].strip() == "dataset"
    assert "\\begin{tabular}" in (tiny_run / "results/tables/editing.tex").read_text()
    per_class = pd.read_csv(tiny_run / "results/tables/editing_per_class.csv")
    assert set(per_class[per_class.dataset == "yinyang"]["class"]) == {0, 1, 2}


def test_baselines_table_has_speedups(tiny_run):
    t = pd.read_csv(tiny_run / "results/tables/timings_unlearning_baselines.csv")
    yy = t[(t.dataset == "yinyang") & (t.protocol == "heldout")]
    assert {"retrain", "finetune", "edit:paper", "edit:region"} <= set(yy.method)
    base = yy.set_index("method")
    for m in ("edit:paper", "edit:region"):
        assert base.loc[m, "speedup_vs_retrain"] == pytest.approx(
            base.loc["retrain", "seconds"] / base.loc[m, "seconds"], rel=0.02)
        assert base.loc[m, "speedup_vs_finetune"] > 0
    retrain = json.loads((tiny_run / "results/yinyang/draw0/unlearn/baselines/retrain/class2/metrics.json").read_text())
    r = retrain["protocols"]["heldout"]
    assert r["target_after"] < r["target_before"]  # never trained on the class
    assert retrain["train"]["epochs"] == 60  # the base network's settings
    ft = json.loads((tiny_run / "results/yinyang/draw0/unlearn/baselines/finetune/class2/metrics.json").read_text())
    assert ft["train"]["epochs"] == 2 and ft["seconds"] > 0
    mn = t[t.dataset == "mnist"]
    assert "retrain" not in set(mn.method) and "finetune" in set(mn.method)
    assert mn[mn.method == "edit:paper"].speedup_vs_retrain.isna().all()


def test_study_table(tiny_run):
    s = pd.read_csv(tiny_run / "results/tables/unlearning_study.csv")
    assert set(s.dataset) == {"yinyang"}  # the tiny MNIST block has no study
    assert set(s.targets) == {"nearest", "centroid"} and set(s.reg) == {0.1, 1.0}
    assert set(s["rank"]) == {2, -1} and (s.n_seeds == 2).all()
    assert len(s) == 2 * 2 * 2 * 2  # protocols x targets x reg x rank (one strength)
    assert s.meets_goal.dtype == bool
