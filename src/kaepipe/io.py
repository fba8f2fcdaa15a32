"""Reading and writing results: atomic files, Parquet, safetensors, JSON and provenance."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from kaepipe.errors import DataError

PathLike = str | os.PathLike


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` that is renamed onto it only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's file-creation mask."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(text: str, path: PathLike) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(obj: Any, path: PathLike) -> None:
    """Write JSON atomically, with sorted keys so equal objects give equal bytes."""
    write_text(json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n", path)


def read_json(path: PathLike) -> Any:
    """Read a JSON file, naming the file when it is missing or damaged."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from exc


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays, paths and tuples into plain JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_parquet(df: pd.DataFrame, path: PathLike, metadata: Mapping[str, Any] | None = None) -> None:
    """Write a DataFrame to Parquet atomically, with optional JSON metadata in the schema."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged[b"kaepipe"] = json.dumps(to_jsonable(metadata), sort_keys=True).encode()
        table = table.replace_schema_metadata(merged)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_parquet(path: PathLike, required: Sequence[str] = ()) -> pd.DataFrame:
    """Read a Parquet file and check that it has the `required` columns."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        df = pq.read_table(path).to_pandas()
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing expected column(s) {missing}; found {list(df.columns)[:12]}")
    return df


def parquet_metadata(path: PathLike) -> dict[str, Any]:
    """Return the kaepipe metadata stored in a Parquet file's schema (empty if none)."""
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"kaepipe")
    return json.loads(raw) if raw else {}


def save_safetensors(tensors: Mapping[str, Any], path: PathLike, metadata: Mapping[str, Any] | None = None) -> None:
    """Save tensors to safetensors atomically; metadata values are stored as JSON strings.

    Equal tensors and metadata give equal bytes (`canonical_safetensors`)."""
    from safetensors.torch import save

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
    """Save a torch object (e.g. a dict of tensors) atomically; equal objects give equal bytes.

    Saved through a buffer: torch names the zip archive's folder (and derives its serialization id)
    after the file it writes to, which is the random name of the temporary file."""
    import io

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


PACKAGE_DIR = Path(__file__).resolve().parent


def _git(*args: str) -> str | None:
    """Output of a git command run in kaepipe's own source folder, or None (no git, not a checkout)."""
    try:
        out = subprocess.run(["git", *args], cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """kaepipe's own commit and whether its source tree has uncommitted changes.

    Asked of the repository that holds this file (never the working directory's, which may be another
    project's); for an installed copy outside any checkout, commit "unknown" and dirty None.
    """
    top = _git("rev-parse", "--show-toplevel")
    if top is None or not (PACKAGE_DIR.is_relative_to(Path(top.strip()).resolve())):
        return {"commit": "unknown", "dirty": None}
    commit = (_git("rev-parse", "HEAD") or "unknown").strip()
    status = _git("status", "--porcelain", "--untracked-files=no", "--", str(PACKAGE_DIR.parent.parent))
    return {"commit": commit, "dirty": None if status is None else bool(status.strip())}


def git_commit() -> str:
    """kaepipe's own git commit (see `code_version`), or 'unknown'."""
    return code_version()["commit"]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that determine kaepipe's numbers."""
    versions = {"kaepipe": importlib.metadata.version("kaepipe"), "python": platform.python_version(),
                "numpy": np.__version__, "pandas": pd.__version__}
    for name in ("torch", "gudhi", "scipy", "pyarrow", "snakemake"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def provenance(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What a result depends on: the config values, the code version and the library versions."""
    return {"config": to_jsonable(dict(config or {})), "git_commit": git_commit(),
            "code_dirty": code_version()["dirty"],
            "versions": library_versions()}
