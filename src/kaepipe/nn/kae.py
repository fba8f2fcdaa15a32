"""The Koopman autoencoder (KAE): its configuration, its operator K and the model that owns phi, K^t and psi."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from kaepipe.config import DictConfig
from kaepipe.errors import ConfigError, DataError
from kaepipe.linalg import expm
from kaepipe.nn.resmlp import init_linear

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

    def power(self, t: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """K^t, (p, p), in the column convention (z_next = z @ K^T); one expm or solve for any t.

        `dtype` computes it from the parameters cast to that dtype (e.g. float64 from float32 weights).
        """
        w = self.weight if dtype is None else self.weight.to(dtype)
        if self.parametrization == "exponential":
            return expm(w * (t / self.k))
        if self.parametrization == "eigen":
            rates = self.rates if dtype is None else self.rates.to(dtype)
            return torch.linalg.solve(w, torch.exp(rates * (t / self.k))[:, None] * w)
        return torch.linalg.matrix_power(w, t)

    def matrix(self) -> torch.Tensor:
        """The one-step operator K."""
        return self.power(1)


class KoopmanAutoencoder(nn.Module):
    """A Koopman autoencoder: observables phi, a linear operator K and a decoder psi, x_L ~= psi(K^k phi(x_0)).

    Row convention, stated once: data and observables are rows, ``x`` of shape (n, q) and
    ``z = phi(x)`` of shape (n, p); t steps of the dynamics map ``z -> z @ O_t`` with the t-step
    operator ``O_t = (K^t)^T`` of shape (p, p) (:meth:`operator`). The model owns its operator and
    its forward map; nobody outside it recomputes phi, K^t or psi.

    An *edited* KAE (:meth:`with_operator`) is the same model with its k-step operator replaced by
    another (p, p) matrix; only t = k is then defined.
    """

    def __init__(self, cfg: KAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = mlp(cfg.in_features, cfg.hidden, cfg.latent, cfg.negative_slope)
        self.decoder = mlp(cfg.latent, cfg.hidden, cfg.in_features, cfg.negative_slope)
        self.koopman = KoopmanOperator(cfg.latent, cfg.k, cfg.parametrization)
        self.edited_operator: torch.Tensor | None = None  # float64 (p, p) once edited
        if cfg.init == "kaiming":  # the reference code's initialisation of every linear layer
            for layer in (*self.encoder, *self.decoder):
                if isinstance(layer, nn.Linear):
                    init_linear(layer)

    # -- the maps --------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Observables phi(x): (n, q) -> (n, p)."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Back to representation space psi(z): (n, p) -> (n, q)."""
        return self.decoder(z)

    def operator(self, t: int | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The t-step operator O_t = (K^t)^T, (p, p), row convention (default t = k).

        `dtype` computes it in that dtype (from the parameters cast to it). An edited KAE returns
        its edited k-step operator (cast to `dtype`, default float32 like the weights) and defines no other t.
        """
        t = self.cfg.k if t is None else int(t)
        if self.edited_operator is not None:
            if t != self.cfg.k:
                raise ValueError(f"an edited KAE only defines the k-step operator (t = {self.cfg.k}), got t = {t}")
            weight = self.encoder[0].weight
            return self.edited_operator.to(device=weight.device, dtype=dtype or weight.dtype)
        return self.koopman.power(t, dtype).T

    def advance(self, z: torch.Tensor, t: int | None = None) -> torch.Tensor:
        """Observables after t steps (default k): z @ O_t, (n, p) -> (n, p)."""
        return z @ self.operator(t, z.dtype if self.edited_operator is not None else None)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """The predicted last layer psi(phi(x0) O_k): (n, q) -> (n, q)."""
        return self.decode(self.advance(self.encode(x0)))

    def latent_path(self, x0: torch.Tensor) -> torch.Tensor:
        """Observables phi(x0) O_t for t = 0..k, shape (k + 1, n, p)."""
        if self.edited_operator is not None:
            raise ValueError("an edited KAE defines only the k-step operator, not the path t = 0..k")
        z = self.encode(x0)
        if self.cfg.parametrization != "linear":
            return torch.stack([z @ self.koopman.power(t).T for t in range(self.cfg.k + 1)])
        step = self.koopman.matrix().T
        out = [z]
        for _ in range(self.cfg.k):
            out.append(out[-1] @ step)
        return torch.stack(out)

    def path(self, x0: torch.Tensor) -> torch.Tensor:
        """Decoded iterates x_hat_t = psi(phi(x0) O_t) for t = 0..k, shape (k + 1, n, q)."""
        return self.decode(self.latent_path(x0))

    def logits(self, x0: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The surrogate's logits: the network's head (the rest of the network after its last recorded
        layer, taking preprocessed last-layer points (n, q)) applied to the predicted last layer."""
        return head(self(x0))

    def with_operator(self, operator: np.ndarray | torch.Tensor) -> KoopmanAutoencoder:
        """The same KAE with its k-step operator O_k replaced by `operator` ((p, p), row convention,
        kept in float64); encoder and decoder are copied, the original is untouched."""
        op = torch.as_tensor(np.asarray(operator), dtype=torch.float64).clone()
        p = self.cfg.latent
        if op.shape != (p, p):
            raise DataError(f"edited operator has shape {tuple(op.shape)}, expected ({p}, {p})")
        edited = copy.deepcopy(self)
        edited.edited_operator = op
        return edited

    @property
    def is_edited(self) -> bool:
        return self.edited_operator is not None

    # -- numpy conveniences: no gradients, batched, results as float64 arrays on the CPU -----------

    @torch.no_grad()
    def observables(self, x: np.ndarray, batch_size: int = 8192) -> np.ndarray:
        """phi(x) for preprocessed points x (n, q) as float64 (n, p); phi runs in the model's dtype and device."""
        weight = self.encoder[0].weight
        xt = torch.as_tensor(np.asarray(x), dtype=weight.dtype)
        parts = [self.encode(xt[s:s + batch_size].to(weight.device)).cpu() for s in range(0, len(xt), batch_size)]
        return (torch.cat(parts) if parts else torch.empty(0, self.cfg.latent)).double().numpy()

    @torch.no_grad()
    def operator_matrix(self, t: int | None = None) -> np.ndarray:
        """O_t (default t = k) computed in float64 on the CPU, as a (p, p) array."""
        if self.edited_operator is not None:
            return self.operator(t, torch.float64).cpu().numpy().copy()
        return copy.deepcopy(self.koopman).double().cpu().power(self.cfg.k if t is None else int(t)).T.numpy().copy()

    @torch.no_grad()
    def iterates(self, x0: np.ndarray, batch_size: int = 4096) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (t, psi(phi(x0) O_t) as float64 (n, q)) for t = 0..k, on the CPU, one t at a time (a model
        on another device is copied to the CPU; the model itself is left where it is)."""
        model = self if self.encoder[0].weight.device.type == "cpu" else copy.deepcopy(self).cpu()
        z = torch.cat([model.encode(torch.as_tensor(x0[s:s + batch_size], dtype=torch.float32))
                       for s in range(0, len(x0), batch_size)])
        for t in range(model.cfg.k + 1):
            zt = model.advance(z, t) if t else z
            yield t, model.decode(zt).double().numpy()
