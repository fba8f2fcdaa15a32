"""The KAE's loss terms: one definition each, used by single training, ensemble training and the metrics.

A term is a :class:`LossTerm` in the :data:`TERMS` registry: its value on a :class:`KAEPass` (one forward
pass of a KAE, or of an ensemble with a leading member dimension, on a batch of (x0, x_L) pairs) and its
fraction of variance unexplained for the final metrics. The total is sum_t w_t * term_t with the weights
of :func:`loss_weights` (recon, state and latent 1 by default, `kae.loss_weights` in the config; the
isometry term's weight is the grid's lambda_iso); a term of weight 0 is not computed (reported NaN).
A new term is one `register_term(LossTerm(...))` here, its weight in the config, and tests
(docs/method.md section 5.4 gives the formulas).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from kaepipe.errors import ConfigError
from kaepipe.nn.isometry import isometry_loss
from kaepipe.registry import Registry


def distance_matrix(x: torch.Tensor) -> torch.Tensor:
    """Euclidean distance matrix of the rows of x (zero diagonal, finite gradients)."""
    sq = (x * x).sum(1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)).clamp_min(0.0)
    eye = torch.eye(len(x), dtype=torch.bool, device=x.device)
    # sqrt'(0) is infinite: take it only off the diagonal, where d2 > 0 for distinct points.
    return torch.where(eye, torch.zeros_like(d2), torch.sqrt(torch.where(eye, torch.ones_like(d2), d2) + 1e-12))


def iso_loss(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mean over all pairs (a, b) of (||z_a - z_b|| - ||x_a - x_b||)^2 (reference implementation)."""
    return ((distance_matrix(z) - distance_matrix(x.detach())) ** 2).mean()


# ---------------------------------------------------------------------------------------------
# The forward pass the terms read, and the registry
# ---------------------------------------------------------------------------------------------

def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error: a scalar for (n, d), one per member (M,) for (M, n, d)."""
    if a.dim() == 2:
        return nn.functional.mse_loss(a, b)
    return nn.functional.mse_loss(a, b, reduction="none").mean((-2, -1))


@dataclass(frozen=True)
class KAEPass:
    """One forward pass on a batch of pairs; every tensor (n, d) for a KAE or (M, n, d) for an ensemble.

    x0, xl: the pair; z0 = phi(x0), zl = phi(xl); zl_hat = z0 O_k (op = O_k = (K^k)^T);
    x0_rec = psi(z0), xl_rec = psi(zl), xl_hat = psi(zl_hat).
    """

    x0: torch.Tensor
    xl: torch.Tensor
    z0: torch.Tensor
    zl: torch.Tensor
    zl_hat: torch.Tensor
    x0_rec: torch.Tensor
    xl_rec: torch.Tensor
    xl_hat: torch.Tensor
    op: torch.Tensor
    latent_stop_gradient: bool = False


def kae_pass(model, x0: torch.Tensor, xl: torch.Tensor) -> KAEPass:
    """The forward pass of a KAE or an ensemble (anything with encode, decode, operator() and cfg):
    one encoder call on [x0; xl], O_k once (one expm), one decoder call on [z0; zl; z0 O_k]."""
    n = x0.shape[-2]
    z = model.encode(torch.cat([x0, xl], -2))
    z0, zl = z.split(n, -2)
    op = model.operator()
    zl_hat = z0 @ op
    x0_rec, xl_rec, xl_hat = model.decode(torch.cat([z, zl_hat], -2)).split(n, -2)
    return KAEPass(x0, xl, z0, zl, zl_hat, x0_rec, xl_rec, xl_hat, op, bool(model.cfg.latent_stop_gradient))


IsoFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LossTerm:
    """A loss term: `value(pass, iso_fn)` on a batch (scalar, or (M,) per member) and, for the final
    metrics on a whole dataset, `fvu(pass)` -> its fraction of variance unexplained."""

    name: str
    value: Callable[[KAEPass, IsoFn], torch.Tensor]
    fvu: Callable[[KAEPass], torch.Tensor] | None = None
    doc: str = ""


TERMS: Registry[LossTerm] = Registry("loss term", reserved=("total",))
register_term = TERMS.register  # its name is its key in `kae.loss_weights` and in the loss curves


def variance(x: torch.Tensor) -> torch.Tensor:
    """Mean squared deviation from the per-feature mean (the MSE of predicting the mean)."""
    return ((x - x.mean(0)) ** 2).mean()


def _latent(p: KAEPass, _iso: IsoFn) -> torch.Tensor:
    # latent_stop_gradient: the same value, with the gradient reaching K only
    if p.latent_stop_gradient:
        return mse(p.z0.detach() @ p.op, p.zl.detach())
    return mse(p.zl_hat, p.zl)


def _isometry(p: KAEPass, iso: IsoFn) -> torch.Tensor:
    if p.x0.dim() == 2:
        return iso(p.x0, p.z0) + iso(p.xl, p.zl)
    m = p.x0.shape[0]  # members: one call on the stacked (x0, phi(x0)) and (xl, phi(xl)) batches
    vals = iso(torch.cat([p.x0, p.xl]), torch.cat([p.z0, p.zl]))
    return vals[:m] + vals[m:]


register_term(LossTerm(
    "recon", lambda p, _: 0.5 * (mse(p.x0_rec, p.x0) + mse(p.xl_rec, p.xl)),
    lambda p: 0.5 * (mse(p.x0_rec, p.x0) / variance(p.x0) + mse(p.xl_rec, p.xl) / variance(p.xl)),
    "autoencoding: 0.5 (|psi(phi(x0)) - x0|^2 + |psi(phi(xL)) - xL|^2) (means over entries)"))
register_term(LossTerm(
    "state", lambda p, _: mse(p.xl_hat, p.xl), lambda p: mse(p.xl_hat, p.xl) / variance(p.xl),
    "prediction in representation space: |psi(phi(x0) O_k) - xL|^2"))
register_term(LossTerm(
    "latent", _latent, lambda p: mse(p.zl_hat, p.zl) / variance(p.zl),
    "prediction in observable space: |phi(x0) O_k - phi(xL)|^2"))
register_term(LossTerm(
    "iso", _isometry, None,
    "isometry: mean over pairs of (|z_a - z_b| - |x_a - x_b|)^2 for (x0, z0) and (xL, zL); weight lambda_iso"))

#: The registered terms, in order (the curves' columns before "total").
LOSS_TERMS = tuple(TERMS)


def loss_weights(weights: Mapping[str, float] | float | None = None, lambda_iso: float | None = None) -> dict[str, float]:
    """Every term's weight: 1 unless given, but `iso`, which is lambda_iso (0 unless given; a bare number
    for `weights` means lambda_iso)."""
    if isinstance(weights, (int, float)):
        weights, lambda_iso = None, float(weights)
    out = dict.fromkeys(TERMS, 1.0)
    out["iso"] = 0.0
    for k, v in (weights or {}).items():
        if k not in TERMS:
            raise ConfigError(f"kae.loss_weights: unknown loss term '{k}'; known: {sorted(TERMS)}")
        out[k] = float(v)
    if lambda_iso is not None:
        out["iso"] = float(lambda_iso)
    for k, v in out.items():
        if not (math.isfinite(v) and v >= 0):
            raise ConfigError(f"loss weight of '{k}' must be finite and >= 0, got {v}")
    return out


def kae_losses(model, x0: torch.Tensor, xl: torch.Tensor, weights: Mapping[str, float] | float,
               iso: IsoFn | None = None) -> dict[str, torch.Tensor]:
    """Every registered term and the total sum_t w_t term_t of one KAE on one batch (scalars).

    `weights`: see :func:`loss_weights` (a number is lambda_iso). A term of weight 0 is not computed
    (reported as NaN), e.g. the isometry term at lambda_iso = 0.
    """
    w = loss_weights(weights)
    p = kae_pass(model, x0, xl)
    iso = iso or isometry_loss
    out: dict[str, torch.Tensor] = {}
    total = None
    for name, term in TERMS.items():
        if w[name] == 0:
            out[name] = torch.full((), float("nan"), device=x0.device)
            continue
        v = out[name] = term.value(p, iso)
        v = v if w[name] == 1.0 else w[name] * v
        total = v if total is None else total + v
    out["total"] = total if total is not None else torch.zeros((), device=x0.device)
    return out


@torch.no_grad()
def kae_metrics(model, x0: torch.Tensor, xl: torch.Tensor, weights: Mapping[str, float] | float,
                iso_points: int = 2000, seed: int = 0) -> dict[str, float]:
    """Every term on a whole dataset and each as a fraction of variance unexplained (FVU).

    The isometry term is measured exactly (all pairs, `distance_matrix`) on a fixed subset of
    `iso_points` pairs' points; its FVU is relative to the variance of the input distances.
    """
    w = loss_weights(weights)
    model.eval()
    p = kae_pass(model, x0, xl)
    out: dict[str, torch.Tensor] = {}
    for name, term in TERMS.items():
        if name == "iso":
            continue
        out[name] = term.value(p, None)
        out[f"{name}_fvu"] = term.fvu(p)
    g = torch.Generator().manual_seed(seed)
    sub = torch.randperm(len(x0), generator=g)[:iso_points].to(x0.device)
    iso_terms, iso_fvu = [], []
    for x, z in ((x0, p.z0), (xl, p.zl)):
        dx, dz = distance_matrix(x[sub]), distance_matrix(z[sub])
        iso_terms.append(((dz - dx) ** 2).mean())
        iso_fvu.append(iso_terms[-1] / variance(dx.reshape(-1, 1)))
    out["iso"], out["iso_fvu"] = sum(iso_terms), 0.5 * sum(iso_fvu)
    out["total"] = sum(w[name] * out[name] for name in TERMS)
    return {k: float(v) for k, v in out.items()}
