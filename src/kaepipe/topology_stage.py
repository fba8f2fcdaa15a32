"""The topology stage: beta_0 of layers and KAE iterates, and the isometry study (METHOD.md section 7).

Stage functions called by the workflow scripts (``workflow/scripts/topology_*.py``,
``isometry*.py``); the geometry itself lives in :mod:`kaepipe.topology`.

* Layer topology: beta_0 at ``eps_layers`` of every preprocessed base layer of the evaluation points
  (the split of ``topology.protocol``, by default ``heldout``), plus the whole beta_0(eps) curve.
* Iterate topology: beta_0 at ``eps_iterates`` of every decoded KAE iterate psi(K^t phi(x0)),
  t = 0..k, of one KAE, plus the whole curve.
* Isometry: the Rips diagrams (H0 exact, H1 up to a threshold) of the preprocessed last layer x_L
  of up to ``isometry.points`` evaluation points and of its encoding phi(x_L); bottleneck and
  Wasserstein distances, Betti curves on a common grid, and the pairwise-distance distortion.

The ``topology`` block of a dataset is optional; :func:`topology_settings` fills in the defaults.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from kaepipe import topology as T
from kaepipe.errors import ConfigError, DataError

Log = Callable[[str], None]

# eps of the paper (MNIST, all 10k test points, training fit on 60k digits): layers and iterates.
PAPER_EPS = {"layers": 0.166, "iterates": 0.14}
# Published MNIST beta_0 (METHOD.md section 7): base layers L0..L4 at 0.166, KAE iterate means at 0.14.
PUBLISHED_MNIST = {
    "mlp": [368, 10, 1, 1, 1],
    "kae": [8633, 7655, 5153, 2305, 692, 206, 49, 19, 11, 9, 9],
}
# Default eps per data source when the config gives none. MNIST-like: the paper's values. Yin-Yang
# (not given by the paper): 0.25, where the input-like layer L0 of the 1000 held-out points is
# nearly one component (its largest MST edges are 0.23-0.27 with the paper's preprocessing, i.e.
# about 0.18 x the points' RMS radius 1.41), so that the change of beta_0 with depth stays visible.
DEFAULT_EPS = {
    "yinyang": {"layers": 0.25, "iterates": 0.25},
    "mnist": dict(PAPER_EPS),
    "fashion_mnist": dict(PAPER_EPS),
}
DEFAULTS: dict[str, Any] = {
    "protocol": "heldout",
    "points": None,
    "seed": 0,
    "metric": "euclidean",
    "k": 10,
    "precision": "float64",
    "isometry": {
        "points": 2000,
        "max_edge_length": None,
        "max_edges": 100_000,
        "max_dim": 1,
        "filtration_values": 200,
        "wasserstein": True,
    },
}
TABLE_COLUMNS = ["dataset", "source", "seed", "step", "eps", "betti0", "lambda_iso", "n", "metric"]
ISOMETRY_METRICS = [
    "bottleneck_h0", "bottleneck_h1", "wasserstein_h0", "wasserstein_h1", "distortion",
    "betti0_curve_l1", "betti1_curve_l1",
]


# ----------------------------------------------------------------------------------------------
# settings and inputs


def use_threads(threads: int) -> str:
    """Run distance work on `threads` threads: torch's intra-op pool and numpy's BLAS; returns a summary.

    Snakemake already exports OPENBLAS_NUM_THREADS / OMP_NUM_THREADS = the rule's threads to a
    script's process (so numpy's BLAS starts with that many); torch is set here, and threadpoolctl,
    when installed, pins BLAS pools that were started otherwise.
    """
    import os

    import torch

    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
        pinned = "threadpoolctl"
    except ImportError:
        pinned = "environment"
    return (f"{threads} thread(s): torch {torch.get_num_threads()}, BLAS OPENBLAS_NUM_THREADS="
            f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')} ({pinned})")


def topology_settings(ds: Mapping[str, Any]) -> dict[str, Any]:
    """The dataset's ``topology`` block merged over the defaults (eps defaults depend on the source)."""
    block = dict(ds.get("topology") or {})
    iso = {**DEFAULTS["isometry"], **(block.pop("isometry", None) or {})}
    out = {**DEFAULTS, **block, "isometry": iso}
    eps = DEFAULT_EPS.get(ds.get("source", ""), DEFAULT_EPS["mnist"])
    out.setdefault("eps_layers", eps["layers"])
    out.setdefault("eps_iterates", eps["iterates"])
    if out.get("eps_layers") is None:
        out["eps_layers"] = eps["layers"]
    if out.get("eps_iterates") is None:
        out["eps_iterates"] = eps["iterates"]
    for key in ("eps_layers", "eps_iterates"):
        if not float(out[key]) > 0:
            raise ConfigError(f"config key 'datasets.{ds.get('name')}.topology.{key}' must be > 0, got {out[key]}")
    if out["precision"] not in ("float64", "float32"):
        raise ConfigError(f"config key 'datasets.{ds.get('name')}.topology.precision' must be float64 or float32")
    if out["metric"] not in T.METRICS:
        raise ConfigError(f"config key 'datasets.{ds.get('name')}.topology.metric' must be one of {T.METRICS}")
    evaluation = ds.get("evaluation") or {"heldout": "test"}
    if out["protocol"] not in evaluation:
        raise ConfigError(f"config key 'datasets.{ds.get('name')}.topology.protocol': '{out['protocol']}' is not "
                          f"one of the dataset's protocols {sorted(evaluation)}")
    out["split"] = evaluation[out["protocol"]]
    return out


def evaluation_split(ds: Mapping[str, Any]) -> str:
    """The split (train or test) the topology stage measures: that of ``topology.protocol``."""
    return topology_settings(ds)["split"]


def topology_reps_path(config: Mapping[str, Any], dataset: str) -> str:
    """results/{dataset}/reps/{split}.pt of the split that the dataset's topology.protocol measures."""
    from kaepipe.config import dataset_config

    return f"results/{dataset}/reps/{evaluation_split(dataset_config(config, dataset))}.pt"


def kae_paths(config: Mapping[str, Any], datasets: Sequence[str], pattern: str, main_only: bool = False,
              lambda_tags: Sequence[str] | None = None) -> list[str]:
    """Paths from a pattern with {d}, {lam} and {seed} for every KAE of the datasets, without duplicates.

    lambda_iso: the whole grid, the main one only (`main_only`), or the given tags (`lambda_tags`).
    A pattern without {seed} gives one path per dataset and lambda_iso.
    """
    from kaepipe.config import lambda_tag

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


def subset_indices(n: int, points: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a fixed random subset of `points` of n samples (all of them when None or >= n)."""
    if points is None or points >= n:
        return np.arange(n)
    if points < 2:
        raise ConfigError(f"topology needs at least 2 points, got {points}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=int(points), replace=False))


def preprocessed_layers(reps_path: str | Path, preprocessing_path: str | Path, layers: Sequence[int] | None = None,
                        points: int | None = None, seed: int = 0) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
    """Layers of a reps file preprocessed with the training fit: ({layer: (n, q) float64}, labels, indices).

    `layers` defaults to all; negative indices count from the last layer. `points` selects a fixed
    random subset (see :func:`subset_indices`).
    """
    from kaepipe.represent import load_preprocessing, load_reps

    raw, labels = load_reps(reps_path)
    n_layers = raw.shape[0]
    wanted = list(range(n_layers)) if layers is None else [i % n_layers for i in layers]
    pre = load_preprocessing(preprocessing_path, wanted)
    if len(pre) != len(wanted):
        raise DataError(f"{preprocessing_path}: expected transforms for layers {wanted}")
    idx = subset_indices(raw.shape[1], points, seed)
    return {i: pre[i].apply(raw[i][idx]) for i in wanted}, labels[idx], idx


def _betti0_and_steps(X: np.ndarray, eps: float, metric: str, k: int, precision: str = "float64"
                      ) -> tuple[int, pd.DataFrame]:
    """beta_0 at eps and the whole curve (eps, betti0) of one point cloud."""
    n = X.shape[0]
    if metric == "euclidean":
        lengths, betti = T.betti0_mst(X, [eps], precision)
        return int(betti[0]), T.betti0_steps(lengths, n)
    count, _ = T.knn_components(X, k)
    # hop metric: nothing is joined below one hop, the kNN graph's components from one hop on
    steps = pd.DataFrame({"eps": [0.0, 1.0], "betti0": np.array([n, count], dtype=np.int64)})
    return int(count) if eps >= 1.0 else n, steps


def betti0_profile(clouds: Mapping[int, np.ndarray], eps: float, metric: str = "euclidean", k: int = 10,
                   log: Log | None = None, label: str = "step", precision: str = "float64"
                   ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """beta_0 at eps of each cloud ({step: points}) and the whole beta_0(eps) curves.

    Returns (table with step, n, eps, betti0; curves with step, eps, betti0). Curves are step
    functions: one row at eps = 0 and one per distinct MST edge length (see topology.betti0_steps);
    exact with precision float64, within float32 rounding of the edge lengths with float32 (beta_0
    at eps itself is exact either way, see topology.betti0_mst).
    """
    rows, curves = [], []
    for step, X in clouds.items():
        t0 = time.perf_counter()
        b0, steps = _betti0_and_steps(np.asarray(X, dtype=np.float64), eps, metric, k, precision)
        rows.append({"step": int(step), "n": len(X), "eps": float(eps), "betti0": int(b0)})
        curves.append(steps.assign(step=int(step))[["step", "eps", "betti0"]])
        if log:
            log(f"{label} {step}: beta_0 = {b0} at eps {eps:g} ({len(X)} points, {X.shape[1]} dims, "
                f"{time.perf_counter() - t0:.1f} s)")
    return pd.DataFrame(rows), pd.concat(curves, ignore_index=True)


def _decorate(df: pd.DataFrame, dataset: str, source: str, seed: int | None, lambda_iso: float | None,
              metric: str) -> pd.DataFrame:
    """Add the identifying columns of the long topology table."""
    out = df.copy()
    out.insert(0, "seed", pd.array([seed] * len(out), dtype="Int64"))
    out.insert(0, "source", source)
    out.insert(0, "dataset", dataset)
    out["lambda_iso"] = np.nan if lambda_iso is None else float(lambda_iso)
    out["metric"] = metric
    return out


# ----------------------------------------------------------------------------------------------
# stage: base layers


def run_layer_topology(ds: Mapping[str, Any], reps_path: str, preprocessing_path: str, out_table: str,
                       out_curves: str, log: Log = print) -> pd.DataFrame:
    """beta_0 of every preprocessed base layer of the evaluation points; writes the table and curves."""
    from kaepipe.io import provenance, write_parquet

    s = topology_settings(ds)
    clouds, _, idx = preprocessed_layers(reps_path, preprocessing_path, points=s["points"], seed=s["seed"])
    log(f"{ds['name']}: {len(clouds)} layers of {len(idx)} {s['split']} points, metric {s['metric']}")
    table, curves = betti0_profile(clouds, s["eps_layers"], s["metric"], s["k"], log, "layer", s["precision"])
    seed = ds.get("base", {}).get("seed")
    table = _decorate(table, ds["name"], "mlp", seed, None, s["metric"])[TABLE_COLUMNS]
    curves = _decorate(curves, ds["name"], "mlp", seed, None, s["metric"])
    meta = {"dataset": ds["name"], "split": s["split"], "topology": s,
            "provenance": provenance({"dataset": ds["name"], "topology": s})}
    write_parquet(table, out_table, meta)
    write_parquet(curves, out_curves, meta)
    return table


# ----------------------------------------------------------------------------------------------
# stage: KAE iterates


def kae_iterates(model, x0: np.ndarray, batch_size: int = 4096):
    """Yield (t, decoded iterate psi(K^t phi(x0)) as float64 (n, q)) for t = 0..k, on the CPU."""
    import torch

    model = model.cpu().eval()
    with torch.no_grad():
        z = torch.cat([model.encode(torch.as_tensor(x0[s:s + batch_size], dtype=torch.float32))
                       for s in range(0, len(x0), batch_size)])
        for t in range(model.cfg.k + 1):
            zt = model.advance(z, t) if t else z
            yield t, model.decode(zt).double().numpy()


def run_iterate_topology(ds: Mapping[str, Any], kae_path: str, reps_path: str, preprocessing_path: str,
                         out_table: str, out_curves: str, log: Log = print) -> pd.DataFrame:
    """beta_0 of every decoded iterate t = 0..k of one KAE on the preprocessed evaluation L0."""
    from kaepipe.io import provenance, write_parquet
    from kaepipe.kae import load_kae

    s = topology_settings(ds)
    model, meta = load_kae(kae_path)
    clouds, _, idx = preprocessed_layers(reps_path, preprocessing_path, [0], points=s["points"], seed=s["seed"])
    x0 = clouds[0]
    if x0.shape[1] != model.cfg.in_features:
        raise DataError(f"{kae_path}: KAE input width {model.cfg.in_features} does not match the preprocessed "
                        f"L0 width {x0.shape[1]}")
    seed, lam = meta.get("seed"), meta.get("lambda_iso")
    log(f"{ds['name']}: KAE lambda_iso {lam} seed {seed}, k = {model.cfg.k}, {len(idx)} {s['split']} points")
    tables, curves = [], []
    for t, X in kae_iterates(model, x0):
        table_t, curve_t = betti0_profile({t: X}, s["eps_iterates"], s["metric"], s["k"], log, "iterate",
                                          s["precision"])
        tables.append(table_t)
        curves.append(curve_t)
    table = _decorate(pd.concat(tables, ignore_index=True), ds["name"], "kae", seed, lam, s["metric"])[TABLE_COLUMNS]
    curve = _decorate(pd.concat(curves, ignore_index=True), ds["name"], "kae", seed, lam, s["metric"])
    out_meta = {"dataset": ds["name"], "split": s["split"], "topology": s, "lambda_iso": lam, "seed": seed,
                "provenance": provenance({"dataset": ds["name"], "topology": s, "kae": ds.get("kae")})}
    write_parquet(table, out_table, out_meta)
    write_parquet(curve, out_curves, out_meta)
    return table


# ----------------------------------------------------------------------------------------------
# stage: isometry


def isometry_cloud(ds: Mapping[str, Any], reps_path: str, preprocessing_path: str) -> np.ndarray:
    """The preprocessed last layer x_L of up to isometry.points evaluation points (float64)."""
    s = topology_settings(ds)
    clouds, _, _ = preprocessed_layers(reps_path, preprocessing_path, [-1], points=s["isometry"]["points"],
                                       seed=s["seed"])
    return next(iter(clouds.values()))


def _diagram(X: np.ndarray, iso: Mapping[str, Any]) -> pd.DataFrame:
    """Rips diagram of X with the isometry settings: threshold = min(max_edge_length, edge budget).

    The edge budget (``max_edges`` shortest pairs) bounds the cost whatever the cloud's scale; a
    smaller ``max_edge_length`` truncates the result (exact for Rips filtrations).
    """
    threshold = iso.get("max_edge_length")
    dg = T.persistence_diagrams(X, max_dim=int(iso["max_dim"]), max_edges=int(iso["max_edges"]))
    if threshold is not None and float(threshold) < dg.attrs["max_edge_length"]:
        dg = T.truncate_diagram(dg, float(threshold))
    return dg


def diagram_meta(dg: pd.DataFrame) -> dict[str, Any]:
    """The attrs of a diagram as plain JSON values."""
    return {"max_edge_length": float(dg.attrs.get("max_edge_length", math.inf)), "exact": bool(dg.attrs.get("exact")),
            "n_edges": dg.attrs.get("n_edges")}


def _read_diagram(path: str | Path) -> pd.DataFrame:
    """A diagram Parquet with its threshold restored into attrs."""
    from kaepipe.io import parquet_metadata, read_parquet

    dg = read_parquet(path, T.DIAGRAM_COLUMNS)[list(T.DIAGRAM_COLUMNS)]
    dg.attrs.update(parquet_metadata(path).get("diagram", {}))
    return dg


def run_isometry_original(ds: Mapping[str, Any], reps_path: str, preprocessing_path: str, out_diagram: str,
                          log: Log = print) -> pd.DataFrame:
    """Rips diagram of the preprocessed last layer of the isometry points (computed once per dataset)."""
    from kaepipe.io import provenance, write_parquet

    s = topology_settings(ds)
    X = isometry_cloud(ds, reps_path, preprocessing_path)
    t0 = time.perf_counter()
    dg = _diagram(X, s["isometry"])
    meta = diagram_meta(dg)
    log(f"{ds['name']}: original x_L, {X.shape[0]} points x {X.shape[1]} dims: {len(dg)} bars, threshold "
        f"{meta['max_edge_length']:.4g} ({meta['n_edges']} edges, exact {meta['exact']}), "
        f"{time.perf_counter() - t0:.1f} s")
    write_parquet(dg, out_diagram, {"dataset": ds["name"], "split": s["split"], "points": int(X.shape[0]),
                                    "diagram": meta, "isometry": s["isometry"],
                                    "provenance": provenance({"dataset": ds["name"], "topology": s})})
    return dg


def curve_l1(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Area between two Betti curves sampled on the grid t (trapezoidal rule)."""
    return float(np.trapezoid(np.abs(np.asarray(a, float) - np.asarray(b, float)), t))


def compare_diagrams(original: pd.DataFrame, encoded: pd.DataFrame, n_values: int = 200,
                     wasserstein: bool = True) -> tuple[dict[str, Any], pd.DataFrame]:
    """Distances between two Rips diagrams and their Betti curves on a common grid.

    Each diagram is taken at its own Rips threshold (by default the same edge budget for both, so
    the same share of each filtration; a cloud that phi shrinks or stretches gets a proportionally
    smaller or larger threshold, and its bars are compared where they are, scale change included).
    Bottleneck and Wasserstein (order 1, L^inf ground metric) ignore essential bars (classes still
    alive at the threshold); their counts are reported. Betti curves: n_values filtration values
    from 0 to the largest finite death of either diagram; the area between the beta_1 curves is
    taken up to the smaller threshold (``common_threshold``), where both are known.
    """
    thr = min(float(original.attrs.get("max_edge_length", math.inf)), float(encoded.attrs.get("max_edge_length", math.inf)))
    a, b = original, encoded
    dims = sorted({int(d) for d in a["dim"]} | {int(d) for d in b["dim"]})
    out: dict[str, Any] = {"common_threshold": thr}
    for d in dims:
        out[f"bottleneck_h{d}"] = T.bottleneck(a, b, d)
        if wasserstein:
            try:
                out[f"wasserstein_h{d}"] = T.wasserstein(a, b, d)
            except T.WassersteinUnavailableError:
                out[f"wasserstein_h{d}"] = float("nan")
        for name, dg in (("original", a), ("encoded", b)):
            bars = dg[dg["dim"] == d]
            out[f"{name}_bars_h{d}"] = len(bars)
            out[f"{name}_essential_h{d}"] = int(np.isinf(bars["death"]).sum())
    grid = T.filtration_grid(a, b, n=n_values)
    ca = T.betti_curves(a, grid, dims=dims)
    cb = T.betti_curves(b, grid, dims=dims)
    for d in dims:
        mask = grid <= thr if d > 0 else np.ones_like(grid, dtype=bool)
        out[f"betti{d}_curve_l1"] = curve_l1(grid[mask], ca[f"beta_{d}"].to_numpy()[mask],
                                             cb[f"beta_{d}"].to_numpy()[mask])
    curves = pd.concat([ca.assign(cloud="original"), cb.assign(cloud="encoded")], ignore_index=True)
    return out, curves


def isometry_of_kae(model, X: np.ndarray, original: pd.DataFrame, iso: Mapping[str, Any]
                    ) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """phi(X) of one KAE against X: (metrics, encoded diagram, Betti curves of both)."""
    import torch

    with torch.no_grad():
        Z = model.cpu().eval().encode(torch.as_tensor(X, dtype=torch.float32)).double().numpy()
    t0 = time.perf_counter()
    enc = _diagram(Z, iso)
    t_pers = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics, curves = compare_diagrams(original, enc, int(iso["filtration_values"]), bool(iso["wasserstein"]))
    metrics["distortion"] = T.distance_distortion(X, Z)
    enc_meta = diagram_meta(enc)
    metrics.update({"points": len(X), "dims": {"original": int(X.shape[1]), "encoded": int(Z.shape[1])},
                    "threshold": {"original": float(original.attrs.get("max_edge_length", math.inf)),
                                  "encoded": enc_meta["max_edge_length"]},
                    "encoded_diagram": enc_meta,
                    "seconds": {"persistence": t_pers, "compare": time.perf_counter() - t0}})
    return metrics, enc, curves


def run_isometry(ds: Mapping[str, Any], kae_paths: Sequence[str], reps_path: str, preprocessing_path: str,
                 original_diagram: str, out_diagrams: str, out_curves: str, out_metrics: str,
                 log: Log = print) -> list[dict[str, Any]]:
    """Isometry study of the KAEs of one lambda_iso (one per seed): phi(x_L) against x_L.

    Writes the encoded diagrams and the Betti curves (one Parquet each, with a `seed` column) and
    the metrics of every seed (JSON: {"dataset", "lambda_iso", "results": [...]}).
    """
    from kaepipe.io import provenance, write_json, write_parquet
    from kaepipe.kae import load_kae

    s = topology_settings(ds)
    X = isometry_cloud(ds, reps_path, preprocessing_path)
    orig = _read_diagram(original_diagram)
    results, diagrams, curves = [], [], []
    lam = None
    for path in kae_paths:
        model, meta = load_kae(path)
        seed, lam = meta.get("seed"), meta.get("lambda_iso")
        metrics, enc, curve = isometry_of_kae(model, X, orig, s["isometry"])
        results.append({"dataset": ds["name"], "lambda_iso": lam, "seed": seed, "split": s["split"], **metrics})
        diagrams.append(enc.assign(seed=seed)[["seed", *T.DIAGRAM_COLUMNS]])
        curves.append(curve.assign(seed=seed))
        log(f"{ds['name']} lambda_iso {lam} seed {seed}: " + ", ".join(
            f"{k} {metrics[k]:.4g}" for k in ISOMETRY_METRICS if k in metrics)
            + f"; Rips thresholds: original {metrics['threshold']['original']:.4g}, "
            f"encoded {metrics['threshold']['encoded']:.4g}; persistence {metrics['seconds']['persistence']:.1f} s, "
            f"compare {metrics['seconds']['compare']:.1f} s")
    pmeta = {"dataset": ds["name"], "lambda_iso": lam, "isometry": s["isometry"],
             "diagrams": {str(r["seed"]): r["encoded_diagram"] for r in results}}
    write_parquet(pd.concat(diagrams, ignore_index=True), out_diagrams, pmeta)
    write_parquet(pd.concat(curves, ignore_index=True), out_curves, pmeta)
    write_json({"dataset": ds["name"], "lambda_iso": lam, "results": results,
                "provenance": provenance({"dataset": ds["name"], "topology": s, "kae": ds.get("kae")})}, out_metrics)
    return results


# ----------------------------------------------------------------------------------------------
# tables


def topology_tables(parts: Sequence[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The long table (one row per model, seed and step) and the summary over seeds.

    Summary: per dataset, source, lambda_iso and step, beta_0 mean, min and max over seeds (a base
    network has one seed), and the published MNIST value where the dataset is MNIST at the paper's eps.
    """
    long = pd.concat(list(parts), ignore_index=True)[TABLE_COLUMNS]
    long = long.sort_values(["dataset", "source", "lambda_iso", "seed", "step"], ascending=[True, False, True, True, True],
                            kind="mergesort", na_position="first").reset_index(drop=True)
    keys = ["dataset", "source", "lambda_iso", "eps", "metric", "step"]
    summary = (long.groupby(keys, dropna=False, sort=False)
               .agg(n=("n", "first"), n_seeds=("betti0", "size"), betti0_mean=("betti0", "mean"),
                    betti0_min=("betti0", "min"), betti0_max=("betti0", "max"))
               .reset_index())
    summary["published"] = [_published(r.dataset, r.source, r.step, r.eps, r.metric) for r in summary.itertuples()]
    return long, summary


def _published(dataset: str, source: str, step: int, eps: float, metric: str) -> float:
    """The published MNIST beta_0 for this row, when the row uses the paper's eps and metric (else NaN)."""
    if "mnist" not in dataset or "fashion" in dataset or metric != "euclidean":
        return float("nan")
    values = PUBLISHED_MNIST[source]
    want = PAPER_EPS["layers" if source == "mlp" else "iterates"]
    if not math.isclose(eps, want) or step >= len(values):
        return float("nan")
    return float(values[step])


def run_topology_tables(layer_tables: Sequence[str], iterate_tables: Sequence[str], out: Mapping[str, str],
                        config: Mapping | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Collect the per-dataset and per-KAE Parquet tables into results/tables/topology*.csv (+ .md)."""
    from kaepipe.io import provenance, read_parquet
    from kaepipe.tables import write_table

    parts = [read_parquet(p, TABLE_COLUMNS) for p in [*layer_tables, *iterate_tables]]
    long, summary = topology_tables(parts)
    prov = provenance({"topology": {d: (config or {}).get("datasets", {}).get(d, {}).get("topology")
                                    for d in long["dataset"].unique()}})
    write_table(long, out["csv"], provenance=prov)
    write_table(summary, out["summary"], out.get("md"), provenance=prov)
    return long, summary


def isometry_tables(results: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Per-KAE rows and the table of mean (population std) over seeds per dataset and lambda_iso.

    Also returns, per dataset and metric, Spearman's rank correlation between lambda_iso and the
    mean distance (negative: the distance shrinks as lambda_iso grows, as the paper claims).
    """
    rows = []
    for r in results:
        row = {"dataset": r["dataset"], "lambda_iso": float(r["lambda_iso"]), "seed": int(r["seed"]),
               "points": r["points"], "threshold_original": r["threshold"]["original"],
               "threshold_encoded": r["threshold"]["encoded"], "common_threshold": r["common_threshold"]}
        row.update({m: float(r.get(m, float("nan"))) for m in ISOMETRY_METRICS})
        rows.append(row)
    long = pd.DataFrame(rows).sort_values(["dataset", "lambda_iso", "seed"], ascending=[True, False, True],
                                          kind="mergesort").reset_index(drop=True)
    agg = []
    for (dataset, lam), g in long.groupby(["dataset", "lambda_iso"], sort=False):
        row = {"dataset": dataset, "lambda_iso": lam, "n_seeds": len(g), "points": int(g["points"].iloc[0]),
               "threshold_original": float(g["threshold_original"].iloc[0]),
               "threshold_encoded_mean": float(g["threshold_encoded"].mean())}
        for m in ISOMETRY_METRICS:
            v = g[m].to_numpy(np.float64)
            row[f"{m}_mean"] = float(np.mean(v))
            row[f"{m}_std"] = float(np.std(v, ddof=0))
        agg.append(row)
    table = pd.DataFrame(agg)
    trend: dict[str, dict[str, float]] = {}
    for dataset, g in table.groupby("dataset", sort=False):
        trend[dataset] = {}
        for m in ISOMETRY_METRICS:
            if len(g) >= 2 and g[f"{m}_mean"].notna().all() and g[f"{m}_mean"].nunique() > 1:
                trend[dataset][m] = float(g["lambda_iso"].rank().corr(g[f"{m}_mean"].rank()))  # Spearman
            else:
                trend[dataset][m] = float("nan")
    return long, table, trend


def isometry_markdown(table: pd.DataFrame, trend: Mapping[str, Mapping[str, float]], digits: int = 4) -> str:
    """Markdown: mean (std) cells per dataset and lambda_iso, then the rank correlations with lambda_iso."""
    from kaepipe.tables import to_markdown

    cells = table[["dataset", "lambda_iso", "n_seeds", "points", "threshold_original", "threshold_encoded_mean"]].copy()
    for m in ISOMETRY_METRICS:
        cells[m] = [f"{a:.{digits}g} ({b:.{digits}g})" if np.isfinite(a) else "-"
                    for a, b in zip(table[f"{m}_mean"], table[f"{m}_std"])]
    lines = ["Isometry study: phi(x_L) against x_L, mean (population std) over seeds.", "",
             to_markdown(cells), "Spearman rank correlation between lambda_iso and the mean "
             "(negative: closer to the original as lambda_iso grows, the paper's claim).", ""]
    corr = pd.DataFrame([{"dataset": d, **dict(t)} for d, t in trend.items()])
    lines.append(to_markdown(corr) if len(corr) else "(no data)\n")
    return "\n".join(lines)


def run_isometry_tables(metrics_paths: Sequence[str], out: Mapping[str, str]) -> pd.DataFrame:
    """Collect per-KAE isometry metrics into results/tables/isometry.{csv,md} and isometry_long.csv."""
    from kaepipe.io import provenance, read_json, write_json
    from kaepipe.tables import write_table

    results = [r for p in metrics_paths for r in read_json(p)["results"]]
    long, table, trend = isometry_tables(results)
    prov = provenance({"inputs": list(metrics_paths)})
    write_table(table, out["csv"], provenance=prov)
    write_table(long, out["long"], provenance=prov)
    from kaepipe.io import write_text

    write_text(isometry_markdown(table, trend), out["md"])
    write_json({"spearman_lambda_vs_distance": trend}, str(out["csv"]) + ".trend.json")
    return table
