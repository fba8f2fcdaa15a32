"""Checkpoint metadata is checked field by field and against the tensors before any module is built (issue 17, item 4)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from kaepipe.errors import DataError
from kaepipe.nn.checkpoints import kae_expectation, load_base_model, load_checkpoint, load_kae, save_base_model, save_kae
from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder
from kaepipe.nn.resmlp import ResMLP, ResMLPConfig

KAE_CFG = KAEConfig(in_features=4, hidden=6, latent=5, k=3)
BASE_CFG = ResMLPConfig(2, 8, 2, 3)


def saved(path: Path, kind: str = "kae") -> Path:
    torch.manual_seed(0)
    if kind == "kae":
        save_kae(KoopmanAutoencoder(KAE_CFG), path, {"lambda_iso": 1.0, "seed": 1})
    else:
        save_base_model(ResMLP(BASE_CFG), path)
    return path


def rewrite_architecture(path: Path, edit) -> None:
    """Edit the architecture metadata of a checkpoint in place (tensors unchanged)."""
    with safe_open(str(path), "pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    arch = json.loads(meta["architecture"])
    edit(arch)
    meta["architecture"] = json.dumps(arch)
    save_file(tensors, str(path), metadata=meta)


@pytest.fixture(scope="module")
def kae_file(tmp_path_factory):
    return saved(tmp_path_factory.mktemp("ckpt") / "kae.safetensors")


values = st.one_of(st.integers(-3, 10**7), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=4),
                   st.booleans(), st.none(), st.sampled_from(["exponential", "linear", "eigen", "torch", "kaiming"]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from([*KAE_CFG.to_dict(), "extra_field"]), value=values)
def test_any_edited_kae_field_loads_as_written_or_is_refused_by_name(tmp_path_factory, kae_file, field, value):
    path = tmp_path_factory.mktemp("edit") / "kae.safetensors"
    path.write_bytes(kae_file.read_bytes())
    rewrite_architecture(path, lambda a: a.__setitem__(field, value))
    try:
        model, _ = load_kae(path)
    except DataError as exc:
        named = re.sub(r"\{[^}]*\}", "", str(exc))  # not just in the architecture's repr
        assert str(exc).startswith(str(path)) and re.search(rf"\b{field}\b", named), str(exc)
        return
    assert getattr(model.cfg, field) == value  # it loaded: exactly what the metadata says, and valid
    assert field not in ("in_features", "hidden", "latent") or value == getattr(KAE_CFG, field)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.5])
def test_impossible_negative_slope_is_refused_without_expectation(tmp_path, value):
    path = saved(tmp_path / "kae.safetensors")
    rewrite_architecture(path, lambda a: a.__setitem__("negative_slope", value))
    with pytest.raises(DataError, match=r"kae\.safetensors: invalid 'architecture' metadata: field 'negative_slope'"):
        load_kae(path)


def test_edited_negative_slope_is_refused_against_the_config(tmp_path):
    path = saved(tmp_path / "kae.safetensors")
    rewrite_architecture(path, lambda a: a.__setitem__("negative_slope", 0.2))
    kae = {"hidden": 6, "latent": 5, "k": 3}
    with pytest.raises(DataError, match=r"kae\.safetensors: checkpoint does not match the config "
                                        r"\(negative_slope: checkpoint 0\.2 vs config 0\.01\)"):
        load_kae(path, kae_expectation(kae))
    rewrite_architecture(path, lambda a: a.pop("negative_slope"))  # an older checkpoint: the default
    assert load_kae(path, kae_expectation(kae))[0].cfg.negative_slope == 0.01


def test_wrong_in_features_is_named(tmp_path):
    path = saved(tmp_path / "kae.safetensors")
    rewrite_architecture(path, lambda a: a.__setitem__("in_features", 7))
    with pytest.raises(DataError, match=r"field 'in_features' = 7 but the tensors have 4"):
        load_kae(path)


def test_extra_field_is_named(tmp_path):
    path = saved(tmp_path / "kae.safetensors")
    rewrite_architecture(path, lambda a: a.__setitem__("dropout", 0.1))
    with pytest.raises(DataError, match=r"kae\.safetensors: invalid 'architecture' metadata: unknown field 'dropout'"):
        load_kae(path)


@pytest.mark.parametrize("field, value", [("blocks", 3), ("classes", 4), ("width", 9), ("bn_eps", 0), ("width", True)])
def test_base_architecture_fields_are_checked(tmp_path, field, value):
    path = saved(tmp_path / "base.safetensors", "base")
    rewrite_architecture(path, lambda a: a.__setitem__(field, value))
    with pytest.raises(DataError, match=rf"base\.safetensors: .*field '{field}' = {value}"):
        load_base_model(path)


def test_no_module_is_built_before_the_checks(tmp_path):
    path = saved(tmp_path / "kae.safetensors")
    rewrite_architecture(path, lambda a: a.__setitem__("in_features", 5_000_000))
    built = []

    class Spy(KoopmanAutoencoder):
        def __init__(self, cfg):
            built.append(torch.empty(0).device.type)  # "meta" inside torch.device("meta")
            super().__init__(cfg)

    with pytest.raises(DataError, match="in_features"):
        load_checkpoint(path, KAEConfig, Spy)
    assert "cpu" not in built


def test_a_small_file_claiming_a_huge_model_allocates_nothing_big(tmp_path):
    path = saved(tmp_path / "kae.safetensors")
    rewrite_architecture(path, lambda a: a.update(in_features=5_000_000, hidden=60))
    code = ("import resource, sys\nfrom kaepipe.nn.checkpoints import load_kae\nfrom kaepipe.errors import DataError\n"
            f"before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\ntry:\n    load_kae({str(path)!r})\n"
            "except DataError as exc:\n    print('refused', exc)\n"
            "print('grew_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "refused" in out and "in_features" in out
    assert int(out.split("grew_kb")[1]) < 200_000, out  # not the ~1.2 GB a built model needed
