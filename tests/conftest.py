"""Shared fixtures: the repository, the offline MNIST copy and small real data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Small models on a small CPU run much faster on one intra-op thread (measured ~40x for width 64).
import torch  # noqa: E402

torch.set_num_threads(1)


def offline_mnist() -> Path:
    """The offline MNIST folder (../shared/data/mnist-offline beside the checkout, or $KAEPIPE_MNIST_ROOT)."""
    env = os.environ.get("KAEPIPE_MNIST_ROOT")
    return Path(env) if env else (REPO.parent / "shared" / "data" / "mnist-offline").resolve()


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    root = offline_mnist()
    if not (root / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.fail(f"offline MNIST copy not found at {root}; set KAEPIPE_MNIST_ROOT")
    return root


@pytest.fixture(scope="session")
def schema_path() -> Path:
    return REPO / "workflow" / "schemas" / "config.schema.yaml"


TINY_CONFIGS = [str(REPO / "config.yaml"), str(REPO / "tests" / "config" / "tiny.yaml")]


def run_snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in `workdir` on the tiny config (offline MNIST)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
           "--configfile", *TINY_CONFIGS, "--config", f"mnist_root={offline_mnist()}", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One full run of the tiny config, shared by every end-to-end test (do not import it elsewhere)."""
    work = tmp_path_factory.mktemp("tiny")
    run_snakemake(work, "--cores", "2")
    return work
