"""Reliability: each test names the fault it injects and checks the error and that no output remains."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from kaepipe.errors import DataError, TrainingDivergedError
from kaepipe.io import atomic_path, write_json
from tests.conftest import snakemake_cmd

# --- fault: a job dies while writing ------------------------------------------------------------

def test_atomic_path_leaves_nothing_when_the_writer_fails(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"half": ')
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_outputs_get_the_usual_permissions(tmp_path):
    write_json({"v": 1}, tmp_path / "out.json")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_path_keeps_the_old_file_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "out.json"
    write_json({"v": 1}, target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("garbage")
        raise RuntimeError("killed")
    assert target.read_text().strip().startswith("{") and '"v": 1' in target.read_text()


# --- fault: diverging training --------------------------------------------------------------------

def _tiny_reps(tmp_path: Path):
    """A small real Yin-Yang base network, its representations and preprocessing on disk."""
    from kaepipe.data import yinyang
    from kaepipe.nn.resmlp import ResMLP, ResMLPConfig, record_layers
    from kaepipe.represent import fit_preprocessing, save_preprocessing
    from kaepipe.tensor_io import save_torch

    x, y = yinyang(200, 42)
    torch.manual_seed(0)
    model = ResMLP(ResMLPConfig(2, 10, 2, 3))
    layers = torch.stack(record_layers(model, torch.as_tensor(x))).numpy()
    save_torch({"layers": torch.from_numpy(layers), "labels": torch.from_numpy(y)}, tmp_path / "train.pt")
    save_preprocessing(fit_preprocessing(list(layers), 10), tmp_path / "pre.safetensors")
    return tmp_path / "train.pt", tmp_path / "pre.safetensors"


def test_diverging_kae_names_epoch_and_term_and_writes_no_checkpoint(tmp_path):
    from kaepipe.stages.kae import run_kae_training

    reps, pre = _tiny_reps(tmp_path)
    ds = {"name": "yinyang", "kae": {"hidden": 8, "latent": 12, "k": 10, "lambda_iso": [1], "main_lambda_iso": 1,
                                     "seeds": [1], "epochs": 5, "batch_size": 64, "lr": 1e12}}
    outs = [tmp_path / "model.safetensors", tmp_path / "losses.parquet", tmp_path / "metrics.json"]
    with pytest.raises(TrainingDivergedError, match=r"epoch \d+: loss term '(recon|state|latent|iso|total)'"):
        run_kae_training(ds, 1.0, 1, str(reps), str(pre), *map(str, outs), torch.device("cpu"), log=lambda s: None)
    assert not any(p.exists() for p in outs)


# --- fault: a checkpoint that does not fit the config --------------------------------------------

def test_base_checkpoint_with_other_width_is_refused(tmp_path):
    from kaepipe.nn.checkpoints import load_base_model, save_base_model
    from kaepipe.nn.resmlp import ResMLP, ResMLPConfig

    save_base_model(ResMLP(ResMLPConfig(2, 10, 5, 3)), tmp_path / "model.safetensors")
    with pytest.raises(DataError, match=r"model.safetensors: checkpoint does not match the config \(width: checkpoint 10 vs config 12\)"):
        load_base_model(tmp_path / "model.safetensors", {"width": 12, "blocks": 5, "classes": 3})


def test_checkpoint_with_wrong_tensor_shape_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    from kaepipe.nn.checkpoints import load_base_model, save_base_model
    from kaepipe.nn.resmlp import ResMLP, ResMLPConfig

    path = tmp_path / "model.safetensors"
    save_base_model(ResMLP(ResMLPConfig(2, 10, 2, 3)), path)
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    tensors["output_layer.weight"] = torch.zeros(4, 10)
    save_file(tensors, str(path), metadata=meta)
    with pytest.raises(DataError, match="model.safetensors: tensors do not fit the architecture"):
        load_base_model(path)


def test_truncated_checkpoint_is_refused(tmp_path):
    from kaepipe.nn.checkpoints import load_base_model, save_base_model
    from kaepipe.nn.resmlp import ResMLP, ResMLPConfig

    path = tmp_path / "model.safetensors"
    save_base_model(ResMLP(ResMLPConfig(2, 10, 2, 3)), path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match="model.safetensors: not a readable safetensors file"):
        load_base_model(path)


# --- fault: SIGKILL in the middle of a training job, then --rerun-incomplete ---------------------

def _snakemake_cmd(workdir: Path, *args: str, mnist_root: Path) -> list[str]:
    """The tiny config up to the accuracy tables."""
    return snakemake_cmd(workdir, "results/tables/accuracy.csv", "--cores", "2", *args, mnist_root=mnist_root)


@pytest.mark.slow
def test_killed_training_job_reruns_to_identical_tables(tiny_run, tmp_path, mnist_root):
    """Kill the whole run (SIGKILL) while a KAE is training; --rerun-incomplete gives the same tables."""
    proc = subprocess.Popen(_snakemake_cmd(tmp_path, mnist_root=mnist_root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    logs = tmp_path / "results" / "logs" / "kae"
    deadline = time.time() + 600
    try:
        while time.time() < deadline:
            if logs.is_dir() and any("epoch" in p.read_text() for p in logs.glob("*.log")):
                break
            if proc.poll() is not None:
                pytest.fail("the run finished before a KAE job could be killed")
            time.sleep(0.2)
        else:
            pytest.fail("no KAE job started in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed = [p for p in logs.glob("*.log") if "epoch" in p.read_text()]
    for log in killed:  # the killed job left no plausible-looking checkpoint behind
        stem = log.stem  # e.g. yinyang_draw0_iso1_seed21
        dataset, draw = stem.split("_draw")[0], stem.split("_draw")[1].split("_iso")[0]
        iso, seed = stem.split("_iso")[1].split("_seed")[0], stem.split("_seed")[1]
        ckpt = tmp_path / "results" / dataset / f"draw{draw}" / "kae" / f"iso{iso}" / f"seed{seed}" / "model.safetensors"
        if ckpt.exists():  # the checkpoint is written last: if it is there, the job had finished
            assert (ckpt.parent / "metrics.json").exists() and (ckpt.parent / "losses.parquet").exists()
    # a killed Snakemake leaves its lock behind: unlock, as a user would, then resume
    subprocess.run(_snakemake_cmd(tmp_path, "--unlock", mnist_root=mnist_root), capture_output=True, text=True, check=True)
    rerun = subprocess.run(_snakemake_cmd(tmp_path, "--rerun-incomplete", mnist_root=mnist_root), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-4000:]
    for table in ("accuracy.csv", "accuracy_long.csv"):
        assert (tmp_path / "results/tables" / table).read_bytes() == (tiny_run / "results/tables" / table).read_bytes()
    assert not list((tmp_path / "results").rglob("*.tmp"))
