"""The worked example's network (`kaepipe.nn.cnn.SmallCNN`) trained on Fashion-MNIST by the project's own
loop (`kaepipe.nn.train.train_classifier`): seconds per epoch and the test accuracy after the last epoch.

    python bench/bench_cnn.py [--threads 1 --epochs 3 --batch 128 --optimizer adamw --lr 3e-3 --schedule cosine]
    python bench/bench_cnn.py --root DIR     # a folder of the four Fashion-MNIST IDX files

The data are read as the pipeline reads them (the registry's `fashion_mnist` source, all 60,000 training
and 10,000 test images, normalised and flattened); `uptime`'s load is printed before and after (the
machine may be shared).
"""

from __future__ import annotations

import argparse
import subprocess
import time

import torch

from kaepipe.data import FASHION_MNIST, make_split
from kaepipe.nn.cnn import SmallCNN, parameter_count
from kaepipe.nn.resmlp import predict
from kaepipe.nn.train import TrainConfig, configure_torch, seed_all, train_classifier


def load() -> str:
    return subprocess.run(["uptime"], check=False, capture_output=True, text=True).stdout.strip()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=FASHION_MNIST.default_root)
    ap.add_argument("--train-size", type=int, default=None, help="training images (default all 60,000)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--optimizer", choices=("sgd", "adamw"), default="adamw")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--weight-decay", type=float, default=0.0)
    ap.add_argument("--schedule", choices=("triangular", "cosine", "constant"), default="cosine")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    device = configure_torch(args.threads, "cpu")
    ds = {"source": "fashion_mnist", "classes": 10,
          "splits": {"train": {"size": args.train_size, "seed": 0}, "test": {"size": None, "seed": 0}}}
    (xtr, ytr), (xte, yte) = (make_split(ds, s, args.root) for s in ("train", "test"))
    xtr, ytr, xte, yte = (torch.from_numpy(a).to(device) for a in (xtr, ytr, xte, yte))
    seed_all(args.seed)
    model = SmallCNN().to(device)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch, lr=args.lr, optimizer=args.optimizer,
                      momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule, seed=args.seed)
    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == parameter_count()
    print(f"load before: {load()}")
    print(f"{len(xtr)} training, {len(xte)} test images; {n_params} parameters; threads {args.threads}; {cfg}")
    t0 = time.perf_counter()
    curve = train_classifier(model, xtr, ytr, cfg, log_every=1)
    seconds = time.perf_counter() - t0
    acc = float((predict(model, xte) == yte).float().mean())
    print(curve.to_string(index=False))
    print(f"{seconds / args.epochs:.1f} s per epoch ({seconds:.1f} s for {args.epochs}); test accuracy {acc:.4f}")
    print(f"load after: {load()}")


if __name__ == "__main__":
    main()
