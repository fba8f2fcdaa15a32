"""The representations stage: record every layer of the frozen base network, fit and save the preprocessing."""

from __future__ import annotations

import numpy as np
import torch

from kaepipe.data import read_split, stratified_subset
from kaepipe.errors import ConfigError
from kaepipe.io import provenance, write_parquet
from kaepipe.nn.base import HEAD_CHECK_INPUTS, load_base
from kaepipe.represent import fit_preprocessing, reps_frame, save_preprocessing
from kaepipe.tensor_io import save_torch


def recorded_subset(ds, split: str, labels: np.ndarray) -> np.ndarray:
    """The samples of a split whose representations are recorded: all, or for the training split a stratified
    subset of `represent.train_size` (seeded by `represent.seed`)."""
    rep = ds.get("represent") or {}
    size = rep.get("train_size")
    if split != "train" or size is None or size >= len(labels):
        return np.arange(len(labels))
    return np.sort(stratified_subset(labels, int(size), int(rep.get("seed", 0))))


def run_representations(ds, model_path: str, split_paths: dict, out_parquet: dict, out_pt: dict,
                        out_preprocessing: str, device: torch.device, log=print) -> None:
    """Record every layer of the frozen base network on each split, write them, and fit the preprocessing."""

    net = load_base(model_path, ds).to(device)
    reps = {}
    for split, path in split_paths.items():
        x, y = read_split(path, ds["classes"], split)
        keep = recorded_subset(ds, split, y)
        x, y = x[keep], y[keep]
        layers, logits = net.record(torch.as_tensor(x, device=device), with_output=True)
        if split == "train":  # the head reproduces the network on these inputs too (not only on the base rule's)
            net.check_head(layers[-1][:HEAD_CHECK_INPUTS], logits[:HEAD_CHECK_INPUTS])
        reps[split] = ([a.cpu().numpy().astype(np.float32) for a in layers], y)
        log(f"{split}: {len(reps[split][0])} layers {net.layers} x {len(y)} samples, widths {net.widths}")
    pre = ds.get("preprocess", {})
    transforms = fit_preprocessing(list(reps["train"][0]), pre.get("pca_dim"), pre.get("frobenius", 100.0))
    check_kae_dims(transforms, net.layers)
    prov = provenance({"dataset": ds["name"], "preprocess": pre, "base": ds["base"],
                       "represent": ds.get("represent") or {}})
    save_preprocessing(transforms, out_preprocessing, {"dataset": ds["name"], "layers": net.layers,
                                                       "provenance": prov})
    for split, (layers, y) in reps.items():
        save_torch({"layers": layers_payload(layers), "labels": torch.from_numpy(y)}, out_pt[split])
        write_parquet(reps_frame(list(layers), y), out_parquet[split],
                      {"dataset": ds["name"], "split": split, "layers": net.layers, "provenance": prov})
    last = transforms[-1]
    err = np.abs(last.invert(last.apply(reps["train"][0][-1])) - reps["train"][0][-1]).max()
    log(f"preprocessing: q = {[t.directions.shape[0] for t in transforms]}, last-layer inverse max error {err:.2e}")


def check_kae_dims(transforms, layers) -> None:
    """The KAE maps the first layer's preprocessed space to the last one's: both must have q dimensions."""
    q_first, q_last = transforms[0].directions.shape[0], transforms[-1].directions.shape[0]
    if q_first != q_last:
        raise ConfigError(f"the first layer {layers[0]!r} and the last layer {layers[-1]!r} preprocess to {q_first} and "
                          f"{q_last} dimensions, but the KAE maps one space to itself: set preprocess.pca_dim to at "
                          f"most {min(q_first, q_last)}")


def layers_payload(layers: list[np.ndarray]) -> torch.Tensor | list[torch.Tensor]:
    """What the reps file stores under 'layers': one (layers, n, width) tensor when every layer has the same
    width (the ResMLP), else a list of (n, width_l) tensors."""
    if len({a.shape[1] for a in layers}) == 1:
        return torch.from_numpy(np.stack(layers))
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in layers]
