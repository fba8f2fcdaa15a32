"""Labels outside the dataset's classes are refused, naming the file, the split and the values (issue 17, item 3)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaepipe.data import MNIST, make_split, md5sum, prepare_idx_root, read_split, to_frame
from kaepipe.errors import DataError
from kaepipe.io import write_parquet


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file (uint8) of an array."""
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_folder(root: Path, split: str, labels: np.ndarray) -> Path:
    """A folder with one split of MNIST-named files (blank images) and a matching MD5SUMS."""
    root.mkdir(parents=True, exist_ok=True)
    img_name, lab_name = MNIST.files[split]
    (root / img_name).write_bytes(gzip.compress(idx_bytes(np.zeros((len(labels), 28, 28)))))
    (root / lab_name).write_bytes(gzip.compress(idx_bytes(labels)))
    (root / "MD5SUMS").write_text("".join(f"{md5sum(root / n)}  {n}\n" for n in (img_name, lab_name)))
    return root


def mnist_ds(size=None):
    return {"name": "mnist", "source": "mnist", "classes": 10, "splits": {"test": {"size": size, "seed": 0},
                                                                           "train": {"size": size, "seed": 0}}}


counts = st.lists(st.integers(0, 9), min_size=20, max_size=60)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(good=counts, bad=st.lists(st.integers(10, 255), min_size=1, max_size=5), split=st.sampled_from(["train", "test"]),
       size=st.sampled_from([None, 20]))
def test_idx_labels_outside_the_classes_are_refused(tmp_path_factory, good, bad, split, size):
    labels = np.array(good + bad)
    np.random.default_rng(len(good)).shuffle(labels)
    root = write_idx_folder(tmp_path_factory.mktemp("idx"), split, labels)
    prepare_idx_root("mnist", str(root), root / "cache", [split])  # the MD5SUMS matches: the files pass
    with pytest.raises(DataError) as err:
        make_split(mnist_ds(size), split, root)
    msg = str(err.value)
    assert msg.startswith(str(root / MNIST.files[split][1]))
    assert f"{split} split" in msg and f"{len(bad)} label(s) outside the dataset's classes 0..9" in msg
    assert re.search(": " + ", ".join(str(v) for v in sorted(set(bad))), msg)


def test_idx_labels_inside_the_classes_pass(tmp_path):
    root = write_idx_folder(tmp_path, "test", np.arange(30) % 10)
    x, y = make_split(mnist_ds(), "test", root)
    assert x.shape == (30, 784) and sorted(set(y.tolist())) == list(range(10))


@pytest.mark.parametrize("bad", [11, -1, 3])
def test_a_split_file_with_labels_outside_the_classes_is_refused(tmp_path, bad):
    path = tmp_path / "train.parquet"
    write_parquet(to_frame(np.zeros((5, 2), np.float32), np.array([0, 1, 2, bad, 0])), path)
    with pytest.raises(DataError, match=rf"train\.parquet: train split has 1 label\(s\) outside the dataset's "
                                        rf"classes 0\.\.2: {bad}"):
        read_split(path, 3)
    read_split(path, 12 if bad > 0 else None)  # unchecked or in range: read as before


def test_base_training_refuses_such_labels_before_training(tmp_path):
    import torch

    from kaepipe.stages.base import run_base_training

    paths = {}
    for split in ("train", "test"):
        paths[split] = str(tmp_path / f"{split}.parquet")
        write_parquet(to_frame(np.zeros((8, 2), np.float32), np.array([0, 1, 2, 0, 1, 2, 11, 0])), paths[split])
    ds = {"name": "yinyang", "classes": 3, "evaluation": {"paper": "train", "heldout": "test"},
          "base": {"width": 4, "blocks": 1, "epochs": 1, "batch_size": 4, "lr": 0.1}}
    with pytest.raises(DataError, match=r"train\.parquet: train split .*: 11"):
        run_base_training(ds, paths, *(str(tmp_path / n) for n in ("m.safetensors", "c.parquet", "m.json")),
                          torch.device("cpu"), log=lambda s: None)
