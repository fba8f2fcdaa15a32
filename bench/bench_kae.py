"""KAE training throughput at the paper's shapes: samples/s, epoch time, and the share of time spent
outside the model's forward/backward (batching, optimiser, bookkeeping). CPU by default.

    python bench/bench_kae.py [--epochs 3] [--threads 1] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch

from kaepipe.nn.isometry import isometry_loss
from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder
from kaepipe.nn.losses import kae_losses
from kaepipe.nn.train import TrainConfig, configure_torch, fit_kae

SHAPES = {  # name: (n_train, q, h, p, k, batch, lambda_iso)
    "yinyang": (5000, 10, 30, 20, 100, 1024, 1.0),
    "mnist": (10000, 784, 1000, 800, 10, 512, 1e-3),
}


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings are true."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench(name: str, epochs: int, device: torch.device) -> dict:
    n, q, h, p, k, batch, lam = SHAPES[name]
    g = torch.Generator().manual_seed(0)
    x0, xl = torch.randn(n, q, generator=g).to(device), torch.randn(n, q, generator=g).to(device)
    torch.manual_seed(0)
    model = KoopmanAutoencoder(KAEConfig(q, h, p, k)).to(device)
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=1e-3, optimizer="adamw", weight_decay=5e-4)
    fit_kae(model, x0, xl, TrainConfig(epochs=1, batch_size=batch, lr=1e-3, optimizer="adamw"), lam)  # warm-up
    sync(device)
    t0 = time.perf_counter()
    fit_kae(model, x0, xl, cfg, lam)
    sync(device)
    total = (time.perf_counter() - t0) / epochs
    # forward + backward alone, on the same batches
    iso = isometry_loss
    steps = (n + batch - 1) // batch
    t0 = time.perf_counter()
    for _ in range(epochs):
        for s in range(steps):
            losses = kae_losses(model, x0[s * batch:(s + 1) * batch], xl[s * batch:(s + 1) * batch], lam, iso)
            model.zero_grad(set_to_none=True)
            losses["total"].backward()
    sync(device)
    fwd_bwd = (time.perf_counter() - t0) / epochs
    return {"dataset": name, "epoch_s": total, "samples_per_s": n / total,
            "outside_fwd_bwd_share": max(0.0, 1 - fwd_bwd / total)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    device = configure_torch(args.threads, args.device)
    print(f"device {device}")
    print(f"{'dataset':8s} {'epoch s':>9s} {'samples/s':>10s} {'outside fwd/bwd':>16s}")
    for name in [args.only] if args.only else SHAPES:
        r = bench(name, args.epochs if name == "mnist" else max(args.epochs, 20), device)
        print(f"{r['dataset']:8s} {r['epoch_s']:9.3f} {r['samples_per_s']:10.0f} {100 * r['outside_fwd_bwd_share']:15.1f}%")


if __name__ == "__main__":
    main()
