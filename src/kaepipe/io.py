"""Reading and writing results: atomic files, Parquet, safetensors, JSON and provenance."""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib.metadata
import json
import os
import platform
import re
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from kaepipe import __version__
from kaepipe.errors import DataError

PathLike = str | os.PathLike


TMP_SUFFIX = ".kaepipe-tmp"
_HOST = (re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host")[:32]


def temp_owner(tmp: PathLike, path: PathLike) -> tuple[str, int] | None:
    """(host, pid) of the writer of a temporary file of `path` (`.<name>.<host>.<pid>.<random>.kaepipe-tmp`),
    or None when `tmp` is no such file (another output's, or not kaepipe's)."""
    tmp_name, name = Path(tmp).name, Path(path).name
    prefix = f".{name}."
    if not (tmp_name.startswith(prefix) and tmp_name.endswith(TMP_SUFFIX)):
        return None
    parts = tmp_name[len(prefix):-len(TMP_SUFFIX)].split(".")
    if len(parts) != 3 or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


def _alive(pid: int) -> bool:
    """Whether a process of this host has that id (a process we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temps(path: PathLike) -> list[Path]:
    """Remove the temporary files of `path` left by writers that died (same host, process gone); return them.

    A writer killed in the middle of `atomic_path` leaves its temporary file; this runs whenever the same
    output is written again. Files of live processes, or of other hosts (whose processes cannot be asked),
    are kept.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*{TMP_SUFFIX}"):
        owner = temp_owner(tmp, path)
        if owner is not None and owner[0] == _HOST and owner[1] != os.getpid() and not _alive(owner[1]):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path` that is renamed onto it only if the block succeeds.

    The temporary file is `.<name>.<host>.<pid>.<random>.kaepipe-tmp`; those of dead writers of the same
    output are removed first (`remove_stale_temps`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(paths: Sequence[PathLike]) -> list[Path]:
    """`remove_stale_temps` for several outputs (a job's, before it writes them); returns what was removed."""
    return [t for p in paths for t in remove_stale_temps(p)]


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
    versions = {"kaepipe": __version__, "python": platform.python_version(),
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
