"""TODO."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from kaepipe.io import provenance, write_json, write_parquet
from kaepipe.nn.checkpoints import save_kae
from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder
from kaepipe.nn.losses import kae_metrics
from kaepipe.nn.train import fit_kae, kae_train_config, seed_all
from kaepipe.represent import load_preprocessing, load_reps


def training_pair(layers: list[np.ndarray], pre: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """(x0, x_last) of loaded layers, preprocessed with the fitted per-layer maps `pre`, as float32."""
    last = len(layers) - 1
    return pre[0].apply(layers[0]).astype(np.float32), pre[last].apply(layers[last]).astype(np.float32)


def preprocessed_pair(reps_path: str | Path, preprocessing_path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x0, x_last) preprocessed with the training fit, as float32, and the labels."""

    layers, labels = load_reps(reps_path)
    return (*training_pair(layers, load_preprocessing(preprocessing_path, [0, len(layers) - 1])), labels)


def run_kae_training(ds: Mapping, lambda_iso: float, seed: int, reps_train: str, preprocessing: str,
                     out_model: str, out_losses: str, out_metrics: str, device: torch.device,
                     log: Callable[[str], None] = print) -> dict:
    """Train one KAE of a dataset at one isometry weight and seed; write weights, losses and metrics."""

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
    write_parquet(curve, out_losses, {"dataset": ds["name"], "lambda_iso": lambda_iso, "seed": seed,
                                      "provenance": prov})
    metrics = {**meta, "train_metrics": final, "train_seconds": seconds, "epochs": train_cfg.epochs,
               "samples_per_second": len(x0) * train_cfg.epochs / seconds, "device": str(device)}
    write_json(metrics, out_metrics)
    save_kae(model.cpu(), out_model, meta)  # last: a checkpoint on disk means the job finished
    return metrics
