"""Training machinery: devices and threads, optimisers, per-epoch schedules, batching, the classifier loop."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from kaepipe.config import DictConfig
from kaepipe.errors import ConfigError, TrainingDivergedError
from kaepipe.nn.isometry import isometry_loss
from kaepipe.nn.kae import KoopmanAutoencoder
from kaepipe.nn.losses import TERMS, kae_losses, loss_weights


@dataclass(frozen=True)
class TrainConfig(DictConfig):
    """Optimiser, schedule and loop settings shared by the base network and the KAE."""

    epochs: int
    batch_size: int
    lr: float
    optimizer: str = "sgd"  # sgd | adamw
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "triangular"  # triangular | cosine | constant
    peak_frac: float = 0.2
    clip_grad_norm: float | None = None
    seed: int = 0


# ---------------------------------------------------------------------------------------------
# Devices, threads, determinism
# ---------------------------------------------------------------------------------------------

def resolve_device(preference: str = "auto") -> torch.device:
    """The torch device for `auto|cpu|cuda`: CUDA when visible (auto), else the CPU."""
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if preference == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'device' is 'cuda' but no CUDA device is visible")
    if preference not in ("cpu", "cuda"):
        raise ConfigError(f"config key 'device' must be auto, cpu or cuda, got '{preference}'")
    return torch.device(preference)


def configure_torch(threads: int = 1, device: str = "auto") -> torch.device:
    """Set torch's intra-op threads and deterministic algorithms; return the device to use."""
    torch.set_num_threads(max(1, int(threads)))
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return resolve_device(device)


# ---------------------------------------------------------------------------------------------
# Optimisers and schedules
# ---------------------------------------------------------------------------------------------

def param_groups(model: nn.Module, weight_decay: float, member_dims: int = 0) -> list[dict]:
    """Weight decay on weight matrices (2-D and above) only, not on biases or BatchNorm.

    member_dims: leading dimensions that stack independent models (an ensemble), not counted.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim - member_dims >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig, member_dims: int = 0) -> torch.optim.Optimizer:
    """SGD with momentum or AdamW over `param_groups`, starting at the schedule's first rate."""
    groups = param_groups(model, cfg.weight_decay, member_dims)
    lr0 = lr_at(0, cfg)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr0, momentum=cfg.momentum, foreach=True)
    if cfg.optimizer == "adamw":
        # fused: one kernel for all parameters (2-3x faster steps for small models, CPU and CUDA). An ensemble
        # on the CPU: foreach, whose arithmetic per element does not depend on where the element sits in its
        # tensor (the CPU's fused kernel rounds its vector body and its scalar tail differently, so a member's
        # step would depend on the members stacked before it); a member then trains bit for bit as in a pack
        # of one. On CUDA (whose batched products promise no such invariance) the fused kernel stays.
        cpu_ensemble = member_dims > 0 and not any(p.is_cuda for p in model.parameters())
        return torch.optim.AdamW(groups, lr=lr0, **({"foreach": True} if cpu_ensemble else {"fused": True}))
    raise ConfigError(f"optimizer must be sgd or adamw, got '{cfg.optimizer}'")


def lr_at(epoch: int, cfg: TrainConfig) -> float:
    """Learning rate of an epoch: triangular cycle (0 -> lr over peak_frac, then -> 0), cosine or constant."""
    e, n = epoch, cfg.epochs
    if cfg.schedule == "triangular":
        up = max(1, int(round(cfg.peak_frac * n)))
        down = max(1, n - up)
        return cfg.lr * (e / up if e < up else max(0.0, (n - e) / down))
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * e / n))
    if cfg.schedule == "constant":
        return cfg.lr
    raise ConfigError(f"schedule must be triangular, cosine or constant, got '{cfg.schedule}'")


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for g in opt.param_groups:
        g["lr"] = lr


def batch_indices(n: int, batch_size: int, generator: torch.Generator, device: torch.device,
                  min_last: int = 1) -> Iterator[torch.Tensor]:
    """Shuffled index batches of one epoch; a last batch smaller than `min_last` is dropped."""
    perm = torch.randperm(n, generator=generator).to(device)
    for start in range(0, n, batch_size):
        idx = perm[start:start + batch_size]
        if len(idx) >= min_last:
            yield idx


def check_finite(epoch: int, terms: Mapping[str, torch.Tensor]) -> None:
    """Raise TrainingDivergedError naming the first non-finite loss term."""
    for name, value in terms.items():
        v = float(value)
        if not math.isfinite(v):
            raise TrainingDivergedError(epoch, name, v)


# ---------------------------------------------------------------------------------------------
# Classifier training
# ---------------------------------------------------------------------------------------------

def train_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig,
                     log_every: int = 0, log=print) -> pd.DataFrame:
    """Train a classifier with cross-entropy on in-memory tensors; return the per-epoch curve."""
    device = x.device
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    rows = []
    t0 = time.perf_counter()
    model.train()
    for epoch in range(cfg.epochs):
        lr = lr_at(epoch, cfg)
        set_lr(opt, lr)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for idx in batch_indices(len(x), cfg.batch_size, gen, device, min_last=2):
            xb, yb = x[idx], y[idx]
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.clip_grad_norm:
                nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm, foreach=True)  # no host sync
            opt.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += len(idx)
        check_finite(epoch, {"cross_entropy": loss_sum})
        rows.append({"epoch": epoch, "lr": lr, "loss": float(loss_sum) / seen, "acc": float(correct) / seen})
        if log_every and (epoch % log_every == 0 or epoch == cfg.epochs - 1):
            r = rows[-1]
            log(f"epoch {epoch:5d}  lr {lr:.2e}  loss {r['loss']:.4f}  acc {r['acc']:.4f}  "
                f"({time.perf_counter() - t0:.1f}s)")
    model.eval()
    return pd.DataFrame(rows)


def seed_all(seed: int) -> None:
    """Seed torch and numpy's global generators (model initialisation draws from torch's)."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def fit_kae(model: KoopmanAutoencoder, x0: torch.Tensor, xl: torch.Tensor, cfg: TrainConfig,
            weights: Mapping[str, float] | float, log: Callable[[str], None] = print, log_every: int = 0) -> pd.DataFrame:
    """Train a KAE on in-memory (x0, x_last) pairs (n, q) with the per-epoch schedule; return per-epoch losses.

    `weights`: the loss terms' weights (`kaepipe.nn.losses.loss_weights`; a number is lambda_iso).
    """
    w = loss_weights(weights)
    device = x0.device
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    iso = isometry_loss
    rows = []
    t0 = time.perf_counter()
    model.train()
    for epoch in range(cfg.epochs):
        lr = lr_at(epoch, cfg)
        set_lr(opt, lr)
        sums = {t: torch.zeros((), dtype=x0.dtype, device=device) for t in (*TERMS, "total")}
        seen = 0
        for idx in batch_indices(len(x0), cfg.batch_size, gen, device, min_last=2):
            losses = kae_losses(model, x0[idx], xl[idx], w, iso)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            if cfg.clip_grad_norm:
                nn.utils.clip_grad_norm_(params, cfg.clip_grad_norm, foreach=True)  # no host sync
            opt.step()
            for t in sums:
                sums[t] += losses[t].detach() * len(idx)
            seen += len(idx)
        check_finite(epoch, {t: v for t, v in sums.items() if w.get(t, 1.0) > 0})
        rows.append({"epoch": epoch, "lr": lr, **{t: float(v) / seen for t, v in sums.items()}})
        if log_every and (epoch % log_every == 0 or epoch == cfg.epochs - 1):
            r = rows[-1]
            log(f"epoch {epoch:5d}  lr {lr:.2e}  " + "  ".join(f"{t} {r[t]:.5f}" for t in ("total", *TERMS))
                + f"  ({time.perf_counter() - t0:.1f}s)")
    model.eval()
    return pd.DataFrame(rows)


def kae_train_config(kae: Mapping, seed: int) -> TrainConfig:
    """The KAE's optimiser settings from its config block (AdamW by default)."""
    return TrainConfig.from_dict({"optimizer": "adamw", **kae, "seed": seed})
