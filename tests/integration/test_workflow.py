"""The Snakemake workflow end to end on the tiny config (Yin-Yang and the synthetic MNIST-format digits,
small sizes, few epochs): each output is recomputed here from the files it was made from."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from kaepipe.data import read_split
from kaepipe.evaluate import surrogate_predictions
from kaepipe.nn.checkpoints import load_base_model, load_kae
from kaepipe.nn.resmlp import record_layers
from kaepipe.represent import load_preprocessing, load_reps
from tests.conftest import REPO, TINY_CONFIGS, run_snakemake, snakemake_cmd

pytestmark = pytest.mark.slow

CLASSES = {"yinyang": 3, "mnist": 10}
EVALUATION = {"yinyang": {"paper": "train", "heldout": "test"}, "mnist": {"paper": "test", "heldout": "test"}}


def assert_per_class_close(pred: np.ndarray, labels: np.ndarray, recorded: list[float], classes: int) -> None:
    """Per-class accuracy (percent) of `pred`, computed here, equals the recorded one up to one sample of
    each class (an evaluation in another process may break a near-tie of two logits the other way)."""
    counts = np.bincount(labels, minlength=classes)
    ours = np.array([100.0 * np.mean(pred[labels == c] == c) for c in range(classes)])
    assert np.all(np.abs(ours - np.asarray(recorded)) <= 100.0 / counts + 1e-6), (ours, recorded)


def test_base_networks_reproduce_their_metrics_and_representations(tiny_run):
    """Each dataset's checkpoint, evaluated here on the split files, gives the per-class accuracy its
    metrics.json records, and the representation files hold its layers of exactly those inputs."""
    res = tiny_run / "results"
    for ds, classes in CLASSES.items():
        model = load_base_model(res / ds / "draw0/base/model.safetensors").eval()
        metrics = json.loads((res / ds / "draw0/base/metrics.json").read_text())
        assert {p: r["split"] for p, r in metrics["protocols"].items()} == EVALUATION[ds]
        for split in ("train", "test"):
            x, y = read_split(res / ds / f"data/{split}.parquet")
            with torch.no_grad():
                layers = record_layers(model, torch.as_tensor(x))
                pred = model(torch.as_tensor(x)).argmax(1).numpy()
            for rec in (p for p in metrics["protocols"].values() if p["split"] == split):
                assert rec["n"] == len(y)
                assert_per_class_close(pred, y, rec["per_class"], classes)
            saved, labels = load_reps(res / ds / f"draw0/reps/{split}.pt")
            np.testing.assert_array_equal(labels, y)
            np.testing.assert_allclose(saved, torch.stack(layers).numpy(), rtol=1e-5, atol=1e-5)
    # the synthetic digits are learnt in 4 epochs: far above chance (10 %)
    mnist = json.loads((res / "mnist/draw0/base/metrics.json").read_text())
    assert mnist["protocols"]["heldout"]["macro"] > 50
    assert not list(res.rglob("*.tmp")), "temporary files left behind"


def test_datasets_have_configured_sizes(tiny_run):
    yy = pd.read_parquet(tiny_run / "results/yinyang/data/train.parquet")
    assert list(yy.columns) == ["x0", "x1", "label"] and len(yy) == 600
    mn = pd.read_parquet(tiny_run / "results/mnist/data/test.parquet")
    assert mn.shape == (300, 785)
    assert mn["label"].nunique() == 10


def test_base_model_learns_yinyang(tiny_run):
    m = json.loads((tiny_run / "results/yinyang/draw0/base/metrics.json").read_text())
    assert set(m["protocols"]) == {"paper", "heldout"}
    assert m["protocols"]["paper"]["split"] == "train" and m["protocols"]["heldout"]["split"] == "test"
    assert m["protocols"]["paper"]["macro"] > 80  # 60 epochs on 600 points; chance is 33
    assert len(m["protocols"]["paper"]["per_class"]) == 3
    assert m["provenance"]["versions"]["torch"]
    curve = pd.read_parquet(tiny_run / "results/yinyang/draw0/base/curve.parquet")
    assert len(curve) == 60 and curve["loss"].iloc[-1] < curve["loss"].iloc[0]


def test_representations_layers_and_preprocessing(tiny_run):
    reps = pd.read_parquet(tiny_run / "results/yinyang/draw0/reps/train.parquet")
    assert sorted(reps["layer"].unique()) == list(range(6))  # L0..L5
    assert len(reps) == 6 * 600 and {"sample", "label", "layer", "h0", "h9"} <= set(reps.columns)
    layers, labels = load_reps(tiny_run / "results/mnist/draw0/reps/test.pt")
    assert np.stack(layers).shape == (3, 300, 32) and labels.shape == (300,)
    layers, _ = load_reps(tiny_run / "results/yinyang/draw0/reps/train.pt")
    pre = load_preprocessing(tiny_run / "results/yinyang/draw0/reps/preprocessing.safetensors")
    assert len(pre) == 6
    assert np.linalg.norm(pre[0].apply(layers[0])) == pytest.approx(100.0, rel=1e-6)
    np.testing.assert_allclose(pre[5].invert(pre[5].apply(layers[5])), layers[5], atol=1e-5)
    # the parquet and .pt hold the same numbers
    np.testing.assert_array_equal(reps.loc[reps.layer == 5, "h3"].to_numpy(), layers[5][:, 3])


def test_kae_accuracy_is_the_surrogates_and_the_table_its_mean(tiny_run):
    res = tiny_run / "results"
    # each KAE of the grid, run here as a surrogate (L0 -> KAE -> output layer), gives the recorded accuracy
    for ds, lams, last in (("yinyang", ("1", "0"), 5), ("mnist", ("0.001",), 2)):
        base = load_base_model(res / ds / "draw0/base/model.safetensors")
        pre = load_preprocessing(res / ds / "draw0/reps/preprocessing.safetensors", [0, last])
        reps = {split: load_reps(res / ds / f"draw0/reps/{split}.pt") for split in ("train", "test")}
        for lam in lams:
            for seed in (21, 365):
                d = res / ds / f"draw0/kae/iso{lam}/seed{seed}"
                kae, meta = load_kae(d / "model.safetensors")
                assert meta["seed"] == seed and meta["lambda_iso"] == float(lam)
                acc = json.loads((d / "accuracy.json").read_text())
                for rec in acc["protocols"].values():
                    layers, labels = reps[rec["split"]]
                    pred = surrogate_predictions(kae, base, pre[0], pre[last], layers[0])
                    assert_per_class_close(pred, labels, rec["per_class"], CLASSES[ds])
    table = pd.read_csv(res / "tables/accuracy.csv")
    assert {"dataset", "protocol", "model", "lambda_iso", "n_seeds", "acc_mean", "acc_std", "cell"} <= set(table.columns)
    kae = table[(table.model == "KAE") & (table.dataset == "yinyang") & (table.protocol == "paper")]
    assert len(kae) == 1 and kae.lambda_iso.iloc[0] == 1 and kae.n_seeds.iloc[0] == 2
    assert (table.draws == 1).all() and kae.seeds.iloc[0] == 2  # one base-network draw, two KAE seeds
    accs = [json.loads((res / f"yinyang/draw0/kae/iso1/seed{s}/accuracy.json").read_text())["protocols"]["paper"]["macro"]
            for s in (21, 365)]
    assert kae.acc_mean.iloc[0] == pytest.approx(np.mean(accs), abs=1e-4)
    assert kae.acc_std.iloc[0] == pytest.approx(np.std(accs), abs=1e-4)
    assert kae.cell.iloc[0] == f"{np.mean(accs):.2f} ({np.std(accs):.2f})"
    assert kae.acc_mean.iloc[0] > 60
    long = pd.read_csv(res / "tables/accuracy_long.csv")
    assert set(long[long.dataset == "yinyang"].lambda_iso.dropna()) == {0.0, 1.0}
    assert (res / "tables/accuracy.md").read_text().split("|")[1].strip() == "dataset"
    assert "\\begin{tabular}" in (res / "tables/accuracy.tex").read_text()
    prov = json.loads((res / "tables/accuracy.csv.provenance.json").read_text())
    assert prov["versions"]["kaepipe"] and "git_commit" in prov


def test_rerun_is_deterministic(tiny_run, tmp_path, mnist_root):
    """Same config and seeds -> identical weights and Parquet contents on the CPU."""
    targets = ["results/yinyang/draw0/reps/preprocessing.safetensors", "results/yinyang/draw0/kae/iso1/seed21/model.safetensors"]
    run_snakemake(tmp_path, "--cores", "2", *targets, mnist_root=mnist_root)
    from kaepipe.tensor_io import load_safetensors

    for rel in ("yinyang/draw0/base/model.safetensors", "yinyang/draw0/kae/iso1/seed21/model.safetensors",
                "yinyang/draw0/reps/preprocessing.safetensors"):
        a, _ = load_safetensors(tiny_run / "results" / rel)
        b, _ = load_safetensors(tmp_path / "results" / rel)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{rel}:{k}"
    for rel in ("yinyang/data/train.parquet", "yinyang/draw0/reps/test.parquet", "yinyang/draw0/kae/iso1/seed21/losses.parquet"):
        pd.testing.assert_frame_equal(pd.read_parquet(tiny_run / "results" / rel),
                                      pd.read_parquet(tmp_path / "results" / rel))


def test_dry_run_of_default_config_lists_every_rule(tmp_path, mnist_root):
    cmd = snakemake_cmd(tmp_path, "-n", "--quiet", "rules", mnist_root=mnist_root, configs=[str(REPO / "config.yaml")])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    for rule in ("dataset", "base_model", "representations", "kae", "surrogate_accuracy", "accuracy_table"):
        assert rule in out


def test_wide_kae_overlay_reruns_the_yinyang_kaes_for_their_new_params(tiny_run, mnist_root):
    """config/yinyang_wide_kae.yaml added to a finished run: Snakemake merges it and reruns only the
    Yin-Yang KAEs (their params changed) and what depends on them; nothing of MNIST, no base network."""
    cmd = snakemake_cmd(tiny_run, "-n", mnist_root=mnist_root,
                        configs=[*TINY_CONFIGS, str(REPO / "config" / "yinyang_wide_kae.yaml")])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    jobs = out.split("\nrule ")[1:]
    kae_jobs = [j for j in jobs if j.startswith("kae:")]
    n_yinyang = len(list((tiny_run / "results" / "yinyang").glob("draw*/kae/iso*/seed*/model.safetensors")))
    assert n_yinyang and len(kae_jobs) == n_yinyang, out[-3000:]
    assert all("dataset=yinyang" in j and "Params have changed" in j for j in kae_jobs), out[-3000:]
    assert not any(j.startswith(("base_model:", "representations:", "dataset:")) for j in jobs)
    assert not any("dataset=mnist" in j for j in jobs), out[-3000:]


def test_bad_config_stops_before_any_job(tmp_path, mnist_root):
    proc = run_snakemake(tmp_path, "--cores", "1", mnist_root=mnist_root, config=["device=tpu"], check=False)
    assert proc.returncode != 0
    assert "device" in proc.stderr and "tpu" in proc.stderr
    assert not (tmp_path / "results").exists()


def run_variants(tiny_run: Path, mnist_root: Path, *args: str) -> pd.DataFrame:
    """Run bench/variants.py on the tiny run's results; return its CSV."""
    out = tiny_run / f"variants_{len(list(tiny_run.glob('variants_*.csv')))}.csv"
    cmd = [sys.executable, str(REPO / "bench" / "variants.py"), *args, "--config", *TINY_CONFIGS,
           "--config-set", f"mnist_root={mnist_root}", "--results", str(tiny_run / "results"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tiny_run)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return pd.read_csv(out)


def test_variant_study_of_kaes_is_deterministic_and_applies_its_overrides(tiny_run, mnist_root):
    """bench/variants.py kae: one KAE per (variant, seed) on the pipeline's files, plus the paper's edit."""
    df = run_variants(tiny_run, mnist_root, "kae", "--dataset", "yinyang", "--seeds", "21", "--edit", "2",
                      "--variant", "a", "epochs=20", "--variant", "again", "epochs=20", "--variant", "frozen", "epochs=20", "lr=0")
    assert list(df["variant"]) == ["a", "again", "frozen"]
    for col in ("paper", "heldout", "edit2"):
        assert df[col].between(0, 100).all(), col
    a, again, frozen = (df.iloc[i] for i in range(3))
    cols = ["paper", "heldout", "edit2", "final_loss"]
    assert list(a[cols]) == list(again[cols])  # same seed, same settings: bit-identical on the CPU
    assert frozen["final_loss"] > 10 * a["final_loss"]  # lr 0 leaves it untrained: the override reached training


def test_variant_study_of_base_networks_writes_the_layer_row(tiny_run, mnist_root):
    """bench/variants.py base: trains the base network per variant and measures beta_0 of its layers."""
    df = run_variants(tiny_run, mnist_root, "base", "--dataset", "yinyang", "--variant", "e2", "epochs=2")
    row = df.iloc[0]
    assert row["variant"] == "e2" and 0 <= row["acc_test"] <= 100
    betti = ast.literal_eval(row["betti0"])
    assert len(betti) == 6 and all(1 <= b <= 300 for b in betti)  # L0..L5 of 300 held-out points
    e2 = tiny_run / "results" / "variants" / "yinyang" / "e2"
    assert (e2 / "model.safetensors").is_file()
    kae = run_variants(tiny_run, mnist_root, "kae", "--dataset", "yinyang", "--seeds", "21", "--base-dir", str(e2),
                       "--variant", "on_e2", "epochs=5")  # KAEs on that network's own layers
    assert kae["paper"].between(0, 100).all() and np.isfinite(kae["final_loss"]).all()


def planned(log: str) -> dict[str, int]:
    """Snakemake's job counts per rule (its "Job stats" table) from a run's or a dry run's log."""
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", log, flags=re.MULTILINE)
            if m.group(1) != "total"}


TWO_DRAWS = "datasets:\n  yinyang:\n    base:\n      seeds: [0, 1]\n  mnist:\n    base:\n      seeds: [0, 1]\n"


def test_dry_run_with_two_draws_plans_every_draw(tmp_path, mnist_root):
    """The tiny config with two base-network draws per dataset: a base network, representations, KAEs,
    surrogates, topology, edits and baselines per draw, from the same data splits; one table each."""
    overlay = tmp_path / "draws.yaml"
    overlay.write_text(TWO_DRAWS)
    cmd = snakemake_cmd(tmp_path, "-n", mnist_root=mnist_root, configs=[*TINY_CONFIGS, str(overlay)])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=tmp_path).stdout
    jobs = planned(out)
    assert jobs["dataset"] == 4  # 2 datasets x 2 splits, shared by the draws
    assert jobs["base_model"] == jobs["representations"] == jobs["topology_layers"] == 4  # 2 datasets x 2 draws
    assert jobs["kae"] == jobs["surrogate_accuracy"] == 2 * (4 + 2)  # draws x (Yin-Yang 2 x 2, MNIST 1 x 2)
    assert jobs["unlearn_edit"] == 2 * (2 + 2) and jobs["unlearn_baseline"] == 2 * (2 + 1)
    assert jobs["accuracy_table"] == jobs["topology_table"] == jobs["unlearn_tables"] == 1
    blocks = out.split("\nrule ")
    for draw in (0, 1):
        for rule in ("base_model", "kae", "unlearn_baseline"):
            for ds in ("yinyang", "mnist"):
                assert any(b.startswith(f"{rule}:") and f"dataset={ds}, draw={draw}" in b for b in blocks), (rule, ds)


def test_packs_train_the_same_kaes_as_one_job_each(tiny_run, tmp_path, mnist_root):
    """tests/config/packs.yaml trains the tiny grids in packs (Yin-Yang: the whole grid in one job; MNIST:
    one job per isometry weight). Every member's files appear where a one-KAE job writes them, carry
    their own (lambda_iso, seed), and equals the one-KAE job of the tiny run bit for bit (weights, training
    metrics, accuracies): the pack decides the scheduling, not the numbers.

    The same run adds a second Yin-Yang base-network draw (seed 1): it trains that draw's network and its
    own packs, leaves draw 0's network alone, and the tables aggregate over both draws."""
    import shutil

    work = tmp_path / "packs"
    for d in ("yinyang", "mnist"):  # the inputs of the KAEs; everything after them is made by the packs
        shutil.copytree(tiny_run / "results" / d / "data", work / "results" / d / "data")
        for stage in ("base", "reps"):
            shutil.copytree(tiny_run / "results" / d / "draw0" / stage, work / "results" / d / "draw0" / stage)
    overlay = tmp_path / "draws.yaml"
    overlay.write_text("datasets:\n  yinyang:\n    base:\n      seeds: [0, 1]\n")
    cmd = snakemake_cmd(work, "--cores", "2", "results/tables/accuracy.csv", "results/tables/editing.csv",
                        mnist_root=mnist_root,
                        configs=[*TINY_CONFIGS, str(REPO / "tests" / "config" / "packs.yaml"), str(overlay)])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    assert proc.returncode == 0, proc.stderr[-6000:]
    log = proc.stderr + proc.stdout
    jobs = planned(log)
    assert jobs["kae_yinyang_draw0_grid"] == jobs["kae_yinyang_draw1_grid"] == 1, log[-3000:]
    assert jobs["kae_mnist_draw0_iso0_001"] == 1 and "kae_mnist_draw1_iso0_001" not in jobs, log[-3000:]
    assert "kae" not in jobs
    assert jobs["base_model"] == 1 and jobs["representations"] == 1  # draw 1's; draw 0's network is reused
    for d, grid in (("yinyang", [(1, 21), (1, 365), (0, 21), (0, 365)]), ("mnist", [(0.001, 21), (0.001, 365)])):
        for lam, seed in grid:
            kdir = f"results/{d}/draw0/kae/iso{lam:g}/seed{seed}"
            packed = json.loads((work / kdir / "metrics.json").read_text())
            single = json.loads((tiny_run / kdir / "metrics.json").read_text())
            assert (packed["lambda_iso"], packed["seed"]) == (lam, seed) and packed["pack"]["members"] >= 2
            assert single["pack"]["members"] == 1
            assert packed["train_metrics"] == single["train_metrics"], kdir
            weights_p, weights_s = (load_file(str(r / kdir / "model.safetensors")) for r in (work, tiny_run))
            assert weights_p.keys() == weights_s.keys()
            assert all(torch.equal(weights_p[k], weights_s[k]) for k in weights_p), kdir
            acc_p = json.loads((work / kdir / "accuracy.json").read_text())["protocols"]
            acc_s = json.loads((tiny_run / kdir / "accuracy.json").read_text())["protocols"]
            assert acc_p == acc_s, kdir
    table = pd.read_csv(work / "results" / "tables" / "accuracy.csv")
    assert set(table.dataset) == {"yinyang", "mnist"}
    yy, mn = table[table.dataset == "yinyang"], table[table.dataset == "mnist"]
    assert (yy.draws == 2).all() and (mn.draws == 1).all()
    assert (yy[yy.model == "KAE"].seeds == 2).all() and (yy[yy.model == "KAE"].n_seeds == 4).all()
    assert (yy[yy.model == "MLP"].n_seeds == 2).all() and (mn[mn.model == "KAE"].n_seeds == 2).all()
    kae = yy[(yy.model == "KAE") & (yy.protocol == "paper")].iloc[0]
    accs = [json.loads((work / f"results/yinyang/draw{draw}/kae/iso1/seed{s}/accuracy.json").read_text())
            ["protocols"]["paper"]["macro"] for draw in (0, 1) for s in (21, 365)]
    assert kae.acc_mean == pytest.approx(np.mean(accs), abs=1e-4) and kae.acc_std == pytest.approx(np.std(accs), abs=1e-4)
    mlp = [json.loads((work / f"results/yinyang/draw{draw}/base/metrics.json").read_text())["protocols"]["paper"]["macro"]
           for draw in (0, 1)]
    assert yy[(yy.model == "MLP") & (yy.protocol == "paper")].acc_mean.iloc[0] == pytest.approx(np.mean(mlp), abs=1e-4)
    # the edits of a dataset's draw run in one job too, each written where a one-edit job writes it
    assert jobs["unlearn_edit_yinyang_draw0"] == jobs["unlearn_edit_yinyang_draw1"] == 1, log[-3000:]
    for d, lam, target, draws in (("yinyang", 1, 2, (0, 1)), ("mnist", 0.001, 4, (0,))):
        for draw in draws:
            for seed in (21, 365):
                edit = json.loads((work / f"results/{d}/draw{draw}/unlearn/iso{lam:g}/seed{seed}/class{target}"
                                   / "edit.json").read_text())
                assert (edit["target_class"], edit["seed"], edit["draw"]) == (target, seed, draw)
    editing = pd.read_csv(work / "results" / "tables" / "editing.csv")
    assert (editing[editing.dataset == "yinyang"].draws == 2).all() and (editing[editing.dataset == "yinyang"].n_seeds == 4).all()
