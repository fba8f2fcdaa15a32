"""Errors name the file, the line, the key or the flag to use (issue 17, item 9)."""

from __future__ import annotations

import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kaepipe.cli as cli
from kaepipe.config import load_yaml
from kaepipe.data import prepare_idx_root
from kaepipe.errors import ConfigError, DataError
from kaepipe.io import write_json
from kaepipe.represent import load_reps
from kaepipe.stages.tables import run_accuracy_table
from kaepipe.tensor_io import save_torch
from tests.conftest import REPO

# --- a YAML syntax error names the file, the line and the column ----------------------------------

@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.integers(0, 40), after=st.integers(0, 5))
def test_yaml_syntax_error_names_file_and_line(tmp_path_factory, before, after):
    path = tmp_path_factory.mktemp("yaml") / "config.yaml"
    lines = [f"key{i}: {i}" for i in range(before)] + ["broken: a: b"] + [f"tail{i}: {i}" for i in range(after)]
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"^{path}:{before + 1}:\d+: not valid YAML \(mapping values are not allowed"):
        load_yaml(path)


def test_unclosed_bracket_names_its_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run: [yinyang\ndevice: cpu\n")
    with pytest.raises(ConfigError, match=rf"^{path}:2:\d+: not valid YAML"):
        load_yaml(path)


# --- a representations file of the wrong shape ------------------------------------------------------

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=4), n_labels=st.integers(0, 5),
       labels_2d=st.booleans(), float_labels=st.booleans())
def test_reps_of_any_wrong_shape_are_refused_naming_the_file(tmp_path_factory, shape, n_labels, labels_2d,
                                                             float_labels):
    path = tmp_path_factory.mktemp("reps") / "train.pt"
    labels = torch.zeros((n_labels, 1) if labels_2d else (n_labels,), dtype=torch.float32 if float_labels else torch.int64)
    save_torch({"layers": torch.zeros(shape), "labels": labels}, path)
    fits = len(shape) == 3 and not labels_2d and not float_labels and n_labels == shape[1]
    if fits:
        layers, got = load_reps(path)
        assert np.stack(layers).shape == tuple(shape) and got.shape == (n_labels,)
    else:
        with pytest.raises(DataError, match=rf"^{path}: '(layers|labels)'"):
            load_reps(path)


def test_reps_with_a_non_tensor_is_refused(tmp_path):
    save_torch({"layers": [1, 2], "labels": torch.zeros(2, dtype=torch.int64)}, tmp_path / "r.pt")
    with pytest.raises(DataError, match=r"r\.pt: 'layers' must be float tensors \(n, width\) per layer; layer\(s\) \[0, 1\] are \['int', 'int'\]"):
        load_reps(tmp_path / "r.pt")


# --- a malformed accuracy.json -------------------------------------------------------------------------

GOOD_PROTOCOLS = {"paper": {"split": "train", "macro": 98.0}, "heldout": {"split": "test", "macro": 97.0}}


@pytest.mark.parametrize("record, key", [
    ({"dataset": "yinyang", "lambda_iso": 1.0}, r"missing key\(s\) \['protocols'\]"),
    ({"dataset": "yinyang", "protocols": GOOD_PROTOCOLS}, r"missing key\(s\) \['lambda_iso'\]"),
    ({"dataset": "yinyang", "lambda_iso": 1.0, "protocols": {"paper": {"split": "train"}}},
     r"missing key 'protocols\.paper\.macro'"),
    ({"dataset": "yinyang", "lambda_iso": 1.0, "protocols": {"paper": {"split": "train", "macro": "high"}}},
     r"key 'protocols\.paper\.macro' = 'high' is not a number"),
    ([1, 2], r"expected a JSON object"),
])
def test_malformed_accuracy_json_names_the_file_and_key(tmp_path, record, key):
    base = tmp_path / "base_metrics.json"
    write_json({"dataset": "yinyang", "draw": 0, "protocols": GOOD_PROTOCOLS}, base)
    good, bad = tmp_path / "good" / "accuracy.json", tmp_path / "bad" / "accuracy.json"
    write_json({"dataset": "yinyang", "lambda_iso": 1.0, "seed": 1, "protocols": GOOD_PROTOCOLS}, good)
    write_json(record, bad)
    out = {k: str(tmp_path / f"t.{k}") for k in ("csv", "md", "tex", "long")}
    config = {"datasets": {"yinyang": {"kae": {"main_lambda_iso": 1}}}}
    with pytest.raises(DataError, match=rf"^{bad}: {key}"):
        run_accuracy_table(config, [str(base)], [str(good), str(bad)], out)
    assert not any((tmp_path / f"t.{k}").exists() for k in out)


# --- the command line ---------------------------------------------------------------------------------

def test_evaluate_reference_refuses_a_folder_as_out(tmp_path, capsys):
    folder = tmp_path / "outdir"
    folder.mkdir()
    rc = cli.main(["evaluate-reference", str(tmp_path), "--dataset", "yinyang", "--config", str(REPO / "config.yaml"),
                   "--out", str(folder)])
    err = capsys.readouterr().err
    assert rc == 1 and f"--out {folder}: is a folder" in err and "Traceback" not in err
    assert list(folder.iterdir()) == []


@pytest.fixture
def no_network(monkeypatch):
    calls = []

    def refuse(url, *a, **k):
        calls.append(url)
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return calls


def test_evaluate_reference_checks_the_checkpoint_folder_before_any_download(tmp_path, monkeypatch, capsys,
                                                                             no_network):
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["evaluate-reference", str(tmp_path / "missing"), "--dataset", "mnist",
                   "--config", str(REPO / "config.yaml"), "--device", "cpu"])
    assert rc == 1 and "missing: folder of reference checkpoints not found" in capsys.readouterr().err
    assert no_network == [] and not (tmp_path / "results").exists()


def test_evaluate_reference_hint_names_the_cli_flag(tmp_path, monkeypatch, capsys, no_network):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "find_reference_checkpoints", lambda folder: None)  # a release is there
    rc = cli.main(["evaluate-reference", str(tmp_path), "--dataset", "mnist", "--config", str(REPO / "config.yaml"),
                   "--device", "cpu"])
    err = capsys.readouterr().err
    assert rc == 1 and no_network and "pass it with `--mnist-root DIR`" in err and "--config mnist_root" not in err


def test_fashion_mnist_message_says_it_is_never_downloaded(tmp_path):
    with pytest.raises(DataError) as err:
        prepare_idx_root("fashion_mnist", str(tmp_path / "nowhere"), tmp_path / "cache", ["test"])
    msg = str(err.value)
    assert "never downloaded" in msg and "`dataset-fashion-mnist`" in msg and "`--config fashion_mnist_root=DIR`" in msg
    assert "to download" not in msg and not (tmp_path / "cache").exists()
