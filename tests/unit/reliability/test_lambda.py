"""Isometry weights: a result folder's tag reads back as exactly the configured weight (issue 17, item 1)."""

from __future__ import annotations

import copy
import math
import re
import runpy
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from snakemake.iocontainers import Namedlist

from kaepipe.config import LAMBDA_TAG_PATTERN, lambda_grid_errors, lambda_tag, lambda_value, load_yaml, validate_config
from kaepipe.errors import ConfigError
from kaepipe.stages.paths import kae_paths
from tests.conftest import REPO

weights = st.floats(min_value=0, allow_nan=False, allow_infinity=False).filter(
    lambda x: math.copysign(1.0, x) > 0)


def test_todays_tags_do_not_change():
    values = (1, 0.1, 0.01, 0.001, 0.0001, 0, 10, 0.5, 1e-5, 1e6)
    assert [lambda_tag(x) for x in values] == ["1", "0.1", "0.01", "0.001", "0.0001", "0", "10", "0.5", "1e-05",
                                               "1e+06"]


@settings(max_examples=500, deadline=None)
@given(weights)
def test_a_tag_reads_back_as_exactly_its_weight(x):
    tag = lambda_tag(x)
    assert float(tag) == x
    assert LAMBDA_TAG_PATTERN.fullmatch(tag)  # the {lam} wildcard accepts it
    assert lambda_grid_errors({"lambda_iso": [x]}, "k") == []


@settings(max_examples=300, deadline=None)
@given(weights, weights)
def test_distinct_weights_never_share_a_folder(x, y):
    assert (lambda_tag(x) == lambda_tag(y)) == (x == y)


def test_nearby_weights_plan_one_job_each():
    config = {"datasets": {"d": {"kae": {"lambda_iso": [0.1, 0.1000001], "main_lambda_iso": 0.1, "seeds": [1, 2]}}}}
    paths = kae_paths(config, ["d"], "results/{dataset}/kae/iso{lam}/seed{seed}/model.safetensors")
    assert len(paths) == 4
    assert "results/d/kae/iso0.1000001/seed1/model.safetensors" in paths


class Wildcards(dict):
    """Snakemake's wildcards: a mapping whose values are also attributes."""

    __getattr__ = dict.__getitem__


def test_the_training_job_gets_the_configured_weight(monkeypatch, tmp_path):
    """workflow/scripts/kae.py looks the weight up in the config by its tag (never float(tag))."""
    import torch

    import kaepipe.runtime as runtime
    import kaepipe.stages.kae as stage

    seen = []
    monkeypatch.setattr(stage, "run_kae_training", lambda ds, lam, seed, *a, **k: seen.append((lam, seed)))
    monkeypatch.setattr(runtime, "configure_torch", lambda *a: torch.device("cpu"))
    kae = {"lambda_iso": [0.1, 0.1000001], "main_lambda_iso": 0.1}
    smk = SimpleNamespace(
        wildcards=Wildcards(lam=lambda_tag(0.1000001), seed="21"), log=[str(tmp_path / "kae.log")],
        input=SimpleNamespace(reps="r", preprocessing="p"), rule="kae", threads=1, config={"device": "cpu"},
        output=Namedlist(fromdict={"model": "m", "losses": "l", "metrics": "j"}), params=SimpleNamespace(ds={"name": "d", "kae": kae}))
    runpy.run_path(str(REPO / "workflow/scripts/kae.py"), init_globals={"snakemake": smk})
    assert seen == [(0.1000001, 21)]


def test_a_tag_outside_the_grid_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"datasets\.d\.kae\.lambda_iso.*'iso0\.2'"):
        lambda_value({"lambda_iso": [0.1]}, "0.2", "datasets.d.kae.lambda_iso")


@pytest.fixture(scope="module")
def default():
    return load_yaml(REPO / "config.yaml")


@pytest.mark.parametrize("grid, message", [
    ([0.1, -0.0], r"negative zero"),
    ([1, 1.0], r"1 and 1\.0 are the same weight"),
])
def test_grids_that_cannot_name_distinct_folders_are_refused(grid, message):
    problems = lambda_grid_errors({"lambda_iso": grid}, "x.kae")
    assert any(re.search(r"x\.kae\.lambda_iso': .*" + message, p) for p in problems), problems


def test_weight_not_writable_as_a_folder_is_refused_at_validation(default):
    cfg = copy.deepcopy(default)
    cfg["datasets"]["yinyang"]["kae"].update(lambda_iso=[1, 2**70 + 1], main_lambda_iso=1)
    with pytest.raises(ConfigError, match=r"datasets\.yinyang\.kae\.lambda_iso': 1180591620717411303425 cannot be "):
        validate_config(cfg, REPO / "workflow/schemas/config.schema.yaml")


def test_main_weight_must_be_in_the_grid_exactly(default):
    cfg = copy.deepcopy(default)
    cfg["datasets"]["yinyang"]["kae"].update(lambda_iso=[0.1000001], main_lambda_iso=0.1)
    with pytest.raises(ConfigError, match=r"datasets\.yinyang\.kae\.main_lambda_iso': 0\.1 is not in the grid"):
        validate_config(cfg, REPO / "workflow/schemas/config.schema.yaml")
