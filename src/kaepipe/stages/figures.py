"""The figure stages: load a run's files, call kaepipe.report.figures, write PNG and PDF."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from kaepipe.io import parquet_metadata, read_parquet
from kaepipe.nn.checkpoints import load_kae
from kaepipe.published import published_topology
from kaepipe.report.figures import (
    N_POINTS,
    SEED,
    class_names,
    editing_figure,
    isometry_figure,
    iterate_selection,
    layer_pcs,
    layers_figure,
    palette,
    path_figure,
    save_figure,
    subsample,
    topology_figure,
    training_figure,
)
from kaepipe.represent import load_preprocessing, load_reps, sign_fixed_directions
from kaepipe.settings import topology_settings
from kaepipe.unlearn import load_edited


def _labels_info(ds: Mapping) -> tuple[list[str], list[str]]:
    return palette(ds["classes"], ds.get("source", "")), class_names(ds["classes"], ds.get("source", ""))


def run_layers_figure(ds: Mapping, reps_path: str, out_png: str, out_pdf: str, n_points: int = N_POINTS,
                      seed: int = SEED, log=print) -> None:
    """Figure 1: the top-3 principal components of every base layer (preprocessing with q = 3, fitted on
    the split shown), `n_points` points."""

    layers, labels = load_reps(reps_path)
    pcs = layer_pcs(list(layers))
    idx = subsample(len(labels), n_points, seed)
    colors, names = _labels_info(ds)
    fig = layers_figure([p[idx] for p in pcs], labels[idx], colors, names,
                        title=f"{ds['name']}: top-3 principal components per layer ({len(idx)} points)")
    save_figure(fig, out_png, out_pdf)
    log(f"layers figure: {len(pcs)} layers, {len(idx)} points")


def run_training_figure(ds: Mapping, base_curve: str, kae_losses: Sequence[str], out_png: str, out_pdf: str,
                        log=print) -> None:
    """Training curves of the base network and of every KAE of the dataset."""

    frames = []
    for p in kae_losses:
        df = read_parquet(p, ["epoch", "total"])
        meta = parquet_metadata(p)
        frames.append(df.assign(lambda_iso=float(meta["lambda_iso"]), seed=int(meta["seed"])))
    losses = pd.concat(frames, ignore_index=True)
    curve = read_parquet(base_curve, ["epoch", "loss"])
    fig = training_figure(curve, losses, float(ds["kae"]["main_lambda_iso"]), title=f"{ds['name']}: training")
    save_figure(fig, out_png, out_pdf)
    log(f"training figure: base {len(curve)} epochs, {len(kae_losses)} KAEs")


def pick_samples(labels: np.ndarray, per_class: int = 2, max_classes: int = 5, seed: int = SEED) -> np.ndarray:
    """A handful of sample indices: `per_class` of each of the first `max_classes` classes (fixed seed)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in sorted(np.unique(labels))[:max_classes]:
        idx = np.flatnonzero(labels == c)
        out.extend(np.sort(rng.choice(idx, size=min(per_class, len(idx)), replace=False)))
    return np.asarray(out, dtype=np.int64)


def run_path_figure(ds: Mapping, reps_path: str, preprocessing: str, kae_path: str, out_png: str, out_pdf: str,
                    n_points: int = N_POINTS, seed: int = SEED, log=print) -> None:
    """The decoded KAE path of a few samples next to the network's (preprocessed, aligned) layers, in the
    plane of the last layer's top-2 principal components."""

    layers, labels = load_reps(reps_path)
    pre = load_preprocessing(preprocessing)
    last = len(layers) - 1
    zs = [pre[i].apply(layers[i]) for i in range(len(layers))]
    kae, meta = load_kae(kae_path)
    samples = pick_samples(labels, per_class=2 if ds["classes"] <= 3 else 1, max_classes=min(ds["classes"], 5),
                           seed=seed)
    path = np.stack([x for _, x in kae.iterates(zs[0][samples])])
    mean = zs[last].mean(axis=0)
    v = sign_fixed_directions(zs[last] - mean, 2)
    proj = lambda a: (np.asarray(a) - mean) @ v.T  # noqa: E731
    bg = subsample(len(labels), n_points, seed)
    colors, names = _labels_info(ds)
    fig = path_figure(np.stack([proj(z[samples]) for z in zs]), np.stack([proj(p) for p in path]),
                      proj(zs[last][bg]), labels[bg], labels[samples], colors, names,
                      title=f"{ds['name']}: layers vs KAE path ($\\lambda_{{iso}}$={meta.get('lambda_iso')}, "
                            f"seed {meta.get('seed')})")
    save_figure(fig, out_png, out_pdf)
    log(f"path figure: {len(samples)} samples, {len(path) - 1} KAE steps, {last} layers")


def use_cpu_threads(threads: int) -> None:
    """torch on `threads` CPU threads (figures never need a GPU)."""

    torch.set_num_threads(max(1, int(threads)))


def topology_split(ds: Mapping) -> tuple[str, int, int | None]:
    """The split, subset seed and subset size (None = all) the topology stage measures (its settings),
    or the paper's split, seed 0 and None when the topology stage is not installed."""
    s = topology_settings(ds)
    return s["split"], int(s["seed"]), s.get("points")


def topology_points(ds: Mapping, reps_paths: Mapping[str, str], preprocessing: str, layers: Sequence[int],
                    points: int | None) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Preprocessed layers and labels of at most `points` of the points the topology stage measures
    (its split and subset seed); reps_paths: split -> reps .pt file."""

    split, seed, _ = topology_split(ds)
    raw, labels = load_reps(reps_paths[split])
    n_layers = len(raw)
    wanted = [i % n_layers for i in layers]
    pre = load_preprocessing(preprocessing, wanted)
    idx = subsample(len(labels), points if points is not None else len(labels), seed)
    return {i: pre[i].apply(raw[i][idx]) for i in wanted}, labels[idx]


def isometry_curves(curve_paths: Mapping[float, str], seed: int | None = None) -> pd.DataFrame:
    """Betti curves of the original x_L and of phi(x_L) per lambda_iso from the topology stage's
    betti_curves.parquet files (columns t, beta_0, beta_1, cloud in {original, encoded}, and seed when the
    file holds several KAEs: then only `seed`'s rows, or the first seed's); the original's curve is taken
    from the file whose grid reaches furthest."""

    parts, originals = [], []
    for lam, path in sorted(curve_paths.items(), reverse=True):
        df = read_parquet(path, ["t", "cloud"])
        if "seed" in df:
            df = df[df["seed"] == (seed if seed is not None else df["seed"].iloc[0])].drop(columns="seed")
        parts.append(df[df["cloud"] == "encoded"].drop(columns="cloud").assign(source=f"{lam:g}"))
        originals.append(df[df["cloud"] == "original"].drop(columns="cloud").assign(source="original"))
    best = max(originals, key=lambda d: float(d["t"].max()) if len(d) else -1.0)
    return pd.concat([best, *parts], ignore_index=True)


def run_isometry_figure(ds: Mapping, reps_paths: Mapping[str, str], preprocessing: str, kae_models: Mapping[float, str],
                        curve_paths: Mapping[float, str] | None, out_png: str, out_pdf: str,
                        log=print) -> None:
    """Figure 2: 3-D PCA of the preprocessed last layer and of phi(x_L) per lambda_iso (the topology stage's
    isometry points), plus its beta_0/beta_1 curves when `curve_paths` ({lambda: betti_curves.parquet}) is given."""

    try:

        n_points = int(topology_settings(ds)["isometry"]["points"])
    except ImportError:
        n_points = N_POINTS
    clouds, labels = topology_points(ds, reps_paths, preprocessing, [-1], n_points)
    x = next(iter(clouds.values()))
    enc, seeds = {}, set()
    for lam, path in sorted(kae_models.items(), reverse=True):
        kae, meta = load_kae(path)
        enc[f"{lam:g}"] = kae.observables(x.astype(np.float32))
        seeds.add(meta.get("seed"))
    seed = seeds.pop() if len(seeds) == 1 else None
    curves = isometry_curves(curve_paths, seed) if curve_paths else None
    colors, names = _labels_info(ds)
    fig = isometry_figure(x, enc, labels, colors, names, curves,
                          title=f"{ds['name']}: last layer $x_L$ vs $\\phi(x_L)$ ({len(x)} points)")
    save_figure(fig, out_png, out_pdf)
    log(f"isometry figure: lambdas {list(enc)}, {len(x)} points, curves {'yes' if curves is not None else 'no'}")


def run_topology_figure(ds: Mapping, layer_table: str, iterate_tables: Sequence[str], kae_path: str,
                        reps_paths: Mapping[str, str], preprocessing: str, out_png: str, out_pdf: str,
                        n_points: int = N_POINTS,
                        log=print) -> None:
    """Figure 3: beta_0 per base layer and per KAE iterate from the topology stage's tables (columns step,
    betti0, eps, seed), published MNIST values where they apply (the paper's eps, or its equivalent for a
    preprocessing fitted on ds.splits.train.size digits), and 3-D PCA of iterates {0, k/3, 2k/3, k} of the
    first-seed KAE on (a subset of) the same points."""

    lay = read_parquet(layer_table, ["step", "betti0", "eps"])
    its = pd.concat([read_parquet(p, ["step", "betti0", "eps", "seed"]) for p in iterate_tables], ignore_index=True)
    layer_df = pd.DataFrame({"layer": lay["step"].astype(int), "beta_0": lay["betti0"].astype(float)})
    iter_df = pd.DataFrame({"t": its["step"].astype(int), "seed": its["seed"].astype(int),
                            "beta_0": its["betti0"].astype(float)})
    eps_l, eps_i = float(lay["eps"].iloc[0]), float(its["eps"].iloc[0])
    metric = str(lay["metric"].iloc[0]) if "metric" in lay else "euclidean"

    n_train = ((ds.get("splits") or {}).get("train") or {}).get("size")  # the preprocessing's fit (paper eps)

    def published(source, steps, eps):
        vals = [published_topology(ds.get("source", ds["name"]), source, int(s), eps, metric, n_train) for s in steps]
        return None if all(np.isnan(vals)) else vals

    kae, meta = load_kae(kae_path)
    stage_points = topology_split(ds)[2]
    clouds, labels = topology_points(ds, reps_paths, preprocessing, [0],
                                     n_points if stage_points is None else min(n_points, int(stage_points)))
    path = np.stack([x for _, x in kae.iterates(next(iter(clouds.values())))])
    sel = {t: path[t] for t in iterate_selection(kae.cfg.k)}
    colors, names = _labels_info(ds)
    title = (f"{ds['name']}: $\\beta_0$ of layers and KAE iterates ($\\lambda_{{iso}}$={meta.get('lambda_iso')}, "
             f"{iter_df.seed.nunique()} seeds); below: iterates of seed {meta.get('seed')}, {len(labels)} points")
    fig = topology_figure(layer_df, iter_df, sel, labels, colors, names,
                          published("mlp", range(int(layer_df.layer.max()) + 1), eps_l),
                          published("kae", range(int(iter_df.t.max()) + 1), eps_i), eps_l, eps_i, title)
    save_figure(fig, out_png, out_pdf)
    log(f"topology figure: {len(layer_df)} layers, {iter_df.t.nunique()} iterates x {iter_df.seed.nunique()} seeds, "
        f"PCA of iterates {sorted(sel)}")


def run_editing_figure(ds: Mapping, reps_path: str, preprocessing: str, kae_path: str, edited_path: str,
                       target: int, out_png: str, out_pdf: str, method: str = "paper", n_points: int = N_POINTS,
                       seed: int = SEED, log=print) -> None:
    """Figure 4: 3-D PCA of the outputs Z O before and Z O' after the edit that forgets `target`
    (the unlearning stage's edited operator `method`), for up to `n_points` points of the paper's split."""

    layers, labels = load_reps(reps_path)
    idx = subsample(len(labels), n_points, seed)
    x0 = load_preprocessing(preprocessing, [0])[0].apply(layers[0][idx])
    kae, meta = load_kae(kae_path)
    edited, _ = load_edited(edited_path, method)
    Z = kae.observables(x0)
    before = Z @ kae.operator_matrix()
    after = Z @ edited.operator_matrix()
    colors, names = _labels_info(ds)
    name = names[target] if target < len(names) else str(target)
    title = (f"{ds['name']}: unlearning class {name} by editing $K^k$ "
             f"($\\lambda_{{iso}}$={meta.get('lambda_iso')}, seed {meta.get('seed')}, {len(idx)} points)")
    fig = editing_figure(before, after, labels[idx], target, colors, names, title=title)
    save_figure(fig, out_png, out_pdf)
    log(f"editing figure: class {target}, method {method}, {len(idx)} points, "
        f"mean output shift {np.linalg.norm(after - before, axis=1).mean():.4g}")
