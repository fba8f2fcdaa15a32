"""The topology stage in the tiny end-to-end run: layer and iterate beta_0 tables, curves, isometry table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import pdist, squareform

from kaepipe.nn.checkpoints import load_kae
from kaepipe.represent import load_preprocessing, load_reps
from kaepipe.topology import subset_indices

pytestmark = pytest.mark.slow

# tiny config: Yin-Yang 6 layers (L0..L5), k = 100, 300 test points, lambda_iso {1, 0};
# MNIST 3 layers (L0..L2), k = 5, a 250-point subset of the 300 test digits, lambda_iso {0.001}
LAYERS = {"yinyang": 6, "mnist": 3}
K = {"yinyang": 100, "mnist": 5}
POINTS = {"yinyang": 300, "mnist": 250}
MAIN_LAMBDA = {"yinyang": 1.0, "mnist": 0.001}
LAMBDAS = {"yinyang": [1.0, 0.0], "mnist": [0.001]}
SEEDS = [21, 365]
EPS = {"yinyang": {"layers": 0.25, "iterates": 0.25},  # Yin-Yang's default (README: our choice)
       "mnist": {"layers": 1.5, "iterates": 1.5}}  # tests/config/tiny.yaml


def test_topology_table_rows(tiny_run):
    table = pd.read_csv(tiny_run / "results/tables/topology.csv")
    assert list(table.columns)[:7] == ["dataset", "source", "draw", "seed", "step", "eps", "betti0"]
    assert (table["draw"] == 0).all()  # the tiny config's one base-network draw
    assert set(table["source"]) == {"mlp", "kae"}
    for ds in ("yinyang", "mnist"):
        rows = table[table.dataset == ds]
        assert (rows["betti0"] >= 1).all() and (rows["betti0"] <= POINTS[ds]).all()
        assert (rows["n"] == POINTS[ds]).all()
        mlp = rows[rows.source == "mlp"]
        assert mlp["step"].tolist() == list(range(LAYERS[ds]))  # one row per layer
        kae = rows[rows.source == "kae"]
        assert sorted(kae["seed"].unique()) == SEEDS
        assert (kae["lambda_iso"] == MAIN_LAMBDA[ds]).all()
        for _seed, g in kae.groupby("seed"):
            assert g["step"].tolist() == list(range(K[ds] + 1))  # iterates t = 0..k
    summary = pd.read_csv(tiny_run / "results/tables/topology_summary.csv")
    kae = summary[(summary.source == "kae") & (summary.dataset == "mnist")]
    assert len(kae) == K["mnist"] + 1 and (kae["n_seeds"] == 2).all()
    assert (summary["draws"] == 1).all() and (kae["seeds"] == 2).all() and summary[summary.source == "mlp"].seeds.isna().all()
    assert (kae["betti0_min"] <= kae["betti0_mean"]).all() and (kae["betti0_mean"] <= kae["betti0_max"]).all()
    assert (tiny_run / "results/tables/topology_summary.md").read_text().split("|")[1].strip() == "dataset"


def test_topology_curves_are_monotone_and_match_the_table(tiny_run):
    res = tiny_run / "results"
    table = pd.read_csv(res / "tables/topology.csv")
    files = [("mlp", None, res / f"{ds}/draw0/topology/layers_curves.parquet", ds) for ds in LAYERS]
    files += [("kae", s, res / f"{ds}/draw0/topology/iterates/iso{MAIN_LAMBDA[ds]:g}/seed{s}_curves.parquet", ds)
              for ds in LAYERS for s in SEEDS]
    for source, seed, path, ds in files:
        curves = pd.read_parquet(path)
        for step, c in curves.groupby("step"):
            eps, b0 = c["eps"].to_numpy(), c["betti0"].to_numpy()
            assert np.all(np.diff(eps) > 0) and np.all(np.diff(b0) <= 0), (path, step)  # non-increasing in eps
            assert b0[-1] == 1 and b0[0] <= POINTS[ds]
            row = table[(table.dataset == ds) & (table.source == source) & (table.step == step)]
            if seed is not None:
                row = row[row.seed == seed]
            at = b0[np.searchsorted(eps, row["eps"].iloc[0], side="right") - 1]
            assert at == row["betti0"].iloc[0]


def test_isometry_table_and_diagrams(tiny_run):
    res = tiny_run / "results"
    iso = pd.read_csv(res / "tables/isometry.csv")
    expected = {(ds, lam) for ds, lams in LAMBDAS.items() for lam in lams}
    assert set(zip(iso["dataset"], iso["lambda_iso"])) == expected and len(iso) == len(expected)
    assert (iso["n_seeds"] == 2).all() and (iso["points"] == 200).all()
    for m in ("bottleneck_h0", "bottleneck_h1", "wasserstein_h0", "wasserstein_h1", "distortion"):
        assert np.isfinite(iso[f"{m}_mean"]).all() and (iso[f"{m}_mean"] >= 0).all(), m
        assert (iso[f"{m}_std"] >= 0).all()
    long = pd.read_csv(res / "tables/isometry_long.csv")
    assert len(long) == 2 * len(expected)
    one = long[(long.dataset == "yinyang") & (long.lambda_iso == 1.0)]["distortion"]
    row = iso[(iso.dataset == "yinyang") & (iso.lambda_iso == 1.0)].iloc[0]
    assert row["distortion_mean"] == pytest.approx(one.mean(), rel=1e-5)
    # the long CSV holds 6 significant digits, so a std recomputed from it is off by up to ~1e-5 x |value|
    assert row["distortion_std"] == pytest.approx(one.std(ddof=0), abs=1e-5 * one.abs().max())
    assert "Spearman" in (res / "tables/isometry.md").read_text()
    orig = pd.read_parquet(res / "yinyang/draw0/topology/isometry/original_diagram.parquet")
    assert list(orig.columns) == ["dim", "birth", "death"] and set(orig["dim"]) == {0, 1}
    dg = pd.read_parquet(res / "yinyang/draw0/topology/isometry/iso0/diagrams.parquet")
    assert list(dg.columns) == ["seed", "dim", "birth", "death"] and sorted(dg["seed"].unique()) == SEEDS
    metrics = json.loads((res / "mnist/draw0/topology/isometry/iso0.001/metrics.json").read_text())
    assert [r["seed"] for r in metrics["results"]] == SEEDS
    assert metrics["results"][0]["threshold"]["original"] > 0


def betti0_by_scipy(X: np.ndarray, eps: float) -> int:
    """beta_0 at eps: connected components of the graph joining points at distance <= eps (single linkage)."""
    return int(connected_components(csr_matrix(squareform(pdist(X)) <= eps), directed=False)[0])


def test_topology_table_agrees_with_scipy_on_the_run_files(tiny_run):
    """beta_0 of every layer and of the first and last decoded KAE iterate, recomputed here from the
    representation files and the checkpoints with scipy, equals the table's."""
    res = tiny_run / "results"
    table = pd.read_csv(res / "tables/topology.csv")
    for ds, n_layers in LAYERS.items():
        raw, _ = load_reps(res / ds / "draw0/reps/test.pt")
        idx = subset_indices(len(raw[0]), POINTS[ds], 0)  # the stage's fixed subset (topology seed 0)
        assert len(idx) == POINTS[ds]
        pre = load_preprocessing(res / ds / "draw0/reps/preprocessing.safetensors")
        rows = table[table.dataset == ds]
        for layer in range(n_layers):
            row = rows[(rows.source == "mlp") & (rows.step == layer)].iloc[0]
            assert row.eps == EPS[ds]["layers"]
            assert row.betti0 == betti0_by_scipy(pre[layer].apply(raw[layer][idx]), EPS[ds]["layers"]), (ds, layer)
        x0 = torch.as_tensor(pre[0].apply(raw[0][idx]), dtype=torch.float32)
        for seed in SEEDS:
            kae, _ = load_kae(res / ds / f"draw0/kae/iso{MAIN_LAMBDA[ds]:g}/seed{seed}/model.safetensors")
            with torch.no_grad():
                z = kae.encode(x0)
                ends = {0: kae.decode(z), K[ds]: kae.decode(z @ kae.operator(K[ds]))}  # psi(phi(x0) O_t)
            for t, X in ends.items():
                row = rows[(rows.source == "kae") & (rows.seed == seed) & (rows.step == t)].iloc[0]
                assert row.eps == EPS[ds]["iterates"]
                assert row.betti0 == betti0_by_scipy(X.double().numpy(), EPS[ds]["iterates"]), (ds, seed, t)
