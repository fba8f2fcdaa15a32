"""The config refuses NaN, infinity and impossible values before any job, naming the key (issue 17, item 6)."""

from __future__ import annotations

import copy
import math
import re
import subprocess

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kaepipe.config import load_yaml, merged, validate_config
from kaepipe.errors import ConfigError
from tests.conftest import REPO, TINY_CONFIGS, snakemake_cmd

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
DEFAULT = load_yaml(REPO / "config.yaml")


def numeric_keys(node, where=()):
    """Paths of every number in a config (lists by index), as the errors name them."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in numeric_keys(v, (*where, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in numeric_keys(v, (*where, i))]
    return [where] if isinstance(node, (int, float)) and not isinstance(node, bool) else []


NUMERIC = numeric_keys(DEFAULT)


def with_value(path, value):
    cfg = copy.deepcopy(DEFAULT)
    node = cfg
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return cfg


def refusal(cfg) -> str:
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, SCHEMA)
    return str(err.value)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(NUMERIC), st.sampled_from([math.nan, math.inf, -math.inf]))
def test_any_non_finite_number_is_refused_naming_its_key(path, value):
    key = ".".join(map(str, path))
    assert re.search(rf"config key '{re.escape(key)}'", refusal(with_value(path, value)))


@pytest.mark.parametrize("text, key, why", [
    ("lambda_iso: [1, .nan]\n  main_lambda_iso: 1", "datasets.yinyang.kae.lambda_iso.1", "not a finite number"),
    ("lambda_iso: [1, .inf]\n  main_lambda_iso: 1", "datasets.yinyang.kae.lambda_iso.1", "not a finite number"),
    ("lambda_iso: [1, -0.0]\n  main_lambda_iso: 1", "datasets.yinyang.kae.lambda_iso", "negative zero"),
    ("lr: .inf", "datasets.yinyang.kae.lr", "not a finite number"),
])
def test_bad_kae_values_from_yaml_are_refused(text, key, why):
    kae = yaml.safe_load("kae:\n  " + text)["kae"]
    cfg = merged(DEFAULT, {"datasets": {"yinyang": {"kae": kae}}})
    assert re.search(rf"config key '{re.escape(key)}'.*{why}", refusal(cfg))


def test_nan_learning_rate_of_the_base_network_is_refused():
    cfg = merged(DEFAULT, {"datasets": {"mnist": {"base": yaml.safe_load("lr: .nan")}}})
    assert "config key 'datasets.mnist.base.lr': nan is not a finite number" in refusal(cfg)


@pytest.mark.parametrize("path", [("datasets", "yinyang", "splits", "train", "seed"),
                                  ("datasets", "yinyang", "base", "seeds", 0),
                                  ("datasets", "yinyang", "kae", "seeds", 0)])
@settings(max_examples=10, deadline=None)
@given(extra=st.integers(min_value=0, max_value=2**70))
def test_seeds_beyond_32_bits_are_refused(path, extra):
    key = ".".join(map(str, path))
    assert re.search(rf"config key '{re.escape(key)}': \d+ is greater than the maximum",
                     refusal(with_value(path, 2**32 + extra)))


def test_largest_32_bit_seed_is_accepted():
    validate_config(with_value(("datasets", "yinyang", "splits", "train", "seed"), 2**32 - 1), SCHEMA)


@pytest.mark.parametrize("size", [1, 2, 5])
def test_too_small_splits_are_refused(size):
    msg = refusal(with_value(("datasets", "yinyang", "splits", "train", "size"), size))
    assert "config key 'datasets.yinyang.splits.train.size'" in msg


def test_two_per_class_is_enough():
    validate_config(with_value(("datasets", "mnist", "splits", "test", "size"), 20), SCHEMA)
    assert "at least 2 per class, 20" in refusal(with_value(("datasets", "mnist", "splits", "test", "size"), 19))


def test_snakemake_stops_before_any_job_on_a_nan_weight(tmp_path, mnist_root):
    overlay = tmp_path / "nan.yaml"
    overlay.write_text("datasets:\n  yinyang:\n    kae:\n      lambda_iso: [1, .nan]\n")
    cmd = snakemake_cmd(tmp_path, "-n", mnist_root=mnist_root, configs=[*TINY_CONFIGS, str(overlay)])
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config key 'datasets.yinyang.kae.lambda_iso.1': nan is not a finite number" in out
    assert "MissingInput" not in out and "isonan" not in out
