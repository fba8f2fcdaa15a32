"""The representations stage: record every layer of the frozen base network, fit and save the preprocessing."""

from __future__ import annotations

import numpy as np
import torch

from kaepipe.data import read_split
from kaepipe.io import provenance, write_parquet
from kaepipe.nn.checkpoints import base_expectation, load_base_model
from kaepipe.represent import fit_preprocessing, layer_tensors, reps_frame, save_preprocessing
from kaepipe.tensor_io import save_torch


def run_representations(ds, model_path: str, split_paths: dict, out_parquet: dict, out_pt: dict,
                        out_preprocessing: str, device: torch.device, log=print) -> None:
    """Record every layer of the frozen base network on each split, write them, and fit the preprocessing."""

    model = load_base_model(model_path, base_expectation(ds))
    reps = {}
    for split, path in split_paths.items():
        x, y = read_split(path, ds["classes"], split)
        reps[split] = (layer_tensors(model, x, device), y)
        log(f"{split}: {reps[split][0].shape[0]} layers x {reps[split][0].shape[1]} samples x "
            f"{reps[split][0].shape[2]} features")
    pre = ds.get("preprocess", {})
    transforms = fit_preprocessing(list(reps["train"][0]), pre.get("pca_dim"), pre.get("frobenius", 100.0))
    prov = provenance({"dataset": ds["name"], "preprocess": pre, "base": ds["base"]})
    save_preprocessing(transforms, out_preprocessing, {"dataset": ds["name"], "provenance": prov})
    for split, (layers, y) in reps.items():
        save_torch({"layers": torch.from_numpy(layers), "labels": torch.from_numpy(y)}, out_pt[split])
        write_parquet(reps_frame(list(layers), y), out_parquet[split],
                      {"dataset": ds["name"], "split": split, "provenance": prov})
    last = transforms[-1]
    err = np.abs(last.invert(last.apply(reps["train"][0][-1])) - reps["train"][0][-1]).max()
    log(f"preprocessing: q = {last.directions.shape[0]}, last-layer inverse max error {err:.2e}")
