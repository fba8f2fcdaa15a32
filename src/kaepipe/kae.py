"""Koopman autoencoders: model, losses (with fractions of variance unexplained) and the training loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from kaepipe.config import DictConfig
from kaepipe.errors import ConfigError
from kaepipe.linalg import expm
from kaepipe.train import TrainConfig, batch_indices, check_finite, clip_grad_norm, lr_at, make_optimizer, set_lr

LOSS_TERMS = ("recon", "state", "latent", "iso")


PARAMETRIZATIONS = ("exponential", "linear", "eigen")


@dataclass(frozen=True)
class KAEConfig(DictConfig):
    """Architecture of a Koopman autoencoder: q -> h -> p encoder, p x p operator, k steps."""

    in_features: int
    hidden: int
    latent: int
    k: int
    parametrization: str = "exponential"  # exponential | linear | eigen (see KoopmanOperator)
    negative_slope: float = 0.01
    init: str = "torch"  # torch (PyTorch's default) | kaiming (Kaiming-normal weights, biases 0.01)
    latent_stop_gradient: bool = False  # True: the latent loss trains K only (phi(x0), phi(xL) detached)

    def __post_init__(self) -> None:
        if self.parametrization not in PARAMETRIZATIONS:
            raise ConfigError(f"kae.parametrization must be one of {PARAMETRIZATIONS}, got '{self.parametrization}'")
        if self.init not in ("torch", "kaiming"):
            raise ConfigError(f"kae.init must be torch or kaiming, got '{self.init}'")
        if min(self.in_features, self.hidden, self.latent, self.k) < 1:
            raise ConfigError(f"KAE sizes and k must be positive, got {asdict(self)}")


def mlp(n_in: int, n_hidden: int, n_out: int, slope: float) -> nn.Sequential:
    """Linear -> LeakyReLU -> Linear, the KAE's encoder and decoder shape."""
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.LeakyReLU(slope), nn.Linear(n_hidden, n_out))


class KoopmanOperator(nn.Module):
    """The bias-free operator K, in one of three parametrisations, each starting at K^k = e I or K = I.

    exponential: K = expm(W / k), W starts at I (the paper's). linear: K = W, W starts at I.
    eigen: K = V^-1 expm(diag(d) / k) V with V Xavier-normal and d = 1 (the authors' later code):
    real positive eigenvalues exp(d / k) only, no rotation.
    """

    def __init__(self, dim: int, k: int, parametrization: str = "exponential") -> None:
        super().__init__()
        self.k, self.parametrization = k, parametrization
        if parametrization == "eigen":
            self.weight = nn.Parameter(nn.init.xavier_normal_(torch.empty(dim, dim)))
            self.rates = nn.Parameter(torch.ones(dim))
        else:
            self.weight = nn.Parameter(torch.eye(dim))

    def power(self, t: int) -> torch.Tensor:
        """K^t as a p x p matrix (column convention: z_next = z @ K^T); one expm or solve for any t."""
        if self.parametrization == "exponential":
            return expm(self.weight * (t / self.k))
        if self.parametrization == "eigen":
            v = self.weight
            return torch.linalg.solve(v, torch.exp(self.rates * (t / self.k))[:, None] * v)
        return torch.linalg.matrix_power(self.weight, t)

    def matrix(self) -> torch.Tensor:
        """The one-step operator K."""
        return self.power(1)


class KoopmanAutoencoder(nn.Module):
    """phi (encoder), K (operator) and psi (decoder): x_L ~= psi(K^k phi(x_0))."""

    def __init__(self, cfg: KAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = mlp(cfg.in_features, cfg.hidden, cfg.latent, cfg.negative_slope)
        self.decoder = mlp(cfg.latent, cfg.hidden, cfg.in_features, cfg.negative_slope)
        self.koopman = KoopmanOperator(cfg.latent, cfg.k, cfg.parametrization)
        if cfg.init == "kaiming":  # the reference code's initialisation of every linear layer
            from kaepipe.models import init_linear

            for layer in (*self.encoder, *self.decoder):
                if isinstance(layer, nn.Linear):
                    init_linear(layer)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Observables phi(x)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Back to representation space: psi(z)."""
        return self.decoder(z)

    def advance(self, z: torch.Tensor, t: int | None = None) -> torch.Tensor:
        """Apply K t times (default k) to row-vector observables: z @ (K^t)^T."""
        return z @ self.koopman.power(self.cfg.k if t is None else t).T

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """The predicted last layer psi(K^k phi(x0))."""
        return self.decode(self.advance(self.encode(x0)))

    def latent_path(self, x0: torch.Tensor) -> torch.Tensor:
        """Observables K^t phi(x0) for t = 0..k, shape (k + 1, n, p)."""
        z = self.encode(x0)
        if self.cfg.parametrization != "linear":
            return torch.stack([z @ self.koopman.power(t).T for t in range(self.cfg.k + 1)])
        step = self.koopman.matrix().T
        out = [z]
        for _ in range(self.cfg.k):
            out.append(out[-1] @ step)
        return torch.stack(out)

    def path(self, x0: torch.Tensor) -> torch.Tensor:
        """Decoded iterates x_hat_t = psi(K^t phi(x0)) for t = 0..k, shape (k + 1, n, q)."""
        return self.decode(self.latent_path(x0))


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------

def pairwise_distances(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distance matrix of the rows of x (zero diagonal, finite gradients)."""
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    # sqrt'(0) is infinite: take it only off the diagonal, where d2 > 0 for distinct points.
    return torch.where(eye, torch.zeros_like(d2), torch.sqrt(torch.where(eye, torch.ones_like(d2), d2) + 1e-12))


def iso_loss(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over all pairs (a, b) of (||z_a - z_b|| - ||x_a - x_b||)^2 (reference implementation)."""
    return ((pairwise_distances(z) - pairwise_distances(x.detach())) ** 2).mean()


class IsoLoss:
    """The isometry term with a hand-written gradient, computed in row blocks of the upper triangle.

    Same value and gradient as `iso_loss`; at batch 1024 on one CPU core 5-8 ms per call against
    37 ms with autograd and 6-9 ms for the earlier full-matrix version of this class: each
    block of `block` rows meets only the columns from its own diagonal on (the distance matrices
    are symmetric), its matrices stay in cache, and the gradient is accumulated in the same pass,
    so nothing n x n is ever stored. On CUDA the whole batch is one block (few large kernels).
    One instance per training run (it keeps its scratch buffers).
    """

    def __init__(self, block: int = 128) -> None:
        self.block = block
        self._buffers: dict[str, torch.Tensor] = {}

    def buffer(self, key: str, numel: int, like: torch.Tensor) -> torch.Tensor:
        """A flat scratch buffer of at least `numel` elements, reallocated only when it must grow."""
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._buffers[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buf

    def __call__(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(1/n^2) sum over all pairs (a, b) of (|z_a - z_b| - |x_a - x_b|)^2, differentiable in z."""
        return _IsoFunction.apply(z, x.detach(), self)


SZ_FLOOR = 1e-12  # squared code distances below this are rounding noise of the matrix-product form


def _distance_factors(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A, B with A[a] . B[:, b] = |x_a - x_b|^2: A = [-2x, |x|^2, 1], B = [x, 1, |x|^2]^T."""
    sq = (x * x).sum(1, keepdim=True)
    one = torch.ones_like(sq)
    return torch.cat([x * -2.0, sq, one], 1), torch.cat([x, one, sq], 1).T.contiguous()


class _IsoFunction(torch.autograd.Function):
    """Loss (1/n^2) sum_ab (dz - dx)^2 and its gradient (4/n^2) sum_b w_ab (z_a - z_b), w = (dz - dx) / dz.

    With s the squared distances, u = dx / dz = sx * rsqrt(sx * sz) and w = 1 - u, so (dz - dx)^2 =
    sz w^2: no square root, division or NaN clean-up per pair, and the loss is a sum of non-negative
    terms. sz is floored at SZ_FLOOR (like the 1e-12 under the reference's square root), so rounding
    noise in the distance of coincident codes cannot blow w up, and a tiny floor under sx * sz keeps
    coincident inputs (sx = 0, u = 0) finite; the diagonal of w is zeroed.
    The gradient is computed in the forward pass (when z needs one) and only scaled in backward.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, x: torch.Tensor, iso: IsoLoss) -> torch.Tensor:
        n, p = z.shape
        need_grad = ctx.needs_input_grad[0]
        with torch.no_grad():
            ax, bx = _distance_factors(x)
            az, bz = _distance_factors(z)
            za = torch.cat([z, torch.ones(n, 1, dtype=z.dtype, device=z.device)], 1)
            acc = torch.zeros(n, p + 1, dtype=z.dtype, device=z.device)  # [-sum_b w_ab z_b, -sum_b w_ab]
            rows = n if z.is_cuda else min(iso.block, n)  # a GPU wants few large kernels, a CPU cache-sized blocks
            fsx, fsz, fv = (iso.buffer(k, rows * n, z) for k in ("sx", "sz", "v"))
            tiny = torch.finfo(z.dtype).tiny
            total = torch.zeros((), dtype=torch.float64, device=z.device)
            for r0 in range(0, n, rows):
                r1 = min(r0 + rows, n)
                b, w = r1 - r0, n - r0  # block rows r0:r1 against columns r0:n
                sx = torch.mm(ax[r0:r1], bx[:, r0:], out=fsx[: b * w].view(b, w)).clamp_min_(0.0)
                sz = torch.mm(az[r0:r1], bz[:, r0:], out=fsz[: b * w].view(b, w)).clamp_min_(SZ_FLOOR)
                v = torch.mul(sx, sz, out=fv[: b * w].view(b, w)).clamp_min_(tiny).rsqrt_()
                v.mul_(sx).sub_(1.0)  # u - 1 = -w
                v[:, :b].diagonal().zero_()
                t = sz.mul_(v)  # -sz w
                # off-diagonal blocks stand for both (a, b) and (b, a); the diagonal block only once
                total += 2.0 * torch.dot(t.view(-1), v.view(-1)) - (t[:, :b] * v[:, :b]).sum()
                if need_grad:
                    acc[r0:r1].addmm_(v, za[r0:])
                    if r1 < n:
                        acc[r1:].addmm_(v[:, b:].T, za[r0:r1])
            grad = (acc[:, :p] - z * acc[:, p:]) * (4.0 / (n * n)) if need_grad else None
        ctx.save_for_backward(grad)
        return (total / (n * n)).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None


def kae_losses(model: KoopmanAutoencoder, x0: torch.Tensor, xl: torch.Tensor, lambda_iso: float,
               iso: IsoLoss | None = None) -> dict[str, torch.Tensor]:
    """recon, state, latent, iso and total (= recon + state + latent + lambda_iso * iso) on one batch.

    With lambda_iso = 0 the isometry term is not computed (reported as NaN).
    """
    n = len(x0)
    z = model.encode(torch.cat([x0, xl]))
    z0, zl = z[:n], z[n:]
    op = model.koopman.power(model.cfg.k).T  # K^k once per step (one expm), row convention
    zl_hat = z0 @ op
    out = model.decode(torch.cat([z, zl_hat]))
    mse = nn.functional.mse_loss
    recon = 0.5 * (mse(out[:n], x0) + mse(out[n:2 * n], xl))
    state = mse(out[2 * n:], xl)
    # latent_stop_gradient: the same value, with the gradient reaching K only
    latent = mse(z0.detach() @ op, zl.detach()) if model.cfg.latent_stop_gradient else mse(zl_hat, zl)
    total = recon + state + latent
    if lambda_iso > 0:
        iso = iso or IsoLoss()
        iso_term = iso(x0, z0) + iso(xl, zl)
        total = total + lambda_iso * iso_term
    else:
        iso_term = torch.full((), float("nan"), device=x0.device)
    return {"recon": recon, "state": state, "latent": latent, "iso": iso_term, "total": total}


def variance(x: torch.Tensor) -> torch.Tensor:
    """Mean squared deviation from the per-feature mean (the MSE of predicting the mean)."""
    return ((x - x.mean(0)) ** 2).mean()


@torch.no_grad()
def kae_metrics(model: KoopmanAutoencoder, x0: torch.Tensor, xl: torch.Tensor, lambda_iso: float,
                iso_points: int = 2000, seed: int = 0) -> dict[str, float]:
    """Loss terms on a whole dataset and each as a fraction of variance unexplained (FVU)."""
    model.eval()
    z0, zl = model.encode(x0), model.encode(xl)
    zl_hat = model.advance(z0)
    mse = nn.functional.mse_loss
    rec0, recl = mse(model.decode(z0), x0), mse(model.decode(zl), xl)
    state = mse(model.decode(zl_hat), xl)
    latent = mse(zl_hat, zl)  # no gradients here: the stop-gradient option changes nothing
    g = torch.Generator().manual_seed(seed)
    sub = torch.randperm(len(x0), generator=g)[:iso_points].to(x0.device)
    iso_terms, iso_fvu = [], []
    for x, z in ((x0, z0), (xl, zl)):
        dx, dz = pairwise_distances(x[sub]), pairwise_distances(z[sub])
        iso_terms.append(((dz - dx) ** 2).mean())
        iso_fvu.append(iso_terms[-1] / variance(dx.reshape(-1, 1)))
    out = {"recon": 0.5 * (rec0 + recl), "state": state, "latent": latent, "iso": sum(iso_terms),
           "recon_fvu": 0.5 * (rec0 / variance(x0) + recl / variance(xl)), "state_fvu": state / variance(xl),
           "latent_fvu": latent / variance(zl), "iso_fvu": 0.5 * sum(iso_fvu)}
    out["total"] = out["recon"] + out["state"] + out["latent"] + lambda_iso * out["iso"]
    return {k: float(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

def fit_kae(model: KoopmanAutoencoder, x0: torch.Tensor, xl: torch.Tensor, cfg: TrainConfig,
            lambda_iso: float, log: Callable[[str], None] = print, log_every: int = 0) -> pd.DataFrame:
    """Train a KAE on in-memory (x0, x_last) pairs with the per-epoch schedule; return per-epoch losses."""
    device = x0.device
    gen = torch.Generator().manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    iso = IsoLoss()
    rows = []
    t0 = time.perf_counter()
    model.train()
    for epoch in range(cfg.epochs):
        lr = lr_at(epoch, cfg)
        set_lr(opt, lr)
        sums = {t: torch.zeros((), dtype=x0.dtype, device=device) for t in (*LOSS_TERMS, "total")}
        seen = 0
        for idx in batch_indices(len(x0), cfg.batch_size, gen, device, min_last=2):
            losses = kae_losses(model, x0[idx], xl[idx], lambda_iso, iso)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            if cfg.clip_grad_norm:
                clip_grad_norm(params, cfg.clip_grad_norm)
            opt.step()
            for t in sums:
                sums[t] += losses[t].detach() * len(idx)
            seen += len(idx)
        check_finite(epoch, {t: v for t, v in sums.items() if t != "iso" or lambda_iso > 0})
        rows.append({"epoch": epoch, "lr": lr, **{t: float(v) / seen for t, v in sums.items()}})
        if log_every and (epoch % log_every == 0 or epoch == cfg.epochs - 1):
            r = rows[-1]
            log(f"epoch {epoch:5d}  lr {lr:.2e}  total {r['total']:.5f}  recon {r['recon']:.5f}  "
                f"state {r['state']:.5f}  latent {r['latent']:.5f}  iso {r['iso']:.5f}  "
                f"({time.perf_counter() - t0:.1f}s)")
    model.eval()
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def save_kae(model: KoopmanAutoencoder, path: str | Path, extra: Mapping | None = None) -> None:
    """Save a KAE's weights with its architecture (and anything in `extra`) as safetensors metadata."""
    from kaepipe.io import save_safetensors
    from kaepipe.models import state_dict_for_save

    meta = {"model_class": "KoopmanAutoencoder", "architecture": model.cfg.to_dict(), **(extra or {})}
    save_safetensors(state_dict_for_save(model), path, meta)


def kae_expectation(kae: Mapping) -> dict:
    """The architecture fields of a KAE that the config fixes."""
    return {k: kae[k] for k in ("hidden", "latent", "k", "parametrization") if k in kae}


def load_kae(path: str | Path, expect: Mapping | None = None) -> tuple[KoopmanAutoencoder, dict]:
    """Load a KAE saved by `save_kae` and its decoded metadata; fields in `expect` must match."""
    from kaepipe.models import load_checkpoint

    return load_checkpoint(path, KAEConfig, KoopmanAutoencoder, expect, "KAE")


def kae_train_config(kae: Mapping, seed: int) -> TrainConfig:
    """The KAE's optimiser settings from its config block (AdamW by default)."""
    return TrainConfig.from_dict({"optimizer": "adamw", **kae, "seed": seed})


def to_numpy(t: torch.Tensor) -> np.ndarray:
    """Detach a tensor to a CPU numpy array."""
    return t.detach().cpu().numpy()


# ---------------------------------------------------------------------------------------------
# Stage entry point
# ---------------------------------------------------------------------------------------------

def training_pair(layers: list[np.ndarray], pre: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """(x0, x_last) of loaded layers, preprocessed with the fitted per-layer maps `pre`, as float32."""
    last = len(layers) - 1
    return pre[0].apply(layers[0]).astype(np.float32), pre[last].apply(layers[last]).astype(np.float32)


def preprocessed_pair(reps_path: str | Path, preprocessing_path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x0, x_last) preprocessed with the training fit, as float32, and the labels."""
    from kaepipe.represent import load_preprocessing, load_reps

    layers, labels = load_reps(reps_path)
    return (*training_pair(layers, load_preprocessing(preprocessing_path, [0, len(layers) - 1])), labels)


def run_kae_training(ds: Mapping, lambda_iso: float, seed: int, reps_train: str, preprocessing: str,
                     out_model: str, out_losses: str, out_metrics: str, device: torch.device,
                     log: Callable[[str], None] = print) -> dict:
    """Train one KAE of a dataset at one isometry weight and seed; write weights, losses and metrics."""
    from kaepipe.io import provenance, write_json, write_parquet
    from kaepipe.train import seed_all

    kae = ds["kae"]
    x0, xl, _ = preprocessed_pair(reps_train, preprocessing)
    cfg = KAEConfig.from_dict({**kae, "in_features": x0.shape[1]})
    train_cfg = kae_train_config(kae, seed)
    seed_all(seed)
    model = KoopmanAutoencoder(cfg).to(device)
    x0_t, xl_t = torch.as_tensor(x0, device=device), torch.as_tensor(xl, device=device)
    log(f"training KAE {cfg.to_dict()} on {len(x0)} pairs, lambda_iso {lambda_iso}, seed {seed}, "
        f"{train_cfg.epochs} epochs, device {device}")
    t0 = time.perf_counter()
    curve = fit_kae(model, x0_t, xl_t, train_cfg, lambda_iso, log=log, log_every=max(1, train_cfg.epochs // 10))
    seconds = time.perf_counter() - t0
    final = kae_metrics(model, x0_t, xl_t, lambda_iso, seed=seed)
    log("final training metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in final.items()))
    prov = provenance({"dataset": ds["name"], "kae": kae, "lambda_iso": lambda_iso, "seed": seed})
    meta = {"dataset": ds["name"], "lambda_iso": lambda_iso, "seed": seed, "train": train_cfg.to_dict(),
            "provenance": prov}
    write_parquet(curve, out_losses, {"dataset": ds["name"], "lambda_iso": lambda_iso, "seed": seed})
    metrics = {**meta, "train_metrics": final, "train_seconds": seconds, "epochs": train_cfg.epochs,
               "samples_per_second": len(x0) * train_cfg.epochs / seconds, "device": str(device)}
    write_json(metrics, out_metrics)
    save_kae(model.cpu(), out_model, meta)  # last: a checkpoint on disk means the job finished
    return metrics
