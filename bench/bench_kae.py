"""KAE training throughput at the paper's shapes on the CPU: samples/s, epoch time, and the share of
time spent outside the model's forward/backward (batching, optimiser, bookkeeping).

    python bench/bench_kae.py [--epochs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from kaepipe.kae import IsoLoss, KAEConfig, KoopmanAutoencoder, fit_kae, kae_losses
from kaepipe.train import TrainConfig, configure_torch

SHAPES = {  # name: (n_train, q, h, p, k, batch, lambda_iso)
    "yinyang": (5000, 10, 30, 20, 100, 1024, 1.0),
    "mnist": (10000, 784, 1000, 800, 10, 512, 1e-3),
}


def bench(name: str, epochs: int) -> dict:
    n, q, h, p, k, batch, lam = SHAPES[name]
    g = torch.Generator().manual_seed(0)
    x0, xl = torch.randn(n, q, generator=g), torch.randn(n, q, generator=g)
    torch.manual_seed(0)
    model = KoopmanAutoencoder(KAEConfig(q, h, p, k))
    cfg = TrainConfig(epochs=epochs, batch_size=batch, lr=1e-3, optimizer="adamw", weight_decay=5e-4)
    t0 = time.perf_counter()
    fit_kae(model, x0, xl, cfg, lam)
    total = (time.perf_counter() - t0) / epochs
    # forward + backward alone, on the same batches
    iso = IsoLoss()
    steps = (n + batch - 1) // batch
    t0 = time.perf_counter()
    for _ in range(epochs):
        for s in range(steps):
            losses = kae_losses(model, x0[s * batch:(s + 1) * batch], xl[s * batch:(s + 1) * batch], lam, iso)
            model.zero_grad(set_to_none=True)
            losses["total"].backward()
    fwd_bwd = (time.perf_counter() - t0) / epochs
    return {"dataset": name, "epoch_s": total, "samples_per_s": n / total,
            "outside_fwd_bwd_share": max(0.0, 1 - fwd_bwd / total)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", choices=sorted(SHAPES))
    args = ap.parse_args()
    configure_torch(args.threads, "cpu")
    print(f"{'dataset':8s} {'epoch s':>9s} {'samples/s':>10s} {'outside fwd/bwd':>16s}")
    for name in [args.only] if args.only else SHAPES:
        r = bench(name, args.epochs if name == "mnist" else max(args.epochs, 20))
        print(f"{r['dataset']:8s} {r['epoch_s']:9.3f} {r['samples_per_s']:10.0f} {100 * r['outside_fwd_bwd_share']:15.1f}%")


if __name__ == "__main__":
    main()
