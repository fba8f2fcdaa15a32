"""Datasets: the Yin-Yang generator, the IDX reader, checksums and damaged files."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest

from kaepipe.data import (
    MNIST,
    load_idx_split,
    make_split,
    md5sum,
    normalise_images,
    prepare_idx_root,
    read_idx,
    read_md5sums,
    read_split,
    stratified_subset,
    verify_idx_folder,
    write_split,
    yinyang,
    yinyang_class,
)
from kaepipe.errors import DataError
from tests.synthetic_mnist import FILES, SEEDS, SIZES, digits, write_synthetic_mnist


def test_yinyang_seed42_class_counts():
    _, y = yinyang(5000, 42)
    assert np.bincount(y).tolist() == [1681, 1702, 1617]


def test_yinyang_features_in_disc_and_consistent_with_rule():
    x, y = yinyang(1000, 7)
    assert x.shape == (1000, 2) and x.dtype == np.float32
    assert x.min() >= 0 and x.max() <= 1
    assert np.all(np.hypot(x[:, 0] - 0.5, x[:, 1] - 0.5) <= 0.5 + 1e-6)
    assert all(yinyang_class(float(a), float(b)) == c for (a, b), c in zip(x.astype(np.float64), y))


def test_yinyang_four_features_are_mirrored():
    x2, y2 = yinyang(300, 42, features=2)
    x4, y4 = yinyang(300, 42, features=4)
    np.testing.assert_array_equal(y2, y4)
    np.testing.assert_allclose(x4[:, :2], x2)
    np.testing.assert_allclose(x4[:, 2:], 1 - x2, atol=1e-6)


def test_yinyang_split_seeds_differ():
    a, _ = yinyang(1000, 42)
    b, _ = yinyang(1000, 40)
    assert not np.allclose(a, b)
    c, _ = yinyang(1000, 42)
    np.testing.assert_array_equal(a[:1000], c)


def test_idx_reader_returns_the_written_digits(mnist_root):
    images, labels = load_idx_split(mnist_root, MNIST, "test")
    want_images, want_labels = digits(SIZES["test"], SEEDS["test"])  # what tests/synthetic_mnist.py wrote
    assert images.shape == (500, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (500,) and labels.dtype == np.int64
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)
    assert np.bincount(labels).tolist() == [50] * 10
    train_images, train_labels = load_idx_split(mnist_root, MNIST, "train")
    assert train_images.shape == (1000, 28, 28) and np.bincount(train_labels).tolist() == [100] * 10


def test_synthetic_folder_is_the_same_bytes_every_time(mnist_root, tmp_path):
    again = write_synthetic_mnist(tmp_path / "again")
    assert sorted(p.name for p in again.iterdir()) == sorted(p.name for p in mnist_root.iterdir())
    for p in mnist_root.iterdir():
        assert (again / p.name).read_bytes() == p.read_bytes(), p.name


def test_folder_with_md5sums_is_verified_against_it(mnist_root, tmp_path):
    verify_idx_folder(mnist_root, MNIST, ["train", "test"])  # not the official files: passes via MD5SUMS
    assert prepare_idx_root("mnist", str(mnist_root), "/nonexistent-cache", ["train"]) == mnist_root
    shutil.copytree(mnist_root, tmp_path / "copy")
    name = "t10k-labels-idx1-ubyte.gz"
    data = bytearray((tmp_path / "copy" / name).read_bytes())
    data[-9] ^= 1  # one bit of the gzip body
    (tmp_path / "copy" / name).write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{name}: MD5 checksum mismatch .*from .*MD5SUMS"):
        verify_idx_folder(tmp_path / "copy", MNIST, ["test"])
    verify_idx_folder(tmp_path / "copy", MNIST, ["train"])  # the other split is untouched


def test_folder_without_md5sums_uses_official_sums(tmp_path, mnist_root):
    for name in MNIST.files["train"]:
        shutil.copy(mnist_root / name, tmp_path / name)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: MD5 checksum mismatch .*official mnist checksums"):
        verify_idx_folder(tmp_path, MNIST, ["train"])


def test_normalisation_is_pixel_over_255_standardised(mnist_root):
    images, _ = load_idx_split(mnist_root, MNIST, "test")
    x = normalise_images(images[:20], MNIST.mean, MNIST.std)
    assert x.shape == (20, 784) and x.dtype == np.float32
    want = (images[:20].reshape(20, -1).astype(np.float64) / 255 - 0.1307) / 0.3081  # the paper's constants
    np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-6)
    assert x.min() == pytest.approx(-0.1307 / 0.3081, rel=1e-6)  # background pixels are 0
    assert x.max() == pytest.approx((1 - 0.1307) / 0.3081, rel=1e-6)  # stroke cores are 255


def test_stratified_subset_is_balanced_and_seeded():
    labels = np.repeat(np.arange(10), [100, 200, 100, 100, 100, 100, 100, 100, 100, 100])
    idx = stratified_subset(labels, 110, seed=3)
    assert len(idx) == 110 and len(np.unique(idx)) == 110
    assert np.bincount(labels[idx]).tolist() == [10, 20, 10, 10, 10, 10, 10, 10, 10, 10]
    np.testing.assert_array_equal(idx, stratified_subset(labels, 110, seed=3))
    assert not np.array_equal(idx, stratified_subset(labels, 110, seed=4))


def test_split_roundtrip_through_parquet(tmp_path, mnist_root):
    ds = {"source": "mnist", "splits": {"test": {"size": 300, "seed": 1}}}
    df = write_split(ds, "test", tmp_path / "test.parquet", mnist_root)
    x, y = read_split(tmp_path / "test.parquet")
    assert x.shape == (300, 784) and list(df.columns[-1:]) == ["label"]
    x2, y2 = make_split(ds, "test", mnist_root)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    # the stratified subset of the file's digits, normalised
    images, labels = load_idx_split(mnist_root, MNIST, "test")
    idx = stratified_subset(labels, 300, seed=1)
    np.testing.assert_array_equal(y, labels[idx])
    np.testing.assert_array_equal(x, normalise_images(images[idx], MNIST.mean, MNIST.std))
    assert np.bincount(y).tolist() == [30] * 10


# --- damaged data ------------------------------------------------------------------------------

def test_truncated_gzip_is_refused(tmp_path, mnist_root):
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    data = (mnist_root / bad.name).read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: damaged gzip"):
        read_idx(bad)


def test_wrong_magic_is_refused(tmp_path):
    bad = tmp_path / "x-idx1-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x01\x02\x08\x01" + (3).to_bytes(4, "big") + b"abc"))
    with pytest.raises(DataError, match="wrong IDX magic"):
        read_idx(bad)


def test_body_size_mismatch_is_refused(tmp_path):
    bad = tmp_path / "x-idx1-ubyte"
    bad.write_bytes(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match="IDX body has 3 bytes"):
        read_idx(bad)


def test_image_and_label_counts_must_agree(tmp_path, mnist_root):
    for name in MNIST.files["test"]:
        shutil.copy(mnist_root / name, tmp_path / name)
    labels = read_idx(mnist_root / "t10k-labels-idx1-ubyte.gz")[:-1]
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\x00\x00\x08\x01" + len(labels).to_bytes(4, "big") + labels.tobytes()))
    with pytest.raises(DataError, match="500 images but .* 499 labels"):
        load_idx_split(tmp_path, MNIST, "test")


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: file not found"):
        prepare_idx_root("mnist", str(tmp_path), tmp_path / "cache", ["test"])


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(DataError, match="nowhere: folder of mnist IDX files not found"):
        prepare_idx_root("mnist", str(tmp_path / "nowhere"), tmp_path / "cache", ["test"])


def test_parquet_without_label_is_refused(tmp_path):
    import pandas as pd

    from kaepipe.io import write_parquet

    write_parquet(pd.DataFrame({"x0": [0.1, 0.2]}), tmp_path / "t.parquet")
    with pytest.raises(DataError, match="t.parquet: missing expected column"):
        read_split(tmp_path / "t.parquet")


# --- the real offline MNIST copy (skipped without it) -------------------------------------------

def test_real_offline_mnist_counts(real_mnist_root):
    images, labels = load_idx_split(real_mnist_root, MNIST, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    train_images, train_labels = load_idx_split(real_mnist_root, MNIST, "train")
    assert train_images.shape == (10000, 28, 28)
    assert np.bincount(train_labels).min() >= 800


def test_real_offline_test_files_match_official_md5(real_mnist_root):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert md5sum(real_mnist_root / name) in MNIST.md5[name]
    sums = read_md5sums(real_mnist_root / "MD5SUMS")
    assert sums.keys() == {n for pair in MNIST.files.values() for n in pair}
    assert all(md5sum(real_mnist_root / n) == s for n, s in sums.items())
    verify_idx_folder(real_mnist_root, MNIST, ["train", "test"])


def test_real_digits_have_the_papers_normalisation_statistics(real_mnist_root):
    """MNIST.mean / MNIST.std (0.1307 / 0.3081, the training set's) describe the real digits: the
    test set's pixel mean and std are within 0.003 of them."""
    images, _ = load_idx_split(real_mnist_root, MNIST, "test")
    pixels = images.astype(np.float64) / 255
    assert pixels.mean() == pytest.approx(MNIST.mean, abs=3e-3)
    assert pixels.std() == pytest.approx(MNIST.std, abs=3e-3)


def test_synthetic_files_have_the_real_files_format(real_mnist_root, mnist_root):
    """The fixture the other tests read is laid out like the real files: same names, gzip'd IDX with
    the same magic numbers and per-item shapes, an MD5SUMS file listing all four."""
    for img_name, lab_name in FILES.values():
        for name in (img_name, lab_name):
            real = gzip.decompress((real_mnist_root / name).read_bytes())
            ours = gzip.decompress((mnist_root / name).read_bytes())
            assert ours[:4] == real[:4], name  # 0x00000803 images, 0x00000801 labels
            ndim = real[3]
            assert ours[8:4 + 4 * ndim] == real[8:4 + 4 * ndim], name  # 28 x 28 after the count
    assert read_md5sums(mnist_root / "MD5SUMS").keys() == read_md5sums(real_mnist_root / "MD5SUMS").keys()
