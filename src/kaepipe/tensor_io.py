"""Tensor files: safetensors with JSON metadata, and torch files loaded without unpickling code."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from kaepipe.errors import DataError
from kaepipe.io import PathLike, atomic_path, to_jsonable


def save_safetensors(tensors: Mapping[str, Any], path: PathLike, metadata: Mapping[str, Any] | None = None) -> None:
    """Save tensors to safetensors atomically; metadata values are stored as JSON strings."""
    from safetensors.torch import save_file

    flat = {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(v)).detach().cpu().contiguous()
            for k, v in tensors.items()}
    meta = {str(k): (v if isinstance(v, str) else json.dumps(to_jsonable(v), sort_keys=True))
            for k, v in (metadata or {}).items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp), metadata=meta)


def load_safetensors(path: PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """Load all tensors and the raw metadata strings of a safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    except Exception as exc:  # safetensors raises its own error types
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from exc
    return tensors, meta


def decode_metadata(meta: Mapping[str, str]) -> dict[str, Any]:
    """Decode safetensors metadata strings written by `save_safetensors` (plain strings pass through)."""
    out: dict[str, Any] = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            out[k] = v
    return out


def save_torch(obj: Any, path: PathLike) -> None:
    """Save a torch object (e.g. a dict of tensors) atomically."""

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: PathLike) -> Any:
    """Load a torch file saved by `save_torch` (tensors only, no pickled code)."""

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: not a readable torch file ({exc})") from exc
