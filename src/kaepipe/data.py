"""Data sources: a registry of how to build a dataset's splits (Yin-Yang generator, IDX files of MNIST and
Fashion-MNIST with checksums and downloads, any data set's arrays in an .npz or Parquet file), their classes,
and how to show and measure them.

A new source is one `DataSource` subclass or instance passed to :func:`register` (in this module or in a
module that imports it), its name in the config schema's `source` enum, and a config block.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import shutil
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from kaepipe.errors import ConfigError, DataError
from kaepipe.io import atomic_path, read_parquet, write_parquet
from kaepipe.published import MNIST_PAPER_TRAIN, paper_eps
from kaepipe.registry import Registry

# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class DataSource:
    """A data source: how to build a split of a configured dataset, its classes, and how to show them.

    default_eps: the topology stage's eps for base layers and KAE iterates ({"layers", "iterates"}) under
    the paper's preprocessing of this source, or None when the source has no known scale (the config
    must then give them).
    """

    name: str
    classes: int | None  # None: the dataset's `classes` key (a source without a fixed number of classes)
    class_names: tuple[str, ...] | None = None
    palette: tuple[str, ...] | None = None
    default_eps: Mapping[str, float] | None = field(default=None, hash=False)
    eps_train: int | None = None  # the training points of the preprocessing fit that default_eps is for
    train_size: int | None = None  # training points of the source's files (`splits.train.size: null` takes all)

    def prepare(self, root: str | Path | None, cache_dir: str | Path, splits: Sequence[str],
                hint: str | None = None, download: bool = True, *, ds: Mapping | None = None) -> Path | None:
        """The verified folder (or file) the splits are read from (None for a generated source); `hint` says
        how the user passes the folder (for the error when it is missing); `download`: fetch missing files
        (else the cache must hold them already); `ds`: the dataset's settings (`kaepipe.config.dataset_config`),
        for a source that reads its own keys (the arrays source's `path`)."""
        return None

    def build(self, ds: Mapping, split: str, root: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
        """One split of the configured dataset `ds` as float32 features (n, d) and int64 labels (n,)."""
        raise NotImplementedError

    def inputs(self, root: str | Path | None, cache_dir: str | Path, split: str, *,
               ds: Mapping | None = None) -> list[str]:
        """The files a split is built from (the dataset rule's inputs: a changed file reruns the split);
        none for a generated source. `ds`: the dataset's settings, as for `prepare`."""
        return []


SOURCES: Registry[DataSource] = Registry("data source", DataError)
register = SOURCES.register  # register(DataSource(...)): the config's `source` value is its name
get_source = SOURCES.lookup  # the registered source of a name; the error lists the known ones


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


@dataclass(frozen=True, kw_only=True)
class YinYangSource(DataSource):
    """The Yin-Yang generator: `splits.<split>.{size, seed}` and `features` (2 or 4) of the dataset."""

    def build(self, ds: Mapping, split: str, root: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
        spec = ds["splits"][split]
        return yinyang(spec["size"], spec["seed"], ds.get("features", 2))


YINYANG = register(YinYangSource(
    name="yinyang", classes=3, class_names=YINYANG_CLASSES,
    palette=("#fc9918", "#a779aa", "#4c3191"),  # the paper's colours
    # not given by the paper: 0.25, where L0 of the 1000 held-out points is nearly one component (its
    # largest MST edges are 0.23-0.27, about 0.18 x the points' RMS radius 1.41), so that the change of
    # beta_0 with depth stays visible
    default_eps={"layers": 0.25, "iterates": 0.25}, eps_train=5000,
))


# --------------------------------------------------------------------------------------------
# IDX files
# --------------------------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


MAX_IDX_BYTES = 1 << 30  # a sane maximum for one IDX body (MNIST's training images: 47 MB)
_CHUNK = 1 << 20


def _open_idx(path: Path):
    """The file's decompressed byte stream (gzip when it ends in .gz)."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_idx_header(f, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """Type and shape from an IDX stream positioned at its start; the stream is left at the body."""
    magic = f.read(4)
    if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: wrong IDX magic number {magic.hex() if magic else '(empty)'}; "
                        "expected 0x0000 followed by a type code and the number of dimensions")
    ndim = magic[3]
    dims = f.read(4 * ndim)
    if len(dims) < 4 * ndim:
        raise DataError(f"{path}: IDX header truncated")
    shape = tuple(int.from_bytes(dims[4 * i: 4 * i + 4], "big") for i in range(ndim))
    return np.dtype(_IDX_DTYPES[magic[2]]), shape


def _damaged(path: Path, exc: Exception) -> DataError:
    return DataError(f"{path}: damaged gzip file ({exc}); delete it and provide the file again")


def idx_header(path: str | Path) -> tuple[np.dtype, tuple[int, ...]]:
    """The type and shape an IDX file's header declares (reads only the header)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with _open_idx(path) as f:
            return _read_idx_header(f, path)
    except (OSError, EOFError, zlib.error) as exc:
        raise _damaged(path, exc) from exc


def read_idx(path: str | Path, shape: Sequence[int | None] | None = None,
             max_bytes: int = MAX_IDX_BYTES) -> np.ndarray:
    """Read an IDX file (gzip-compressed or raw) into a numpy array, checking its header and size.

    The header is read first and checked against `shape` (None entries: any size) and `max_bytes`;
    then exactly the bytes it declares are decompressed, in chunks, and nothing may follow them.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with _open_idx(path) as f:
            dtype, found = _read_idx_header(f, path)
            if shape is not None and (len(shape) != len(found)
                                      or any(e is not None and e != g for e, g in zip(shape, found))):
                expected = tuple("any" if e is None else e for e in shape)
                raise DataError(f"{path}: IDX header declares shape {found}, expected {expected}")
            n_bytes = int(np.prod(found, dtype=object)) * dtype.itemsize
            if n_bytes > max_bytes:
                raise DataError(f"{path}: IDX header declares shape {found} ({n_bytes} bytes), more than the "
                                f"limit of {max_bytes} bytes; not a dataset kaepipe reads")
            body = np.empty(n_bytes, dtype=np.uint8)
            view, got = memoryview(body), 0
            while got < n_bytes:
                k = f.readinto(view[got:got + _CHUNK])
                if not k:
                    break
                got += k
            if got < n_bytes:
                raise DataError(f"{path}: IDX body has {got} bytes, header {found} implies {n_bytes}")
            if f.read(1):
                raise DataError(f"{path}: IDX body is longer than the {n_bytes} bytes header {found} implies")
    except (OSError, EOFError, zlib.error) as exc:
        raise _damaged(path, exc) from exc
    return body.view(dtype).reshape(found).astype(dtype.newbyteorder("="))


def file_hash(path: str | Path, algorithm: str) -> str:
    """Hex digest of a file (`hashlib.file_digest`, read in blocks): the one checksum of every source."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, algorithm).hexdigest()


def md5sum(path: str | Path) -> str:
    """MD5 hex digest of a file (the IDX sources' official sums)."""
    return file_hash(path, "md5")


def read_md5sums(path: str | Path) -> dict[str, str]:
    """Parse an `MD5SUMS` file (`<md5>  <name>` per line) into {name: md5}."""
    sums: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            sums[parts[-1].lstrip("*")] = parts[0].lower()
    return sums


@dataclass(frozen=True, kw_only=True)
class IdxSource(DataSource):
    """An IDX dataset: official file names, their MD5 sums, mirrors and normalisation."""

    files: Mapping[str, tuple[str, str]] = field(hash=False)  # split -> (images file, labels file)
    md5: Mapping[str, tuple[str, ...]] = field(hash=False)  # file -> accepted MD5 sums
    mirrors: Sequence[str]
    mean: float
    std: float
    default_root: str | None = None  # set: never downloaded, read from here (a system package) by default
    image_shape: tuple[int, int] = (28, 28)
    package: str | None = None  # the Debian package that installs `default_root`

    def prepare(self, root: str | Path | None, cache_dir: str | Path, splits: Sequence[str],
                hint: str | None = None, download: bool = True, *, ds: Mapping | None = None) -> Path:
        return prepare_idx_root(self.name, root, cache_dir, splits, hint=hint, download=download)

    def inputs(self, root: str | Path | None, cache_dir: str | Path, split: str, *,
               ds: Mapping | None = None) -> list[str]:
        return idx_inputs(self.name, root, cache_dir, split)

    def build(self, ds: Mapping, split: str, root: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
        if root is None:
            raise DataError(f"no folder given for {self.name}")
        spec = ds["splits"][split]
        images, labels = load_idx_split(root, self, split)
        check_labels(labels, ds.get("classes", self.classes), Path(root) / self.files[split][1], split)
        keep = stratified_subset(labels, spec.get("size") or len(labels), spec.get("seed", 0))
        return normalise_images(images[keep], self.mean, self.std), labels[keep]


MNIST = IdxSource(
    name="mnist",
    classes=10,
    default_eps=paper_eps("mnist"), eps_train=MNIST_PAPER_TRAIN,  # the paper's MNIST eps (docs/method.md section 7.2)
    train_size=60000,
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
    classes=10,
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"),
    default_eps=paper_eps("mnist"), eps_train=MNIST_PAPER_TRAIN,  # MNIST's relative scale: a start, not published
    train_size=60000,
    files=MNIST.files,
    md5={"train-images-idx3-ubyte.gz": ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "cf8536b0aa1a6ac5fa3f23001093305c"),
         "train-labels-idx1-ubyte.gz": ("25c81989df183df01b3e8a0aad5dffbe", "10bea18fdb374794d4bb42e356e600c9"),
         "t10k-images-idx3-ubyte.gz": ("bef4ecab320f06d8554ea6380940ec79", "f78720b4224f21cce2f2ccf2d7a94c9a"),
         "t10k-labels-idx1-ubyte.gz": ("bb300cfdad3c16e7a12a480ee83cd310", "0d30e22e447f3c33dab9ed536400ac01")},
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    mean=0.2860, std=0.3530,
    default_root="/usr/share/datasets/fashion-mnist",
    package="dataset-fashion-mnist",
)

IDX_SOURCES = {"mnist": register(MNIST), "fashion_mnist": register(FASHION_MNIST)}


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


def download_idx(source: IdxSource, cache_dir: str | Path, timeout: float = 60.0, hint: str | None = None) -> Path:
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
                f"{hint or f'`--config {source.name}_root=DIR`'}; an MD5SUMS file beside "
                "them is used for verification when present.")
    return cache


def load_idx_split(root: str | Path, source: IdxSource, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of an IDX dataset as raw uint8 images (n, h, w) and int64 labels.

    Both headers are checked (dimensions, the source's image size, equal counts) before any body is read.
    """
    root = Path(root)
    img_name, lab_name = source.files[split]
    (img_type, img_shape), (lab_type, lab_shape) = idx_header(root / img_name), idx_header(root / lab_name)
    if len(img_shape) != 3 or len(lab_shape) != 1:
        raise DataError(f"{root}: expected 3-D images and 1-D labels, got {img_shape} and {lab_shape}")
    if img_shape[0] != lab_shape[0]:
        raise DataError(f"{root / img_name} has {img_shape[0]} images but {root / lab_name} has "
                        f"{lab_shape[0]} labels")
    if img_shape[1:] != source.image_shape:
        raise DataError(f"{root / img_name}: images of {img_shape[1]} x {img_shape[2]} pixels, expected "
                        f"{source.image_shape[0]} x {source.image_shape[1]} for {source.name}")
    for name, dtype in ((img_name, img_type), (lab_name, lab_type)):
        if dtype != np.uint8:
            raise DataError(f"{root / name}: IDX type {dtype}, expected unsigned bytes (ubyte)")
    images = read_idx(root / img_name, img_shape)
    labels = read_idx(root / lab_name, lab_shape)
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
# Arrays from a file: an .npz archive or a Parquet table of both splits
# --------------------------------------------------------------------------------------------

ARRAY_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}  # the .npz archive's arrays
ARRAY_SUFFIXES = (".npz", ".parquet", ".pq")
SPLIT_COLUMN, LABEL_COLUMN = "split", "label"  # the Parquet table's columns; every other one is a feature
_FEATURE_KINDS, _LABEL_KINDS = "biuf", "iu"  # numpy dtype kinds: bool, integers, floats / integers


def sha256sum(path: str | Path) -> str:
    """SHA-256 hex digest of a file (the arrays source's `sha256`)."""
    return file_hash(path, "sha256")


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:
    """A file's SHA-256, computed once per (path, size, modification time) in a process: the dataset rule
    verifies the file in `prepare` and again in `build` (which also runs alone) without hashing it twice."""
    return sha256sum(path)


def verify_sha256(path: str | Path, expected: str) -> None:
    """Check a file's SHA-256 against the expected sum; the error names the file and both sums."""
    st = Path(path).stat()
    got = _sha256_of(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if got != expected.lower():
        raise DataError(f"{path}: SHA-256 checksum mismatch (got {got}, expected {expected.lower()}, from the "
                        "dataset's `sha256`); the file is damaged or not the one expected")


def _npy_header(archive: np.lib.npyio.NpzFile, key: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of one array of an .npz archive, from its .npy header only (no data read)."""
    try:
        with archive.zip.open(f"{key}.npy") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, _fortran, dtype = np.lib.format.read_array_header_2_0(f)
            else:
                raise DataError(f"{path}: array '{key}' is in .npy format version {version}, not 1.0 or 2.0")
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: array '{key}' is not a readable .npy array ({exc})") from exc
    return tuple(shape), np.dtype(dtype)


def _check_kind(path: Path, what: str, dtype: np.dtype, kinds: str, wanted: str) -> None:
    if dtype.hasobject:
        raise DataError(f"{path}: {what} is an object array (pickled Python objects); kaepipe never unpickles "
                        f"data: save {wanted} as a numeric array")
    if dtype.kind not in kinds or dtype.fields is not None or dtype.subdtype is not None:
        raise DataError(f"{path}: {what} has dtype {dtype}; expected {wanted}")


def _check_column(path: Path, column: pd.Series, kinds: str, wanted: str) -> None:
    kind = column.dtype.kind if isinstance(column.dtype, np.dtype) else "O"  # pandas' own types: text, nullable
    if kind not in kinds:
        raise DataError(f"{path}: column '{column.name}' has type {column.dtype}; expected {wanted}")


def _check_shapes(path: Path, xname: str, xshape: tuple[int, ...], yname: str, yshape: tuple[int, ...]) -> None:
    if len(xshape) < 2 or 0 in xshape[1:]:
        raise DataError(f"{path}: {xname} has shape {xshape}; expected (samples, features...) with at least "
                        "one feature")
    if len(yshape) != 1:
        raise DataError(f"{path}: {yname} has shape {yshape}; expected one label per sample, (samples,)")
    if xshape[0] != yshape[0]:
        raise DataError(f"{path}: {xname} has {xshape[0]} samples but {yname} has {yshape[0]} labels")
    if xshape[0] == 0:
        raise DataError(f"{path}: {xname} holds no samples")


def _other(split: str) -> str:
    return "test" if split == "train" else "train"


def read_npz_split(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The raw features (n, ...) and labels (n,) of one split of an .npz archive (`ARRAY_KEYS`).

    Loaded with `allow_pickle=False`, and every array's .npy header is checked first (dtype, shapes, the
    other split's feature shape) before any data is read: an object array is refused and never unpickled.
    """
    path = Path(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: a single .npy array, not an .npz archive of {', '.join(sum(ARRAY_KEYS.values(), ()))}")
    with archive:
        wanted = [k for pair in ARRAY_KEYS.values() for k in pair]
        missing = [k for k in wanted if k not in archive.files]
        if missing:
            raise DataError(f"{path}: no array {', '.join(repr(k) for k in missing)} in the archive (it holds "
                            f"{archive.files}); the arrays source reads {', '.join(wanted)}")
        headers = {k: _npy_header(archive, k, path) for k in wanted}
        for xname, yname in ARRAY_KEYS.values():
            (xshape, xtype), (yshape, ytype) = headers[xname], headers[yname]
            _check_kind(path, f"array '{xname}'", xtype, _FEATURE_KINDS, "numbers (bool, integer or float)")
            _check_kind(path, f"array '{yname}'", ytype, _LABEL_KINDS, "integer class labels")
            _check_shapes(path, f"array '{xname}'", xshape, f"array '{yname}'", yshape)
        xname, yname = ARRAY_KEYS[split]
        other = ARRAY_KEYS[_other(split)][0]
        if headers[xname][0][1:] != headers[other][0][1:]:
            raise DataError(f"{path}: array '{xname}' has samples of shape {headers[xname][0][1:]} but '{other}' "
                            f"of shape {headers[other][0][1:]}; both splits must have the same features")
        try:
            return archive[xname], archive[yname]
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise DataError(f"{path}: array '{xname}' or '{yname}' is damaged ({exc})") from exc


def read_parquet_split(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The raw features (n, d) and labels (n,) of one split of a Parquet table with a `split` column
    ("train" or "test"), a `label` column and numeric features in every other column (in the file's order)."""
    path = Path(path)
    df = read_parquet(path, required=[SPLIT_COLUMN, LABEL_COLUMN])
    features = [c for c in df.columns if c not in (SPLIT_COLUMN, LABEL_COLUMN)]
    if not features:
        raise DataError(f"{path}: no feature columns; expected '{SPLIT_COLUMN}', '{LABEL_COLUMN}' and one "
                        "numeric column per feature")
    for c in features:
        _check_column(path, df[c], _FEATURE_KINDS, "numbers (bool, integer or float) in every feature column")
    _check_column(path, df[LABEL_COLUMN], _LABEL_KINDS, "integer class labels without missing values")
    splits = df[SPLIT_COLUMN].astype(str)
    unknown = sorted(set(splits.unique()) - set(ARRAY_KEYS))
    if unknown:
        raise DataError(f"{path}: column '{SPLIT_COLUMN}' holds {unknown[:5]}; expected only {sorted(ARRAY_KEYS)}")
    for s in ARRAY_KEYS:
        if not (splits == s).any():
            raise DataError(f"{path}: no row has {SPLIT_COLUMN} '{s}'; the file must hold both splits")
    rows = (splits == split).to_numpy()
    return df.loc[rows, features].to_numpy(), df.loc[rows, LABEL_COLUMN].to_numpy()


def load_array_split(path: str | Path, split: str, classes: int | None = None,
                     sha256: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One split of an .npz or Parquet file of both splits, as float32 features (n, d) (flattened) and int64
    labels (n,): the file checked against `sha256` first when given, its labels against `classes` when given;
    every error names the file and the array or column."""
    path = Path(path)
    if split not in ARRAY_KEYS:
        raise DataError(f"{path}: no split '{split}'; the arrays source has {sorted(ARRAY_KEYS)}")
    if path.suffix.lower() not in ARRAY_SUFFIXES:
        raise DataError(f"{path}: not an .npz or Parquet file (the name must end in {', '.join(ARRAY_SUFFIXES)})")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if sha256:
        verify_sha256(path, sha256)
    if path.suffix.lower() == ".npz":
        x, y = read_npz_split(path, split)
        xname, yname = (f"array '{k}'" for k in ARRAY_KEYS[split])
    else:
        x, y = read_parquet_split(path, split)
        xname, yname = f"the features of the {split} rows", f"column '{LABEL_COLUMN}'"
    _check_shapes(path, xname, x.shape, yname, y.shape)
    if classes is not None:
        check_labels(y, classes, f"{path}: {yname}", split)
    with np.errstate(over="ignore"):  # beyond float32: inf, refused below
        features = x.reshape(len(x), -1).astype(np.float32)
    bad = ~np.isfinite(features)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise DataError(f"{path}: {xname} has {int(bad.sum())} value(s) that are NaN, infinite or beyond float32, "
                        f"in {len(rows)} sample(s) (first: {rows[:5].tolist()})")
    return features, y.astype(np.int64)


@dataclass(frozen=True, kw_only=True)
class ArraySource(DataSource):
    """Any data set as arrays in one file (the dataset's `path`, optional `sha256`): an .npz archive of
    `x_train`, `y_train`, `x_test`, `y_test` (features (n, ...) of any numeric dtype, flattened to float32
    (n, d); integer labels (n,)), or a Parquet table with a `split` column ("train"/"test"), an integer `label`
    column and one numeric column per feature (every other column, in the file's order). The number of
    classes is the dataset's `classes`; no default topology eps (the config gives them)."""

    def file(self, ds: Mapping | None) -> Path:
        """The dataset's file (its `path` key), which must exist."""
        if ds is None:
            raise TypeError(f"the {self.name} source reads the dataset's `path`: pass its settings as ds=")
        if not ds.get("path"):
            raise DataError(f"config key 'datasets.{ds.get('name')}.path': the {self.name} source needs the "
                            "file of the data set (.npz or .parquet)")
        path = Path(ds["path"])
        if not path.is_file():
            raise DataError(f"{path}: file not found (config key 'datasets.{ds.get('name')}.path')")
        return path

    def prepare(self, root: str | Path | None, cache_dir: str | Path, splits: Sequence[str],
                hint: str | None = None, download: bool = True, *, ds: Mapping | None = None) -> Path:
        path = self.file(ds)
        if ds.get("sha256"):
            verify_sha256(path, ds["sha256"])
        return path

    def inputs(self, root: str | Path | None, cache_dir: str | Path, split: str, *,
               ds: Mapping | None = None) -> list[str]:
        return [str(self.file(ds))]

    def build(self, ds: Mapping, split: str, root: str | Path | None) -> tuple[np.ndarray, np.ndarray]:
        classes = ds.get("classes")
        if classes is None:
            raise ConfigError(f"config key 'datasets.{ds.get('name')}.classes': the {self.name} source takes the "
                              "number of classes from the config; give `classes`")
        x, y = load_array_split(self.file(ds), split, int(classes), ds.get("sha256"))
        spec = ds["splits"][split]
        keep = stratified_subset(y, spec.get("size") or len(y), spec.get("seed", 0))
        return x[keep], y[keep]


ARRAYS = register(ArraySource(name="arrays", classes=None))


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
    return get_source(ds["source"]).build(ds, split, idx_root)


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
                     splits: Sequence[str], hint: str | None = None, download: bool = True) -> Path:
    """The verified folder of an IDX dataset: `root` if given (checked), else the download cache, filled
    first when `download` (else only checked against the official sums: the workflow downloads in a rule
    of its own). `hint` says how the caller's user passes the folder (default: the Snakemake `--config` key).
    """
    src = IDX_SOURCES[source_name]
    hint = hint or f"`--config {src.name}_root=DIR` (or the dataset's `root` key)"
    root = root or src.default_root
    if root is None:
        cache = idx_folder(source_name, None, cache_dir)
        if download:
            download_idx(src, cache, hint=hint)
        else:
            verify_idx_folder(cache, src, splits)
        return cache
    root = Path(root)
    if not root.is_dir():
        if src.default_root is not None:  # never downloaded (Fashion-MNIST): a system package or a folder
            raise DataError(f"{root}: folder of {src.name} IDX files not found; {src.name} is never downloaded: "
                            f"install the Debian package `{src.package}` (files in {src.default_root}) or pass "
                            f"the folder of its four IDX files with {hint}")
        raise DataError(f"{root}: folder of {src.name} IDX files not found; pass the folder of the four IDX files "
                        f"with {hint}, or set none to download into {cache_dir}")
    verify_idx_folder(root, src, splits)
    return root


def check_labels(labels: np.ndarray, classes: int, path: str | Path, split: str) -> None:
    """Raise DataError naming the file, the split and the values when a label is not a class 0..classes-1."""
    bad = (labels < 0) | (labels >= int(classes))
    if bad.any():
        values = np.unique(labels[bad])
        shown = ", ".join(str(v) for v in values[:10]) + (" ..." if len(values) > 10 else "")
        raise DataError(f"{path}: {split} split has {int(bad.sum())} label(s) outside the dataset's classes "
                        f"0..{int(classes) - 1}: {shown} (check the file or the dataset's `classes`)")


def read_split(path: str | Path, classes: int | None = None, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of a split written by the datasets rule; labels checked against `classes` if given."""

    df = read_parquet(path, required=["label"])
    try:
        x, y = from_frame(df)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from exc
    if classes is not None:
        check_labels(y, classes, path, split or Path(path).stem)
    return x, y


def write_split(ds: Mapping, split: str, out: str | Path, idx_root: str | Path | None = None,
                metadata: Mapping | None = None) -> pd.DataFrame:
    """Build one split of a configured dataset and write it to Parquet (features x0.. + label)."""

    x, y = make_split(ds, split, idx_root)
    df = to_frame(x, y)
    write_parquet(df, out, metadata)
    return df
