"""Tensor files: safetensors with JSON metadata (byte-identical for equal contents), and torch files loaded
without unpickling code."""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save

from kaepipe.errors import DataError
from kaepipe.io import PathLike, atomic_path, to_jsonable


def save_safetensors(tensors: Mapping[str, Any], path: PathLike, metadata: Mapping[str, Any] | None = None) -> None:
    """Save tensors to safetensors atomically; metadata values are stored as JSON strings.

    Equal tensors and metadata give equal bytes (`canonical_safetensors`)."""
    flat = {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(v)).detach().cpu().contiguous()
            for k, v in tensors.items()}
    meta = {str(k): (v if isinstance(v, str) else json.dumps(to_jsonable(v), sort_keys=True))
            for k, v in (metadata or {}).items()}
    data = canonical_safetensors(save(flat, metadata=meta))
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def canonical_safetensors(data: bytes) -> bytes:
    """The bytes of a safetensors file with its metadata keys in sorted order.

    safetensors (0.8) writes the ``__metadata__`` map from a Rust HashMap, whose order is seeded per
    process: the same tensors and metadata gave files that differ in their header's bytes from run to
    run. The header is rewritten (same JSON, sorted metadata, padded with spaces to 8 bytes as the format
    allows); the tensor data and their offsets are unchanged."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header["__metadata__"].items())),
                  **{k: v for k, v in header.items() if k != "__metadata__"}}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + data[8 + n:]


def safetensors_header(path: PathLike) -> tuple[dict[str, str], list[str]]:
    """The raw metadata strings and the tensor names of a safetensors file, without reading the tensors."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {}), list(f.keys())
    except Exception as exc:  # safetensors raises its own error types
        raise DataError(f"{path}: not a readable safetensors file ({exc})") from exc


def load_safetensors(path: PathLike) -> tuple[dict[str, Any], dict[str, str]]:
    """Load all tensors and the raw metadata strings of a safetensors file."""
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
    """Save a torch object (e.g. a dict of tensors) atomically; equal objects give equal bytes.

    Saved through a buffer: torch names the zip archive's folder (and derives its serialization id)
    after the file it writes to, which is the random name of the temporary file."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def load_torch(path: PathLike) -> Any:
    """Load a torch file saved by `save_torch` (tensors only, no pickled code)."""

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(f"{path}: not a readable torch file ({exc})") from exc
