"""Layer representations and their preprocessing (centre, SVD projection, Frobenius scale, Procrustes)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.linalg
import torch

from kaepipe.errors import DataError
from kaepipe.tensor_io import load_safetensors, load_torch, save_safetensors


@dataclass
class LayerTransform:
    """The fitted preprocessing of one layer: x -> ((x - mean) @ directions.T / scale) @ align."""

    mean: np.ndarray  # (d,)
    directions: np.ndarray  # (q, d), one direction per row
    scale: float  # s_i = ||X_train||_F / frobenius after projection
    align: np.ndarray  # (q, q) orthogonal Procrustes rotation (identity for the last layer)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Map raw representations (n, d) to the preprocessed space (n, q)."""
        x = np.asarray(x, dtype=np.float64)
        return ((x - self.mean) @ self.directions.T / self.scale) @ self.align

    def invert(self, z: np.ndarray) -> np.ndarray:
        """Map preprocessed points back to the raw space (exact when q = d and align = I)."""
        z = np.asarray(z, dtype=np.float64)
        return (z @ self.align.T * self.scale) @ self.directions + self.mean


def sign_fixed_directions(x_centred: np.ndarray, q: int) -> np.ndarray:
    """Top-q right singular vectors (rows), each signed so its largest-magnitude entry is positive."""
    try:
        _, _, vt = np.linalg.svd(x_centred, full_matrices=False)
    except np.linalg.LinAlgError:  # LAPACK's divide-and-conquer (gesdd) can fail, e.g. on many constant columns
        _, _, vt = scipy.linalg.svd(x_centred, full_matrices=False, lapack_driver="gesvd")
    vt = vt[:q]
    pivot = vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)]
    return vt * np.where(pivot < 0, -1.0, 1.0)[:, None]


def procrustes(a: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    """Orthogonal R minimising ||a R - anchor||_F: with anchor^T a = U S V^T, R = V U^T."""
    u, _, vt = np.linalg.svd(anchor.T @ a)
    return vt.T @ u.T


def fit_preprocessing(layers: Sequence[np.ndarray], pca_dim: int | None = None,
                      frobenius: float = 100.0) -> list[LayerTransform]:
    """Fit the per-layer preprocessing on training representations, aligned to the last layer."""
    projected, partial = [], []
    for x in layers:
        x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
        q = min(pca_dim or x.shape[1], x.shape[1], len(x))
        mean = x.mean(axis=0)
        v = sign_fixed_directions(x - mean, q)
        a = (x - mean) @ v.T
        scale = float(np.linalg.norm(a) / frobenius)
        if scale == 0.0:
            raise DataError("a layer's training representations are constant; cannot scale them")
        projected.append(a / scale)
        partial.append((mean, v, scale))
    anchor = projected[-1]
    out = []
    for i, (a, (mean, v, scale)) in enumerate(zip(projected, partial)):
        if i == len(projected) - 1 or a.shape[1] != anchor.shape[1]:
            align = np.eye(a.shape[1])
        else:
            align = procrustes(a, anchor)
        out.append(LayerTransform(mean, v, scale, align))
    return out


def save_preprocessing(transforms: Sequence[LayerTransform], path: str | Path, metadata: dict | None = None) -> None:
    """Save transforms in the reference format: means_i, directions_i, norm_i, align_i (not for the last)."""
    tensors = {}
    last = len(transforms) - 1
    for i, t in enumerate(transforms):
        tensors[f"means_{i}"] = torch.from_numpy(t.mean[None, :].copy())
        tensors[f"directions_{i}"] = torch.from_numpy(t.directions.copy())
        tensors[f"norm_{i}"] = torch.tensor(t.scale, dtype=torch.float64)
        if i != last:
            tensors[f"align_{i}"] = torch.from_numpy(t.align.copy())
    save_safetensors(tensors, path, {"n_layers": len(transforms), **(metadata or {})})


def load_preprocessing(path: str | Path, layers: Sequence[int] | None = None) -> dict[int, LayerTransform]:
    """Load transforms saved by `save_preprocessing` or by the paper's code, keyed by layer index."""
    tensors, _ = load_safetensors(path)
    idx = sorted({int(k.split("_")[-1]) for k in tensors if k.startswith("means_")})
    if not idx:
        raise DataError(f"{path}: no 'means_i' tensors; not a preprocessing file")
    last = max(idx)
    out = {}
    for i in layers if layers is not None else idx:
        try:
            mean = tensors[f"means_{i}"].double().numpy().reshape(-1)
            directions = tensors[f"directions_{i}"].double().numpy()
            scale = float(tensors[f"norm_{i}"].double().reshape(-1)[0])
        except KeyError as exc:
            raise DataError(f"{path}: missing tensor {exc} for layer {i}") from exc
        q = directions.shape[0]
        align = (tensors[f"align_{i}"].double().numpy() if f"align_{i}" in tensors and i != last
                 else np.eye(q))
        out[i] = LayerTransform(mean, directions, scale, align)
    return out


def reps_frame(layers: Sequence[np.ndarray], labels: np.ndarray, prefix: str = "h") -> pd.DataFrame:
    """Long table of representations: one row per sample and layer, `sample`, `label`, `layer`, h0...

    Layers of different widths share the columns h0..h{max width - 1}; a narrower layer's extra columns are NaN.
    """
    n = len(labels)
    width = max(l.shape[1] for l in layers)
    if any(l.ndim != 2 or l.shape[0] != n for l in layers):
        raise ValueError("every layer must have shape (n_samples, width)")
    stacked = np.full((n * len(layers), width), np.nan, dtype=np.float32)
    for i, l in enumerate(layers):
        stacked[i * n:(i + 1) * n, :l.shape[1]] = l
    df = pd.DataFrame(stacked, columns=[f"{prefix}{i}" for i in range(width)])
    df.insert(0, "layer", np.repeat(np.arange(len(layers), dtype=np.int64), n))
    df.insert(0, "label", np.tile(labels.astype(np.int64), len(layers)))
    df.insert(0, "sample", np.tile(np.arange(n, dtype=np.int64), len(layers)))
    return df


def load_reps(path: str | Path) -> tuple[list[np.ndarray], np.ndarray]:
    """Raw layer representations (one (n, width_l) array per layer) and labels from a `.pt` file of the reps
    rule: 'layers' is a (layers, n, width) float tensor, or a list of (n, width_l) ones when widths differ."""

    obj = load_torch(path)
    if not isinstance(obj, dict) or "layers" not in obj or "labels" not in obj:
        raise DataError(f"{path}: expected a dict with 'layers' and 'labels'")
    layers, labels = obj["layers"], obj["labels"]
    if isinstance(layers, list | tuple):
        bad = [i for i, a in enumerate(layers) if not isinstance(a, torch.Tensor) or a.ndim != 2
               or not a.is_floating_point()]
        if not layers or bad:
            raise DataError(f"{path}: 'layers' must be float tensors (n, width) per layer; layer(s) {bad} are "
                            f"{[_describe(layers[i]) for i in bad]}" if layers else f"{path}: 'layers' is empty")
        arrays = [a.numpy() for a in layers]
    elif isinstance(layers, torch.Tensor) and layers.ndim == 3 and layers.is_floating_point():
        arrays = list(layers.numpy())
    else:
        raise DataError(f"{path}: 'layers' must be a float tensor (layers, n, width) or a list of (n, width) "
                        f"tensors, got {_describe(layers)}")
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1 or labels.is_floating_point() or labels.is_complex():
        raise DataError(f"{path}: 'labels' must be an integer tensor (n,), got {_describe(labels)}")
    shapes = [tuple(a.shape) for a in arrays]
    if any(s[0] != len(labels) or min(s) < 1 for s in shapes):
        raise DataError(f"{path}: 'layers' {shapes} (n, width per layer) and 'labels' "
                        f"{tuple(labels.shape)} (n,) do not agree")
    return arrays, labels.numpy()


def _describe(obj) -> str:
    """Shape and dtype of a tensor, else its type."""
    if isinstance(obj, torch.Tensor):
        return f"shape {tuple(obj.shape)}, dtype {str(obj.dtype).removeprefix('torch.')}"
    return type(obj).__name__


