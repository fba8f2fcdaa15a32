"""Topology of point clouds: beta_0 at a fixed scale, Rips persistence, Betti curves and distances.

Conventions (docs/method.md section 7):

* beta_0 at scale eps (Euclidean) = the number of connected components of the graph that joins two
  points when their Euclidean distance is <= eps (an edge of length exactly eps joins). This equals
  the number of H0 bars of the Vietoris-Rips filtration with birth <= eps < death. It is computed
  from the minimum spanning tree (MST) of the complete Euclidean graph: with the MST edge lengths
  l_1 <= ... <= l_{n-1}, beta_0(eps) = n - #{i : l_i <= eps}, for every eps at once.
* beta_0 with ``metric="knn_geodesic"`` (Naitzat et al. 2020) is beta_0 of the Rips complex on the
  hop (graph-geodesic) distance of the symmetrised k-nearest-neighbour graph. Hop distances are
  integers, so for eps >= 1 it is the number of connected components of the kNN graph, and for
  0 < eps < 1 it is n (no two distinct points are at hop distance < 1).
* Persistence diagrams are pandas DataFrames with columns ``dim`` (int), ``birth``, ``death``
  (float; ``inf`` for classes still alive at the end of the filtration).

Precision: the MST is searched with squared distances from the Gram identity
||a-b||^2 = ||a||^2 + ||b||^2 - 2<a,b> in float64 on centred data, and the length of every chosen
edge is then recomputed directly as sqrt(sum((a-b)^2)) in float64 (as gudhi does). The returned
lengths are therefore exact distances of the chosen tree; the tree itself is minimal up to the
Gram rounding, delta ~ 1e-16 * d * max ||x - mean||^2 in squared distance, i.e. about delta / (2 eps)
in a distance near eps (~1e-13 for the MNIST setting). beta_0 can differ from exact arithmetic only
for an eps that close to an MST edge length. On points with small integer coordinates every distance
is computed exactly and ties (eps equal to an edge length) are exact. :func:`betti0_mst` with
``precision="float32"`` searches the tree on a float32 Gram matrix (about twice as fast) and then
makes beta_0 at the requested eps exact with a rigorous rounding bound (see its docstring).

Speed: Rips persistence of points whose n x n distance matrix fits in memory builds the 1-skeleton
from one BLAS distance computation (the chosen edges' lengths recomputed directly) instead of
``gudhi.RipsComplex(points=...)``; the Wasserstein distance of Rips H0 diagrams (all births 0) uses an
exact O(m n) dynamic programme, and of other diagrams gudhi's Hera (relative error <= 1e-6) unless
``method="pot"``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numpy.typing import ArrayLike
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist, pdist

from kaepipe.errors import ConfigError
from kaepipe.settings import METRICS

DEFAULT_MAX_EDGES = 200_000
DEFAULT_MAX_DENSE_BYTES = 4 * 2**30
_BLOCK_BYTES = 64 * 2**20
DIAGRAM_COLUMNS = ("dim", "birth", "death")


class WassersteinUnavailableError(ImportError):
    """Raised when the Wasserstein distance is asked for but POT (package `pot`) is not installed."""


# ----------------------------------------------------------------------------------------------
# validation helpers


def _as_points(X: ArrayLike, name: str = "X") -> np.ndarray:
    """Return X as a C-contiguous float64 (n, d) array, checking it is 2-D, non-empty and finite."""
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array of shape (n_points, n_features), got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one point and one feature, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_eps(eps: float) -> float:
    """Return eps as a float, checking it is a positive number (inf allowed)."""
    try:
        value = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a positive number, got {eps!r}") from None
    if not value > 0:  # also rejects NaN
        raise ValueError(f"eps must be > 0, got {eps!r}")
    return value


def _check_eps_values(eps_values: ArrayLike) -> np.ndarray:
    """Return eps_values as a 1-D float64 array of positive numbers."""
    arr = np.asarray(eps_values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"eps_values must be 1-D, got shape {arr.shape}")
    if not (arr > 0).all():  # also rejects NaN
        raise ValueError("every value of eps_values must be > 0")
    return arr


def _check_k(k: int, n: int) -> int:
    """Return k as an int, checking 1 <= k <= n - 1."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if k > n - 1:
        raise ValueError(f"k = {k} nearest neighbours need at least k + 1 = {k + 1} points, got {n}")
    return int(k)


def _check_metric(metric: str) -> str:
    """Return metric, checking it is one of METRICS."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def _block_rows(n: int, block_size: int | None) -> int:
    """Rows per block so that one (rows, n) float64 block takes about 64 MiB."""
    if block_size is None:
        return max(1, min(n, _BLOCK_BYTES // (8 * max(n, 1))))
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return int(block_size)


def _centred(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre X (distances do not change) and return it with its squared row norms."""
    Xc = X - X.mean(axis=0)
    return Xc, np.einsum("ij,ij->i", Xc, Xc)


def _sqdist_block(
    Xc: np.ndarray, sq: np.ndarray, start: int, stop: int, gram: np.ndarray | None = None
) -> np.ndarray:
    """Squared Euclidean distances from rows start:stop to every row (Gram identity, clipped at 0)."""
    block = Xc[start:stop] @ Xc.T if gram is None else gram[start:stop] * 1.0
    block *= -2.0
    block += sq[start:stop, None]
    block += sq[None, :]
    np.maximum(block, 0.0, out=block)
    return block


def _row_lengths(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Euclidean lengths of the rows of A - B, computed directly in float64."""
    diff = A - B
    return np.sqrt(np.einsum("ij,ij->i", diff, diff))


# ----------------------------------------------------------------------------------------------
# beta_0, Euclidean: minimum spanning tree


def _prim(n: int, sq: np.ndarray, row_of: Callable[[int], np.ndarray]) -> np.ndarray:
    """Prim's algorithm on the complete graph; row_of(v) gives <x_v, x_u> for all u. Returns (n-1, 2) edges."""
    rem = np.arange(1, n, dtype=np.intp)  # vertices not yet in the tree (compacted by swap-remove)
    sq_rem = sq[1:].copy()
    best = (sq[0] + sq_rem) - 2.0 * row_of(0)[1:]  # best squared distance to the tree
    parent = np.zeros(n - 1, dtype=np.intp)  # tree vertex attaining `best`
    edges = np.empty((n - 1, 2), dtype=np.intp)
    m = n - 1
    for step in range(n - 1):
        i = int(np.argmin(best[:m]))
        v = int(rem[i])
        edges[step, 0], edges[step, 1] = parent[i], v
        m -= 1
        rem[i], sq_rem[i], best[i], parent[i] = rem[m], sq_rem[m], best[m], parent[m]
        if m == 0:
            break
        cand = row_of(v)[rem[:m]]
        cand *= -2.0
        cand += sq_rem[:m]
        cand += sq[v]
        closer = cand < best[:m]
        np.copyto(best[:m], cand, where=closer)
        np.copyto(parent[:m], v, where=closer)
    return edges


def minimum_spanning_tree(
    X: ArrayLike, max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES
) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean MST of a point cloud: (edges (n-1, 2) int, lengths (n-1,) float64), in Prim order.

    O(n^2 d) time via BLAS. Uses the dense n x n Gram matrix (8 n^2 bytes; 0.8 GB for n = 10,000)
    when that fits in ``max_dense_bytes``; otherwise recomputes one Gram row per step (O(n d)
    memory, several times slower).
    """
    X = _as_points(X)
    n = X.shape[0]
    if n == 1:
        return np.empty((0, 2), dtype=np.intp), np.empty(0, dtype=np.float64)
    Xc, sq = _centred(X)
    if 8 * n * n <= max_dense_bytes:
        gram = Xc @ Xc.T
        edges = _prim(n, sq, lambda v: gram[v])
        del gram
    else:
        edges = _prim(n, sq, lambda v: Xc @ Xc[v])
    lengths = _row_lengths(X[edges[:, 0]], X[edges[:, 1]])
    return edges, lengths


def mst_edge_lengths(X: ArrayLike, max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES) -> np.ndarray:
    """Sorted Euclidean MST edge lengths (n - 1 values): the H0 death times of the Rips filtration."""
    _, lengths = minimum_spanning_tree(X, max_dense_bytes=max_dense_bytes)
    return np.sort(lengths)


def betti0_mst(
    X: ArrayLike,
    eps_values: ArrayLike = (),
    precision: str = "float64",
    max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    """(sorted spanning-tree edge lengths, exact Euclidean beta_0 at every eps of eps_values).

    ``precision="float64"``: the exact MST (:func:`mst_edge_lengths`); beta_0 read off its lengths.
    ``precision="float32"``: Prim's algorithm on a float32 Gram matrix, about twice as fast for
    high-dimensional points (half the BLAS work and memory traffic). The returned lengths are exact
    float64 distances of the chosen tree, but the tree is minimal only up to float32 rounding, so
    the beta_0(eps) curve they give can differ from the exact one for eps within about 1e-5
    (relative) of an edge length. beta_0 at each requested eps is nevertheless exact: besides the
    tree's edges of exact length <= eps, every pair whose float32 squared distance lies within a
    rigorous rounding bound, (2 gamma_d + 8 u)(|x_i| + |x_j|)^2 with gamma_d = d u / (1 - d u) and
    u = 2^-24, of eps^2 (and whose ends are still in different components) is measured exactly and
    joined when <= eps. Falls back to float64 when the n x n float32 Gram matrix does not fit.
    """
    X = _as_points(X)
    eps_arr = _check_eps_values(np.atleast_1d(np.asarray(eps_values, dtype=np.float64)))
    if precision not in ("float64", "float32"):
        raise ValueError(f"precision must be 'float64' or 'float32', got {precision!r}")
    n, d = X.shape
    if precision == "float64" or n < 3 or 4 * n * n > max_dense_bytes:
        lengths = mst_edge_lengths(X, max_dense_bytes=max_dense_bytes)
        return lengths, betti0_curve_from_lengths(lengths, eps_arr)
    Xc64, _ = _centred(X)
    Xc = Xc64.astype(np.float32)
    sq = np.einsum("ij,ij->i", Xc, Xc)
    gram = Xc @ Xc.T
    edges = _prim(n, sq, lambda v: gram[v])
    lengths = _row_lengths(X[edges[:, 0]], X[edges[:, 1]])
    order = np.argsort(lengths, kind="stable")
    edges, lengths = edges[order], lengths[order]
    u = 2.0**-24
    gamma = d * u / (1.0 - d * u)
    norms = np.sqrt(np.einsum("ij,ij->i", Xc64, Xc64))
    # rounding bound of a float32 squared distance from row i: (2 gamma + 8 u)(|x_i| + max |x_j|)^2
    row_bound = (2.0 * gamma + 8.0 * u) * (norms + norms.max()) ** 2
    rows = max(1, min(n, _BLOCK_BYTES // (4 * n)))
    betti = np.empty(eps_arr.size, dtype=np.int64)
    for e_idx, eps in enumerate(eps_arr):
        k = int(np.searchsorted(lengths, eps, side="right"))
        tree = sp.csr_matrix((np.ones(k, np.int8), (edges[:k, 0], edges[:k, 1])), shape=(n, n))
        count, labels = connected_components(tree, directed=False)
        if count == 1 or not math.isfinite(eps):
            betti[e_idx] = 1 if count == 1 or n == 1 else count
            continue
        labels = labels.astype(np.int32)
        extra_i, extra_j = [], []
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            block = gram[start:stop, start:] * np.float32(-2.0)  # pairs (i, j >= start) only
            block += sq[start:stop, None]
            block += sq[None, start:]
            cand = block <= (eps * eps + row_bound[start:stop]).astype(np.float32)[:, None]
            cand &= labels[start:stop, None] != labels[None, start:]
            ci, cj = np.nonzero(cand)
            ci += start
            cj += start
            keep = ci < cj
            ci, cj = ci[keep], cj[keep]
            if ci.size:
                close = _row_lengths(X[ci], X[cj]) <= eps
                extra_i.append(ci[close])
                extra_j.append(cj[close])
        if extra_i and sum(a.size for a in extra_i):
            ei, ej = np.concatenate(extra_i), np.concatenate(extra_j)
            graph = sp.csr_matrix((np.ones(ei.size, np.int8), (ei, ej)), shape=(n, n)) + tree
            count, _ = connected_components(graph, directed=False)
        betti[e_idx] = count
    return lengths, betti


def _check_lengths(lengths: ArrayLike) -> np.ndarray:
    """Return lengths as a sorted-checked 1-D float64 array of non-negative finite values."""
    arr = np.asarray(lengths, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {arr.shape}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError("lengths must be finite and non-negative")
    if (np.diff(arr) < 0).any():
        raise ValueError("lengths must be sorted ascending (as mst_edge_lengths returns them)")
    return arr


def betti0_from_lengths(lengths: ArrayLike, eps: float) -> int:
    """beta_0 at eps from sorted MST edge lengths: n - #(lengths <= eps), with n = len(lengths) + 1."""
    arr = _check_lengths(lengths)
    eps = _check_eps(eps)
    return int(arr.size + 1 - np.searchsorted(arr, eps, side="right"))


def betti0_curve_from_lengths(lengths: ArrayLike, eps_values: ArrayLike) -> np.ndarray:
    """beta_0 at every eps in eps_values (int64 array) from sorted MST edge lengths."""
    arr = _check_lengths(lengths)
    eps_arr = _check_eps_values(eps_values)
    return (arr.size + 1 - np.searchsorted(arr, eps_arr, side="right")).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# beta_0, Naitzat et al.: hop distance on the kNN graph


def knn_graph(
    X: ArrayLike, k: int, block_size: int | None = None, max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES
) -> sp.csr_matrix:
    """Symmetrised k-nearest-neighbour graph (i ~ j if either is among the other's k nearest), 0/1 CSR.

    Neighbours are found with float64 Gram-identity distances in row blocks; among points tied at
    the k-th distance the choice is arbitrary (but deterministic). A point is never its own
    neighbour; a duplicate of it counts as a neighbour at distance 0.
    """
    X = _as_points(X)
    n = X.shape[0]
    k = _check_k(k, n)
    Xc, sq = _centred(X)
    rows = _block_rows(n, block_size)
    # one symmetric product (BLAS syrk) is about twice as fast as row-block products
    gram = Xc @ Xc.T if 8 * n * n <= max_dense_bytes else None
    nbrs = np.empty((n, k), dtype=np.intp)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        block = _sqdist_block(Xc, sq, start, stop, gram)
        block[np.arange(stop - start), np.arange(start, stop)] = np.inf
        nbrs[start:stop] = np.argpartition(block, k - 1, axis=1)[:, :k]
    directed = sp.csr_matrix(
        (np.ones(n * k, dtype=np.int8), (np.repeat(np.arange(n), k), nbrs.ravel())), shape=(n, n)
    )
    return directed.maximum(directed.T).tocsr()


def knn_components(
    X: ArrayLike, k: int, block_size: int | None = None, max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES
) -> tuple[int, np.ndarray]:
    """Connected components of the symmetrised kNN graph: (count, label per point)."""
    graph = knn_graph(X, k, block_size=block_size, max_dense_bytes=max_dense_bytes)
    count, labels = connected_components(graph, directed=False)
    return int(count), labels


# ----------------------------------------------------------------------------------------------
# beta_0, dispatch


def betti0_curve(
    X: ArrayLike,
    eps_values: ArrayLike,
    metric: str = "euclidean",
    k: int = 10,
    max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES,
) -> np.ndarray:
    """beta_0 at every eps in eps_values (int64 array); eps in distance units, or in hops for knn_geodesic.

    ``k`` is used only by ``metric="knn_geodesic"`` (docs/method.md section 7.5 fixes no value; choose it explicitly).
    """
    metric = _check_metric(metric)
    eps_arr = _check_eps_values(eps_values)
    if metric == "euclidean":
        return betti0_curve_from_lengths(mst_edge_lengths(X, max_dense_bytes=max_dense_bytes), eps_arr)
    X = _as_points(X)
    count, _ = knn_components(X, k, max_dense_bytes=max_dense_bytes)
    return np.where(eps_arr >= 1.0, count, X.shape[0]).astype(np.int64)


def betti0(
    X: ArrayLike,
    eps: float,
    metric: str = "euclidean",
    k: int = 10,
    max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES,
) -> int:
    """beta_0 at scale eps: components of the graph joining points at distance <= eps (see module doc).

    ``metric="euclidean"``: Euclidean distance, eps in the data's units (10,000 x 784 in a few s).
    ``metric="knn_geodesic"``: hop distance on the symmetrised kNN graph (Naitzat et al. 2020), eps
    in hops: the number of components of the kNN graph for eps >= 1, and n for eps < 1.
    """
    eps = _check_eps(eps)
    return int(betti0_curve(X, [eps], metric=metric, k=k, max_dense_bytes=max_dense_bytes)[0])


# ----------------------------------------------------------------------------------------------
# Rips persistence with gudhi


def enclosing_radius(X: ArrayLike, block_size: int | None = None) -> float:
    """min over points of the largest distance to any other point: Rips is a cone (contractible) beyond it."""
    X = _as_points(X)
    n = X.shape[0]
    rows = _block_rows(n, block_size)
    radius = math.inf
    for start in range(0, n, rows):
        radius = min(radius, float(cdist(X[start : start + rows], X).max(axis=1).min()))
    return radius


def default_max_edge_length(X: ArrayLike, max_edges: int = DEFAULT_MAX_EDGES) -> float:
    """Default Rips threshold: min(enclosing radius, the max_edges-th smallest pairwise distance).

    At the enclosing radius the Rips complex is a cone, so a threshold >= it gives the exact diagram
    in every dimension; the edge budget bounds the cost (collapse + persistence) when it is smaller.
    """
    X = _as_points(X)
    return _default_threshold(X, enclosing_radius(X), max_edges)


def _default_threshold(X: np.ndarray, radius: float, max_edges: int, D: np.ndarray | None = None) -> float:
    """min(radius, the max_edges-th smallest pairwise distance of X); from D (dense distances) if given."""
    n = X.shape[0]
    if max_edges < 1:
        raise ValueError(f"max_edges must be >= 1, got {max_edges}")
    n_pairs = n * (n - 1) // 2
    if n_pairs <= max_edges:
        return radius
    if D is not None:
        return min(radius, _budget_threshold_dense(X, D, max_edges))
    dists = pdist(X)
    budget = float(np.partition(dists, max_edges - 1)[max_edges - 1])
    return min(radius, budget)


def _budget_threshold_dense(X: np.ndarray, D: np.ndarray, max_edges: int) -> float:
    """The max_edges-th smallest exact pairwise distance, located with the dense (Gram) distances D.

    The pairs whose D lies within a relative 1e-9 of the max_edges-th smallest D are recomputed
    directly, so the result is the same number pdist would give (Gram rounding is ~1e-13).
    """
    n = X.shape[0]
    vals = np.concatenate([D[i, i + 1 :] for i in range(n - 1)])
    approx = float(np.partition(vals, max_edges - 1)[max_edges - 1])
    lo, hi = approx * (1.0 - 1e-9), approx * (1.0 + 1e-9) + 1e-300
    below = int(np.count_nonzero(vals < lo))
    iu, ju = np.nonzero(np.triu((lo <= D) & (hi >= D), k=1))
    window = np.sort(_row_lengths(X[iu], X[ju]))
    rank = max_edges - below - 1
    return float(window[rank]) if 0 <= rank < window.size else approx


def h0_diagram(X: ArrayLike, max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES) -> pd.DataFrame:
    """Exact H0 diagram of the Euclidean Rips filtration from the MST: (0, l) per edge l > 0, plus (0, inf)."""
    lengths = mst_edge_lengths(X, max_dense_bytes=max_dense_bytes)
    deaths = np.concatenate([lengths[lengths > 0], [np.inf]])
    return pd.DataFrame(
        {"dim": np.zeros(deaths.size, np.int64), "birth": np.zeros(deaths.size), "death": deaths}
    )


def persistence_diagrams(
    X: ArrayLike,
    max_dim: int = 1,
    max_edge_length: float | None = None,
    sparse: float | None = None,
    collapse: bool = True,
    max_edges: int = DEFAULT_MAX_EDGES,
    max_dense_bytes: int = DEFAULT_MAX_DENSE_BYTES,
) -> pd.DataFrame:
    """Vietoris-Rips persistence diagram (H0..H_max_dim) of a point cloud as a dim/birth/death DataFrame.

    H0 is exact from the MST at any threshold. H1 (and higher) come from gudhi: the Rips 1-skeleton
    (threshold ``max_edge_length``, optional ``sparse`` approximation) -> ``collapse_edges()`` (keeps
    persistent homology exact) -> ``expansion(max_dim + 1)`` -> ``compute_persistence()``. Bars with
    death <= threshold are exact; classes still alive at the threshold get death = inf. Default
    threshold: the smaller of the enclosing radius and the ``max_edges``-th smallest pairwise
    distance (exact in every dimension when it equals the enclosing radius). Zero-length bars are
    dropped. The threshold used and whether the result is exact are stored in ``df.attrs``
    ("max_edge_length", "exact", and "n_edges": edges of the Rips 1-skeleton before the collapse).

    Without ``sparse``, and when the n x n distance matrix fits in ``max_dense_bytes``, distances
    are computed once with BLAS (Gram identity, float64), the edges within a hair of the threshold
    are selected, their lengths recomputed directly (sqrt of the summed squared differences, as
    gudhi does) and inserted into a gudhi SimplexTree: the same complex as ``gudhi.RipsComplex``,
    many times faster for high-dimensional points. Otherwise ``gudhi.RipsComplex(points=X)`` is used.
    """
    import gudhi

    X = _as_points(X)
    if isinstance(max_dim, bool) or not isinstance(max_dim, (int, np.integer)) or max_dim < 0:
        raise ValueError(f"max_dim must be an integer >= 0, got {max_dim!r}")
    if sparse is not None and not float(sparse) > 0:
        raise ValueError(f"sparse must be None or > 0, got {sparse!r}")
    n = X.shape[0]
    dense = sparse is None and 8 * n * n <= max_dense_bytes
    D = pairwise_distances(X) if dense else None
    radius = float(D.max(axis=1).min()) if D is not None else enclosing_radius(X)
    if max_edge_length is None:
        threshold = _default_threshold(X, radius, max_edges, D)
    else:
        threshold = _check_eps(max_edge_length)
    # A hair above the enclosing radius so that gudhi's own rounding cannot drop the cone's edges.
    exact_threshold = radius * (1.0 + 1e-9) + 1e-300
    if threshold >= radius:
        threshold = max(threshold, exact_threshold) if math.isfinite(threshold) else exact_threshold
    parts = [h0_diagram(X)]
    n_edges = None
    if max_dim >= 1 and X.shape[0] >= 3:
        if D is not None:
            tree, n_edges = _rips_skeleton(X, D, threshold)
            del D
        else:
            rips = gudhi.RipsComplex(points=X, max_edge_length=threshold, sparse=sparse)
            tree = rips.create_simplex_tree(max_dimension=1)
            n_edges = int(tree.num_simplices() - tree.num_vertices())
        if collapse:
            tree.collapse_edges()
        tree.expansion(int(max_dim) + 1)
        # persistence_dim_max: after a collapse the complex may have no simplex above dim max_dim,
        # and gudhi then omits the top dimension's bars (e.g. a lone cycle would lose its H1 bar)
        tree.compute_persistence(persistence_dim_max=True)
        for dim in range(1, int(max_dim) + 1):
            bars = np.asarray(tree.persistence_intervals_in_dimension(dim), dtype=np.float64).reshape(-1, 2)
            bars = bars[bars[:, 1] > bars[:, 0]]
            parts.append(
                pd.DataFrame({"dim": np.full(len(bars), dim, np.int64), "birth": bars[:, 0], "death": bars[:, 1]})
            )
    df = pd.concat(parts, ignore_index=True).sort_values(["dim", "birth", "death"], ignore_index=True)
    df = df.astype({"dim": np.int64, "birth": np.float64, "death": np.float64})
    df.attrs["max_edge_length"] = float(threshold)
    df.attrs["exact"] = bool(threshold >= radius and sparse is None)
    df.attrs["n_edges"] = n_edges
    return df


def pairwise_distances(X: ArrayLike) -> np.ndarray:
    """Dense n x n Euclidean distance matrix (float64, BLAS Gram identity on centred data, zero diagonal).

    Entries carry the Gram rounding (about 1e-16 * d * max ||x - mean||^2 in squared distance);
    use :func:`_row_lengths` on chosen pairs when exact lengths matter.
    """
    X = _as_points(X)
    Xc, sq = _centred(X)
    D = _sqdist_block(Xc, sq, 0, X.shape[0])
    np.sqrt(D, out=D)
    np.fill_diagonal(D, 0.0)
    return D


def _rips_skeleton(X: np.ndarray, D: np.ndarray, threshold: float):
    """gudhi SimplexTree of the Rips 1-skeleton at `threshold` from a dense distance matrix.

    Pairs within a relative 1e-9 of the threshold (by D) are candidates; their lengths are then
    recomputed directly and kept when <= threshold, as gudhi.RipsComplex(points=X) does.
    """
    import gudhi

    n = X.shape[0]
    slack = threshold * (1.0 + 1e-9) + 1e-12 if math.isfinite(threshold) else math.inf
    iu, ju = np.nonzero(np.triu(slack >= D, k=1))
    lengths = _row_lengths(X[iu], X[ju])
    keep = lengths <= threshold
    iu, ju, lengths = iu[keep], ju[keep], lengths[keep]
    tree = gudhi.SimplexTree()
    tree.insert_batch(np.arange(n, dtype=np.int64)[None, :], np.zeros(n))
    if iu.size:
        tree.insert_batch(np.vstack([iu, ju]).astype(np.int64), lengths)
    return tree, int(iu.size)


def truncate_diagram(diagram: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """The diagram of the same Rips filtration stopped at `threshold`.

    Bars born after the threshold disappear and bars alive at it become essential (death = inf):
    exactly what :func:`persistence_diagrams` returns at ``max_edge_length=threshold``, because the
    Rips complex at a smaller threshold is a sub-filtration. H0 (dim 0) bars are kept unchanged
    (persistence_diagrams computes H0 exactly at any threshold).
    """
    diagram = _check_diagram(diagram)
    threshold = _check_eps(threshold)
    higher = diagram["dim"].to_numpy() > 0
    keep = ~higher | (diagram["birth"].to_numpy(np.float64) <= threshold)
    out = diagram[keep].copy()
    alive = (out["dim"].to_numpy() > 0) & (out["death"].to_numpy(np.float64) > threshold)
    out.loc[alive, "death"] = np.inf
    out = out.reset_index(drop=True)
    out.attrs = dict(diagram.attrs)
    out.attrs["max_edge_length"] = min(float(diagram.attrs.get("max_edge_length", math.inf)), threshold)
    if threshold < float(diagram.attrs.get("max_edge_length", math.inf)):
        out.attrs["exact"] = False
    return out


def betti0_steps(lengths: ArrayLike, n: int | None = None) -> pd.DataFrame:
    """The whole beta_0(eps) step function from sorted MST edge lengths, as columns eps, betti0.

    One row at eps = 0 (n minus the zero-length edges: duplicates are one point) and one row per
    distinct positive edge length l, with beta_0(l) (the edge of length l already joins). Between two
    rows beta_0 is constant (right-continuous steps), so the table is the exact curve for every eps.
    """
    arr = _check_lengths(lengths)
    n = arr.size + 1 if n is None else int(n)
    if n != arr.size + 1:
        raise ValueError(f"{arr.size} MST edge lengths belong to {arr.size + 1} points, not {n}")
    values = np.unique(arr[arr > 0])
    eps = np.concatenate([[0.0], values])
    betti = n - np.searchsorted(arr, eps, side="right")
    return pd.DataFrame({"eps": eps, "betti0": betti.astype(np.int64)})


# ----------------------------------------------------------------------------------------------
# Betti curves


def _check_diagram(diagram: pd.DataFrame) -> pd.DataFrame:
    """Check a diagram DataFrame has dim/birth/death columns with birth <= death and finite births."""
    if not isinstance(diagram, pd.DataFrame):
        raise ValueError(f"a diagram must be a pandas DataFrame, got {type(diagram).__name__}")
    missing = [c for c in DIAGRAM_COLUMNS if c not in diagram.columns]
    if missing:
        raise ValueError(f"a diagram needs columns {DIAGRAM_COLUMNS}, missing {missing}")
    birth = diagram["birth"].to_numpy(np.float64)
    death = diagram["death"].to_numpy(np.float64)
    if not np.isfinite(birth).all() or np.isnan(death).any() or (death < birth).any():
        raise ValueError("a diagram needs finite births and deaths >= births (inf allowed for deaths)")
    return diagram


def _bars(diagram: pd.DataFrame, dim: int) -> np.ndarray:
    """The (m, 2) birth/death array of one dimension of a diagram."""
    rows = diagram[diagram["dim"] == dim]
    return np.column_stack([rows["birth"].to_numpy(np.float64), rows["death"].to_numpy(np.float64)])


def filtration_grid(*diagrams: pd.DataFrame, n: int = 200) -> np.ndarray:
    """n evenly spaced filtration values from 0 to the largest finite death over all given diagrams."""
    if not diagrams:
        raise ValueError("filtration_grid needs at least one diagram")
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    top = 0.0
    for diagram in diagrams:
        deaths = _check_diagram(diagram)["death"].to_numpy(np.float64)
        finite = deaths[np.isfinite(deaths)]
        if finite.size:
            top = max(top, float(finite.max()))
    if not top > 0:
        raise ValueError("the diagrams have no finite death > 0, so there is no filtration range")
    return np.linspace(0.0, top, n)


def betti_curves(
    diagram: pd.DataFrame, t_values: ArrayLike | None = None, dims: Sequence[int] | None = None
) -> pd.DataFrame:
    """Betti curves beta_d(t) = #bars of dim d with birth <= t < death; columns t, beta_0, beta_1, ...

    ``t_values`` defaults to ``filtration_grid(diagram)`` (200 values); ``dims`` to the dims present.
    """
    diagram = _check_diagram(diagram)
    t = filtration_grid(diagram) if t_values is None else np.asarray(t_values, dtype=np.float64)
    if t.ndim != 1 or np.isnan(t).any():
        raise ValueError("t_values must be a 1-D array without NaN")
    if dims is None:
        dims = sorted(int(d) for d in pd.unique(diagram["dim"]))
    out = {"t": t}
    for dim in dims:
        bars = _bars(diagram, int(dim))
        births = np.sort(bars[:, 0])
        deaths = np.sort(bars[:, 1])
        # bars with death <= t have birth <= t too, so #(birth <= t < death) = #(birth<=t) - #(death<=t)
        count = np.searchsorted(births, t, side="right") - np.searchsorted(deaths, t, side="right")
        out[f"beta_{int(dim)}"] = count.astype(np.int64)
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------------------------
# Diagram distances


def _bars_for_distance(diagram: pd.DataFrame, dim: int, essential: str) -> np.ndarray:
    """Bars of one dimension prepared for a diagram distance: essential ones dropped or kept."""
    if essential not in ("drop", "match"):
        raise ValueError(f"essential must be 'drop' or 'match', got {essential!r}")
    bars = _bars(_check_diagram(diagram), dim)
    if essential == "drop":
        bars = bars[np.isfinite(bars[:, 1])]
    return bars


def bottleneck(
    diag_a: pd.DataFrame, diag_b: pd.DataFrame, dim: int, essential: str = "drop", e: float | None = None
) -> float:
    """Bottleneck distance between the dim-d parts of two diagrams (gudhi.bottleneck_distance).

    ``essential="drop"`` (default) ignores bars with infinite death; ``"match"`` keeps them: gudhi
    matches essential bars by birth, and the distance is inf when their counts differ. ``e`` is
    gudhi's relative error: None = exact up to rounding (a diagram against itself may give ~1e-308),
    0 = exact algorithm (about twice as slow).
    """
    import gudhi

    a = _bars_for_distance(diag_a, dim, essential)
    b = _bars_for_distance(diag_b, dim, essential)
    return float(gudhi.bottleneck_distance(a, b, e))


def wasserstein(
    diag_a: pd.DataFrame,
    diag_b: pd.DataFrame,
    dim: int,
    order: float = 1.0,
    internal_p: float = np.inf,
    essential: str = "drop",
    method: str = "auto",
    delta: float = 1e-6,
) -> float:
    """p-Wasserstein distance between the dim-d parts of two diagrams (gudhi.wasserstein; needs POT).

    Ground metric L^internal_p (L^inf by default); ``essential`` as in :func:`bottleneck`.
    ``method``: "pot" = gudhi.wasserstein (exact optimal transport with POT; importing POT costs
    seconds); "hera" = gudhi.hera (auction algorithm, relative error <= ``delta``; no POT needed,
    several times faster); "line" = an exact O(m n) dynamic programme valid when every finite bar of
    both diagrams has the same birth (Rips H0 diagrams: all births 0), where matched costs are
    |death_a - death_b|^order and optimal matchings do not cross; "auto" (default) = "line" when it
    applies, else "hera". ``essential="match"`` needs "pot".
    Raises :class:`WassersteinUnavailableError` (an ImportError) when POT is needed but not installed.
    """
    if not order >= 1:
        raise ValueError(f"order must be >= 1, got {order}")
    if method not in ("auto", "pot", "hera", "line"):
        raise ValueError(f"method must be 'auto', 'pot', 'hera' or 'line', got {method!r}")
    a = _bars_for_distance(diag_a, dim, essential)
    b = _bars_for_distance(diag_b, dim, essential)
    line = _common_birth(a, b)
    if method == "line" and line is None:
        raise ValueError("method='line' needs finite bars that all share one birth")
    if method in ("auto", "line") and line is not None:
        return _wasserstein_line(a[:, 1] - line, b[:, 1] - line, float(order), float(internal_p))
    if method in ("auto", "hera") and essential == "drop":
        from gudhi.hera import wasserstein_distance as hera_wasserstein

        return float(hera_wasserstein(a, b, order=order, internal_p=internal_p, delta=delta))
    try:
        from gudhi.wasserstein import wasserstein_distance
    except ImportError as exc:  # gudhi.wasserstein imports POT (`ot`)
        raise WassersteinUnavailableError(
            "the Wasserstein distance needs POT: pip install pot (or kaepipe[wasserstein])"
        ) from exc
    return float(
        wasserstein_distance(a, b, order=order, internal_p=internal_p, keep_essential_parts=essential == "match")
    )


def _common_birth(a: np.ndarray, b: np.ndarray) -> float | None:
    """The birth shared by every bar of a and b when all are finite and share one birth, else None."""
    both = np.concatenate([a, b])
    if both.size == 0:
        return 0.0
    if not np.isfinite(both[:, 1]).all():
        return None
    birth = both[0, 0]
    return float(birth) if (both[:, 0] == birth).all() else None


def _wasserstein_line(pa: np.ndarray, pb: np.ndarray, order: float, internal_p: float) -> float:
    """Exact p-Wasserstein between diagrams whose bars share one birth, from their persistences.

    Points (b, b + p_i): a match costs |p_i - q_j|^order, a point sent to the diagonal costs
    (p_i * 2^(1/internal_p - 1))^order (its L^internal_p distance to the diagonal). |x - y|^order is
    Monge, so an optimal partial matching pairs the sorted persistences without crossings:
    dp[i, j] = min(dp[i-1, j] + del_a[i], dp[i, j-1] + del_b[j], dp[i-1, j-1] + cost(i, j)),
    computed one row at a time (the dp[i, j-1] recursion is a prefix minimum).
    """
    to_diag = 2.0 ** ((0.0 if math.isinf(internal_p) else 1.0 / internal_p) - 1.0)
    pa = np.sort(pa)
    pb = np.sort(pb)
    del_a = (pa * to_diag) ** order
    del_b = (pb * to_diag) ** order
    B = np.concatenate([[0.0], np.cumsum(del_b)])  # dp[0, j]
    prev = B.copy()
    for i in range(pa.size):
        c = prev + del_a[i]
        c[1:] = np.minimum(c[1:], prev[:-1] + np.abs(pa[i] - pb) ** order)
        prev = B + np.minimum.accumulate(c - B)
    return float(max(prev[-1], 0.0) ** (1.0 / order))


# ----------------------------------------------------------------------------------------------
# Distance distortion


def distance_distortion(X: ArrayLike, Y: ArrayLike, block_size: int | None = None) -> float:
    """Relative distortion ||D_X - D_Y||_F / ||D_X||_F of the pairwise Euclidean distance matrices.

    X and Y hold the same n points (rows) in possibly different dimensions. Computed in row blocks
    with float64 Gram-identity distances (memory O(block * n)); the diagonal is exactly 0.
    """
    X = _as_points(X, "X")
    Y = _as_points(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise ValueError(f"X and Y must hold the same number of points, got {X.shape[0]} and {Y.shape[0]}")
    n = X.shape[0]
    Xc, sqx = _centred(X)
    Yc, sqy = _centred(Y)
    rows = _block_rows(n, block_size)
    num = 0.0
    den = 0.0
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        dx = np.sqrt(_sqdist_block(Xc, sqx, start, stop))
        dy = np.sqrt(_sqdist_block(Yc, sqy, start, stop))
        diag = (np.arange(stop - start), np.arange(start, stop))
        dx[diag] = 0.0
        dy[diag] = 0.0
        dy -= dx
        num += float(np.einsum("ij,ij->", dy, dy))
        den += float(np.einsum("ij,ij->", dx, dx))
    if not den > 0:
        raise ValueError("all points of X coincide (||D_X||_F = 0), so the relative distortion is undefined")
    return math.sqrt(num / den)


def subset_indices(n: int, points: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a fixed random subset of `points` of n samples (all of them when None or >= n)."""
    if points is None or points >= n:
        return np.arange(n)
    if points < 2:
        raise ConfigError(f"topology needs at least 2 points, got {points}")
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=int(points), replace=False))


def _betti0_and_steps(X: np.ndarray, eps: float, metric: str, k: int, precision: str = "float64"
                      ) -> tuple[int, pd.DataFrame]:
    """beta_0 at eps and the whole curve (eps, betti0) of one point cloud."""
    n = X.shape[0]
    if metric == "euclidean":
        lengths, betti = betti0_mst(X, [eps], precision)
        return int(betti[0]), betti0_steps(lengths, n)
    count, _ = knn_components(X, k)
    # hop metric: nothing is joined below one hop, the kNN graph's components from one hop on
    steps = pd.DataFrame({"eps": [0.0, 1.0], "betti0": np.array([n, count], dtype=np.int64)})
    return int(count) if eps >= 1.0 else n, steps


def betti0_profile(clouds: Mapping[int, np.ndarray], eps: float, metric: str = "euclidean", k: int = 10,
                   log: Callable[[str], None] | None = None, label: str = "step", precision: str = "float64"
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


def curve_l1(t: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Area between two Betti curves sampled on the grid t (trapezoidal rule)."""
    return float(np.trapezoid(np.abs(np.asarray(a, float) - np.asarray(b, float)), t))


def compare_diagrams(original: pd.DataFrame, encoded: pd.DataFrame, n_values: int = 200,
                     with_wasserstein: bool = True) -> tuple[dict[str, Any], pd.DataFrame]:
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
        out[f"bottleneck_h{d}"] = bottleneck(a, b, d)
        if with_wasserstein:
            try:
                out[f"wasserstein_h{d}"] = wasserstein(a, b, d)
            except WassersteinUnavailableError:
                out[f"wasserstein_h{d}"] = float("nan")
        for name, dg in (("original", a), ("encoded", b)):
            bars = dg[dg["dim"] == d]
            out[f"{name}_bars_h{d}"] = len(bars)
            out[f"{name}_essential_h{d}"] = int(np.isinf(bars["death"]).sum())
    grid = filtration_grid(a, b, n=n_values)
    ca = betti_curves(a, grid, dims=dims)
    cb = betti_curves(b, grid, dims=dims)
    for d in dims:
        mask = grid <= thr if d > 0 else np.ones_like(grid, dtype=bool)
        out[f"betti{d}_curve_l1"] = curve_l1(grid[mask], ca[f"beta_{d}"].to_numpy()[mask],
                                             cb[f"beta_{d}"].to_numpy()[mask])
    curves = pd.concat([ca.assign(cloud="original"), cb.assign(cloud="encoded")], ignore_index=True)
    return out, curves
