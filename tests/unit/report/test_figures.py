"""Figures and the summary on small synthetic data: shapes, determinism of the bytes, published values."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import kaepipe.stages.figures as stage_figures
from kaepipe.published import published_topology
from kaepipe.report.figures import (
    _pyplot,
    align_to,
    class_names,
    editing_figure,
    isometry_figure,
    iterate_selection,
    layer_pcs,
    layers_figure,
    palette,
    path_figure,
    pca,
    save_figure,
    subsample,
    topology_figure,
    training_figure,
)
from kaepipe.report.summary import (
    HIDDEN,
    accuracy_comparison,
    editing_comparison,
    parse_markdown_tables,
    topology_comparison,
    topology_rows_shown,
    walltime_table,
)
from kaepipe.report.tables import fmt
from kaepipe.settings import pick_lambdas
from kaepipe.stages.figures import run_editing_figure, run_layers_figure, run_path_figure
from kaepipe.stages.summary import run_summary


@pytest.fixture
def blobs():
    """Three labelled Gaussian blobs in 6-D, 90 points."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 6)) * 4
    labels = np.repeat(np.arange(3), 30)
    return centres[labels] + rng.normal(size=(90, 6)), labels


def _files(tmp_path: Path, name: str) -> tuple[Path, Path]:
    return tmp_path / f"{name}.png", tmp_path / f"{name}.pdf"


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def test_palette_and_names():
    assert palette(3, "yinyang") == ["#fc9918", "#a779aa", "#4c3191"]
    assert class_names(3, "yinyang") == ["yin", "yang", "dot"]
    assert len(set(palette(10, "mnist"))) == 10 and len(set(palette(12, "x"))) == 12
    assert class_names(10, "mnist")[4] == "4"


def test_subsample_is_fixed_and_sorted():
    a, b = subsample(5000, 2000), subsample(5000, 2000)
    assert np.array_equal(a, b) and len(a) == 2000 and np.all(np.diff(a) > 0)
    assert np.array_equal(subsample(300, 2000), np.arange(300))
    assert not np.array_equal(subsample(5000, 2000, seed=1), a)


def test_pca_and_procrustes_alignment(blobs):
    x, _ = blobs
    p = pca(x)
    assert p.shape == (90, 3)
    np.testing.assert_allclose(p.mean(0), 0, atol=1e-10)
    assert np.all(np.diff(p.var(0)) <= 1e-12)  # ordered by variance
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    np.testing.assert_allclose(align_to(p @ q, p), p, atol=1e-8)  # undoes a rotation
    assert pca(x[:, :2]).shape == (90, 3)  # padded when there are fewer features


def test_pick_lambdas_and_iterates():
    assert pick_lambdas([1, 0.1, 0.01, 0.001, 0.0001, 0]) == [1.0, 0.001, 0.0]
    assert pick_lambdas([1, 0]) == [1.0, 0.0]
    assert pick_lambdas([0.001]) == [0.001]
    assert pick_lambdas([0.5, 0.2, 0.1, 0.05]) == [0.5, 0.1, 0.05]
    assert iterate_selection(10) == [0, 3, 6, 10]
    assert iterate_selection(100) == [0, 33, 66, 100]
    assert iterate_selection(1) == [0, 1]


def test_layer_pcs_are_the_papers_preprocessing(blobs):
    x, _ = blobs
    layers = [x, np.tanh(x), np.tanh(x) * 2 + 1]
    pcs = layer_pcs(layers)
    assert [p.shape for p in pcs] == [(90, 3)] * 3
    for p in pcs:
        assert np.linalg.norm(p) == pytest.approx(100.0)


# ---------------------------------------------------------------------------------------------
# Figures: every kind draws and saves; the bytes are deterministic
# ---------------------------------------------------------------------------------------------

def test_save_figure_is_deterministic_and_atomic(tmp_path, blobs):
    x, y = blobs
    digests = []
    for name in ("a", "b"):
        fig = layers_figure([pca(x), pca(x ** 2)], y, palette(3, "yinyang"), class_names(3, "yinyang"),
                              title="t")
        png, pdf = _files(tmp_path, name)
        save_figure(fig, png, pdf)
        digests.append((png.read_bytes(), pdf.read_bytes()))
    assert digests[0] == digests[1]
    png_bytes, pdf_bytes = digests[0]
    assert png_bytes.startswith(b"\x89PNG") and pdf_bytes.startswith(b"%PDF")
    assert b"CreationDate" not in pdf_bytes and b"Matplotlib" not in pdf_bytes
    assert b"Software" not in png_bytes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pdf", "a.png", "b.pdf", "b.png"]  # no temp files


def test_save_figure_failure_leaves_nothing(tmp_path, monkeypatch):
    fig = _pyplot().figure()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError):
        save_figure(fig, tmp_path / "x.png", tmp_path / "x.pdf")
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_isometry_figure_with_curves(tmp_path, blobs):
    x, y = blobs
    t = np.linspace(0, 3, 20)
    curves = pd.concat([pd.DataFrame({"source": s, "t": t, "beta_0": np.maximum(1, 90 - 30 * t).astype(int),
                                      "beta_1": (t > 1).astype(int)}) for s in ("original", "1", "0")])
    fig = isometry_figure(x, {"1": x * 1.01, "0": x[:, :3] * 5}, y, palette(3), class_names(3), curves, "iso")
    assert len(fig.axes) == 3 + 2
    save_figure(fig, *_files(tmp_path, "iso"))
    assert (tmp_path / "iso.png").stat().st_size > 1000


def test_topology_figure(tmp_path, blobs):
    x, y = blobs
    layers = pd.DataFrame({"layer": range(5), "beta_0": [368, 10, 1, 1, 1]})
    its = pd.DataFrame([{"t": t, "seed": s, "beta_0": 1000 / (t + 1) + s} for t in range(11) for s in (1, 2)])
    pts = {t: x * (1 + t) for t in iterate_selection(10)}
    fig = topology_figure(layers, its, pts, y, palette(3), class_names(3), published_layers=[368, 10, 1, 1, 1],
                            published_iterates=[np.nan] * 11, eps_layers=0.166, eps_iterates=0.14, title="topo")
    assert len(fig.axes) == 2 + 4
    assert fig.axes[0].get_yscale() == "log" and fig.axes[1].get_yscale() == "log"
    save_figure(fig, *_files(tmp_path, "topo"))


def test_editing_training_and_path_figures(tmp_path, blobs):
    x, y = blobs
    fig = editing_figure(x, x + (y == 1)[:, None] * 3.0, y, 1, palette(3), class_names(3))
    assert len(fig.axes) == 2
    save_figure(fig, *_files(tmp_path, "edit"))
    curve = pd.DataFrame({"epoch": range(5), "loss": np.linspace(2, 0.1, 5), "acc": np.linspace(0.3, 0.99, 5)})
    losses = pd.DataFrame([{"lambda_iso": lam, "seed": s, "epoch": e, "total": 1 / (e + 1), "recon": 0.5 / (e + 1),
                            "state": 0.3, "latent": 0.1, "iso": np.nan if lam == 0 else 2.0}
                           for lam in (1.0, 0.0) for s in (1, 2) for e in range(5)])
    save_figure(training_figure(curve, losses, 1.0), *_files(tmp_path, "train"))
    layers = np.stack([x[:4, :2] * (i + 1) for i in range(6)])
    path = np.stack([x[:4, :2] * (1 + t / 20) for t in range(101)])
    fig = path_figure(layers, path, x[:, :2], y, y[:4], palette(3), class_names(3), "path")
    assert len(fig.axes) == 2
    save_figure(fig, *_files(tmp_path, "path"))
    assert all(p.stat().st_size > 1000 for p in tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------
# Stage entry points on small real files
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def small_stage(tmp_path, blobs):
    """A reps file (3 layers), its preprocessing, a KAE checkpoint and an edited copy, as the pipeline writes them."""
    from kaepipe.nn.checkpoints import save_kae
    from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder
    from kaepipe.represent import fit_preprocessing, save_preprocessing
    from kaepipe.tensor_io import save_torch
    from kaepipe.unlearn import save_edited

    x, y = blobs
    layers = np.stack([x, np.tanh(x), np.maximum(x, 0)]).astype(np.float32)
    save_torch({"layers": torch.from_numpy(layers), "labels": torch.from_numpy(y)}, tmp_path / "train.pt")
    save_preprocessing(fit_preprocessing(list(layers)), tmp_path / "pre.safetensors")
    torch.manual_seed(0)
    kae = KoopmanAutoencoder(KAEConfig(in_features=6, hidden=8, latent=7, k=4))
    save_kae(kae, tmp_path / "kae.safetensors", {"lambda_iso": 1.0, "seed": 21})
    op = kae.operator_matrix()
    save_edited(kae, {"paper": op * 0.5}, tmp_path / "edited.safetensors")
    return tmp_path, {"name": "toy", "source": "toy", "classes": 3, "evaluation": {"paper": "train"}}


def test_run_layers_figure_draws_each_layers_top_3_principal_components(small_stage, monkeypatch):
    from kaepipe.represent import load_reps

    d, ds = small_stage
    seen = {}
    monkeypatch.setattr(stage_figures, "layers_figure", lambda points, labels, *a, **k: seen.update(
        points=points, labels=labels) or _pyplot().figure())
    run_layers_figure(ds, d / "train.pt", d / "l.png", d / "l.pdf", log=lambda *_: None)
    layers, labels = load_reps(d / "train.pt")
    assert len(seen["points"]) == 3 and all(p.shape == (90, 3) for p in seen["points"])  # 90 points < N_POINTS
    np.testing.assert_array_equal(seen["labels"], labels)
    for pts in seen["points"]:
        np.testing.assert_allclose(pts.mean(0), 0, atol=1e-9)
        assert np.linalg.norm(pts) == pytest.approx(100.0)
    # the last layer (the alignment's anchor): its top-3 principal components, scaled to norm 100, up to sign
    X = layers[-1].astype(np.float64) - layers[-1].mean(0)
    _, _, vt = np.linalg.svd(X, full_matrices=False)
    pcs = X @ vt[:3].T
    np.testing.assert_allclose(np.abs(seen["points"][-1]), np.abs(pcs * 100 / np.linalg.norm(pcs)), atol=1e-6)
    assert (d / "l.png").read_bytes().startswith(b"\x89PNG") and (d / "l.pdf").read_bytes().startswith(b"%PDF")


def test_run_path_figure_draws_the_kae_path_in_the_last_layers_plane(small_stage, monkeypatch):
    """The layers and the decoded KAE iterates of a few samples, and every point's last layer as the
    background, all projected on the top-2 principal directions of the (preprocessed) last layer."""
    from kaepipe.nn.checkpoints import load_kae
    from kaepipe.represent import load_preprocessing, load_reps

    d, ds = small_stage
    seen = {}
    monkeypatch.setattr(stage_figures, "path_figure", lambda layers, path, bg, bg_labels, sample_labels, *a, **k:
                        seen.update(layers=layers, path=path, bg=bg, sample_labels=sample_labels)
                        or _pyplot().figure())
    run_path_figure(ds, d / "train.pt", d / "pre.safetensors", d / "kae.safetensors", d / "p.png", d / "p.pdf",
                    log=lambda *_: None)
    layers, labels = load_reps(d / "train.pt")
    pre = load_preprocessing(d / "pre.safetensors")
    zs = [pre[i].apply(x) for i, x in enumerate(layers)]
    mean = zs[-1].mean(0)
    _, _, vt = np.linalg.svd(zs[-1] - mean, full_matrices=False)
    bg = (zs[-1] - mean) @ vt[:2].T
    signs = np.sign((seen["bg"] * bg).sum(0))  # each axis may be flipped
    np.testing.assert_allclose(seen["bg"], bg * signs, atol=1e-6)
    proj = lambda a: (a - mean) @ vt[:2].T * signs  # noqa: E731
    idx = stage_figures.pick_samples(labels, per_class=2, max_classes=3)  # the samples drawn
    assert len(idx) == 6 and sorted(np.bincount(labels[idx])) == [2, 2, 2]  # two of each class
    np.testing.assert_array_equal(seen["sample_labels"], labels[idx])
    for z, drawn in zip(zs, seen["layers"]):
        np.testing.assert_allclose(drawn, proj(z[idx]), atol=1e-6)
    kae, _ = load_kae(d / "kae.safetensors")
    x0 = torch.as_tensor(zs[0][idx], dtype=torch.float32)
    with torch.no_grad():
        first, last = kae.decode(kae.encode(x0)), kae(x0)  # psi(phi(x0)) and psi(phi(x0) O_k)
    assert seen["path"].shape == (4 + 1, 6, 2)  # t = 0..k
    np.testing.assert_allclose(seen["path"][0], proj(first.double().numpy()), atol=1e-4)
    np.testing.assert_allclose(seen["path"][-1], proj(last.double().numpy()), atol=1e-4)


def test_run_editing_figure_uses_the_edited_operator(small_stage, monkeypatch):
    d, ds = small_stage
    seen = {}
    monkeypatch.setattr(stage_figures, "editing_figure", lambda before, after, *a, **k: seen.update(b=before, a=after)
                        or _pyplot().figure())
    run_editing_figure(ds, d / "train.pt", d / "pre.safetensors", d / "kae.safetensors", d / "edited.safetensors",
                         1, d / "e.png", d / "e.pdf", log=lambda *_: None)
    np.testing.assert_allclose(seen["a"], 0.5 * seen["b"], rtol=1e-5, atol=1e-6)
    assert (d / "e.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------

def _accuracy_csv() -> pd.DataFrame:
    return pd.DataFrame([
        {"dataset": "yinyang", "protocol": "paper", "split": "train", "model": "MLP", "lambda_iso": np.nan,
         "n_seeds": 1, "acc_mean": 99.0, "acc_std": 0.0, "cell": "99.00"},
        {"dataset": "yinyang", "protocol": "paper", "split": "train", "model": "KAE", "lambda_iso": 1.0,
         "n_seeds": 5, "acc_mean": 98.5, "acc_std": 0.25, "cell": "98.50 (0.25)"},
        {"dataset": "yinyang", "protocol": "heldout", "split": "test", "model": "KAE", "lambda_iso": 1.0,
         "n_seeds": 5, "acc_mean": 97.0, "acc_std": 0.5, "cell": "97.00 (0.50)"},
    ])


def test_accuracy_comparison_against_published():
    t = accuracy_comparison(_accuracy_csv())
    assert t.published.tolist() == ["99.31", "98.75 (0.15)", "-"]
    assert t.ours.tolist() == ["99.00", "98.50 (0.25)", "97.00 (0.50)"]
    assert t.difference.iloc[0] == pytest.approx(-0.31) and t.difference.iloc[1] == pytest.approx(-0.25)
    assert math.isnan(t.difference.iloc[2])


def test_topology_published_values_and_eps():
    assert published_topology("mnist", "mlp", 0, 0.166) == 368
    assert published_topology("mnist", "kae", 10, 0.14) == 9
    # the paper's eps carried to a preprocessing fitted on 10k digits: eps * sqrt(6)
    assert published_topology("mnist", "mlp", 1, 0.4066, n_train=10000) == 10
    assert math.isnan(published_topology("mnist", "mlp", 1, 0.4066))
    assert math.isnan(published_topology("mnist", "mlp", 1, 0.25, n_train=10000))
    assert math.isnan(published_topology("yinyang", "mlp", 0, 0.166))
    assert math.isnan(published_topology("mnist", "mlp", 7, 0.166))
    long = pd.DataFrame([{"dataset": "mnist", "source": "kae", "seed": s, "step": t, "eps": 0.14, "betti0": b,
                          "lambda_iso": 0.001, "n": 10000, "metric": "euclidean"}
                         for s, bs in ((1, (8000, 7000)), (2, (9000, 7300))) for t, b in enumerate(bs)])
    t = topology_comparison(long)
    assert t.ours.tolist() == ["8500.0 (500.0)", "7150.0 (150.0)"]
    assert t.published.tolist() == ["8633", "7655"]
    assert t.difference.tolist() == [8500 - 8633, 7150 - 7655]
    assert t.ours_min.tolist() == [8000, 7000]


def test_topology_rows_shown_keeps_ends():
    df = pd.DataFrame({"dataset": "d", "model": "kae", "lambda_iso": 1.0, "step": range(101), "x": range(101)})
    shown = topology_rows_shown(df)
    assert shown.step.tolist() == list(range(0, 101, 10))


def test_editing_comparison_reads_the_unlearning_table():
    editing = pd.DataFrame([
        {"dataset": "mnist", "protocol": "paper", "split": "test", "method": "paper", "target_class": 4,
         "n_seeds": 3, "target": "98.00 (0.10) -> 0.00 (0.00)", "target_before_mean": 98.0,
         "target_before_std": 0.1, "target_after_mean": 0.0, "target_after_std": 0.0,
         "retained_before_mean": 97.0, "retained_before_std": 0.2, "retained_after_mean": 96.0,
         "retained_after_std": 0.3},
        {"dataset": "mnist", "protocol": "heldout", "split": "test", "method": "paper", "target_class": 4,
         "n_seeds": 3, "target": "", "target_before_mean": 98.0, "target_before_std": 0.1,
         "target_after_mean": 0.0, "target_after_std": 0.0},
    ])
    t = editing_comparison(editing)
    assert t.published_before.tolist() == ["98.29 (0.08)", "-"]
    assert t.ours_before.iloc[0] == "98.00 (0.10)" and t.ours_after.iloc[0] == "0.00 (0.00)"
    assert t.difference_before.iloc[0] == pytest.approx(98.0 - 98.29)
    assert t.ours_retained.iloc[0] == "97.00 (0.20) -> 96.00 (0.30)"


def test_walltime_table(tmp_path):
    for stage, job, s in (("kae", "a", 10.0), ("kae", "b", 30.0), ("figures", "x", 2.5)):
        p = tmp_path / stage / f"{job}.tsv"
        p.parent.mkdir(exist_ok=True)
        p.write_text(f"s\th:m:s\tmax_rss\n{s}\t0:00:{int(s):02d}\t100\n")
    (tmp_path / "kae" / "broken.tsv").write_text("nothing\n")
    t = walltime_table(sorted(tmp_path.glob("*/*.tsv")))
    assert t.stage.tolist() == ["figures", "kae", "all"]
    assert t.jobs.tolist() == [1, 2, 3] and t.total_s.tolist() == [2.5, 40.0, 42.5]
    assert t.max_s.tolist() == [2.5, 30.0, 30.0]


def test_run_summary_numbers_match_its_csv(tmp_path):
    (tmp_path / "accuracy.csv").write_text(_accuracy_csv().to_csv(index=False))
    outs = {n: {e: str(tmp_path / f"summary_{n}.{e}") for e in ("csv", "md", "tex")}
            for n in ("accuracy", "editing")}
    config = {"run": ["yinyang"], "datasets": {"yinyang": {"kae": {"seeds": [1]}}, "mnist": {}}}
    run_summary(config, {"accuracy": str(tmp_path / "accuracy.csv")}, str(tmp_path / "summary.md"),
                outs, ["results/figures/a.png"], log=lambda *_: None)
    md = (tmp_path / "summary.md").read_text()
    assert "## Configuration" in md and "mnist" not in md.split("## Configuration")[1].split("##")[0]
    assert re.search(r"^\| torch +\|", md, flags=re.MULTILINE) and "git commit" in md and "`results/figures/a.png`" in md
    tables = parse_markdown_tables(md)
    acc = pd.read_csv(tmp_path / "summary_accuracy.csv")
    shown = tables[0]
    assert list(shown.columns) == [c for c in acc.columns if c not in HIDDEN]
    for col in shown.columns:
        assert shown[col].tolist() == [fmt(v) for v in acc[col]], col
    assert len(tables) == 2 and "Wall time" not in md  # the accuracy and library tables; times: timings.md
    assert pd.read_csv(tmp_path / "summary_editing.csv").note.iloc[0].startswith("no editing")
    assert "\\begin{tabular}" in (tmp_path / "summary_accuracy.tex").read_text()
