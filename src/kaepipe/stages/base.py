"""The base-network stage: train the dataset's network (the ResMLP or your own) or start from given weights,
measure it on every split, write weights, curve and metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from kaepipe.config import draw_of
from kaepipe.data import read_split
from kaepipe.errors import ConfigError, DataError
from kaepipe.evaluate import evaluate_model
from kaepipe.io import provenance, write_json, write_parquet
from kaepipe.network import load_weights
from kaepipe.nn.base import HEAD_CHECK_INPUTS, build_base, layered_base, network_spec, save_base
from kaepipe.nn.checkpoints import base_expectation, load_base_model
from kaepipe.nn.train import TrainConfig, seed_all, train_classifier
from kaepipe.reference import checkpoint_kind, load_reference_base

CURVE_COLUMNS = ["epoch", "lr", "loss", "acc"]


def describe(ds: Mapping) -> str:
    spec = network_spec(ds)
    if spec is None:
        return f"ResMLP width {ds['base']['width']} x {ds['base']['blocks']} blocks"
    return f"{spec['constructor']}({', '.join(f'{k}={v!r}' for k, v in spec['kwargs'].items())})"


def start_from_weights(ds: Mapping, path: str | Path, in_features: int) -> nn.Module:
    """The dataset's network with trained weights from a file (`base.weights`): for your own network a
    safetensors state dict; for the ResMLP a kaepipe checkpoint or one in the reference format (e.g. the
    paper authors' released Yin-Yang network)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: base.weights file not found")
    if network_spec(ds) is not None:
        model = build_base(ds, in_features)
        load_weights(model, path)
        return model
    if path.suffix == ".safetensors" and checkpoint_kind(path) == "base":
        model = load_reference_base(path)
    else:
        model = load_base_model(path, base_expectation(ds))
    if model.cfg.in_features != in_features or model.cfg.classes != ds["classes"]:
        raise DataError(f"{path}: the network takes {model.cfg.in_features} features and has {model.cfg.classes} "
                        f"classes; the dataset has {in_features} and {ds['classes']}")
    return model


def run_base_training(ds: Mapping, split_paths: Mapping[str, str], out_model: str, out_curve: str,
                      out_metrics: str, device: torch.device, log: Callable[[str], None] = print) -> dict:
    """Train one draw of the dataset's base network (the ResMLP or base.network) on its train split, or load
    `base.weights`; check that its head reproduces it, then write weights, curve and accuracies.

    `ds`: the settings of one draw (kaepipe.config.dataset_config(config, name, draw)); the draw is the
    network's seed (initialisation and batch order)."""
    draw = draw_of(ds)
    if draw is None:
        raise ConfigError(f"datasets.{ds.get('name')}.base.seeds: the base network trains one draw at a time; "
                          f"give the settings of one draw (kaepipe.config.dataset_config(config, name, draw))")
    splits = {s: read_split(p, ds["classes"], s) for s, p in split_paths.items()}  # each file read once
    x_train, y_train = splits["train"]
    cfg = TrainConfig.from_dict({**ds["base"], "seed": draw})
    seed_all(cfg.seed)
    weights = ds["base"].get("weights")
    t0 = time.perf_counter()
    if weights:
        model = start_from_weights(ds, weights, x_train.shape[1]).to(device)
        log(f"{ds['name']}: {describe(ds)} from {weights} (not trained here)")
        curve = pd.DataFrame({c: pd.Series(dtype="int64" if c == "epoch" else "float64") for c in CURVE_COLUMNS})
    else:
        model = build_base(ds, x_train.shape[1]).to(device)
        log(f"training {ds['name']} {describe(ds)} (draw {draw}) on {len(x_train)} samples, {cfg.epochs} epochs, "
            f"device {device}")
        curve = train_classifier(model, torch.as_tensor(x_train, device=device),
                                 torch.as_tensor(y_train, device=device), cfg,
                                 log_every=max(1, cfg.epochs // 20), log=log)
    seconds = time.perf_counter() - t0
    net = layered_base(ds, model, torch.as_tensor(x_train[:HEAD_CHECK_INPUTS], device=device))
    log(f"layers {net.layers}: widths {net.widths}; the head reproduces the network's logits")
    acc = {s: evaluate_model(model, x, y, ds["classes"], device) for s, (x, y) in splits.items()}
    protocols = {p: {"split": s, **acc[s]} for p, s in ds["evaluation"].items()}
    prov = provenance({"dataset": ds["name"], "base": ds["base"], "splits": ds["splits"]})
    metrics = {"dataset": ds["name"], "draw": draw, "splits": acc, "protocols": protocols, "train_seconds": seconds,
               "trained": not weights, "layers": net.layers, "widths": net.widths,
               "device": str(device), "provenance": prov}
    for p, r in protocols.items():
        log(f"{p} protocol ({r['split']} split): macro accuracy {r['macro']:.2f}  per class {r['per_class']}")
    write_parquet(curve, out_curve, {"dataset": ds["name"], "provenance": prov})
    write_json(metrics, out_metrics)
    net.to("cpu")
    save_base(net, ds, out_model, {"train": cfg.to_dict(), "dataset": ds["name"], "draw": draw, "provenance": prov})
    return metrics
