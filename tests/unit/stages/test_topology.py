"""The topology stage on small real data: a briefly trained ResMLP on Yin-Yang, its layers and two KAEs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from kaepipe import topology as T
from kaepipe.data import yinyang
from kaepipe.errors import ConfigError
from kaepipe.io import read_parquet
from kaepipe.nn.checkpoints import save_kae
from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder
from kaepipe.nn.resmlp import ResMLP, ResMLPConfig, record_layers
from kaepipe.nn.train import fit_kae, kae_train_config, seed_all
from kaepipe.report.tables import ISOMETRY_METRICS, TABLE_COLUMNS, isometry_markdown, isometry_tables, topology_tables
from kaepipe.represent import fit_preprocessing, save_preprocessing
from kaepipe.settings import topology_settings
from kaepipe.stages.paths import kae_paths, topology_reps_path
from kaepipe.stages.topology import (
    isometry_cloud,
    run_isometry,
    run_isometry_original,
    run_iterate_topology,
    run_layer_topology,
    use_threads,
)
from kaepipe.tensor_io import save_torch
from kaepipe.topology import compare_diagrams, subset_indices

N_TEST = 160
K = 4


def yy_ds(**topology) -> dict:
    """A Yin-Yang dataset config as the rules pass it (only the keys the stage reads)."""
    ds = {"name": "yinyang", "source": "yinyang", "classes": 3, "evaluation": {"paper": "train", "heldout": "test"},
          "base": {"seed": 0}, "kae": {"k": K}}
    if topology:
        ds["topology"] = topology
    return ds


@pytest.fixture(scope="module")
def stage_files(tmp_path_factory):
    """reps (train/test .pt), preprocessing and two KAEs (lambda_iso 1 and 0) of a small Yin-Yang run."""
    root = tmp_path_factory.mktemp("topo_stage")
    seed_all(0)
    x_tr, y_tr = yinyang(400, seed=42)
    x_te, y_te = yinyang(N_TEST, seed=40)
    torch.set_num_threads(1)
    net = ResMLP(ResMLPConfig(in_features=2, width=8, blocks=3, classes=3))
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    for _ in range(100):  # full-batch Adam: a few seconds, > 90 % training accuracy
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    net.eval()
    layers = {}
    for split, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
        layers[split] = torch.stack(record_layers(net, torch.from_numpy(x))).numpy()
        save_torch({"layers": torch.from_numpy(layers[split]), "labels": torch.from_numpy(y)}, root / f"{split}.pt")
    transforms = fit_preprocessing(list(layers["train"]), pca_dim=8)
    save_preprocessing(transforms, root / "pre.safetensors")
    x0 = torch.as_tensor(transforms[0].apply(layers["train"][0]), dtype=torch.float32)
    xl = torch.as_tensor(transforms[-1].apply(layers["train"][-1]), dtype=torch.float32)
    kaes = {}
    for lam in (1.0, 0.0):
        seed_all(21)
        model = KoopmanAutoencoder(KAEConfig(in_features=8, hidden=16, latent=12, k=K))
        cfg = kae_train_config({"epochs": 12, "batch_size": 128, "lr": 0.02}, seed=21)
        fit_kae(model, x0, xl, cfg, lam, log=lambda *_: None)
        path = root / f"kae{lam:g}.safetensors"
        save_kae(model, path, {"lambda_iso": lam, "seed": 21})
        kaes[lam] = path
    return {"root": root, "test": str(root / "test.pt"), "train": str(root / "train.pt"),
            "pre": str(root / "pre.safetensors"), "kae": kaes, "layers": layers, "transforms": transforms}


# ----------------------------------------------------------------------------------------------
# settings


def test_settings_defaults_and_overrides():
    s = topology_settings(yy_ds())
    # the documented defaults (README): Yin-Yang eps 0.25 for both, held-out split, every point,
    # Euclidean; the isometry study on up to 2000 points with H1 up to the 100,000th shortest edge
    assert (s["eps_layers"], s["eps_iterates"]) == (0.25, 0.25) and s["metric"] == "euclidean"
    assert s["split"] == "test" and s["points"] is None and s["isometry"]["points"] == 2000
    mn = topology_settings({"name": "mnist", "source": "mnist", "evaluation": {"paper": "test", "heldout": "test"}})
    assert (mn["eps_layers"], mn["eps_iterates"]) == (0.166, 0.14)
    s = topology_settings(yy_ds(protocol="paper", eps_layers=0.3, isometry={"points": 50}))
    assert s["split"] == "train" and s["eps_layers"] == 0.3 and s["eps_iterates"] == 0.25
    assert s["isometry"]["points"] == 50 and s["isometry"]["max_edges"] == 100_000  # the rest of the block kept
    with pytest.raises(ConfigError, match="metric"):
        topology_settings(yy_ds(metric="cosine"))
    with pytest.raises(ConfigError, match="eps_layers"):
        topology_settings(yy_ds(eps_layers=0))


def test_subset_indices_and_kae_paths():
    idx = subset_indices(100, 30, seed=3)
    assert len(idx) == 30 and len(set(idx)) == 30 and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(idx, subset_indices(100, 30, seed=3))
    np.testing.assert_array_equal(subset_indices(10, None, 0), np.arange(10))
    np.testing.assert_array_equal(subset_indices(10, 50, 0), np.arange(10))
    cfg = {"datasets": {"a": {"kae": {"lambda_iso": [1, 0.001], "main_lambda_iso": 1, "seeds": [5, 7]}}}}
    assert kae_paths(cfg, ["a"], "{dataset}/{lam}/{seed}", main_only=True) == ["a/1/5", "a/1/7"]
    assert kae_paths(cfg, ["a"], "{dataset}/{lam}") == ["a/1", "a/0.001"]
    assert kae_paths(cfg, ["a"], "{dataset}/{lam}/{seed}", lambda_tags=["0.001"]) == ["a/0.001/5", "a/0.001/7"]
    assert topology_reps_path({"datasets": {"a": {"source": "yinyang", "evaluation": {"paper": "train",
                                                                                         "heldout": "test"}}}},
                                "a", 3) == "results/a/draw3/reps/test.pt"


def test_use_threads_pins_torch_and_the_blas_pools():
    from threadpoolctl import threadpool_info, threadpool_limits

    torch_threads = torch.get_num_threads()
    try:
        with threadpool_limits(limits=None):  # restores the BLAS pools on exit
            text = use_threads(0)  # at least one thread
            assert torch.get_num_threads() == 1
            blas = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
            assert blas and set(blas) == {1}
            assert text.startswith("1 thread(s): torch 1") and "threadpoolctl" in text
    finally:
        torch.set_num_threads(torch_threads)


# ----------------------------------------------------------------------------------------------
# layers and iterates


def test_layer_topology_matches_library_and_curves(stage_files, tmp_path):
    f = stage_files
    table = run_layer_topology(yy_ds(eps_layers=0.5), f["test"], f["pre"], tmp_path / "l.parquet",
                                 tmp_path / "c.parquet", log=lambda *_: None)
    assert list(table.columns) == TABLE_COLUMNS
    assert table["step"].tolist() == list(range(4)) and (table["source"] == "mlp").all()
    assert (table["n"] == N_TEST).all() and table["betti0"].between(1, N_TEST).all()
    for layer in range(4):
        X = f["transforms"][layer].apply(f["layers"]["test"][layer])
        assert table["betti0"][layer] == T.betti0(X, 0.5)
    assert read_parquet(tmp_path / "l.parquet").equals(table)
    curves = read_parquet(tmp_path / "c.parquet", ["step", "eps", "betti0"])
    for step, c in curves.groupby("step"):
        assert c["eps"].iloc[0] == 0.0 and c["betti0"].iloc[0] <= N_TEST and c["betti0"].iloc[-1] == 1
        assert np.all(np.diff(c["eps"]) > 0) and np.all(np.diff(c["betti0"]) <= 0)
        # the step function at eps: the last row with eps_row <= eps
        at = c["betti0"].to_numpy()[np.searchsorted(c["eps"].to_numpy(), 0.5, side="right") - 1]
        assert at == table["betti0"][step]


def test_layer_topology_float32_gives_the_same_betti0(stage_files, tmp_path):
    f = stage_files
    a = run_layer_topology(yy_ds(eps_layers=0.5), f["test"], f["pre"], tmp_path / "a.parquet",
                             tmp_path / "ac.parquet", log=lambda *_: None)
    b = run_layer_topology(yy_ds(eps_layers=0.5, precision="float32"), f["test"], f["pre"], tmp_path / "b.parquet",
                             tmp_path / "bc.parquet", log=lambda *_: None)
    pd.testing.assert_frame_equal(a, b)


def test_layer_topology_subset_and_knn_metric(stage_files, tmp_path):
    f = stage_files
    ds = yy_ds(points=100, metric="knn_geodesic", k=3, eps_layers=1)
    table = run_layer_topology(ds, f["test"], f["pre"], tmp_path / "l.parquet", tmp_path / "c.parquet",
                                 log=lambda *_: None)
    assert (table["n"] == 100).all() and (table["metric"] == "knn_geodesic").all()
    idx = subset_indices(N_TEST, 100, 0)
    X = f["transforms"][2].apply(f["layers"]["test"][2][idx])
    assert table["betti0"][2] == T.knn_components(X, 3)[0]
    curves = read_parquet(tmp_path / "c.parquet")
    assert curves.groupby("step")["betti0"].first().eq(100).all()


def test_iterate_topology_path(stage_files, tmp_path):
    f = stage_files
    table = run_iterate_topology(yy_ds(eps_iterates=0.4), str(f["kae"][1.0]), f["test"], f["pre"],
                                   tmp_path / "i.parquet", tmp_path / "ic.parquet", log=lambda *_: None)
    assert table["step"].tolist() == list(range(K + 1)) and (table["source"] == "kae").all()
    assert (table["seed"] == 21).all() and (table["lambda_iso"] == 1.0).all()
    from kaepipe.nn.checkpoints import load_kae

    model, _ = load_kae(f["kae"][1.0])
    x0 = torch.as_tensor(f["transforms"][0].apply(f["layers"]["test"][0]), dtype=torch.float32)
    with torch.no_grad():
        last = model(x0).double().numpy()
        first = model.decode(model.encode(x0)).double().numpy()
    assert table["betti0"].iloc[-1] == T.betti0(last, 0.4)
    assert table["betti0"].iloc[0] == T.betti0(first, 0.4)
    curves = read_parquet(tmp_path / "ic.parquet")
    assert sorted(curves["step"].unique()) == list(range(K + 1))
    assert curves.groupby("step")["betti0"].apply(lambda b: bool(np.all(np.diff(b) <= 0))).all()


# ----------------------------------------------------------------------------------------------
# isometry


def test_compare_diagrams_identity_and_truncation():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 3))
    dg = T.persistence_diagrams(X, max_edges=800)
    metrics, curves = compare_diagrams(dg, dg)
    for key in ("bottleneck_h0", "bottleneck_h1", "wasserstein_h0", "wasserstein_h1", "betti0_curve_l1",
                "betti1_curve_l1"):
        assert metrics[key] == pytest.approx(0.0, abs=1e-12), key
    assert len(curves) == 2 * 200 and set(curves["cloud"]) == {"original", "encoded"}
    # a scaled copy: each diagram at its own threshold (same edge budget), so bars scale with the cloud
    dg2 = T.persistence_diagrams(2 * X, max_edges=800)
    assert dg2.attrs["max_edge_length"] == pytest.approx(2 * dg.attrs["max_edge_length"])
    metrics, _ = compare_diagrams(dg, dg2)
    assert metrics["common_threshold"] == pytest.approx(dg.attrs["max_edge_length"])
    finite = dg.loc[(dg["dim"] == 0) & np.isfinite(dg["death"]), "death"]
    assert 0 < metrics["bottleneck_h0"] <= finite.max() + 1e-12
    h1 = dg[(dg["dim"] == 1) & np.isfinite(dg["death"])]
    assert metrics["bottleneck_h1"] <= (h1["death"] - h1["birth"]).max() + 1e-12  # both sets to the diagonal
    assert metrics["original_bars_h1"] == metrics["encoded_bars_h1"] == (dg["dim"] == 1).sum()


def test_isometry_stage(stage_files, tmp_path):
    f = stage_files
    ds = yy_ds(isometry={"points": 120, "max_edges": 2000})
    orig = run_isometry_original(ds, f["test"], f["pre"], tmp_path / "orig.parquet", log=lambda *_: None)
    assert list(orig.columns) == ["dim", "birth", "death"] and set(orig["dim"]) == {0, 1}
    assert (orig["dim"] == 0).sum() == 120  # distinct points: 119 finite H0 bars and one essential
    out = {}
    for lam in (1.0, 0.0):
        d = tmp_path / f"iso{lam:g}"
        res = run_isometry(ds, [str(f["kae"][lam])], f["test"], f["pre"], str(tmp_path / "orig.parquet"),
                             d / "dg.parquet", d / "curves.parquet", d / "metrics.json", log=lambda *_: None)
        assert len(res) == 1
        out[lam] = res[0]
        saved = json.loads((d / "metrics.json").read_text())
        assert saved["results"][0]["seed"] == 21 and saved["lambda_iso"] == lam
        dg = read_parquet(d / "dg.parquet", ["seed", "dim", "birth", "death"])
        assert (dg["seed"] == 21).all()
        curves = read_parquet(d / "curves.parquet")
        assert {"t", "beta_0", "beta_1", "cloud", "seed"} <= set(curves.columns)
        assert len(curves) == 2 * 200
    for r in out.values():
        for m in ISOMETRY_METRICS:
            assert np.isfinite(r[m]) and r[m] >= 0, m
        assert r["points"] == 120 and r["dims"] == {"original": 8, "encoded": 12}
    X = isometry_cloud(ds, f["test"], f["pre"])
    from kaepipe.nn.checkpoints import load_kae

    model, _ = load_kae(f["kae"][1.0])
    with torch.no_grad():
        Z = model.encode(torch.as_tensor(X, dtype=torch.float32)).double().numpy()
    assert out[1.0]["distortion"] == pytest.approx(T.distance_distortion(X, Z), rel=1e-9)
    # the isometry penalty brings distances closer (lambda 1 against 0)
    assert out[1.0]["distortion"] < out[0.0]["distortion"]


# ----------------------------------------------------------------------------------------------
# tables


def test_topology_tables_summary_and_published():
    def part(dataset, source, seed, values, eps, lam=None):
        return pd.DataFrame({"dataset": dataset, "source": source, "seed": pd.array([seed] * len(values), "Int64"),
                             "step": range(len(values)), "eps": eps, "betti0": values,
                             "lambda_iso": np.nan if lam is None else lam, "n": 100, "metric": "euclidean"})

    parts = [part("mnist", "mlp", 0, [50, 10, 1, 1, 1], 0.166),
             part("mnist", "kae", 21, [90, 40, 5], 0.14, 0.001), part("mnist", "kae", 53, [80, 20, 3], 0.14, 0.001),
             part("yinyang", "mlp", 0, [7, 3], 0.25)]
    long, summary = topology_tables(parts)
    assert list(long.columns) == TABLE_COLUMNS and len(long) == 5 + 6 + 2
    kae = summary[(summary.source == "kae")].set_index("step")
    assert kae.loc[0, "betti0_mean"] == 85 and kae.loc[1, "betti0_min"] == 20 and kae.loc[2, "betti0_max"] == 5
    assert (kae["n_seeds"] == 2).all()
    assert kae["published"].tolist() == [8633, 7655, 5153]
    mlp = summary[(summary.source == "mlp") & (summary.dataset == "mnist")]
    assert mlp["published"].tolist() == [368, 10, 1, 1, 1]
    assert summary[summary.dataset == "yinyang"]["published"].isna().all()
    _, other_eps = topology_tables([part("mnist", "mlp", 0, [5, 1], 0.4)])
    assert other_eps["published"].isna().all()


def test_isometry_tables_mean_population_std_and_trend():
    results = []
    for lam, dist in ((1.0, [0.1, 0.3]), (0.01, [0.5, 0.5]), (0.0, [0.9, 1.1])):
        for seed, d in zip((21, 53), dist):
            r = {"dataset": "yy", "lambda_iso": lam, "seed": seed, "points": 50, "common_threshold": 1.0,
                 "threshold": {"original": 1.0, "encoded": 2.0}}
            r.update(dict.fromkeys(ISOMETRY_METRICS, d))
            results.append(r)
    long, table, trend = isometry_tables(results)
    assert len(long) == 6 and len(table) == 3
    row = table[table.lambda_iso == 1.0].iloc[0]
    assert row["distortion_mean"] == pytest.approx(0.2) and row["distortion_std"] == pytest.approx(0.1)  # ddof 0
    assert trend["yy"]["bottleneck_h1"] == pytest.approx(-1.0)
    md = isometry_markdown(table, trend)
    assert "0.2 (0.1)" in md and "Spearman" in md
