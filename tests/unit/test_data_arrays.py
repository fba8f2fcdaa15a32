"""The generic array source of `kaepipe.data` (`source: arrays`): an .npz archive or a Parquet table of both
splits, checked (checksum, dtypes, shapes, labels) with errors naming the file and the array; its config block."""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kaepipe.config import dataset_config, load_yaml
from kaepipe.data import (
    ARRAYS,
    get_source,
    load_array_split,
    make_split,
    read_split,
    sha256sum,
    stratified_subset,
    write_split,
)
from kaepipe.errors import ConfigError, DataError
from kaepipe.settings import topology_settings, validate_config

CLASSES = 3


def arrays(n_train: int = 90, n_test: int = 30, shape: tuple[int, ...] = (4, 3), seed: int = 0) -> dict:
    """Train and test features of `shape` per sample (uint8) and balanced labels 0..CLASSES-1."""
    rng = np.random.default_rng(seed)
    return {"x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
            "y_train": np.arange(n_train, dtype=np.int32) % CLASSES,
            "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
            "y_test": rng.permutation(np.arange(n_test) % CLASSES).astype(np.uint8)}


def write_npz(path: Path, **data) -> Path:
    np.savez(path, **data)
    return path


def dataset(path: Path, train_size: int | None = None, test_size: int | None = None, seed: int = 0, **extra) -> dict:
    return {"name": "mine", "source": "arrays", "path": str(path), "classes": CLASSES,
            "splits": {"train": {"size": train_size, "seed": seed}, "test": {"size": test_size, "seed": seed}},
            **extra}


# ---------------------------------------------------------------------------------------------------------
# Round trips: what build() gives is the arrays written
# ---------------------------------------------------------------------------------------------------------

def test_npz_round_trip_gives_the_written_arrays_flattened(tmp_path):
    data = arrays()
    ds = dataset(write_npz(tmp_path / "d.npz", **data))
    for split in ("train", "test"):
        x, y = make_split(ds, split)
        expected = data[f"x_{split}"].reshape(len(data[f"x_{split}"]), -1).astype(np.float32)
        assert x.dtype == np.float32 and y.dtype == np.int64 and x.shape == (len(expected), 12)
        np.testing.assert_array_equal(x, expected)
        np.testing.assert_array_equal(y, data[f"y_{split}"].astype(np.int64))


def test_npz_of_float64_and_bool_features(tmp_path):
    data = arrays()
    data["x_train"] = np.linspace(-1, 1, 90 * 5).reshape(90, 5)
    data["x_test"] = (np.arange(30 * 5).reshape(30, 5) % 2).astype(bool)
    ds = dataset(write_npz(tmp_path / "d.npz", **data))
    np.testing.assert_array_equal(make_split(ds, "train")[0], data["x_train"].astype(np.float32))
    np.testing.assert_array_equal(make_split(ds, "test")[0], data["x_test"].astype(np.float32))


def parquet_table(data: dict) -> pd.DataFrame:
    """Both splits of `data` in one table: features in columns named freely, then split and label."""
    frames = []
    for split in ("test", "train"):  # rows of the splits in any order
        x = data[f"x_{split}"].reshape(len(data[f"x_{split}"]), -1)
        df = pd.DataFrame({f"pixel_{i}": x[:, i] for i in range(x.shape[1])})
        df["pixel_0"] = df["pixel_0"].astype(np.int64)
        df["pixel_1"] = df["pixel_1"].astype(np.float64) / 255
        df.insert(2, "split", split)
        df["label"] = data[f"y_{split}"].astype(np.int64)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def test_parquet_round_trip_gives_the_written_columns(tmp_path):
    data = arrays()
    table = parquet_table(data)
    path = tmp_path / "d.parquet"
    table.to_parquet(path)
    ds = dataset(path)
    features = [c for c in table.columns if c not in ("split", "label")]
    assert features == [f"pixel_{i}" for i in range(12)]  # the file's order, split and label left out
    for split in ("train", "test"):
        x, y = make_split(ds, split)
        rows = table[table["split"] == split]
        np.testing.assert_array_equal(x, rows[features].to_numpy(np.float32))
        np.testing.assert_array_equal(y, data[f"y_{split}"].astype(np.int64))


def test_size_takes_a_stratified_seeded_subset(tmp_path):
    data = arrays(n_train=90)
    ds = dataset(write_npz(tmp_path / "d.npz", **data), train_size=30, seed=4)
    x, y = make_split(ds, "train")
    assert np.bincount(y).tolist() == [10, 10, 10]
    keep = stratified_subset(data["y_train"], 30, 4)
    np.testing.assert_array_equal(x, data["x_train"][keep].reshape(30, -1).astype(np.float32))
    again, _ = make_split(ds, "train")
    other, _ = make_split({**ds, "splits": {**ds["splits"], "train": {"size": 30, "seed": 5}}}, "train")
    np.testing.assert_array_equal(x, again)
    assert not np.array_equal(x, other)


def test_write_split_as_the_dataset_rule_does(tmp_path):
    data = arrays()
    ds = dataset(write_npz(tmp_path / "d.npz", **data))
    root = ARRAYS.prepare(None, tmp_path / "cache", ["test"], ds=ds)
    assert root == tmp_path / "d.npz"
    write_split(ds, "test", tmp_path / "test.parquet", root)
    x, y = read_split(tmp_path / "test.parquet", CLASSES)
    np.testing.assert_array_equal(x, data["x_test"].reshape(30, -1).astype(np.float32))
    np.testing.assert_array_equal(y, data["y_test"])


def test_inputs_are_the_file_and_a_missing_file_is_named(tmp_path):
    ds = dataset(write_npz(tmp_path / "d.npz", **arrays()))
    assert get_source("arrays") is ARRAYS and ARRAYS.classes is None and ARRAYS.default_eps is None
    assert ARRAYS.inputs(None, "cache", "train", ds=ds) == [str(tmp_path / "d.npz")]
    gone = dataset(tmp_path / "gone.npz")
    with pytest.raises(DataError, match=r"gone\.npz: file not found \(config key 'datasets\.mine\.path'\)"):
        ARRAYS.inputs(None, "cache", "train", ds=gone)
    with pytest.raises(DataError, match=r"gone\.npz: file not found"):
        make_split(gone, "train")


def test_other_file_types_are_refused(tmp_path):
    (tmp_path / "d.csv").write_text("x,label\n1,0\n")
    with pytest.raises(DataError, match=r"d\.csv: not an \.npz or Parquet file"):
        make_split(dataset(tmp_path / "d.csv"), "train")
    with pytest.raises(DataError, match=r"no split 'valid'; the arrays source has \['test', 'train'\]"):
        load_array_split(write_npz(tmp_path / "d.npz", **arrays()), "valid")
    np.save(tmp_path / "single.npy", np.zeros((3, 2)))
    (tmp_path / "single.npy").rename(tmp_path / "single.npz")
    with pytest.raises(DataError, match=r"single\.npz: a single \.npy array, not an \.npz archive"):
        make_split(dataset(tmp_path / "single.npz"), "train")


# ---------------------------------------------------------------------------------------------------------
# Checksum
# ---------------------------------------------------------------------------------------------------------

def test_sha256_is_verified_and_a_mismatch_names_the_file_and_both_sums(tmp_path):
    path = write_npz(tmp_path / "d.npz", **arrays())
    good = sha256sum(path)
    x, _ = make_split(dataset(path, sha256=good.upper()), "train")  # either case
    assert len(x) == 90
    wrong = "0" * 64
    for call in (lambda: make_split(dataset(path, sha256=wrong), "train"),
                 lambda: ARRAYS.prepare(None, "cache", ["train"], ds=dataset(path, sha256=wrong))):
        with pytest.raises(DataError, match=rf"d\.npz: SHA-256 checksum mismatch \(got {good}, expected {wrong}"):
            call()


# ---------------------------------------------------------------------------------------------------------
# Never unpickle
# ---------------------------------------------------------------------------------------------------------

def leave_a_mark(path: str) -> str:
    """Called by pickle when the object below is unpickled: the test checks that it never is."""
    Path(path).write_text("unpickled")
    return "payload"


class Payload:
    def __init__(self, mark: Path) -> None:
        self.mark = str(mark)

    def __reduce__(self):
        return leave_a_mark, (self.mark,)


def test_the_payload_would_run_if_unpickled(tmp_path):
    """The check below means something: unpickling the object array does run the payload."""
    mark = tmp_path / "mark"
    path = write_npz(tmp_path / "d.npz", **{**arrays(), "x_train": np.array([[Payload(mark)]] * 90, dtype=object)})
    with np.load(path, allow_pickle=True) as archive:
        archive["x_train"]
    assert mark.read_text() == "unpickled"


def test_an_object_array_is_refused_and_never_unpickled(tmp_path):
    mark = tmp_path / "mark"
    data = {**arrays(), "x_test": np.array([[Payload(mark)]] * 30, dtype=object)}
    path = write_npz(tmp_path / "d.npz", **data)
    for split in ("train", "test"):  # checked from the headers whichever split is built
        with pytest.raises(DataError, match=r"d\.npz: array 'x_test' is an object array \(pickled Python objects\)"):
            make_split(dataset(path), split)
    assert not mark.exists()
    path.write_bytes(pickle.dumps(Payload(mark)))  # a plain pickle with an .npz name
    with pytest.raises(DataError, match=r"d\.npz: not a readable \.npz archive"):
        make_split(dataset(path), "train")
    assert not mark.exists()


# ---------------------------------------------------------------------------------------------------------
# Wrong contents: the error names the file and the array or column
# ---------------------------------------------------------------------------------------------------------

def test_a_label_out_of_range_is_refused(tmp_path):
    data = arrays()
    data["y_test"] = data["y_test"].copy()
    data["y_test"][[3, 7]] = 5
    path = write_npz(tmp_path / "d.npz", **data)
    assert len(make_split(dataset(path), "train")[0]) == 90
    with pytest.raises(DataError, match=r"d\.npz: array 'y_test': test split has 2 label\(s\) outside the "
                                        r"dataset's classes 0\.\.2: 5"):
        make_split(dataset(path), "test")
    table = parquet_table(arrays())
    table.loc[0, "label"] = -1
    table.to_parquet(tmp_path / "d.parquet")
    split = table.loc[0, "split"]
    with pytest.raises(DataError, match=rf"d\.parquet: column 'label': {split} split has 1 label\(s\) outside"):
        make_split(dataset(tmp_path / "d.parquet"), split)


def test_train_and_test_widths_must_agree(tmp_path):
    data = {**arrays(), "x_test": np.zeros((30, 5), np.float32)}
    path = write_npz(tmp_path / "d.npz", **data)
    with pytest.raises(DataError, match=re.escape("d.npz: array 'x_train' has samples of shape (4, 3) but 'x_test' "
                                                  "of shape (5,)")):
        make_split(dataset(path), "train")
    with pytest.raises(DataError, match=r"array 'x_test' has samples of shape \(5,\) but 'x_train'"):
        make_split(dataset(path), "test")


@pytest.mark.parametrize("key", ["x_train", "y_train", "x_test", "y_test"])
def test_a_missing_array_is_named(tmp_path, key):
    data = arrays()
    del data[key]
    path = write_npz(tmp_path / "d.npz", **data)
    with pytest.raises(DataError, match=rf"d\.npz: no array '{key}' in the archive"):
        make_split(dataset(path), "train" if key.endswith("test") else "test")


BAD_ARRAYS = [
    ("float labels", "y_train", np.zeros(90), r"array 'y_train' has dtype float64; expected integer class labels"),
    ("complex features", "x_train", np.zeros((90, 2), complex), r"array 'x_train' has dtype complex128; expected numbers"),
    ("text features", "x_test", np.full((30, 2), "a"), r"array 'x_test' has dtype <U1; expected numbers"),
    ("1-D features", "x_train", np.zeros(90), r"array 'x_train' has shape \(90,\); expected \(samples, features"),
    ("2-D labels", "y_test", np.zeros((30, 1), int), r"array 'y_test' has shape \(30, 1\); expected one label per sample"),
    ("fewer labels", "y_train", np.zeros(89, int), r"array 'x_train' has 90 samples but array 'y_train' has 89 labels"),
]


@pytest.mark.parametrize("what,key,value,message", BAD_ARRAYS, ids=[b[0] for b in BAD_ARRAYS])
def test_wrong_dtypes_and_shapes_are_named(tmp_path, what, key, value, message):
    path = write_npz(tmp_path / "d.npz", **{**arrays(), key: value})
    with pytest.raises(DataError, match=r"d\.npz: " + message):
        make_split(dataset(path), "train")


def test_non_finite_features_are_refused(tmp_path):
    data = {**arrays(shape=(2,)), "x_train": np.ones((90, 2))}
    data["x_train"][[4, 6], 1] = [np.nan, 1e300]  # 1e300 overflows float32
    with pytest.raises(DataError, match=r"array 'x_train' has 2 value\(s\) that are NaN, infinite or beyond "
                                        r"float32, in 2 sample\(s\) \(first: \[4, 6\]\)"):
        make_split(dataset(write_npz(tmp_path / "d.npz", **data)), "train")


@pytest.mark.parametrize("change,message", [
    (lambda t: t.assign(colour="red"), r"column 'colour' has type (str|object); expected numbers"),
    (lambda t: t.assign(label=t["label"] + 0.5), r"column 'label' has type float64; expected integer class labels"),
    (lambda t: t.assign(split=t["split"].replace("test", "valid")), r"column 'split' holds \['valid'\]"),
    (lambda t: t[t["split"] == "train"], r"no row has split 'test'; the file must hold both splits"),
    (lambda t: t.drop(columns="split"), r"missing expected column\(s\) \['split'\]"),
    (lambda t: t[["split", "label"]], r"no feature columns"),
])
def test_wrong_parquet_tables_are_named(tmp_path, change, message):
    change(parquet_table(arrays())).to_parquet(tmp_path / "d.parquet")
    with pytest.raises(DataError, match=r"d\.parquet: " + message):
        make_split(dataset(tmp_path / "d.parquet"), "train")


# ---------------------------------------------------------------------------------------------------------
# The config block
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture
def config(repo):
    """The default config with a dataset `mine` of source arrays (5 classes, the topology's eps given)."""
    cfg = load_yaml(repo / "config.yaml")
    block = copy.deepcopy(cfg["datasets"]["fashion_mnist"])
    del block["root"]
    block.update(source="arrays", path="data/mine.npz", classes=5, sha256="ab" * 32,
                 topology={"eps_layers": 2.0, "eps_iterates": 2.5})
    cfg["datasets"]["mine"] = block
    cfg["run"] = [*cfg["run"], "mine"]
    return cfg


def test_an_arrays_dataset_validates_with_its_classes_from_the_config(config, schema_path):
    validate_config(config, schema_path)
    s = topology_settings(dataset_config(config, "mine"))
    assert (s["eps_layers"], s["eps_iterates"]) == (2.0, 2.5)
    del config["datasets"]["mine"]["sha256"]
    config["datasets"]["mine"]["topology"] = {"metric": "knn_geodesic"}  # eps in hops: 1 by default
    validate_config(config, schema_path)


@pytest.mark.parametrize("key,value,message", [
    ("path", KeyError, r"'datasets\.mine': 'path' is a required property"),
    ("path", "", r"'datasets\.mine\.path'"),
    ("sha256", "abc", r"'datasets\.mine\.sha256': 'abc' does not match"),
    ("classes", KeyError, r"'datasets\.mine': 'classes' is a required property"),
    ("topology", KeyError, r"'datasets\.mine\.topology\.eps_layers': source 'arrays' has no default eps"),
    ("topology", {"eps_layers": 1.0}, r"'datasets\.mine\.topology\.eps_iterates': source 'arrays' has no default"),
])
def test_a_bad_arrays_block_is_refused_naming_the_key(config, schema_path, key, value, message):
    if value is KeyError:
        del config["datasets"]["mine"][key]
    else:
        config["datasets"]["mine"][key] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(config, schema_path)


def test_build_demands_classes(tmp_path):
    ds = dataset(write_npz(tmp_path / "d.npz", **arrays()))
    del ds["classes"]
    with pytest.raises(ConfigError, match=r"'datasets\.mine\.classes': the arrays source takes the number of classes"):
        make_split(ds, "train")
