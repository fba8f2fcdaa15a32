"""Accuracy: per-class and macro accuracy of predictions."""

from __future__ import annotations

import numpy as np


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


def surrogate_predictions(kae, base, pre_first, pre_last, layer0, device=None, batch_size: int = 4096) -> np.ndarray:
    """Classes predicted through the KAE: L0 -> preprocess -> phi -> K^k -> psi -> undo -> output layer."""
    import torch

    device = device or torch.device("cpu")
    kae, base = kae.to(device).eval(), base.to(device).eval()
    z = pre_first.apply(layer0)
    preds = []
    with torch.no_grad():
        for s in range(0, len(z), batch_size):
            xl_hat = kae(torch.as_tensor(z[s:s + batch_size], dtype=torch.float32, device=device))
            raw = pre_last.invert(xl_hat.double().cpu().numpy())
            logits = base.output_layer(torch.as_tensor(raw, dtype=torch.float32, device=device))
            preds.append(logits.argmax(1).cpu().numpy())
    return np.concatenate(preds)


def run_surrogate_accuracy(ds, kae_path: str, base_path: str, preprocessing: str, reps: dict,
                           out_json: str, device=None, log=print) -> dict:
    """Per-class and macro surrogate accuracy of one KAE under every evaluation protocol."""
    from kaepipe.base import base_expectation, load_base_model
    from kaepipe.io import write_json
    from kaepipe.kae import kae_expectation, load_kae
    from kaepipe.represent import load_preprocessing, load_reps

    kae, meta = load_kae(kae_path, kae_expectation(ds["kae"]) if "kae" in ds else None)
    base = load_base_model(base_path, base_expectation(ds) if "base" in ds else None)
    last = base.cfg.blocks
    pre = load_preprocessing(preprocessing, [0, last])
    splits = {}
    for split, path in reps.items():
        layers, labels = load_reps(path)
        pred = surrogate_predictions(kae, base, pre[0], pre[last], layers[0], device)
        splits[split] = accuracy_report(pred, labels, ds["classes"])
    protocols = {p: {"split": s, **splits[s]} for p, s in ds["evaluation"].items()}
    for p, r in protocols.items():
        log(f"{p} protocol ({r['split']}): surrogate macro accuracy {r['macro']:.2f}")
    out = {"dataset": ds["name"], "lambda_iso": meta.get("lambda_iso"), "seed": meta.get("seed"),
           "splits": splits, "protocols": protocols}
    write_json(out, out_json)
    return out
