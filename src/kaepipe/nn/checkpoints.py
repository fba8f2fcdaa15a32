"""Checkpoints of every model kind: safetensors weights with the architecture (and provenance) as metadata."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from kaepipe.errors import DataError
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


def load_checkpoint(path: str | Path, config_cls, model_cls, expect: Mapping | None = None,
                    what: str = "model") -> tuple[nn.Module, dict]:
    """Load a model saved with an 'architecture' metadata entry; fields in `expect` must match."""

    tensors, raw = load_safetensors(path)
    meta = decode_metadata(raw)
    arch = meta.get("architecture")
    if not isinstance(arch, dict):
        raise DataError(f"{path}: no 'architecture' metadata; not a kaepipe {what} checkpoint")
    check_architecture(path, arch, expect)
    cfg = config_cls(**arch)
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
    """The architecture fields of a KAE that the config fixes."""
    return {k: kae[k] for k in ("hidden", "latent", "k", "parametrization") if k in kae}


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
