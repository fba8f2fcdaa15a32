"""Datasets: the Yin-Yang generator, IDX files (MNIST, Fashion-MNIST), checksums and downloads."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kaepipe.errors import DataError
from kaepipe.io import atomic_path, read_parquet, write_parquet

# --------------------------------------------------------------------------------------------
# Yin-Yang (Kriener et al. 2022)
# --------------------------------------------------------------------------------------------

R_SMALL = 0.1
R_BIG = 0.5
YINYANG_CLASSES = ("yin", "yang", "dot")


def yinyang_class(x: float, y: float, r_small: float = R_SMALL, r_big: float = R_BIG) -> int:
    """Class of a point of the Yin-Yang disc: 0, 1 or 2 (dot), by the original rule."""
    d_r = np.sqrt((x - 1.5 * r_big) ** 2 + (y - r_big) ** 2)
    d_l = np.sqrt((x - 0.5 * r_big) ** 2 + (y - r_big) ** 2)
    if d_r < r_small or d_l < r_small:
        return 2
    crit1 = d_r <= r_small
    crit2 = r_small < d_l <= 0.5 * r_big
    crit3 = y > r_big and d_r > 0.5 * r_big
    return int(crit1 or crit2 or crit3)


def yinyang(size: int, seed: int, features: int = 2,
            r_small: float = R_SMALL, r_big: float = R_BIG) -> tuple[np.ndarray, np.ndarray]:
    """Generate the Yin-Yang dataset by the original rejection sampling with `RandomState(seed)`.

    Returns float32 features of shape (size, features) — (x, y) or (x, y, 1-x, 1-y) — and int64
    labels.
    """
    if features not in (2, 4):
        raise ValueError(f"yinyang features must be 2 or 4, got {features}")
    if size <= 0:
        raise ValueError(f"yinyang size must be positive, got {size}")
    rng = np.random.RandomState(seed)
    xs = np.empty((size, 2), dtype=np.float64)
    labels = np.empty(size, dtype=np.int64)
    for i in range(size):
        goal = rng.randint(3)
        while True:
            x, y = rng.rand(2) * 2.0 * r_big
            if np.sqrt((x - r_big) ** 2 + (y - r_big) ** 2) > r_big:
                continue
            c = yinyang_class(x, y, r_small, r_big)
            if c == goal:
                break
        xs[i] = (x, y)
        labels[i] = c
    if features == 4:
        xs = np.concatenate([xs, 1.0 - xs], axis=1)
    return xs.astype(np.float32), labels


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a numpy array, checking its header and size."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"{path}: damaged gzip file ({exc}); delete it and provide the file again") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: wrong IDX magic number {raw[:4].hex() if raw else '(empty)'}; "
                        "expected 0x0000 followed by a type code and the number of dimensions")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: IDX header truncated")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"{path}: IDX body has {len(raw) - header} bytes, header {shape} implies {expected}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def md5sum(path: str | Path, chunk: int = 1 << 20) -> str:
    """MD5 hex digest of a file."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_md5sums(path: str | Path) -> dict[str, str]:
    """Parse an `MD5SUMS` file (`<md5>  <name>` per line) into {name: md5}."""
    sums: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            sums[parts[-1].lstrip("*")] = parts[0].lower()
    return sums


@dataclass(frozen=True)
class IdxSource:
    """An IDX dataset: official file names, their MD5 sums, mirrors and normalisation."""

    name: str
    files: Mapping[str, tuple[str, str]]  # split -> (images file, labels file)
    md5: Mapping[str, tuple[str, ...]]  # file -> accepted MD5 sums
    mirrors: Sequence[str]
    mean: float
    std: float
    default_root: str | None = None


MNIST = IdxSource(
    name="mnist",
    files={"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
           "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")},
    md5={"train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873",),
         "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432",),
         "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3",),
         "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c",)},
    mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/",
             "https://storage.googleapis.com/cvdf-datasets/mnist/",
             "http://yann.lecun.com/exdb/mnist/"),
    mean=0.1307, std=0.3081,
)

# Zalando's official archives, and Debian's `dataset-fashion-mnist` (same content, recompressed).
FASHION_MNIST = IdxSource(
    name="fashion_mnist",
    files=MNIST.files,
    md5={"train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "cf8536b0aa1a6ac5fa3f23001093305c"),
         "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", "10bea18fdb374794d4bb42e356e600c9"),
         "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", "f78720b4224f21cce2f2ccf2d7a94c9a"),
         "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", "0d30e22e447f3c33dab9ed536400ac01")},
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    mean=0.2860, std=0.3530,
    default_root="/usr/share/datasets/fashion-mnist",
)

IDX_SOURCES = {"mnist": MNIST, "fashion_mnist": FASHION_MNIST}


def verify_file(path: Path, accepted: Sequence[str], what: str) -> None:
    """Check a file's MD5 against the accepted sums; the error names the file and both sums."""
    got = md5sum(path)
    if got not in accepted:
        raise DataError(f"{path}: MD5 checksum mismatch (got {got}, expected {' or '.join(accepted)}, "
                        f"from {what}); the file is damaged or not the one expected")


def verify_idx_folder(root: Path, source: IdxSource, splits: Sequence[str]) -> None:
    """Check that a folder holds the source's files, against an MD5SUMS beside them or the official sums."""
    sums_file = root / "MD5SUMS"
    local = read_md5sums(sums_file) if sums_file.is_file() else None
    for split in splits:
        for name in source.files[split]:
            path = root / name
            if not path.is_file():
                raise DataError(f"{path}: file not found; the folder {root} must hold the {source.name} "
                                f"files with their official names ({', '.join(source.files[split])})")
            if local is not None:
                if name not in local:
                    raise DataError(f"{sums_file}: no checksum listed for {name}")
                verify_file(path, (local[name],), str(sums_file))
            else:
                verify_file(path, source.md5[name], f"the official {source.name} checksums")


def download_idx(source: IdxSource, cache_dir: str | Path, timeout: float = 60.0) -> Path:
    """Download the source's official files into `cache_dir` (skipping verified ones) and verify their MD5."""
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    names = [n for pair in source.files.values() for n in pair]
    for name in names:
        dest = cache / name
        if dest.is_file() and md5sum(dest) in source.md5[name]:
            continue
        errors = []
        for mirror in source.mirrors:
            try:
                with urllib.request.urlopen(mirror + name, timeout=timeout) as resp, atomic_path(dest) as tmp:
                    with open(tmp, "wb") as out:
                        shutil.copyfileobj(resp, out)
                    verify_file(tmp, source.md5[name], f"the official {source.name} checksums")
                break
            except (urllib.error.URLError, OSError, DataError) as exc:
                errors.append(f"{mirror}{name}: {exc}")
        else:
            raise DataError(
                f"could not download {name} for {source.name}:\n  " + "\n  ".join(errors) +
                f"\nTo run offline, put the four official files in a folder and pass it with "
                f"`--config {source.name}_root=DIR` (or the dataset's `root` key); an MD5SUMS file beside "
                "them is used for verification when present.")
    return cache


def load_idx_split(root: str | Path, source: IdxSource, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of an IDX dataset as raw uint8 images (n, h, w) and int64 labels."""
    root = Path(root)
    img_name, lab_name = source.files[split]
    images = read_idx(root / img_name)
    labels = read_idx(root / lab_name)
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{root}: expected 3-D images and 1-D labels, got {images.shape} and {labels.shape}")
    if len(images) != len(labels):
        raise DataError(f"{root / img_name} has {len(images)} images but {root / lab_name} has "
                        f"{len(labels)} labels")
    return images, labels.astype(np.int64)


def normalise_images(images: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Scale pixels to [0, 1], standardise with (mean, std) and flatten to float32 vectors."""
    x = images.reshape(len(images), -1).astype(np.float32) / 255.0
    return ((x - np.float32(mean)) / np.float32(std)).astype(np.float32)


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a class-balanced random subset of `size` samples (all if size >= n)."""
    n = len(labels)
    if size >= n:
        return np.arange(n)
    rng = np.random.RandomState(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / n * size).astype(int)
    for i in np.argsort(-(counts / n * size - quota))[: size - quota.sum()]:
        quota[i] += 1
    picks = [rng.choice(np.flatnonzero(labels == c), q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picks))


# --------------------------------------------------------------------------------------------
# Tables of features
# --------------------------------------------------------------------------------------------

def feature_names(n: int, prefix: str = "x") -> list[str]:
    """Column names of n features: x0, x1, ..."""
    return [f"{prefix}{i}" for i in range(n)]


def to_frame(features: np.ndarray, labels: np.ndarray, prefix: str = "x") -> pd.DataFrame:
    """A DataFrame with one column per feature and a `label` column."""
    df = pd.DataFrame(features, columns=feature_names(features.shape[1], prefix))
    df["label"] = labels.astype(np.int64)
    return df


def from_frame(df: pd.DataFrame, prefix: str = "x") -> tuple[np.ndarray, np.ndarray]:
    """Features (float32) and labels (int64) of a DataFrame written by `to_frame`."""
    cols = [c for c in df.columns if c.startswith(prefix) and c[len(prefix):].isdigit()]
    cols.sort(key=lambda c: int(c[len(prefix):]))
    if not cols or "label" not in df.columns:
        raise DataError(f"expected feature columns '{prefix}0..' and 'label', got {list(df.columns)[:12]}")
    return (np.array(df[cols].to_numpy(np.float32), copy=True),  # writable (Arrow buffers are read-only)
            np.array(df["label"].to_numpy(np.int64), copy=True))


def make_split(ds: Mapping, split: str, idx_root: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Build one split of a configured dataset (see config.yaml) as float32 features and labels."""
    source = ds["source"]
    spec = ds["splits"][split]
    if source == "yinyang":
        return yinyang(spec["size"], spec["seed"], ds.get("features", 2))
    if source in IDX_SOURCES:
        src = IDX_SOURCES[source]
        if idx_root is None:
            raise DataError(f"no folder given for {source}")
        images, labels = load_idx_split(idx_root, src, split)
        keep = stratified_subset(labels, spec.get("size") or len(labels), spec.get("seed", 0))
        return normalise_images(images[keep], src.mean, src.std), labels[keep]
    raise DataError(f"unknown dataset source '{source}'")


def idx_folder(source_name: str, root: str | Path | None, cache_dir: str | Path) -> Path:
    """The folder an IDX dataset is read from: `root`, else the source's default folder, else the download
    cache `cache_dir/<source>` (filled by `download_idx`, in the workflow by the rule `download_idx`)."""
    src = IDX_SOURCES[source_name]
    root = root or src.default_root
    return Path(cache_dir) / src.name if root is None else Path(root)


def idx_inputs(source_name: str, root: str | Path | None, cache_dir: str | Path, split: str) -> list[str]:
    """The files one split of a dataset is built from: the split's images and labels, and the folder's
    MD5SUMS when it has one (none for a generated source). The workflow makes them inputs of the dataset
    rule, so a changed file reruns the split and everything built on it (and a damaged one is then refused).

    A given folder must exist and hold the files (DataError naming the file otherwise); files of the
    download cache need not exist yet (the rule `download_idx` makes them)."""
    if source_name not in IDX_SOURCES:
        return []
    src = IDX_SOURCES[source_name]
    folder = idx_folder(source_name, root, cache_dir)
    files = [folder / name for name in src.files[split]]
    if (root or src.default_root) is not None:
        if not folder.is_dir():
            raise DataError(f"{folder}: folder of {src.name} IDX files not found (set `{src.name}_root` or the "
                            f"dataset's `root`, or leave both empty to download into {cache_dir})")
        for path in files:
            if not path.is_file():
                raise DataError(f"{path}: file not found; the folder {folder} must hold the {src.name} files "
                                f"with their official names ({', '.join(src.files[split])})")
        if (folder / "MD5SUMS").is_file():
            files.append(folder / "MD5SUMS")
    return [str(f) for f in files]


def prepare_idx_root(source_name: str, root: str | Path | None, cache_dir: str | Path,
                     splits: Sequence[str], download: bool = True) -> Path:
    """The verified folder of an IDX dataset: `root` if given (checked), else the download cache, filled
    first when `download` (else only checked against the official sums: the workflow downloads in a rule
    of its own)."""
    src = IDX_SOURCES[source_name]
    root = root or src.default_root
    if root is None:
        cache = idx_folder(source_name, None, cache_dir)
        if download:
            download_idx(src, cache)
        else:
            verify_idx_folder(cache, src, splits)
        return cache
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: folder of {src.name} IDX files not found (set `{src.name}_root` or the "
                        f"dataset's `root`, or leave both empty to download into {cache_dir})")
    verify_idx_folder(root, src, splits)
    return root


def read_split(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a split written by the datasets rule."""

    df = read_parquet(path, required=["label"])
    try:
        return from_frame(df)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc


def write_split(ds: Mapping, split: str, out: str | Path, idx_root: str | Path | None = None,
                metadata: Mapping | None = None) -> pd.DataFrame:
    """Build one split of a configured dataset and write it to Parquet (features x0.. + label)."""

    x, y = make_split(ds, split, idx_root)
    df = to_frame(x, y)
    write_parquet(df, out, metadata)
    return df
