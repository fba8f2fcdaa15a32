"""Benchmark kaepipe.topology: beta_0 at one scale for 10,000 x 784 points and Rips persistence for 2000 points.

Usage: python bench/bench_betti0.py [--n 10000] [--dim 784] [--repeat 3] [--pers-n 2000] [--skip-gauss]
Prints one line per measurement (seconds are wall-clock, best and median of --repeat runs).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np

from kaepipe import topology as T


def gaussian_mixture(n: int, dim: int, n_clusters: int, seed: int) -> np.ndarray:
    """n points from a mixture of n_clusters isotropic Gaussians, scaled to Frobenius norm 100 (docs/method.md section 4)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    X = centres[rng.integers(0, n_clusters, n)] + 0.5 * rng.standard_normal((n, dim))
    X -= X.mean(axis=0)
    return X * (100.0 / np.linalg.norm(X))


def manifold_cloud(n: int, dim: int, seed: int) -> np.ndarray:
    """n points of a 2-D sheet pushed through a random 3-layer ReLU network into `dim` dimensions."""
    rng = np.random.default_rng(seed)
    H = rng.random((n, 2))
    for _ in range(3):
        W = rng.standard_normal((H.shape[1], dim))
        H = np.maximum(H @ W + 0.3 * rng.standard_normal(dim), 0.0) + 0.05 * (H @ W)
    return H


def timed(fn: Callable[[], object], repeat: int) -> tuple[object, list[float]]:
    """Run fn `repeat` times; return its last result and the wall-clock seconds of each run."""
    times = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, times


def report(label: str, times: list[float], extra: str = "") -> None:
    """Print one benchmark line."""
    print(f"{label:<48s} best {min(times):7.2f} s   median {statistics.median(times):7.2f} s   {extra}", flush=True)


def bench_betti0(n: int, dim: int, k: int, repeat: int) -> None:
    """Time beta_0 at one eps (Euclidean, from scratch) and on the kNN hop metric."""
    X = gaussian_mixture(n, dim, n_clusters=10, seed=0)
    lengths = T.mst_edge_lengths(X)  # warm-up, and a scale where beta_0 is neither n nor 1
    eps = float(np.quantile(lengths, 0.5))
    b0, times = timed(lambda: T.betti0(X, eps), repeat)
    report(f"betti0 euclidean {n}x{dim} eps={eps:.4g}", times, f"beta_0={b0}")
    b0, times = timed(lambda: T.betti0(X, 1, metric="knn_geodesic", k=k), repeat)
    report(f"betti0 knn_geodesic {n}x{dim} k={k}", times, f"beta_0={b0}")


def main() -> None:
    """Run the benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=784)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pers-n", type=int, default=2000)
    parser.add_argument("--pers-repeat", type=int, default=1)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-edges", type=int, default=T.DEFAULT_MAX_EDGES, help="Rips edge budget")
    parser.add_argument("--skip-betti0", action="store_true", help="run only the persistence benchmarks")
    parser.add_argument("--skip-gauss", action="store_true", help="skip the slow isotropic-Gaussian persistence")
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}")

    if not args.skip_betti0:
        bench_betti0(args.n, args.dim, args.k, args.repeat)

    clouds = [("manifold", d) for d in (10, 20)]
    if not args.skip_gauss:
        clouds += [("gauss", d) for d in (10, 20)]
    for kind, dim in clouds:
        if kind == "manifold":
            P = manifold_cloud(args.pers_n, dim, seed=1)
        else:
            P = np.random.default_rng(2).standard_normal((args.pers_n, dim))
        dg, times = timed(lambda: T.persistence_diagrams(P, max_dim=1, max_edges=args.max_edges), args.pers_repeat)
        n1 = int((dg["dim"] == 1).sum())
        extra = f"H1 bars={n1} threshold={dg.attrs['max_edge_length']:.4g} exact={dg.attrs['exact']}"
        report(f"persistence H0+H1 {kind} {args.pers_n}x{dim}", times, extra)


if __name__ == "__main__":
    main()
