"""Checkpoints of every model kind: safetensors weights with the architecture (and provenance) as metadata."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, get_type_hints

import torch
from torch import nn

from kaepipe.errors import ConfigError, DataError
from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder
from kaepipe.nn.resmlp import ResMLP, ResMLPConfig
from kaepipe.tensor_io import decode_metadata, load_safetensors, save_safetensors


def state_dict_for_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """A model's state dict with contiguous CPU tensors, ready for safetensors."""
    return {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}


def check_architecture(path: str | Path, found: Mapping, expect: Mapping | None) -> None:
    """Raise DataError naming the file when a checkpoint's architecture differs from the config's."""
    diff = {k: (found.get(k), v) for k, v in (expect or {}).items() if found.get(k) != v}
    if diff:
        detail = ", ".join(f"{k}: checkpoint {a} vs config {b}" for k, (a, b) in diff.items())
        raise DataError(f"{path}: checkpoint does not match the config ({detail}); "
                        "delete the file to retrain, or fix the config")


# Fields of a checkpoint's architecture that the tensors determine, per config class (a tuple: any of these).
SHAPE_FIELDS: dict[type, dict[str, Callable[[Mapping[str, torch.Tensor]], Any]]] = {
    KAEConfig: {"in_features": lambda t: t["encoder.0.weight"].shape[1],
                "hidden": lambda t: t["encoder.0.weight"].shape[0],
                "latent": lambda t: t["encoder.2.weight"].shape[0],
                "parametrization": lambda t: ("eigen",) if "koopman.rates" in t else ("exponential", "linear")},
    ResMLPConfig: {"in_features": lambda t: t["input_layer.linear.weight"].shape[1],
                   "width": lambda t: t["input_layer.linear.weight"].shape[0],
                   "blocks": lambda t: len({k.split(".")[1] for k in t if k.startswith("blocks.")}),
                   "classes": lambda t: t["output_layer.weight"].shape[0]},
}

# Allowed values of numeric fields beyond their type (every integer field is a size: at least 1).
FIELD_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "negative_slope": (lambda v: v >= 0, ">= 0"),
    "bn_eps": (lambda v: v > 0, "> 0"),
}


def field_problems(arch: Mapping, config_cls) -> list[str]:
    """Unknown, missing, mistyped or out-of-range fields of a checkpoint's architecture metadata."""
    hints = get_type_hints(config_cls)
    known = {f.name: f for f in fields(config_cls)}
    problems = [f"unknown field '{k}'" for k in arch if k not in known]
    for name, f in known.items():
        if name not in arch:
            if f.default is MISSING:
                problems.append(f"missing field '{name}'")
            continue
        value, kind = arch[name], hints[name]
        if kind is bool:
            ok = isinstance(value, bool)
        elif kind is int:
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= 1
        elif kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and FIELD_RANGES.get(name, (lambda v: True, ""))[0](value)
        else:
            ok = isinstance(value, kind)
        if not ok:
            need = {bool: "true or false", int: "an integer >= 1", str: "a string"}.get(
                kind, f"a finite number {FIELD_RANGES.get(name, (None, ''))[1]}".rstrip())
            problems.append(f"field '{name}' = {value!r} is not {need}")
    return problems


def shape_problems(cfg, tensors: Mapping[str, torch.Tensor], config_cls, model_cls) -> list[str]:
    """Architecture fields the tensors contradict, then any tensor missing, unexpected or of another shape.

    The expected shapes come from the model built on the meta device: no memory is allocated.
    """
    problems = []
    for name, infer in SHAPE_FIELDS.get(config_cls, {}).items():
        try:
            found = infer(tensors)
        except (KeyError, IndexError):
            continue  # named below as a missing tensor
        value = getattr(cfg, name)
        accepted = found if isinstance(found, tuple) else (found,)
        if value not in accepted:
            problems.append(f"field '{name}' = {value!r} but the tensors have {' or '.join(map(str, accepted))}")
    if problems:
        return problems
    with torch.device("meta"):
        skeleton = model_cls(cfg)
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing:
        problems.append(f"missing tensor(s) {missing[:6]}")
    if unexpected:
        problems.append(f"unexpected tensor(s) {unexpected[:6]}")
    problems += [f"tensor '{k}' has shape {tuple(tensors[k].shape)}, expected {shape}"
                 for k, shape in expected.items() if k in tensors and tuple(tensors[k].shape) != shape]
    return problems


def load_checkpoint(path: str | Path, config_cls, model_cls, expect: Mapping | None = None,
                    what: str = "model") -> tuple[nn.Module, dict]:
    """Load a model saved with an 'architecture' metadata entry; fields in `expect` must match.

    Every field's type and range, and the whole architecture against the tensors' shapes, are checked
    before any module is built; a DataError names the file and the field.
    """

    tensors, raw = load_safetensors(path)
    meta = decode_metadata(raw)
    arch = meta.get("architecture")
    if not isinstance(arch, dict):
        raise DataError(f"{path}: no 'architecture' metadata; not a kaepipe {what} checkpoint")
    problems = field_problems(arch, config_cls)
    if problems:
        raise DataError(f"{path}: invalid 'architecture' metadata: {'; '.join(problems)}")
    try:
        cfg = config_cls(**arch)
    except ConfigError as exc:
        raise DataError(f"{path}: invalid 'architecture' metadata: {exc}") from exc
    problems = shape_problems(cfg, tensors, config_cls, model_cls)
    if problems:
        raise DataError(f"{path}: tensors do not fit the architecture {cfg.to_dict()}: {'; '.join(problems)}")
    check_architecture(path, cfg.to_dict(), expect)
    model = model_cls(cfg)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        raise DataError(f"{path}: tensors do not fit the architecture {cfg.to_dict()} ({exc})") from exc
    return model.eval(), meta


def save_kae(model: KoopmanAutoencoder, path: str | Path, extra: Mapping | None = None) -> None:
    """Save a KAE's weights with its architecture (and anything in `extra`) as safetensors metadata."""

    meta = {"model_class": "KoopmanAutoencoder", "architecture": model.cfg.to_dict(), **(extra or {})}
    save_safetensors(state_dict_for_save(model), path, meta)


def kae_expectation(kae: Mapping) -> dict:
    """The architecture fields of a KAE that the config fixes (the LeakyReLU slope: the training default)."""
    out = {k: kae[k] for k in ("hidden", "latent", "k", "parametrization") if k in kae}
    out["negative_slope"] = kae.get("negative_slope", KAEConfig.negative_slope)
    return out


def load_kae(path: str | Path, expect: Mapping | None = None) -> tuple[KoopmanAutoencoder, dict]:
    """Load a KAE saved by `save_kae` and its decoded metadata; fields in `expect` must match."""

    return load_checkpoint(path, KAEConfig, KoopmanAutoencoder, expect, "KAE")


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
