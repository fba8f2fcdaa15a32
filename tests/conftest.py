"""Shared fixtures: the repository, the offline MNIST copy and small real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
