"""Shared fixtures: the repository, small MNIST-format data, the optional real offline MNIST copy, the tiny run.

Every test that needs MNIST files reads `mnist_root`: synthetic digits in the official IDX format written
by tests/synthetic_mnist.py, so the suite runs from a fresh clone with nothing beside it. The tests
about the real offline copy (real digits, official checksums) take `real_mnist_root` instead: it is
../shared/data/mnist-offline beside the checkout or $KAEPIPE_MNIST_ROOT, and those tests skip when it is
absent (CI has it and exports its path).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch

from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder
from tests.synthetic_mnist import write_synthetic_mnist

# Small models on a small CPU run much faster on one intra-op thread (measured ~40x for width 64).
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
REAL_MNIST_DEFAULT = REPO.parent / "shared" / "data" / "mnist-offline"


def find_real_mnist() -> Path | None:
    """The real offline MNIST folder: $KAEPIPE_MNIST_ROOT (which must hold the files) or, when unset,
    ../shared/data/mnist-offline beside the checkout if it is there; None otherwise."""
    env = os.environ.get("KAEPIPE_MNIST_ROOT")
    root = Path(env) if env else REAL_MNIST_DEFAULT
    if (root / "t10k-images-idx3-ubyte.gz").is_file():
        return root.resolve()
    if env:
        raise FileNotFoundError(f"KAEPIPE_MNIST_ROOT={env}: no MNIST IDX files there")
    return None


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def mnist_root(tmp_path_factory) -> Path:
    """Synthetic MNIST-format data (1000 training and 500 test digits, MD5SUMS), one folder per session."""
    return write_synthetic_mnist(tmp_path_factory.mktemp("mnist-synthetic"))


@pytest.fixture(scope="session")
def real_mnist_root() -> Path:
    """The real offline MNIST copy; the test skips without it."""
    try:
        root = find_real_mnist()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    if root is None:
        pytest.skip(f"real offline MNIST copy not found ({REAL_MNIST_DEFAULT} or $KAEPIPE_MNIST_ROOT)")
    return root


def identity_kae(p: int) -> KoopmanAutoencoder:
    """A KAE (p features, p observables, hidden 2p, k = 1) whose phi and psi are exactly the identity:
    [I; -I], a LeakyReLU, then [I, -I] / (1 + slope), since LeakyReLU(a) - LeakyReLU(-a) = (1 + slope) a.
    Its operator is K = I (W = 0 in the exponential parametrisation); answers through it are known by hand."""
    kae = KoopmanAutoencoder(KAEConfig(in_features=p, hidden=2 * p, latent=p, k=1))
    eye = torch.eye(p)
    with torch.no_grad():
        for net in (kae.encoder, kae.decoder):
            net[0].weight.copy_(torch.cat([eye, -eye]))
            net[2].weight.copy_(torch.cat([eye, -eye], 1) / (1 + kae.cfg.negative_slope))
            net[0].bias.zero_()
            net[2].bias.zero_()
        kae.koopman.weight.zero_()
    return kae.eval()


@pytest.fixture(scope="session")
def schema_path() -> Path:
    return REPO / "workflow" / "schemas" / "config.schema.yaml"


TINY_CONFIGS = [str(REPO / "config.yaml"), str(REPO / "tests" / "config" / "tiny.yaml")]


def snakemake_cmd(workdir: Path, *args: str, mnist_root: Path, configs: Sequence[str] = TINY_CONFIGS,
                  config: Sequence[str] = ()) -> list[str]:
    """The command that runs the repository's Snakefile in `workdir` on `configs` (the tiny config) with
    MNIST read from `mnist_root`. Targets and options go in `args`; `config` adds KEY=VALUE pairs to
    --config (given once: a second --config would replace the first)."""
    return [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
            *args, "--configfile", *configs, "--config", f"mnist_root={mnist_root}", *config]


def run_snakemake(workdir: Path, *args: str, mnist_root: Path, config: Sequence[str] = (),
                  check: bool = True) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in `workdir` on the tiny config."""
    proc = subprocess.run(snakemake_cmd(workdir, *args, mnist_root=mnist_root, config=config), capture_output=True,
                          text=True, cwd=workdir)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, mnist_root) -> Path:
    """One full run of the tiny config, shared by every end-to-end test (do not import it elsewhere)."""
    work = tmp_path_factory.mktemp("tiny")
    run_snakemake(work, "--cores", "2", mnist_root=mnist_root)
    return work
