"""Benchmark kaepipe.linalg.expm against torch.linalg.matrix_exp (float32, one CPU thread).

Usage: python bench/bench_expm.py [--sizes 20 800] [--repeat 5] [--matrices I+0.1randn 3randn/sqrt(p)] [--no-accuracy]

Times the forward pass (under no_grad) and forward + backward (``expm(W).backward(G)``)
for p x p float32 matrices; each cell is the median (and best) of --repeat runs (a run averages
enough calls to last ~0.2 s; torch and expm alternate).  At p < 32 expm hands the
matrix to torch.linalg.matrix_exp (faster there).  Then prints float32 accuracy: the
relative Frobenius error of the value (and, at p <= 64, of the gradient) against
torch.linalg.matrix_exp in float64.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from kaepipe import linalg
from kaepipe.linalg import expm


def make(name: str, p: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The matrix families of the accuracy study."""
    g = torch.Generator().manual_seed(seed + p)
    R = torch.randn(p, p, generator=g, dtype=torch.float64)
    if name == "I+0.1randn":
        W = torch.eye(p, dtype=torch.float64) + 0.1 * R
    elif name == "3randn/sqrt(p)":
        W = 3.0 * R / math.sqrt(p)
    elif name == "skew":
        W = 3.0 * (R - R.T) / math.sqrt(2 * p)
    elif name == "norm50":
        W = 50.0 * R / torch.linalg.matrix_norm(R, 1)
    else:
        raise KeyError(name)
    return W.to(dtype)


def per_call(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, tuple[float, float]]:
    """(median, best) over `repeat` runs of the mean time per call, calls batched to ~0.2 s a run.

    The functions are run in turn within each repeat, so that the load of a shared
    machine affects all of them alike.
    """
    counts = {}
    for key, fn in fns.items():
        fn()  # warm-up (the first backward of a process alone takes ~1 s)
        t0 = time.perf_counter()
        fn()
        counts[key] = max(1, int(0.2 / max(time.perf_counter() - t0, 1e-6)))
    runs: dict[str, list[float]] = {key: [] for key in fns}
    for _ in range(repeat):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(counts[key]):
                fn()
            runs[key].append((time.perf_counter() - t0) / counts[key])
    return {key: (statistics.median(v), min(v)) for key, v in runs.items()}


def timings(p: int, name: str, repeat: int) -> dict[str, tuple[float, float]]:
    W = make(name, p, dtype=torch.float32)
    G = torch.randn(p, p, generator=torch.Generator().manual_seed(1))
    fns = {}
    for label, fn in (("torch", torch.linalg.matrix_exp), ("expm", expm)):
        Wg = W.clone().requires_grad_(True)

        def fwd(fn=fn) -> None:
            with torch.no_grad():
                fn(W)

        def fwd_bwd(fn=fn, Wg=Wg) -> None:
            Wg.grad = None
            fn(Wg).backward(G)

        fns[f"{label} fwd"] = fwd
        fns[f"{label} fwd+bwd"] = fwd_bwd
    return per_call(fns, repeat)


def rel(X: torch.Tensor, R: torch.Tensor) -> float:
    return (torch.linalg.matrix_norm(X.double() - R) / torch.linalg.matrix_norm(R)).item()


def accuracy(p: int, name: str) -> str:
    W = make(name, p)
    R = torch.linalg.matrix_exp(W)
    n1 = torch.linalg.matrix_norm(W, 1).item()
    # p < 32 is handed to torch by expm; show the algorithm itself there
    ours = expm if p >= linalg._TORCH_BELOW else linalg._expm_2d
    line = (f"p={p:<4d} {name:15s} |W|_1={n1:7.2f}  value: torch32 {rel(torch.linalg.matrix_exp(W.float()), R):.2e}"
            f"  expm32 {rel(ours(W.float()), R):.2e}")
    if p <= 64:
        G = torch.randn(p, p, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

        def grad(fn: Callable, X: torch.Tensor) -> torch.Tensor:
            X = X.clone().requires_grad_(True)
            fn(X).backward(G.to(X.dtype))
            return X.grad

        ref = grad(torch.linalg.matrix_exp, W)
        line += (f"  gradient: torch32 {rel(grad(torch.linalg.matrix_exp, W.float()), ref):.2e}"
                 f"  expm32 {rel(grad(ours, W.float()), ref):.2e}")
    return line


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[20, 800])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--matrices", nargs="+", default=["I+0.1randn", "3randn/sqrt(p)"])
    ap.add_argument("--no-accuracy", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, 1 thread, float32; seconds per call, median (best) of {args.repeat} runs")
    cols = ("torch fwd", "expm fwd", "torch fwd+bwd", "expm fwd+bwd")
    print(f"{'p':>5} {'matrix':15s} " + " ".join(f"{c:>19}" for c in cols) + "  fwd+bwd speedup")
    for p in args.sizes:
        for name in args.matrices:
            t = timings(p, name, args.repeat)
            cells = " ".join(f"{t[c][0]:9.5f} ({t[c][1]:7.5f})" for c in cols)
            print(f"{p:>5} {name:15s} {cells}  {t['torch fwd+bwd'][0] / t['expm fwd+bwd'][0]:6.2f}x "
                  f"({t['torch fwd+bwd'][1] / t['expm fwd+bwd'][1]:.2f}x)", flush=True)
    if not args.no_accuracy:
        print("\nfloat32 accuracy (relative Frobenius error vs torch.linalg.matrix_exp in float64;"
              " expm32 at p = 20 is the algorithm itself, kaepipe.linalg._expm_2d)")
        for p in (20, 64, 800):
            for name in ("I+0.1randn", "3randn/sqrt(p)", "skew", "norm50"):
                print(accuracy(p, name), flush=True)


if __name__ == "__main__":
    main()
