"""The base-network stage: train a dataset's ResMLP, measure it on every split, write weights, curve, metrics."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import torch

from kaepipe.config import draw_of
from kaepipe.data import read_split
from kaepipe.errors import ConfigError
from kaepipe.evaluate import evaluate_model
from kaepipe.io import provenance, write_json, write_parquet
from kaepipe.nn.checkpoints import model_config, save_base_model
from kaepipe.nn.resmlp import ResMLP
from kaepipe.nn.train import TrainConfig, seed_all, train_classifier


def run_base_training(ds: Mapping, split_paths: Mapping[str, str], out_model: str, out_curve: str,
                      out_metrics: str, device: torch.device, log: Callable[[str], None] = print) -> dict:
    """Train one draw of the dataset's base ResMLP on its train split, then write weights, curve and accuracies.

    `ds`: the settings of one draw (kaepipe.config.dataset_config(config, name, draw)); the draw is the
    network's seed (initialisation and batch order)."""
    x_train, y_train = read_split(split_paths["train"], ds["classes"], "train")
    draw = draw_of(ds)
    if draw is None:
        raise ConfigError(f"datasets.{ds.get('name')}.base.seeds: the base network trains one draw at a time; "
                          f"give the settings of one draw (kaepipe.config.dataset_config(config, name, draw))")
    cfg = TrainConfig.from_dict({**ds["base"], "seed": draw})
    seed_all(cfg.seed)
    model = ResMLP(model_config(ds, x_train.shape[1])).to(device)
    log(f"training {ds['name']} ResMLP (draw {draw}) width {ds['base']['width']} x {ds['base']['blocks']} blocks on "
        f"{len(x_train)} samples, {cfg.epochs} epochs, device {device}")
    t0 = time.perf_counter()
    curve = train_classifier(model, torch.as_tensor(x_train, device=device),
                             torch.as_tensor(y_train, device=device), cfg,
                             log_every=max(1, cfg.epochs // 20), log=log)
    seconds = time.perf_counter() - t0
    splits = {s: read_split(p, ds["classes"], s) for s, p in split_paths.items()}
    acc = {s: evaluate_model(model, x, y, ds["classes"], device) for s, (x, y) in splits.items()}
    protocols = {p: {"split": s, **acc[s]} for p, s in ds["evaluation"].items()}
    prov = provenance({"dataset": ds["name"], "base": ds["base"], "splits": ds["splits"]})
    metrics = {"dataset": ds["name"], "draw": draw, "splits": acc, "protocols": protocols, "train_seconds": seconds,
               "device": str(device), "provenance": prov}
    for p, r in protocols.items():
        log(f"{p} protocol ({r['split']} split): macro accuracy {r['macro']:.2f}  per class {r['per_class']}")
    write_parquet(curve, out_curve, {"dataset": ds["name"], "provenance": prov})
    write_json(metrics, out_metrics)
    save_base_model(model.cpu(), out_model, {"train": cfg.to_dict(), "dataset": ds["name"], "draw": draw,
                                             "provenance": prov})
    return metrics
