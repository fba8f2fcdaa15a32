"""The isometry loss term, value + gradient, per call per member: the old `IsoLoss` (one member per
call) against the batched `kaepipe.nn.isometry.isometry_loss` paths, timed interleaved in one run.

    python bench/bench_isometry.py [--n 1024 --q 10 --p 20 --members 4 --repeats 30 --threads 1]
    python bench/bench_isometry.py --n 512 --q 784 --p 800 --device cuda

Each repeat times every variant once, in turn (the machine may be shared: medians over interleaved
repeats compare the variants under the same load), with `uptime`'s load printed before and after.
FLOPs are a nominal count per unordered pair: 3(q + p) for the two squared distances (difference,
square, sum per coordinate), 8 for the pair's scalars (two square roots, a division, ...) and 6p for
the gradient of both points (difference, product, sum per coordinate); the GFLOP/s they give are
set against the machine's measured GEMM rate (torch.mm at 1024^3, the same threads and dtype).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import time

import torch
from legacy_isoloss import IsoLoss

from kaepipe.nn.isometry import CPU_BLOCK, EPS, isometry_loss
from kaepipe.nn.losses import iso_loss


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def load() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


def flops_per_call(n: int, q: int, p: int) -> float:
    """Nominal FLOPs of one member's value and gradient (see the module docstring)."""
    return n * (n - 1) / 2 * (3 * (q + p) + 8 + 6 * p)


def gemm_rate(device: torch.device, dtype: torch.dtype, size: int = 1024, repeats: int = 7) -> float:
    """Median GFLOP/s of torch.mm at size^3 (the threads set for this run)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / statistics.median(times) / 1e9


def fma_peak(repeats: int = 5) -> float | None:
    """Median GFLOP/s of a numba loop of independent 512-bit fused multiply-adds in float32 (one core),
    the vector peak a kernel could reach (torch.mm's GEMM may use narrower vectors); None without numba."""
    try:
        import numba
        import numpy as np

        from kaepipe.nn.isometry import _stack_buffer
    except ImportError:
        return None
    width = 256

    @numba.njit(fastmath=True)
    def chains(reps, a, b):
        acc = numba.carray(_stack_buffer(256, np.float32), 256)  # registers: 16 independent chains
        for j in range(width):
            acc[j] = np.float32(j)
        for _ in range(reps):
            for j in range(width):
                acc[j] = acc[j] * a + b
        s = 0.0
        for j in range(width):
            s += acc[j]
        return s

    reps = 100_000
    chains(10, np.float32(0.999), np.float32(1e-3))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        chains(reps, np.float32(0.999), np.float32(1e-3))
        times.append(time.perf_counter() - t0)
    return 2 * width * reps / statistics.median(times) / 1e9


def full_batch(x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values and gradient of the whole batch as plain tensor code (the torch.compile variant)."""
    n = z.shape[1]

    def dist(u: torch.Tensor) -> torch.Tensor:
        sq = (u * u).sum(-1)
        return (sq[:, :, None] + sq[:, None, :] - 2.0 * torch.bmm(u, u.transpose(1, 2))).clamp_min(0.0).add(EPS).sqrt()

    dz = dist(z)
    r = (dz - dist(x)) * (1.0 - torch.eye(n, dtype=z.dtype, device=z.device))
    c = r / dz
    grad = (z * c.sum(-1, keepdim=True) - torch.bmm(c, z)) * (4.0 / (n * n))
    return (r * r).sum((1, 2)) / (n * n), grad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1024, help="points per batch")
    ap.add_argument("--q", type=int, default=10, help="input dimension")
    ap.add_argument("--p", type=int, default=20, help="code dimension")
    ap.add_argument("--members", type=int, default=4, help="members per batched call")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the numba kernel uses one)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the whole-batch tensor code")
    ap.add_argument("--reference", action="store_true", help="also time autograd of kaepipe.nn.losses.iso_loss (slow)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    m, n, q, p = args.members, args.n, args.q, args.p
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, n, q, generator=g, dtype=dtype).to(device)
    z0 = torch.randn(m, n, p, generator=g, dtype=dtype).to(device)
    print(f"n {n}, q {q}, p {p}, {m} members, {args.dtype}, {device}, {args.threads} torch thread(s), "
          f"{args.repeats} interleaved repeats")
    print("before:", load())

    old = IsoLoss()

    def run_old() -> None:
        for k in range(m):
            zk = z0[k].clone().requires_grad_()
            old(x[k], zk).backward()

    def run_new(method: str):
        def run() -> None:
            z = z0.clone().requires_grad_()
            isometry_loss(x, z, method).sum().backward()
        return run

    def run_reference() -> None:
        for k in range(m):
            zk = z0[k].clone().requires_grad_()
            iso_loss(x[k], zk).backward()

    variants = {"IsoLoss, per member (old)": run_old}
    if device.type == "cpu":
        variants[f"isometry_loss torch ({CPU_BLOCK}-row blocks, bmm)"] = run_new("torch")
        variants["isometry_loss numba (default)"] = run_new("numba")
    else:
        variants["isometry_loss torch (one block, default)"] = run_new("auto")
    if args.reference:
        variants["autograd reference iso_loss"] = run_reference
    if args.compile:
        compiled = torch.compile(full_batch, dynamic=False)
        variants["torch.compile whole batch"] = lambda: compiled(x, z0)

    first = {}
    for name, fn in variants.items():  # warm-up; the first numba call compiles or loads the kernel from cache
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        first[name] = time.perf_counter() - t0
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append((time.perf_counter() - t0) / m)
    print("after: ", load())

    flops = flops_per_call(n, q, p)
    rate = gemm_rate(device, dtype)
    floor_ms = flops / (rate * 1e9) * 1e3
    print(f"FLOPs per call per member (nominal): {flops / 1e6:.1f} M; GEMM rate {rate:.1f} GFLOP/s "
          f"-> {floor_ms:.3f} ms at the GEMM rate")
    peak = fma_peak() if device.type == "cpu" else None
    if peak:
        print(f"float32 vector FMA peak of one core (numba): {peak:.1f} GFLOP/s -> {flops / peak / 1e6:.3f} ms at it")
    base = statistics.median(times["IsoLoss, per member (old)"])
    print(f"{'variant':45s} {'median ms':>10s} {'min ms':>8s} {'vs old':>7s} {'GFLOP/s':>8s} "
          f"{'/GEMM':>6s} {'first call s':>12s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        gf = flops / med / 1e9
        print(f"{name:45s} {med * 1e3:10.3f} {min(ts) * 1e3:8.3f} {base / med:6.2f}x {gf:8.1f} "
              f"{gf / rate:6.2f} {first[name]:12.2f}")


if __name__ == "__main__":
    main()
