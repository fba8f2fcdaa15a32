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


def test_idx_reader_on_offline_mnist(mnist_root):
    images, labels = load_idx_split(mnist_root, MNIST, "test")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    train_images, train_labels = load_idx_split(mnist_root, MNIST, "train")
    assert train_images.shape == (10000, 28, 28)
    assert np.bincount(train_labels).min() >= 800


def test_offline_test_files_match_official_md5(mnist_root):
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert md5sum(mnist_root / name) in MNIST.md5[name]
    sums = read_md5sums(mnist_root / "MD5SUMS")
    assert all(md5sum(mnist_root / n) == s for n, s in sums.items())


def test_folder_with_md5sums_is_verified_against_it(mnist_root):
    verify_idx_folder(mnist_root, MNIST, ["train", "test"])  # train subset passes via MD5SUMS
    assert prepare_idx_root("mnist", str(mnist_root), "/nonexistent-cache", ["train"]) == mnist_root


def test_folder_without_md5sums_uses_official_sums(tmp_path, mnist_root):
    for name in MNIST.files["train"]:
        shutil.copy(mnist_root / name, tmp_path / name)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: MD5 checksum mismatch"):
        verify_idx_folder(tmp_path, MNIST, ["train"])


def test_normalisation_matches_paper(mnist_root):
    images, _ = load_idx_split(mnist_root, MNIST, "test")
    x = normalise_images(images[:5], MNIST.mean, MNIST.std)
    assert x.shape == (5, 784)
    np.testing.assert_allclose(x[0, 0], (0 - 0.1307) / 0.3081, rtol=1e-6)
    np.testing.assert_allclose(x.max(), (1 - 0.1307) / 0.3081, rtol=1e-6)


def test_stratified_subset_is_balanced_and_seeded():
    labels = np.repeat(np.arange(10), [100, 200, 100, 100, 100, 100, 100, 100, 100, 100])
    idx = stratified_subset(labels, 110, seed=3)
    assert len(idx) == 110 and len(np.unique(idx)) == 110
    assert np.bincount(labels[idx]).tolist() == [10, 20, 10, 10, 10, 10, 10, 10, 10, 10]
    np.testing.assert_array_equal(idx, stratified_subset(labels, 110, seed=3))
    assert not np.array_equal(idx, stratified_subset(labels, 110, seed=4))


def test_split_roundtrip_through_parquet(tmp_path, mnist_root):
    ds = {"source": "mnist", "splits": {"test": {"size": 500, "seed": 1}}}
    df = write_split(ds, "test", tmp_path / "test.parquet", mnist_root)
    x, y = read_split(tmp_path / "test.parquet")
    assert x.shape == (500, 784) and list(df.columns[-1:]) == ["label"]
    x2, y2 = make_split(ds, "test", mnist_root)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


# --- damaged data ------------------------------------------------------------------------------

def test_truncated_gzip_is_refused(tmp_path, mnist_root):
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes((mnist_root / bad.name).read_bytes()[:2000])
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
    labels = read_idx(mnist_root / "t10k-labels-idx1-ubyte.gz")[:9999]
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"\x00\x00\x08\x01" + len(labels).to_bytes(4, "big") + labels.tobytes()))
    with pytest.raises(DataError, match="10000 images but .* 9999 labels"):
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
