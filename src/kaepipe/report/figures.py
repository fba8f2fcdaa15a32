"""The paper's figures (docs/method.md section 9) and diagnostics, with deterministic PNG/PDF bytes.

Plot functions take arrays or DataFrames and return a matplotlib Figure; `save_figure` writes it
atomically as PNG and PDF without timestamps or version strings, so the same data give the same
bytes. The `run_*` functions at the bottom read the pipeline's files and are what the workflow
scripts call. Any subsampling uses a fixed seed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import seaborn as sns

from kaepipe.data import SOURCES
from kaepipe.io import atomic_path
from kaepipe.represent import fit_preprocessing, procrustes, sign_fixed_directions

if TYPE_CHECKING:  # matplotlib is imported on first use (the workflow imports this module at parse time)
    from matplotlib.figure import Figure

# The paper's Yin-Yang colours, in label order (0 yin, 1 yang, 2 dot).
# seaborn.color_palette("colorblind")
N_POINTS = 2000
SEED = 0
PNG_METADATA = {"Software": None}
PDF_METADATA = {"Creator": None, "Producer": None, "CreationDate": None}

_RC = {
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "svg.hashsalt": "kaepipe",
    "pdf.compression": 6,
}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def _pyplot():
    """matplotlib.pyplot with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def palette(n_classes: int, source: str = "") -> list[str]:
    """Class colours: the data source's own (the paper's for Yin-Yang), else seaborn's colour-blind palette,
    and seaborn's husl hues (evenly spaced in perceived hue and lightness) for more than ten classes."""
    own = SOURCES[source].palette if source in SOURCES else None
    if own and n_classes <= len(own):
        return list(own[:n_classes])
    name = "colorblind" if n_classes <= 10 else "husl"
    return list(sns.color_palette(name, n_classes).as_hex())


def class_names(n_classes: int, source: str = "") -> list[str]:
    """Legend names of the classes: the data source's (yin/yang/dot for Yin-Yang), else the class index."""
    own = SOURCES[source].class_names if source in SOURCES else None
    if own and n_classes <= len(own):
        return list(own[:n_classes])
    return [str(c) for c in range(n_classes)]


def subsample(n: int, k: int = N_POINTS, seed: int = SEED) -> np.ndarray:
    """Sorted indices of min(k, n) points drawn without replacement with a fixed seed."""
    if k >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def pca(x: np.ndarray, dims: int = 3) -> np.ndarray:
    """Coordinates of the rows of x on their top `dims` principal directions (sign-fixed, centred)."""

    x = np.asarray(x, dtype=np.float64)
    xc = x - x.mean(axis=0)
    v = sign_fixed_directions(xc, min(dims, *xc.shape))
    out = xc @ v.T
    if out.shape[1] < dims:  # fewer features than dims: pad with zeros
        out = np.pad(out, ((0, 0), (0, dims - out.shape[1])))
    return out


def align_to(x: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Rotate/reflect centred x onto centred ref by orthogonal Procrustes (no scaling)."""

    x = np.asarray(x, dtype=np.float64) - np.mean(x, axis=0)
    ref = np.asarray(ref, dtype=np.float64) - np.mean(ref, axis=0)
    return x @ procrustes(x, ref)


def scatter3d(ax, pts: np.ndarray, labels: np.ndarray, colors: Sequence[str], size: float = 3.0,
              alpha: float = 0.8, highlight: int | None = None) -> None:
    """3-D scatter coloured by class; `highlight` draws that class on top and larger."""
    labels = np.asarray(labels)
    order = [c for c in range(len(colors)) if c != highlight] + ([highlight] if highlight is not None else [])
    for c in order:
        m = labels == c
        if m.any():
            ax.scatter(pts[m, 0], pts[m, 1], pts[m, 2], s=size * (3 if c == highlight else 1), c=colors[c],
                       alpha=alpha, linewidths=0, depthshade=False, rasterized=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_zticks([])


def class_legend(fig: Figure, colors: Sequence[str], names: Sequence[str], **kw) -> None:
    """One legend entry per class."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color=c, label=n) for c, n in zip(colors, names)]
    fig.legend(handles=handles, loc=kw.pop("loc", "lower center"), ncol=kw.pop("ncol", min(len(handles), 10)),
               frameon=False, **kw)


def save_figure(fig: Figure, png: str | Path | None, pdf: str | Path | None = None) -> None:
    """Write a figure as PNG and/or PDF atomically, without timestamps or software versions, then close it."""
    try:
        if png:
            with atomic_path(png) as tmp:
                fig.savefig(tmp, format="png", metadata=PNG_METADATA)
        if pdf:
            with atomic_path(pdf) as tmp:
                fig.savefig(tmp, format="pdf", metadata=PDF_METADATA)
    finally:
        _pyplot().close(fig)


def _style():
    """kaepipe's plot style, independent of the caller's rcParams."""
    import matplotlib

    return matplotlib.rc_context(_RC)


# ---------------------------------------------------------------------------------------------
# Figure 1: top-3 principal components of every layer
# ---------------------------------------------------------------------------------------------

def layers_figure(points: Sequence[np.ndarray], labels: np.ndarray, colors: Sequence[str],
                  names: Sequence[str], title: str = "", layer_names: Sequence[str] | None = None) -> Figure:
    """One 3-D panel per layer: the layer's points (n, >= 3) coloured by class."""
    plt = _pyplot()
    with _style():
        n = len(points)
        cols = min(n, 6)
        rows = int(np.ceil(n / cols))
        fig = plt.figure(figsize=(2.4 * cols, 2.5 * rows + 0.8))
        for i, pts in enumerate(points):
            ax = fig.add_subplot(rows, cols, i + 1, projection="3d")
            scatter3d(ax, np.asarray(pts)[:, :3], labels, colors)
            ax.set_title(layer_names[i] if layer_names else f"L{i}")
        class_legend(fig, colors, names)
        if title:
            fig.suptitle(title)
        fig.subplots_adjust(left=0.01, right=0.99, top=0.83 if title else 0.93, bottom=0.1, wspace=0.05)
    return fig


def layer_pcs(layers: Sequence[np.ndarray], dims: int = 3) -> list[np.ndarray]:
    """The paper's preprocessing with q = dims fitted on these layers: centred, top-q PCs, Frobenius 100,
    Procrustes-aligned to the last layer."""

    layers = [np.asarray(x, dtype=np.float64).reshape(len(x), -1) for x in layers]
    transforms = fit_preprocessing(layers, pca_dim=dims)
    return [t.apply(x) for t, x in zip(transforms, layers)]


# ---------------------------------------------------------------------------------------------
# Figure 2: isometry
# ---------------------------------------------------------------------------------------------

def isometry_figure(original: np.ndarray, encodings: Mapping[str, np.ndarray], labels: np.ndarray,
                    colors: Sequence[str], names: Sequence[str], curves: pd.DataFrame | None = None,
                    title: str = "") -> Figure:
    """Top: 3-D PCA of the original layer and of phi(x) per lambda_iso (Procrustes-aligned to the original).

    Bottom (when `curves` is given): beta_0 and beta_1 against the filtration value t, one line per
    `source` ("original" and the keys of `encodings`); columns source, t, beta_0, beta_1.
    """
    plt = _pyplot()
    with _style():
        n = 1 + len(encodings)
        width = 2.6 * max(n, 3)
        fig = plt.figure(figsize=(width, 6.4 if curves is not None else 3.4))
        top = fig.add_gridspec(1, n, left=0.01, right=0.99, top=0.88, bottom=0.5 if curves is not None else 0.12,
                               wspace=0.05)
        ref = pca(original)
        panels = {"original": ref}
        for key, z in encodings.items():
            panels[key] = align_to(pca(z), ref)
        for i, (key, pts) in enumerate(panels.items()):
            ax = fig.add_subplot(top[0, i], projection="3d")
            scatter3d(ax, pts, labels, colors)
            ax.set_title("original $x_L$" if key == "original" else f"$\\phi(x_L)$, $\\lambda_{{iso}}$={key}")
        if curves is not None:
            line_colors = dict(zip(panels, ["black"] + list(plt.get_cmap("viridis")(np.linspace(0.1, 0.85, n - 1)))))
            bottom = fig.add_gridspec(1, 2, left=0.08, right=0.98, top=0.42, bottom=0.14, wspace=0.25)
            for j, dim in enumerate((0, 1)):
                col = f"beta_{dim}"
                ax = fig.add_subplot(bottom[0, j])
                for key in panels:
                    c = curves[curves["source"].astype(str) == str(key)]
                    if col in c and len(c):
                        ax.plot(c["t"], c[col], color=line_colors[key], lw=2.0 if key == "original" else 1.2,
                                ls="-" if key == "original" else "--", drawstyle="steps-post",
                                label="original" if key == "original" else f"$\\lambda_{{iso}}$={key}")
                ax.set_xlabel("filtration value t")
                ax.set_ylabel(f"$\\beta_{dim}(t)$")
                if dim == 0:
                    ax.set_yscale("log")
                ax.legend(frameon=False)
        class_legend(fig, colors, names)
        if title:
            fig.suptitle(title)
    return fig


# ---------------------------------------------------------------------------------------------
# Figure 3: topology
# ---------------------------------------------------------------------------------------------

def _band_plot(ax, df: pd.DataFrame, x: str, y: str, color: str, label: str, published: Sequence | None = None):
    """Mean over seeds with a min-max band (rows of df: one per x and seed)."""
    g = df.groupby(x)[y].agg(["mean", "min", "max"]).sort_index()
    ax.plot(g.index, g["mean"], "o-", color=color, ms=3.5, label=label)
    if (g["max"] > g["min"]).any():
        ax.fill_between(g.index, g["min"], g["max"], color=color, alpha=0.25, lw=0)
    if published is not None:
        pub = np.asarray(published, dtype=float)
        xs = np.arange(len(pub))
        ax.plot(xs, pub, "s--", color="0.45", ms=3, lw=1, label="published")


def topology_figure(layer_betti: pd.DataFrame, iterate_betti: pd.DataFrame,
                    iterate_points: Mapping[int, np.ndarray] | None = None, labels: np.ndarray | None = None,
                    colors: Sequence[str] = (), names: Sequence[str] = (),
                    published_layers: Sequence | None = None, published_iterates: Sequence | None = None,
                    eps_layers: float | None = None, eps_iterates: float | None = None, title: str = "") -> Figure:
    """beta_0 per base layer (columns layer, beta_0[, seed]) and per KAE iterate (t, seed, beta_0),
    mean with min-max band over seeds, log y; below, 3-D PCA of selected iterates {t: points}."""
    plt = _pyplot()
    with _style():
        pts = dict(iterate_points or {})
        n_bottom = len(pts)
        rows = 2 if n_bottom else 1
        fig = plt.figure(figsize=(2.6 * max(n_bottom, 3), 2.8 * rows + 0.6))
        grid = fig.add_gridspec(rows, max(n_bottom, 2), height_ratios=[1, 1.1][:rows])
        half = max(1, max(n_bottom, 2) // 2)
        ax = fig.add_subplot(grid[0, :half])
        _band_plot(ax, layer_betti, "layer", "beta_0", "C0", "base network", published_layers)
        ax.set_xlabel("layer")
        ax.set_ylabel(r"$\beta_0$")
        _log_y(ax)
        ax.set_xticks(sorted(layer_betti["layer"].unique()))
        ax.set_title("base layers" + (f" ($\\epsilon$={eps_layers:g})" if eps_layers else ""))
        ax.legend(frameon=False)
        ax = fig.add_subplot(grid[0, half:])
        _band_plot(ax, iterate_betti, "t", "beta_0", "C1", "KAE iterates (mean, min-max)", published_iterates)
        ax.set_xlabel("KAE iterate t")
        ax.set_ylabel(r"$\beta_0$")
        _log_y(ax)
        ax.set_title("KAE iterates" + (f" ($\\epsilon$={eps_iterates:g})" if eps_iterates else ""))
        ax.legend(frameon=False)
        prev = None
        for i, (t, p) in enumerate(sorted(pts.items(), reverse=True)):
            # align each iterate's PCA to the next one so the panels are comparable
            coords = pca(p)
            coords = coords if prev is None else align_to(coords, prev)
            prev = coords
            axp = fig.add_subplot(grid[1, n_bottom - 1 - i], projection="3d")
            scatter3d(axp, coords, labels, colors, size=2.0)
            axp.set_title(f"t = {t}")
        if n_bottom:
            class_legend(fig, colors, names)
        if title:
            fig.suptitle(title)
        fig.subplots_adjust(left=0.08, right=0.98, top=0.9, bottom=0.1, hspace=0.35, wspace=0.35)
    return fig


def _log_y(ax) -> None:
    """Log y axis with plain-number tick labels (call after plotting)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    lo, hi = ax.get_ylim()
    span = hi / lo if lo > 0 else np.inf
    # a decade or two shown: label (some) minor ticks too, or the axis has one number or none
    if span < 10:
        ax.yaxis.set_minor_formatter(plain)
    elif span < 100:
        ax.yaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: f"{v:g}" if round(v / 10 ** np.floor(np.log10(v))) in (2, 5) else ""))
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def iterate_selection(k: int) -> list[int]:
    """The iterates shown below the topology curves: t in {0, k/3, 2k/3, k} (floored, distinct)."""
    return sorted({0, k // 3, (2 * k) // 3, k})


# ---------------------------------------------------------------------------------------------
# Figure 4: editing
# ---------------------------------------------------------------------------------------------

def editing_figure(before: np.ndarray, after: np.ndarray, labels: np.ndarray, target: int,
                   colors: Sequence[str], names: Sequence[str], title: str = "") -> Figure:
    """3-D PCA of the observables' outputs Z O (before) and Z O' (after), in one basis fitted on Z O."""

    plt = _pyplot()
    with _style():
        before = np.asarray(before, dtype=np.float64)
        after = np.asarray(after, dtype=np.float64)
        mean = before.mean(axis=0)
        v = sign_fixed_directions(before - mean, min(3, before.shape[1]))
        fig = plt.figure(figsize=(6.4, 4.0))
        for i, (pts, ttl) in enumerate(((before, "before the edit: $Z O$"), (after, "after the edit: $Z O'$"))):
            ax = fig.add_subplot(1, 2, i + 1, projection="3d")
            scatter3d(ax, (pts - mean) @ v.T, labels, colors, size=2.5, highlight=target)
            ax.set_title(ttl)
        class_legend(fig, colors, names)
        fig.suptitle(title or f"unlearning class {names[target] if target < len(names) else target}")
        fig.subplots_adjust(left=0.01, right=0.99, top=0.8, bottom=0.12, wspace=0.05)
    return fig


# ---------------------------------------------------------------------------------------------
# Training curves and the decoded path
# ---------------------------------------------------------------------------------------------

def training_figure(base_curve: pd.DataFrame, kae_losses: pd.DataFrame, main_lambda: float | None = None,
                    title: str = "") -> Figure:
    """Base network: loss and accuracy per epoch. KAE: total loss per lambda_iso (mean, min-max band over
    seeds) and the loss terms at the main lambda_iso (mean over seeds). kae_losses: lambda_iso, seed,
    epoch, total, recon, state, latent, iso."""
    plt = _pyplot()
    with _style():
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.3))
        ax = axes[0]
        ax.plot(base_curve["epoch"], base_curve["loss"], color="C0", label="loss")
        _log_y(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel("cross-entropy (train)")
        ax.set_title("base network")
        if "acc" in base_curve:
            ax2 = ax.twinx()
            ax2.plot(base_curve["epoch"], 100 * base_curve["acc"], color="C3", lw=1, label="accuracy")
            ax2.set_ylabel("train accuracy (%)", color="C3")
        ax = axes[1]
        lams = sorted(kae_losses["lambda_iso"].unique(), reverse=True)
        cmap = plt.get_cmap("viridis")
        for i, lam in enumerate(lams):
            d = kae_losses[kae_losses["lambda_iso"] == lam]
            g = d.groupby("epoch")["total"].agg(["mean", "min", "max"])
            c = cmap(0.1 + 0.75 * i / max(1, len(lams) - 1))
            ax.plot(g.index, g["mean"], color=c, lw=1.2, label=f"$\\lambda_{{iso}}$={lam:g}")
            ax.fill_between(g.index, g["min"], g["max"], color=c, alpha=0.2, lw=0)
        _log_y(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel("total loss")
        ax.set_title(f"KAE ({kae_losses['seed'].nunique()} seeds)")
        ax.legend(frameon=False, fontsize=7)
        ax = axes[2]
        lam = main_lambda if main_lambda is not None else lams[0]
        d = kae_losses[kae_losses["lambda_iso"] == lam].groupby("epoch").mean(numeric_only=True)
        for j, term in enumerate(("recon", "state", "latent", "iso")):
            if term in d and d[term].notna().any():
                ax.plot(d.index, d[term], color=f"C{j}", lw=1.2, label=term if term != "iso" else "iso (unweighted)")
        _log_y(ax)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss term")
        ax.set_title(f"KAE terms, $\\lambda_{{iso}}$={lam:g}")
        ax.legend(frameon=False)
        if title:
            fig.suptitle(title)
        fig.tight_layout()
    return fig


def path_figure(layers: np.ndarray, path: np.ndarray, background: np.ndarray, background_labels: np.ndarray,
                sample_labels: np.ndarray, colors: Sequence[str], names: Sequence[str], title: str = "") -> Figure:
    """The network's layers L0..LL (left) and the KAE's decoded iterates t = 0..k (right) of a few samples,
    in 2-D coordinates: layers (L+1, m, 2), path (k+1, m, 2); background: e.g. the last layer of many points."""
    plt = _pyplot()
    with _style():
        fig, axes = plt.subplots(1, 2, figsize=(9, 4.3), sharex=True, sharey=True)
        n_layers, k = len(layers) - 1, len(path) - 1
        for ax in axes:
            for c in range(len(colors)):
                m = np.asarray(background_labels) == c
                ax.scatter(background[m, 0], background[m, 1], s=3, c=colors[c], alpha=0.3, linewidths=0,
                           rasterized=True)
        for j in range(layers.shape[1]):
            c = colors[int(sample_labels[j])]
            axes[0].plot(layers[:, j, 0], layers[:, j, 1], "-", color=c, lw=1.2, alpha=0.9)
            axes[0].scatter(layers[:, j, 0], layers[:, j, 1], s=18, color=c, edgecolors="k", linewidths=0.5, zorder=3)
            axes[0].annotate("L0", layers[0, j], fontsize=6, xytext=(2, 2), textcoords="offset points")
            axes[1].plot(path[:, j, 0], path[:, j, 1], "-", color=c, lw=1.2, alpha=0.9)
            # the iterates closest to each layer's depth (t = l k / L), and the two ends
            marks = np.unique(np.round(np.arange(n_layers + 1) * k / max(n_layers, 1)).astype(int))
            axes[1].scatter(path[marks, j, 0], path[marks, j, 1], s=18, color=c, edgecolors="k", linewidths=0.5,
                            zorder=3)
            axes[1].plot(layers[:, j, 0], layers[:, j, 1], ":", color=c, lw=0.8, alpha=0.6)
            axes[1].annotate("t=0", path[0, j], fontsize=6, xytext=(2, 2), textcoords="offset points")
        axes[0].set_title(f"network layers L0..L{n_layers}")
        axes[1].set_title(f"KAE decoded iterates t = 0..{k} (dotted: layers)")
        for ax in axes:
            ax.set_xlabel("PC 1 of the last layer")
        axes[0].set_ylabel("PC 2 of the last layer")
        class_legend(fig, colors, names)
        if title:
            fig.suptitle(title)
        fig.subplots_adjust(left=0.08, right=0.98, top=0.86 if title else 0.92, bottom=0.2, wspace=0.08)
    return fig


# ---------------------------------------------------------------------------------------------
# Stage entry points (read the pipeline's files)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Input paths of the figure rules (used by workflow/rules/figures.smk)
# ---------------------------------------------------------------------------------------------


