"""Train M Koopman autoencoders of one architecture as one vectorised model (an ensemble).

A grid of KAEs that share a dataset and an architecture and differ only in the isometry weight and the
seed spends most of its time in Python dispatch when each member is trained alone (Yin-Yang: a
10 -> 30 -> 20 encoder). :class:`KAEEnsemble` stacks the members' parameters along a leading member
dimension and runs every layer as one batched matrix product; :func:`fit_kae_ensemble` takes one
optimiser step for all members per step. Each member still trains exactly as :func:`kaepipe.nn.train.fit_kae`
would train it alone (tests/unit/nn/test_ensemble.py checks this to 1e-9 in float64):

* its own initialisation (``seed_all(seed); KoopmanAutoencoder(cfg)``, :meth:`KAEEnsemble.from_seeds`),
* its own batch order (a generator per member, seeded with its seed, as ``batch_indices`` draws),
* its own isometry weight (a weight of 0 skips the term for that member),
* its own gradient clipping (the global norm over that member's parameter slices),
* its own AdamW/SGD state (both are elementwise, so stacked parameters keep per-member state; weight
  decay on the weight matrices only, counted without the member dimension),
* the same per-epoch learning-rate schedule.

The loss that is back-propagated is the sum of the members' totals; the members share no parameter,
so each member's gradient is that of its own loss. The step loop does not wait for the device
(losses are summed on the device and read once per epoch), apart from what the matrix exponential
does internally to choose its degree.

:meth:`KAEEnsemble.member` returns an ordinary :class:`~kaepipe.nn.kae.KoopmanAutoencoder` with one
member's parameters, to be saved with ``save_kae`` and evaluated by the existing code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace

import pandas as pd
import torch
from torch import nn

from kaepipe.errors import ConfigError, TrainingDivergedError
from kaepipe.linalg import expm
from kaepipe.nn.isometry import isometry_loss
from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder
from kaepipe.nn.losses import TERMS, IsoFn, kae_pass, loss_weights
from kaepipe.nn.train import TrainConfig, kae_train_config, lr_at, make_optimizer, seed_all, set_lr

# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------

class StackedLinear(nn.Module):
    """M independent affine maps: weight (M, out, in), bias (M, out); (M, n, in) -> (M, n, out)."""

    def __init__(self, members: int, n_in: int, n_out: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(members, n_out, n_in))
        self.bias = nn.Parameter(torch.zeros(members, n_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


def stacked_mlp(members: int, n_in: int, n_hidden: int, n_out: int, slope: float) -> nn.Sequential:
    """M copies of `kaepipe.nn.kae.mlp` (same parameter names: 0.weight, 0.bias, 2.weight, 2.bias)."""
    return nn.Sequential(StackedLinear(members, n_in, n_hidden), nn.LeakyReLU(slope),
                         StackedLinear(members, n_hidden, n_out))


class StackedKoopmanOperator(nn.Module):
    """M operators K in one parametrisation: weight (M, p, p) and, for eigen, rates (M, p).

    The batched counterpart of `kaepipe.nn.kae.KoopmanOperator.power`, term by term.
    """

    def __init__(self, members: int, dim: int, k: int, parametrization: str = "exponential") -> None:
        super().__init__()
        self.k, self.parametrization = k, parametrization
        self.weight = nn.Parameter(torch.zeros(members, dim, dim))
        if parametrization == "eigen":
            self.rates = nn.Parameter(torch.zeros(members, dim))

    def power(self, t: int) -> torch.Tensor:
        """K^t of every member, shape (M, p, p) (column convention, as KoopmanOperator.power)."""
        if self.parametrization == "exponential":
            return expm(self.weight * (t / self.k))
        if self.parametrization == "eigen":
            v = self.weight
            return torch.linalg.solve(v, torch.exp(self.rates * (t / self.k))[..., :, None] * v)
        return torch.linalg.matrix_power(self.weight, t)

    def matrix(self) -> torch.Tensor:
        """The one-step operators K, (M, p, p)."""
        return self.power(1)


class KAEEnsemble(nn.Module):
    """M Koopman autoencoders of one `KAEConfig`, parameters stacked along a leading member dimension.

    The state dict has the names of `KoopmanAutoencoder`'s with an extra leading dimension of size M
    (encoder.0.weight (M, h, q), ..., koopman.weight (M, p, p), koopman.rates (M, p) for eigen).
    Inputs are (M, n, q): one batch per member. Build one with `from_seeds` or `from_models`; the
    constructor leaves the parameters at zero.
    """

    def __init__(self, cfg: KAEConfig, members: int) -> None:
        super().__init__()
        if members < 1:
            raise ConfigError(f"an ensemble needs at least one member, got {members}")
        self.cfg, self.members = cfg, members
        self.encoder = stacked_mlp(members, cfg.in_features, cfg.hidden, cfg.latent, cfg.negative_slope)
        self.decoder = stacked_mlp(members, cfg.latent, cfg.hidden, cfg.in_features, cfg.negative_slope)
        self.koopman = StackedKoopmanOperator(members, cfg.latent, cfg.k, cfg.parametrization)

    def __len__(self) -> int:
        return self.members

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_models(cls, models: Sequence[KoopmanAutoencoder]) -> KAEEnsemble:
        """An ensemble holding exact copies of the models' parameters (same device and dtype as the first)."""
        models = list(models)
        if not models:
            raise ConfigError("KAEEnsemble.from_models needs at least one model")
        cfg = models[0].cfg
        for i, m in enumerate(models):
            if m.cfg != cfg:
                raise ConfigError(f"ensemble members must share one KAEConfig: model {i} has {m.cfg.to_dict()}, "
                                  f"model 0 {cfg.to_dict()}")
        ref = next(models[0].parameters())
        ens = cls(cfg, len(models)).to(device=ref.device, dtype=ref.dtype)
        states = [m.state_dict() for m in models]
        with torch.no_grad():
            ens.load_state_dict({k: torch.stack([s[k].to(ref.device, ref.dtype) for s in states]) for k in states[0]})
        return ens

    @classmethod
    def from_seeds(cls, cfg: KAEConfig, seeds: Sequence[int], device: torch.device | str | None = None,
                   dtype: torch.dtype | None = None) -> KAEEnsemble:
        """Member i initialised as a single run with seed s_i: ``seed_all(s_i); KoopmanAutoencoder(cfg)``.

        Like a single run, this seeds the global generators (last with the last seed).
        """
        models = []
        for s in seeds:
            seed_all(int(s))
            models.append(KoopmanAutoencoder(cfg))
        ens = cls.from_models(models)
        return ens.to(device=device, dtype=dtype) if device is not None or dtype is not None else ens

    def member(self, i: int) -> KoopmanAutoencoder:
        """An ordinary KAE (eval mode, same device and dtype) holding a copy of member i's parameters."""
        if not -self.members <= i < self.members:
            raise IndexError(f"ensemble member {i} out of range for {self.members} members")
        ref = self.koopman.weight
        with torch.device("meta"):  # no initialisation work, and the global generators are left alone
            model = KoopmanAutoencoder(self.cfg)
        model = model.to_empty(device=ref.device).to(ref.dtype)
        with torch.no_grad():
            model.load_state_dict({k: v[i] for k, v in self.state_dict().items()})
        return model.eval()

    def models(self) -> list[KoopmanAutoencoder]:
        """Every member as an ordinary KAE."""
        return [self.member(i) for i in range(self.members)]

    # -- forward ------------------------------------------------------------------------------

    def _batched(self, x: torch.Tensor) -> torch.Tensor:
        """(M, n, d) as is; an (n, d) input is shared by every member."""
        return x.expand(self.members, *x.shape) if x.dim() == 2 else x

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Observables phi_m(x_m), (M, n, p)."""
        return self.encoder(self._batched(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """psi_m(z_m), (M, n, q)."""
        return self.decoder(self._batched(z))

    def operator(self, t: int | None = None) -> torch.Tensor:
        """Each member's t-step operator O_t = (K^t)^T (default t = k), (M, p, p), row convention."""
        return self.koopman.power(self.cfg.k if t is None else t).transpose(1, 2)

    def advance(self, z: torch.Tensor, t: int | None = None) -> torch.Tensor:
        """Apply each member's K t times (default k) to its row-vector observables."""
        return torch.bmm(self._batched(z), self.koopman.power(self.cfg.k if t is None else t).transpose(1, 2))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """The predicted last layers psi_m(K_m^k phi_m(x0_m)), (M, n, q)."""
        return self.decode(self.advance(self.encode(x0)))


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------

def iso_runs(lambdas: Sequence[float]) -> list[tuple[int, int]]:
    """Maximal runs [start, stop) of consecutive members with an isometry weight > 0."""
    runs: list[tuple[int, int]] = []
    for m, v in enumerate(lambdas):
        if v > 0:
            if runs and runs[-1][1] == m:
                runs[-1] = (runs[-1][0], m + 1)
            else:
                runs.append((m, m + 1))
    return runs


def ensemble_losses(ens: KAEEnsemble, x0: torch.Tensor, xl: torch.Tensor, lambdas: Sequence[float],
                    iso_fn: IsoFn | None = None, lambda_tensor: torch.Tensor | None = None,
                    weights: Mapping[str, float] | None = None) -> dict[str, torch.Tensor]:
    """`kaepipe.nn.losses.kae_losses` of every member on its own batch: each term a (M,) tensor.

    x0, xl: (M, n, q). lambdas: the M isometry weights (host floats; lambda_tensor, the same as a
    tensor on the device, saves a copy per call). Members with weight 0 get total = recon + state +
    latent and iso = NaN, as single training reports them; their isometry term is not computed. The
    others' terms are one call iso_fn(x, z) -> (2M',) on their stacked (x0, phi(x0)) and (xl, phi(xl))
    batches, which are picked by slices (runs of consecutive members), not by gathers: no scatter
    (non-deterministic on CUDA) in the backward pass.
    """
    m = x0.shape[0]
    p = kae_pass(ens, x0, xl)
    w = loss_weights(weights)  # shared by the members; the isometry weight is each member's lambda
    out, total = {}, None
    for name, term in TERMS.items():
        if name == "iso":
            continue
        if w[name] == 0:
            out[name] = torch.full((m,), float("nan"), dtype=x0.dtype, device=x0.device)
            continue
        v = out[name] = term.value(p, None)
        v = v if w[name] == 1.0 else w[name] * v
        total = v if total is None else total + v
    total = total if total is not None else torch.zeros(m, dtype=x0.dtype, device=x0.device)
    runs = iso_runs(lambdas)
    if not runs:
        return {**out, "iso": torch.full_like(total, float("nan")), "total": total}
    if lambda_tensor is None:
        lambda_tensor = torch.tensor([float(v) for v in lambdas], dtype=total.dtype, device=total.device)

    def pick(t: torch.Tensor) -> list[torch.Tensor]:
        return [t[a:b] for a, b in runs]

    sub = replace(p, x0=torch.cat(pick(p.x0)), xl=torch.cat(pick(p.xl)), z0=torch.cat(pick(p.z0)),
                  zl=torch.cat(pick(p.zl)))  # the members with lambda > 0 (their batches are all the term reads)
    iso_sel = TERMS["iso"].value(sub, iso_fn or isometry_loss)
    half = len(iso_sel)
    if half == m:
        iso = iso_sel
    else:  # back to all M members: 0 where lambda is 0 (total + 0 * 0 = total, exactly)
        pieces, nan_pieces, done, at = [], [], 0, 0
        for a, b in runs:
            gap = torch.zeros(a - done, dtype=total.dtype, device=total.device)
            pieces += [gap, iso_sel[at:at + b - a]]
            nan_pieces += [gap + float("nan"), iso_sel[at:at + b - a].detach()]
            at, done = at + b - a, b
        tail = torch.zeros(m - done, dtype=total.dtype, device=total.device)
        iso_sel = torch.cat([*pieces, tail])
        iso = torch.cat([*nan_pieces, tail + float("nan")])
    total = total + lambda_tensor * iso_sel
    return {**out, "iso": iso, "total": total}


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

class EnsembleMemberDivergedError(TrainingDivergedError):
    """A member's loss became non-finite; names the member, its isometry weight and its seed.

    `diverged` lists (member, lambda_iso, seed, term, value) of every member that diverged in that
    epoch; `curves` holds every member's per-epoch losses up to the epoch before.
    """

    def __init__(self, epoch: int, member: int, lambda_iso: float, seed: int, term: str, value: float,
                 diverged: list[tuple] | None = None, curves: list[pd.DataFrame] | None = None) -> None:
        super().__init__(epoch, term, value)
        self.member, self.lambda_iso, self.seed = member, lambda_iso, seed
        self.diverged = diverged or [(member, lambda_iso, seed, term, value)]
        self.curves = curves
        others = "" if len(self.diverged) == 1 else f" ({len(self.diverged) - 1} more member(s) diverged too: " + \
            ", ".join(f"lambda_iso {lam}, seed {s}" for _, lam, s, _, _ in self.diverged[1:]) + ")"
        self.args = (f"ensemble member {member} (lambda_iso {lambda_iso}, seed {seed}): {self.args[0]}{others}",)


def clip_grad_norm_members(params: Sequence[torch.Tensor], max_norm: float) -> None:
    """torch's `clip_grad_norm_` (the single loops' clipping) for each member: its norm over its own slices."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norms = torch.stack([torch.linalg.vector_norm(g.reshape(g.shape[0], -1), dim=1) for g in grads], 1)
    scale = torch.clamp(max_norm / (torch.linalg.vector_norm(norms, dim=1) + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.view(-1, *(1,) * (g.dim() - 1)))


def _first_divergence(sums: torch.Tensor, lambdas: Sequence[float], curve_terms: Sequence[str],
                      skip: frozenset[str] = frozenset()) -> list[tuple[int, str, float]]:
    """(member, term, value) of the first non-finite term of each diverged member (check_finite's order)."""
    bad = []
    finite = torch.isfinite(sums)
    for m in torch.nonzero(~finite.all(0)).flatten().tolist():  # iso is NaN where lambda is 0
        for j, term in enumerate(curve_terms):
            if term in skip or (term == "iso" and not lambdas[m] > 0):
                continue
            if not finite[j, m]:
                bad.append((m, term, float(sums[j, m])))
                break
    return bad


def fit_kae_ensemble(ens: KAEEnsemble, x0: torch.Tensor, xl: torch.Tensor, cfg: TrainConfig,
                     lambdas: Sequence[float], seeds: Sequence[int], iso_fn: IsoFn | None = None,
                     log: Callable[[str], None] = print, log_every: int = 0,
                     weights: Mapping[str, float] | None = None) -> list[pd.DataFrame]:
    """Train every member of `ens` on the shared (x0, x_last) pairs; return each member's per-epoch losses.

    Member m trains as ``fit_kae(member, x0, xl, replace(cfg, seed=seeds[m]), lambdas[m])`` would
    (cfg.seed is not used). iso_fn(x, z) -> (M',) computes the isometry terms of a stack of members
    (default: `kaepipe.nn.isometry.isometry_loss`, one fused call for all members). Raises
    EnsembleMemberDivergedError (a TrainingDivergedError) naming the (lambda_iso, seed) of a member whose
    epoch loss is not finite; checked once per epoch.
    """
    lambdas, seeds = [float(v) for v in lambdas], [int(s) for s in seeds]
    if not len(lambdas) == len(seeds) == ens.members:
        raise ConfigError(f"an ensemble of {ens.members} members needs as many lambdas and seeds, "
                          f"got {len(lambdas)} and {len(seeds)}")
    if x0.shape != xl.shape or x0.dim() != 2:
        raise ConfigError(f"x0 and x_last must be (n, q) of one shape, got {tuple(x0.shape)} and {tuple(xl.shape)}")
    device, n, b = x0.device, len(x0), cfg.batch_size
    curve_terms = (*TERMS, "total")  # the registered loss terms' columns, then the total
    skip = frozenset(t for t, v in loss_weights(weights).items() if v == 0 and t != "iso")  # not computed (NaN)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    lam = torch.tensor(lambdas, dtype=x0.dtype, device=device)
    iso_fn = iso_fn or isometry_loss
    opt = make_optimizer(ens, cfg, member_dims=1)
    params = [p for p in ens.parameters() if p.requires_grad]
    rows: list[list[dict]] = [[] for _ in range(ens.members)]
    t0 = time.perf_counter()
    ens.train()
    for epoch in range(cfg.epochs):
        lr = lr_at(epoch, cfg)
        set_lr(opt, lr)
        sums = torch.zeros(len(curve_terms), ens.members, dtype=x0.dtype, device=device)
        # the permutation batch_indices draws for a single run with that seed
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        seen = 0
        for start in range(0, n, b):
            idx = perms[:, start:start + b]
            if idx.shape[1] < 2:  # batch_indices(min_last=2), as fit_kae
                continue
            losses = ensemble_losses(ens, x0[idx], xl[idx], lambdas, iso_fn, lam, weights)
            opt.zero_grad(set_to_none=True)
            losses["total"].sum().backward()
            if cfg.clip_grad_norm:
                clip_grad_norm_members(params, cfg.clip_grad_norm)
            opt.step()
            sums += torch.stack([losses[t].detach() for t in curve_terms]) * idx.shape[1]
            seen += idx.shape[1]
        host = sums.cpu()  # the one wait per epoch
        bad = _first_divergence(host, lambdas, curve_terms, skip)
        if bad:
            m, term, value = bad[0]
            raise EnsembleMemberDivergedError(
                epoch, m, lambdas[m], seeds[m], term, value,
                [(i, lambdas[i], seeds[i], t, v) for i, t, v in bad], [pd.DataFrame(r) for r in rows])
        for m in range(ens.members):
            rows[m].append({"epoch": epoch, "lr": lr, **{t: float(host[j, m]) / seen for j, t in enumerate(curve_terms)}})
        if log_every and (epoch % log_every == 0 or epoch == cfg.epochs - 1):
            totals = sorted(r[-1]["total"] for r in rows)
            log(f"epoch {epoch:5d}  lr {lr:.2e}  total over {ens.members} members: min {totals[0]:.5f}  "
                f"median {totals[len(totals) // 2]:.5f}  max {totals[-1]:.5f}  ({time.perf_counter() - t0:.1f}s)")
    ens.eval()
    return [pd.DataFrame(r) for r in rows]


def train_kae_pack(kae: Mapping, x0: torch.Tensor, xl: torch.Tensor, lambdas: Sequence[float], seeds: Sequence[int],
                   device: torch.device | str = "cpu", log: Callable[[str], None] | None = None
                   ) -> tuple[KAEEnsemble, list[pd.DataFrame], KAEConfig, TrainConfig, float]:
    """The KAEs of a config `kae` block (architecture, optimiser and `loss_weights` keys) for members
    (lambdas[i], seeds[i]), built and trained as one ensemble on the preprocessed pairs x0, xl (n, q).

    Returns the ensemble, each member's loss curve, the architecture, the training settings (seed: the first
    member's; each member trains with its own) and the training seconds. `log`: progress every tenth epoch.
    """
    cfg = KAEConfig.from_dict({**kae, "in_features": x0.shape[1]})
    train_cfg = kae_train_config(kae, int(seeds[0]))
    ens = KAEEnsemble.from_seeds(cfg, seeds, device=device)
    if log:
        log(f"training {len(seeds)} KAE(s) {cfg.to_dict()} as one ensemble on {len(x0)} pairs, (lambda_iso, seed) "
            f"{list(zip(lambdas, seeds))}, {train_cfg.epochs} epochs, device {device}")
    t0 = time.perf_counter()
    curves = fit_kae_ensemble(ens, x0, xl, train_cfg, lambdas, seeds, weights=kae.get("loss_weights"),
                              log=log or (lambda _: None), log_every=max(1, train_cfg.epochs // 10) if log else 0)
    return ens, curves, cfg, train_cfg, time.perf_counter() - t0
