"""Evaluation: per-class and macro accuracy, and the surrogate (a KAE plus the network's head)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from kaepipe.network import LayeredNetwork
from kaepipe.nn.kae import KoopmanAutoencoder
from kaepipe.nn.resmlp import ResMLP, predict
from kaepipe.represent import LayerTransform


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Accuracy of each class in percent (NaN for a class absent from `labels`)."""
    pred, labels = np.asarray(pred), np.asarray(labels)
    if pred.shape != labels.shape:
        raise ValueError(f"predictions {pred.shape} and labels {labels.shape} differ in shape")
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        mask = labels == c
        if mask.any():
            out[c] = 100.0 * float((pred[mask] == c).mean())
    return out


def macro_accuracy(per_class: np.ndarray) -> float:
    """Mean of the per-class accuracies present (the paper's 'accuracy')."""
    return float(np.nanmean(per_class))


def accuracy_report(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> dict:
    """Per-class accuracy, macro accuracy and plain accuracy, in percent."""
    pc = per_class_accuracy(pred, labels, n_classes)
    return {"per_class": [None if np.isnan(v) else round(float(v), 6) for v in pc],
            "macro": round(macro_accuracy(pc), 6),
            "accuracy": round(100.0 * float((np.asarray(pred) == np.asarray(labels)).mean()), 6),
            "n": len(labels)}


def remainder(base: LayeredNetwork | ResMLP | nn.Module) -> nn.Module:
    """The part of a base network after its last recorded layer, taking flattened representations: a
    LayeredNetwork's head, a ResMLP's output layer, or a module that already is such a head."""
    if isinstance(base, LayeredNetwork):
        return base.head
    if isinstance(base, ResMLP):
        return base.output_layer
    return base


class NetworkHead:
    """The rest of a network after its last recorded layer, taking *preprocessed* last-layer points.

    ``head(x_hat)``: (n, q) float tensor -> (n, classes) logits. It undoes the last layer's fitted
    preprocessing in float64 (`pre_last.invert`), then runs the network's remainder (for the ResMLP its
    output layer) in float32 on the input's device.
    """

    def __init__(self, pre_last: LayerTransform, remainder: nn.Module) -> None:
        self.pre_last, self.remainder = pre_last, remainder

    @torch.no_grad()
    def __call__(self, x_hat: torch.Tensor) -> torch.Tensor:
        raw = self.pre_last.invert(x_hat.double().cpu().numpy())
        return self.remainder.to(x_hat.device).eval()(torch.as_tensor(raw, dtype=torch.float32, device=x_hat.device))


class Surrogate:
    """A KAE standing in for the layers between the first and the last recorded one, plus the network's head.

    ``logits(x0)``: preprocessed first-layer points (n, q) -> head(psi(phi(x0) O_k)), the KAE in its own
    dtype (float32). ``output_logits(Y)``: from outputs Y = Z O' (n, p) computed outside the KAE
    (e.g. for many candidate operators without re-encoding) -> head(psi(Y)). Both float64 arrays.
    """

    def __init__(self, kae: KoopmanAutoencoder, head: Callable[[torch.Tensor], torch.Tensor],
                 device: torch.device | None = None, batch_size: int = 4096) -> None:
        self.kae, self.head = kae, head
        self.device = device or torch.device("cpu")
        self.batch_size = batch_size

    @classmethod
    def of_network(cls, kae: KoopmanAutoencoder, base: LayeredNetwork | ResMLP | nn.Module, pre_last: LayerTransform,
                   device: torch.device | None = None, batch_size: int = 4096) -> Surrogate:
        """The surrogate of a base network: its head after the last recorded layer (see `remainder`)."""
        return cls(kae, NetworkHead(pre_last, remainder(base)), device, batch_size)

    @torch.no_grad()
    def _batched(self, fn: Callable[[torch.Tensor], torch.Tensor], a: np.ndarray | torch.Tensor) -> np.ndarray:
        kae = self.kae.to(self.device).eval()
        a = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
        out = [fn(kae, a[s:s + self.batch_size].to(self.device, torch.float32)).double().cpu()
               for s in range(0, len(a), self.batch_size)]
        return torch.cat(out).numpy() if out else np.empty((0, 0))

    def logits(self, x0: np.ndarray) -> np.ndarray:
        """Logits through the whole surrogate for preprocessed first-layer points x0 (n, q)."""
        return self._batched(lambda kae, x: kae.logits(x, self.head), x0)

    def output_logits(self, Y: np.ndarray | torch.Tensor) -> np.ndarray:
        """Logits for KAE outputs Y (n, p) (observables after the k-step operator)."""
        return self._batched(lambda kae, y: self.head(kae.decode(y)), Y)

    def predict(self, x0: np.ndarray) -> np.ndarray:
        return self.logits(x0).argmax(1)

    def predict_outputs(self, Y: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.output_logits(Y).argmax(1)


def surrogate_predictions(kae: KoopmanAutoencoder, base: LayeredNetwork | ResMLP | nn.Module, pre_first: LayerTransform,
                          pre_last: LayerTransform,
                          layer0: np.ndarray, device: torch.device | None = None, batch_size: int = 4096) -> np.ndarray:
    """Classes predicted through the KAE: L0 -> preprocess -> phi -> O_k -> psi -> undo -> the network's head."""
    return Surrogate.of_network(kae, base, pre_last, device, batch_size).predict(pre_first.apply(layer0))


def evaluate_model(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, n_classes: int,
                   device: torch.device) -> dict:
    """Per-class and macro accuracy of a classifier on one split."""
    pred = predict(model.to(device), torch.as_tensor(x, device=device)).cpu().numpy()
    return accuracy_report(pred, y, n_classes)
