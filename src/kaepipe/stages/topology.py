"""The topology stage: beta_0 of layers and KAE iterates, and the isometry study (docs/method.md section 7).

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
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from kaepipe import topology as T
from kaepipe.config import draw_of
from kaepipe.errors import DataError
from kaepipe.io import parquet_metadata, provenance, read_parquet, write_json, write_parquet
from kaepipe.nn.checkpoints import load_kae
from kaepipe.report.tables import ISOMETRY_METRICS, TABLE_COLUMNS
from kaepipe.represent import load_preprocessing, load_reps
from kaepipe.settings import topology_settings
from kaepipe.topology import betti0_profile, compare_diagrams, subset_indices

Log = Callable[[str], None]


# ----------------------------------------------------------------------------------------------
# settings and inputs


def use_threads(threads: int) -> str:
    """Run distance work on `threads` threads: torch's intra-op pool and numpy's BLAS; returns a summary.

    Snakemake already exports OPENBLAS_NUM_THREADS / OMP_NUM_THREADS = the rule's threads to a
    script's process (so numpy's BLAS starts with that many); torch is set here, and threadpoolctl
    pins BLAS pools that were started otherwise.
    """
    threads = max(1, int(threads))
    torch.set_num_threads(threads)
    threadpool_limits(threads)
    return (f"{threads} thread(s): torch {torch.get_num_threads()}, BLAS OPENBLAS_NUM_THREADS="
            f"{os.environ.get('OPENBLAS_NUM_THREADS', 'unset')} (threadpoolctl)")


def preprocessed_layers(reps_path: str | Path, preprocessing_path: str | Path, layers: Sequence[int] | None = None,
                        points: int | None = None, seed: int = 0) -> tuple[dict[int, np.ndarray], np.ndarray, np.ndarray]:
    """Layers of a reps file preprocessed with the training fit: ({layer: (n, q) float64}, labels, indices).

    `layers` defaults to all; negative indices count from the last layer. `points` selects a fixed
    random subset (see :func:`subset_indices`).
    """

    raw, labels = load_reps(reps_path)
    n_layers = len(raw)
    wanted = list(range(n_layers)) if layers is None else [i % n_layers for i in layers]
    pre = load_preprocessing(preprocessing_path, wanted)
    if len(pre) != len(wanted):
        raise DataError(f"{preprocessing_path}: expected transforms for layers {wanted}")
    idx = subset_indices(len(labels), points, seed)
    return {i: pre[i].apply(raw[i][idx]) for i in wanted}, labels[idx], idx


def _decorate(df: pd.DataFrame, dataset: str, source: str, draw: int | None, seed: int | None,
              lambda_iso: float | None, metric: str) -> pd.DataFrame:
    """Add the identifying columns of the long topology table (draw: the base network's draw; seed: the KAE's
    seed, or the base network's for its layers)."""
    out = df.copy()
    out.insert(0, "seed", pd.array([seed] * len(out), dtype="Int64"))
    out.insert(0, "draw", pd.array([draw] * len(out), dtype="Int64"))
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

    s = topology_settings(ds)
    clouds, _, idx = preprocessed_layers(reps_path, preprocessing_path, points=s["points"], seed=s["seed"])
    log(f"{ds['name']}: {len(clouds)} layers of {len(idx)} {s['split']} points, metric {s['metric']}")
    table, curves = betti0_profile(clouds, s["eps_layers"], s["metric"], s["k"], log, "layer", s["precision"])
    draw = draw_of(ds)
    table = _decorate(table, ds["name"], "mlp", draw, draw, None, s["metric"])[TABLE_COLUMNS]
    curves = _decorate(curves, ds["name"], "mlp", draw, draw, None, s["metric"])
    meta = {"dataset": ds["name"], "split": s["split"], "topology": s,
            "provenance": provenance({"dataset": ds["name"], "topology": s})}
    write_parquet(table, out_table, meta)
    write_parquet(curves, out_curves, meta)
    return table


# ----------------------------------------------------------------------------------------------
# stage: KAE iterates


def run_iterate_topology(ds: Mapping[str, Any], kae_path: str, reps_path: str, preprocessing_path: str,
                         out_table: str, out_curves: str, log: Log = print) -> pd.DataFrame:
    """beta_0 of every decoded iterate t = 0..k of one KAE on the preprocessed evaluation L0."""

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
    for t, X in model.iterates(x0):
        table_t, curve_t = betti0_profile({t: X}, s["eps_iterates"], s["metric"], s["k"], log, "iterate",
                                          s["precision"])
        tables.append(table_t)
        curves.append(curve_t)
    draw = draw_of(ds)
    table = _decorate(pd.concat(tables, ignore_index=True), ds["name"], "kae", draw, seed, lam,
                      s["metric"])[TABLE_COLUMNS]
    curve = _decorate(pd.concat(curves, ignore_index=True), ds["name"], "kae", draw, seed, lam, s["metric"])
    out_meta = {"dataset": ds["name"], "draw": draw, "split": s["split"], "topology": s, "lambda_iso": lam, "seed": seed,
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

    dg = read_parquet(path, T.DIAGRAM_COLUMNS)[list(T.DIAGRAM_COLUMNS)]
    dg.attrs.update(parquet_metadata(path).get("diagram", {}))
    return dg


def run_isometry_original(ds: Mapping[str, Any], reps_path: str, preprocessing_path: str, out_diagram: str,
                          log: Log = print) -> pd.DataFrame:
    """Rips diagram of the preprocessed last layer of the isometry points (computed once per dataset)."""

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


def isometry_of_kae(model, X: np.ndarray, original: pd.DataFrame, iso: Mapping[str, Any]
                    ) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """phi(X) of one KAE against X: (metrics, encoded diagram, Betti curves of both)."""

    with torch.no_grad():
        Z = model.cpu().eval().observables(X)
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

    s = topology_settings(ds)
    X = isometry_cloud(ds, reps_path, preprocessing_path)
    orig = _read_diagram(original_diagram)
    results, diagrams, curves = [], [], []
    lam = None
    for path in kae_paths:
        model, meta = load_kae(path)
        seed, lam = meta.get("seed"), meta.get("lambda_iso")
        metrics, enc, curve = isometry_of_kae(model, X, orig, s["isometry"])
        results.append({"dataset": ds["name"], "draw": draw_of(ds), "lambda_iso": lam, "seed": seed,
                        "split": s["split"], **metrics})
        diagrams.append(enc.assign(seed=seed)[["seed", *T.DIAGRAM_COLUMNS]])
        curves.append(curve.assign(seed=seed))
        log(f"{ds['name']} lambda_iso {lam} seed {seed}: " + ", ".join(
            f"{k} {metrics[k]:.4g}" for k in ISOMETRY_METRICS if k in metrics)
            + f"; Rips thresholds: original {metrics['threshold']['original']:.4g}, "
            f"encoded {metrics['threshold']['encoded']:.4g}; persistence {metrics['seconds']['persistence']:.1f} s, "
            f"compare {metrics['seconds']['compare']:.1f} s")
    prov = provenance({"dataset": ds["name"], "topology": s, "kae": ds.get("kae")})
    pmeta = {"dataset": ds["name"], "lambda_iso": lam, "isometry": s["isometry"],
             "diagrams": {str(r["seed"]): r["encoded_diagram"] for r in results}, "provenance": prov}
    write_parquet(pd.concat(diagrams, ignore_index=True), out_diagrams, pmeta)
    write_parquet(pd.concat(curves, ignore_index=True), out_curves, pmeta)
    write_json({"dataset": ds["name"], "draw": draw_of(ds), "lambda_iso": lam, "results": results,
                "provenance": prov}, out_metrics)
    return results


# ----------------------------------------------------------------------------------------------
# tables


