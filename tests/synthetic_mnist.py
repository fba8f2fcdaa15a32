"""Small MNIST-format data for the tests: the four official file names, gzip'd IDX, and an MD5SUMS file.

The digits are seven-segment glyphs (0-9) drawn as anti-aliased strokes on a 28 x 28 canvas, each with
its own size, slant, shift, stroke width, segment jitter and a few background speckles, all from one
seed: deterministic, class-balanced and easy enough that the tiny pipeline's networks learn them in a
few epochs, yet no two images alike. Nothing here reads the real MNIST.

    python -m tests.synthetic_mnist DIR     # writes the folder (used by tests/slurm/run_slurm_test.sh)
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np

FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
         "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}
SIZES = {"train": 1000, "test": 500}  # 100 / 50 per class: room for tests/config/tiny.yaml's 600 / 300
SEEDS = {"train": 1, "test": 2}
SIDE = 28

# segment end points in a unit box (x right, y down): a top, b top right, c bottom right, d bottom,
# e bottom left, f top left, g middle
SEGMENTS = {"a": ((0, 0), (1, 0)), "b": ((1, 0), (1, 0.5)), "c": ((1, 0.5), (1, 1)), "d": ((0, 1), (1, 1)),
            "e": ((0, 0.5), (0, 1)), "f": ((0, 0), (0, 0.5)), "g": ((0, 0.5), (1, 0.5))}
DIGITS = ("abcdef", "bc", "abged", "abgcd", "fgbc", "afgcd", "afgedc", "abc", "abcdefg", "abcdfg")


def idx_bytes(array: np.ndarray) -> bytes:
    """An unsigned-byte IDX file: magic 0x0000 0x08 <ndim>, the dimensions as big-endian int32, the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n images (n, 28, 28) uint8 and their labels (n,) uint8: n // 10 of each class (the rest from 0 up),
    in a shuffled order."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 10).astype(np.uint8)
    # per image: glyph height and width, slant, centre, stroke half-width, peak intensity
    height = rng.uniform(15.0, 20.0, n)
    width = height * rng.uniform(0.45, 0.7, n)
    slant = rng.uniform(-0.25, 0.25, n)
    centre = SIDE / 2 - 0.5 + rng.uniform(-2.0, 2.0, (n, 2))
    half_width = rng.uniform(0.9, 1.8, n)
    peak = rng.uniform(1.1, 1.6, n)  # > 1: the stroke's core saturates at 255, as in MNIST
    yy, xx = np.mgrid[0:SIDE, 0:SIDE].astype(np.float64)
    pixels = np.stack([xx.ravel(), yy.ravel()], axis=1)  # (784, 2) as (x, y)
    images = np.zeros((n, SIDE * SIDE))
    for name, ((x0, y0), (x1, y1)) in SEGMENTS.items():
        on = np.array([name in DIGITS[c] for c in labels])
        ends = np.array([[x0, y0], [x1, y1]], dtype=np.float64) - 0.5  # centred unit box
        ends = ends[None] + rng.uniform(-0.06, 0.06, (n, 2, 2))  # each image's own segment jitter
        x = centre[:, None, 0] + ends[..., 0] * width[:, None] + slant[:, None] * ends[..., 1] * height[:, None]
        y = centre[:, None, 1] + ends[..., 1] * height[:, None]
        p, q = np.stack([x[:, 0], y[:, 0]], 1), np.stack([x[:, 1], y[:, 1]], 1)  # (n, 2) each
        d = q - p
        t = np.clip(((pixels[None] - p[:, None]) * d[:, None]).sum(-1) / (d * d).sum(-1)[:, None], 0.0, 1.0)
        dist = np.linalg.norm(pixels[None] - (p[:, None] + t[..., None] * d[:, None]), axis=-1)  # (n, 784)
        stroke = np.clip(half_width[:, None] + 0.5 - dist, 0.0, 1.0) * peak[:, None]
        images = np.where(on[:, None], np.maximum(images, stroke), images)
    speckles = (rng.random(images.shape) < 0.01) * rng.uniform(0.1, 0.6, images.shape)
    images = np.clip(np.maximum(images, speckles), 0.0, 1.0)
    return np.round(images * 255).astype(np.uint8).reshape(n, SIDE, SIDE), labels


def write_synthetic_mnist(folder: str | Path, sizes: dict[str, int] | None = None) -> Path:
    """Write the four files (gzip without a time stamp: the same bytes every time) and MD5SUMS into `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sums = []
    for split, (img_name, lab_name) in FILES.items():
        images, labels = digits((sizes or SIZES)[split], SEEDS[split])
        for name, array in ((img_name, images), (lab_name, labels)):
            data = gzip.compress(idx_bytes(array), mtime=0)
            (folder / name).write_bytes(data)
            sums.append(f"{hashlib.md5(data).hexdigest()}  {name}")
    (folder / "MD5SUMS").write_text("\n".join(sums) + "\n")
    return folder


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.synthetic_mnist DIR")
    print(write_synthetic_mnist(sys.argv[1]))
