"""A dataset's base network: the paper's ResMLP or your own (`base.network`), built, saved and loaded as a
:class:`~kaepipe.network.LayeredNetwork` (named representation layers and the head after the last one).

Your own network is a constructor given as ``package.module:function`` with keyword arguments and the names
of the modules whose outputs are the representations; its checkpoint is a safetensors state dict whose
metadata records the constructor, its arguments, the layer names and the layers' shapes. Nothing is
unpickled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kaepipe.errors import DataError
from kaepipe.network import LayeredNetwork, NetworkError, build_network, import_object, load_state
from kaepipe.nn.checkpoints import base_expectation, load_base_model, model_config, state_dict_for_save
from kaepipe.nn.resmlp import ResMLP
from kaepipe.tensor_io import decode_metadata, load_safetensors, safetensors_header, save_safetensors

SPEC_KEYS = ("constructor", "kwargs", "layers", "head")
HEAD_CHECK_INPUTS = 256  # training inputs on which the stages check that the head reproduces the network's logits


def network_spec(ds: Mapping) -> dict[str, Any] | None:
    """The dataset's own network (`base.network`: constructor, kwargs, layers, head), or None for the ResMLP
    (or a dataset block without `base`)."""
    spec = (ds.get("base") or {}).get("network")
    if not spec:
        return None
    return {"constructor": spec["constructor"], "kwargs": dict(spec.get("kwargs") or {}),
            "layers": [str(n) for n in spec["layers"]], "head": spec.get("head")}


def build_base(ds: Mapping, in_features: int) -> nn.Module:
    """A fresh, untrained base network of the dataset (weights from torch's RNG: seed it first)."""
    spec = network_spec(ds)
    if spec is None:
        return ResMLP(model_config(ds, in_features))
    return build_network(spec["constructor"], spec["kwargs"])


def base_layers(ds: Mapping, model: nn.Module) -> list[str]:
    """The names of the modules whose outputs are the dataset's representations."""
    spec = network_spec(ds)
    return model.layer_names if spec is None else spec["layers"]


def explicit_head(ds: Mapping, model: nn.Module) -> nn.Module | None:
    """The head the config gives (ResMLP: its output layer; `base.network.head`: the function's module), or None
    (then it is cut from the network's fx graph)."""
    spec = network_spec(ds)
    if spec is None:
        return model.output_layer
    if not spec.get("head"):
        return None
    head = import_object(spec["head"])(model)
    if not callable(head):
        raise NetworkError(f"head {spec['head']!r} returned {type(head).__name__}, not a module or function")
    return head


def layered_base(ds: Mapping, model: nn.Module, example: torch.Tensor) -> LayeredNetwork:
    """The base network with its layers and head, checked on `example` inputs (head(last) == logits)."""
    return LayeredNetwork.from_module(model, base_layers(ds, model), example, head=explicit_head(ds, model))


def save_base(net: LayeredNetwork, ds: Mapping, path: str | Path, extra: Mapping | None = None) -> None:
    """Save the base network: a ResMLP with its architecture, your own network with its spec and layer shapes."""
    spec = network_spec(ds)
    if spec is None:
        meta = {"model_class": "ResMLP", "architecture": net.module.cfg.to_dict()}
    else:
        meta = {"model_class": "network", "network": {**spec, "shapes": [list(s) for s in net.shapes]}}
    save_safetensors(state_dict_for_save(net.module), path, {**meta, **(extra or {})})


def load_base(path: str | Path, ds: Mapping | None = None) -> LayeredNetwork:
    """Load a base network saved by `save_base` (in eval mode, on the CPU). With the dataset's config `ds`
    (or the part of it with `base`), the checkpoint must be of the network it names (constructor, arguments,
    layers; for the ResMLP its width and blocks)."""
    ds = ds or {}
    meta = decode_metadata(safetensors_header(path)[0])
    if meta.get("model_class") != "network":
        if network_spec(ds) is not None:
            raise DataError(f"{path}: a {meta.get('model_class', 'unknown')} checkpoint, but the config names your "
                            f"own network {network_spec(ds)['constructor']}; delete the file to rebuild it")
        model = load_base_model(path, base_expectation(ds) if "base" in ds else None)
        return LayeredNetwork.with_shapes(model, model.layer_names, [(model.cfg.width,)] * len(model.layer_names),
                                          model.output_layer)
    saved = meta.get("network")
    if not isinstance(saved, dict) or not isinstance(saved.get("constructor"), str) or "layers" not in saved:
        raise DataError(f"{path}: no valid 'network' metadata (constructor, kwargs, layers, shapes)")
    spec = network_spec(ds)
    if spec is None and "base" in ds:
        raise DataError(f"{path}: a checkpoint of your own network {saved['constructor']}, but the config names the "
                        "ResMLP; delete the file to rebuild it")
    if spec is not None:
        diff = [k for k in SPEC_KEYS if saved.get(k) != spec[k]]
        if diff:
            detail = "; ".join(f"{k}: checkpoint {saved.get(k)!r} vs config {spec[k]!r}" for k in diff)
            raise DataError(f"{path}: checkpoint is not of the configured network ({detail}); delete the file to "
                            "rebuild it, or fix base.network")
    spec = {k: saved.get(k) for k in SPEC_KEYS}
    model = build_network(spec["constructor"], spec["kwargs"] or {})
    load_state(model, load_safetensors(path)[0], path)
    shapes = _shapes(path, saved.get("shapes"), spec["layers"])
    head = import_object(spec["head"])(model) if spec.get("head") else None
    return LayeredNetwork.with_shapes(model.eval(), spec["layers"], shapes, head)


def _shapes(path: str | Path, shapes: Any, layers: Sequence[str]) -> list[tuple[int, ...]]:
    ok = (isinstance(shapes, list) and len(shapes) == len(layers)
          and all(isinstance(s, list) and s and all(isinstance(v, int) and v > 0 for v in s) for s in shapes))
    if not ok:
        raise DataError(f"{path}: 'network.shapes' metadata must list a positive shape per layer {list(layers)}, "
                        f"got {shapes!r}")
    return [tuple(s) for s in shapes]
