"""The base-network stage: build, train, save, load and evaluate the ResMLP of a dataset."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from kaepipe.data import read_split
from kaepipe.evaluate import accuracy_report
from kaepipe.io import provenance, save_safetensors, write_json, write_parquet
from kaepipe.models import ResMLP, ResMLPConfig, load_checkpoint, predict, state_dict_for_save
from kaepipe.train import TrainConfig, seed_all, train_classifier


def model_config(ds: Mapping, in_features: int) -> ResMLPConfig:
    """The ResMLP architecture of a configured dataset."""
    return ResMLPConfig(in_features=in_features, width=ds["base"]["width"], blocks=ds["base"]["blocks"],
                        classes=ds["classes"])


def save_base_model(model: ResMLP, path: str | Path, extra: Mapping | None = None) -> None:
    """Save a ResMLP's weights with its architecture and provenance as safetensors metadata."""
    meta = {"model_class": "ResMLP", "architecture": model.cfg.to_dict(), **(extra or {})}
    save_safetensors(state_dict_for_save(model), path, meta)


def base_expectation(ds: Mapping) -> dict:
    """The architecture fields of a dataset's base network that its config fixes."""
    return {"width": ds["base"]["width"], "blocks": ds["base"]["blocks"], "classes": ds["classes"]}


def load_base_model(path: str | Path, expect: Mapping | None = None) -> ResMLP:
    """Load a ResMLP saved by `save_base_model`; fields in `expect` (e.g. width) must match."""
    return load_checkpoint(path, ResMLPConfig, ResMLP, expect, "base-model")[0]


def evaluate_model(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, n_classes: int,
                   device: torch.device) -> dict:
    """Per-class and macro accuracy of a classifier on one split."""
    pred = predict(model.to(device), torch.as_tensor(x, device=device)).cpu().numpy()
    return accuracy_report(pred, y, n_classes)


def run_base_training(ds: Mapping, split_paths: Mapping[str, str], out_model: str, out_curve: str,
                      out_metrics: str, device: torch.device, log: Callable[[str], None] = print) -> dict:
    """Train the dataset's base ResMLP on its train split, then write weights, curve and accuracies."""
    x_train, y_train = read_split(split_paths["train"])
    cfg = TrainConfig.from_dict(ds["base"])
    seed_all(cfg.seed)
    model = ResMLP(model_config(ds, x_train.shape[1])).to(device)
    log(f"training {ds['name']} ResMLP width {ds['base']['width']} x {ds['base']['blocks']} blocks on "
        f"{len(x_train)} samples, {cfg.epochs} epochs, device {device}")
    t0 = time.perf_counter()
    curve = train_classifier(model, torch.as_tensor(x_train, device=device),
                             torch.as_tensor(y_train, device=device), cfg,
                             log_every=max(1, cfg.epochs // 20), log=log)
    seconds = time.perf_counter() - t0
    splits = {s: read_split(p) for s, p in split_paths.items()}
    acc = {s: evaluate_model(model, x, y, ds["classes"], device) for s, (x, y) in splits.items()}
    protocols = {p: {"split": s, **acc[s]} for p, s in ds["evaluation"].items()}
    prov = provenance({"dataset": ds["name"], "base": ds["base"], "splits": ds["splits"]})
    metrics = {"dataset": ds["name"], "splits": acc, "protocols": protocols, "train_seconds": seconds,
               "device": str(device), "provenance": prov}
    for p, r in protocols.items():
        log(f"{p} protocol ({r['split']} split): macro accuracy {r['macro']:.2f}  per class {r['per_class']}")
    write_parquet(curve, out_curve, {"dataset": ds["name"]})
    write_json(metrics, out_metrics)
    save_base_model(model.cpu(), out_model, {"train": cfg.to_dict(), "dataset": ds["name"], "provenance": prov})
    return metrics
