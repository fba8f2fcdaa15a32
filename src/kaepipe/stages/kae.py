"""The KAE stage: train the KAEs of a dataset's isometry-weight x seed grid and write their files."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from kaepipe.config import draw_of
from kaepipe.io import provenance, write_json, write_parquet
from kaepipe.nn.checkpoints import save_kae
from kaepipe.nn.ensemble import train_kae_pack
from kaepipe.nn.kae import KoopmanAutoencoder
from kaepipe.nn.losses import kae_metrics, loss_weights
from kaepipe.represent import load_preprocessing, load_reps


def training_pair(layers: list[np.ndarray], pre: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """(x0, x_last) of loaded layers, preprocessed with the fitted per-layer maps `pre`, as float32."""
    last = len(layers) - 1
    return pre[0].apply(layers[0]).astype(np.float32), pre[last].apply(layers[last]).astype(np.float32)


def preprocessed_pair(reps_path: str | Path, preprocessing_path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x0, x_last) preprocessed with the training fit, as float32, and the labels."""

    layers, labels = load_reps(reps_path)
    return (*training_pair(layers, load_preprocessing(preprocessing_path, [0, len(layers) - 1])), labels)


def _write_member(ds: Mapping, kae: Mapping, model: KoopmanAutoencoder, curve, x0_t: torch.Tensor, xl_t: torch.Tensor,
                  lambda_iso: float, seed: int, train_cfg, seconds: float, outputs: Mapping[str, str],
                  device: torch.device, log: Callable[[str], None], pack: Mapping | None = None) -> dict:
    """Final metrics and the three files of one trained KAE (the checkpoint last: on disk means done)."""
    weights = loss_weights(kae.get("loss_weights"), lambda_iso)
    final = kae_metrics(model, x0_t, xl_t, weights, seed=seed)
    log(f"lambda_iso {lambda_iso}, seed {seed}: final training metrics: "
        + ", ".join(f"{k} {v:.4g}" for k, v in final.items()))
    prov = provenance({"dataset": ds["name"], "kae": kae, "lambda_iso": lambda_iso, "seed": seed})
    draw = {"draw": draw_of(ds)} if draw_of(ds) is not None else {}  # the base network's draw, when known
    meta = {"dataset": ds["name"], **draw, "lambda_iso": lambda_iso, "seed": seed, "train": train_cfg.to_dict(),
            "provenance": prov}
    write_parquet(curve, outputs["losses"], {"dataset": ds["name"], **draw, "lambda_iso": lambda_iso, "seed": seed,
                                             "provenance": prov})
    metrics = {**meta, "train_metrics": final, "train_seconds": seconds, "epochs": train_cfg.epochs,
               "samples_per_second": len(x0_t) * train_cfg.epochs / seconds, "device": str(device)}
    if pack is not None:
        metrics["pack"] = dict(pack)
    write_json(metrics, outputs["metrics"])
    save_kae(model.cpu(), outputs["model"], meta)
    return metrics


def run_kae_pack(ds: Mapping, members: Sequence[tuple[float, int]], reps_train: str, preprocessing: str,
                 outputs: Sequence[Mapping[str, str]], device: torch.device,
                 log: Callable[[str], None] = print) -> list[dict]:
    """Train a pack of KAEs of one dataset, members (lambda_iso, seed), as one ensemble; write each
    member's files (outputs[i]: model, losses, metrics) exactly as a single KAE's job would.

    Member i starts from the initialisation and batch order of a single run with its seed and trains
    with its own weight, clipping and optimiser state (kaepipe.nn.ensemble). Nothing is written unless
    every member trains: a diverging member stops the pack with an error naming its (lambda_iso, seed).
    """
    kae = ds["kae"]
    if len(members) != len(outputs) or not members:
        raise ValueError(f"a pack needs one output set per member, got {len(members)} members, {len(outputs)}")
    x0, xl, _ = preprocessed_pair(reps_train, preprocessing)
    lambdas, seeds = [float(lam) for lam, _ in members], [int(s) for _, s in members]
    x0_t, xl_t = torch.as_tensor(x0, device=device), torch.as_tensor(xl, device=device)
    ens, curves, _, train_cfg, seconds = train_kae_pack(kae, x0_t, xl_t, lambdas, seeds, device, log)
    log(f"pack trained in {seconds:.1f}s ({seconds / len(members):.1f}s per KAE)")
    pack = {"members": len(members), "seconds": seconds}
    return [_write_member(ds, kae, ens.member(i), curves[i], x0_t, xl_t, lambdas[i], seeds[i],
                          replace(train_cfg, seed=seeds[i]),  # each member's own seed in its metadata
                          seconds / len(members), outputs[i], device, log, pack)
            for i in range(len(members))]


def run_kae_training(ds: Mapping, lambda_iso: float, seed: int, reps_train: str, preprocessing: str,
                     out_model: str, out_losses: str, out_metrics: str, device: torch.device,
                     log: Callable[[str], None] = print) -> dict:
    """Train one KAE of a dataset at one isometry weight and seed; write weights, losses and metrics.

    A pack of one (`run_kae_pack`): the KAE's files are bit for bit those it gets in a pack of any size
    on the same CPU, so `kae.pack` changes how the grid is scheduled, never its numbers.
    """
    outputs = {"model": out_model, "losses": out_losses, "metrics": out_metrics}
    return run_kae_pack(ds, [(lambda_iso, seed)], reps_train, preprocessing, [outputs], device, log)[0]
