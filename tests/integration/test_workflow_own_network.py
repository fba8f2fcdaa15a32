"""The worked example "your own network" end to end, reduced: config/fashion_cnn.yaml's SmallCNN on synthetic
digits in the Fashion-MNIST file format (tests/config/fashion_cnn_tiny.yaml). Every number checked here is
recomputed from the files without kaepipe's network wrapper: the CNN's submodules called by hand."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from kaepipe.data import read_split
from kaepipe.evaluate import accuracy_report
from kaepipe.nn.checkpoints import load_kae
from kaepipe.nn.cnn import SmallCNN
from kaepipe.represent import load_preprocessing, load_reps
from kaepipe.stages import paths as P
from tests.conftest import REPO, snakemake_cmd

pytestmark = pytest.mark.slow

CONFIGS = [str(REPO / "config.yaml"), str(REPO / "config" / "fashion_cnn.yaml"),
           str(REPO / "tests" / "config" / "fashion_cnn_tiny.yaml")]
DS = "fashion_cnn"
KWARGS = {"channels": [8, 16], "hidden": [128, 128], "classes": 10}


def run(workdir: Path, root: Path, *args: str, overlays: tuple[str, ...] = ()) -> None:
    cmd = snakemake_cmd(workdir, "--cores", "2", *args, mnist_root=root, configs=[*CONFIGS, *overlays],
                        config=(f"fashion_mnist_root={root}",))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    assert proc.returncode == 0, f"snakemake failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, mnist_root) -> Path:
    work = tmp_path_factory.mktemp("cnn")
    run(work, mnist_root)
    return work


def by_hand(model: SmallCNN, x: np.ndarray) -> list[np.ndarray]:
    """block2, fc1 and fc2 outputs (flattened), calling the CNN's submodules one after another."""
    with torch.no_grad():
        h = torch.as_tensor(x).reshape(-1, 1, 28, 28)
        b2 = model.block2(model.block1(h))
        f1 = model.fc1(b2)
        f2 = model.fc2(f1)
    return [b2.flatten(1).numpy(), f1.numpy(), f2.numpy()]


def test_the_cnn_is_analysed_like_the_resmlp(cnn_run):
    res = cnn_run / "results"
    model = SmallCNN(**KWARGS)
    model.load_state_dict(load_file(res / DS / "draw0/base/model.safetensors"))
    model.eval()
    metrics = json.loads((res / DS / "draw0/base/metrics.json").read_text())
    assert metrics["layers"] == ["block2", "fc1", "fc2"] and metrics["widths"] == [784, 128, 128]
    assert metrics["trained"] is True

    # the representations are the named modules' outputs on the test split
    x, y = read_split(res / DS / "data/test.parquet")
    layers, labels = load_reps(res / DS / "draw0/reps/test.pt")
    np.testing.assert_array_equal(labels, y)
    for saved, ours in zip(layers, by_hand(model, x), strict=True):
        np.testing.assert_allclose(saved, ours, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        logits = model(torch.as_tensor(x)).numpy()
    assert accuracy_report(logits.argmax(1), y, 10)["macro"] == pytest.approx(
        metrics["protocols"]["heldout"]["macro"], abs=1e-6)

    # training representations: the configured stratified subset of represent.train_size
    _, train_labels = load_reps(res / DS / "draw0/reps/train.pt")
    assert len(train_labels) == 500 and np.bincount(train_labels, minlength=10).min() >= 45

    # surrogate accuracy: L0 -> preprocess -> KAE -> undo -> the CNN's `out`, by hand
    pre = load_preprocessing(res / DS / "draw0/reps/preprocessing.safetensors", [0, 2])
    for seed in (21, 365):
        kae, _ = load_kae(res / DS / f"draw0/kae/iso0.001/seed{seed}/model.safetensors")
        with torch.no_grad():
            x_hat = kae.decode(kae.advance(kae.encode(torch.as_tensor(pre[0].apply(layers[0]), dtype=torch.float32))))
            pred = model.out(torch.as_tensor(pre[2].invert(x_hat.double().numpy()), dtype=torch.float32)).argmax(1)
        acc = json.loads((res / DS / f"draw0/kae/iso0.001/seed{seed}/accuracy.json").read_text())
        ours = accuracy_report(pred.numpy(), y, 10)
        assert abs(ours["macro"] - acc["protocols"]["heldout"]["macro"]) <= 100.0 / len(y) + 1e-9

    # every later table has the example's rows: accuracy, topology per layer and iterate, editing
    accuracy = pd.read_csv(res / "tables/accuracy.csv")
    assert set(accuracy[accuracy.dataset == DS].model) == {"MLP", "KAE"}
    topo = pd.read_csv(res / "tables/topology.csv")
    assert sorted(topo[(topo.dataset == DS) & (topo.source == "mlp")].step.unique()) == [0, 1, 2]
    assert sorted(topo[(topo.dataset == DS) & (topo.source == "kae")].step.unique()) == list(range(5))  # k = 4
    edits = pd.read_csv(res / "tables/editing.csv")
    region = edits[(edits.dataset == DS) & (edits.method == "region") & (edits.protocol == "heldout")]
    assert len(region) == 1 and region.target_after_mean.iloc[0] < region.target_before_mean.iloc[0]
    summary = (res / "summary.md").read_text()
    assert "fashion_cnn" in summary
    for fig in ("layers", "path", "topology", "editing"):
        assert (res / "figures" / f"{fig}_{DS}.png").stat().st_size > 1000


def test_a_trained_network_is_taken_from_its_weights_file(cnn_run, tmp_path, mnist_root):
    """base.weights: a plain safetensors state dict (as a user saves theirs) replaces training; the same
    weights give the same network, accuracy and representations."""
    res = cnn_run / "results"
    weights = tmp_path / "mine.safetensors"
    save_file(load_file(res / DS / "draw0/base/model.safetensors"), weights)  # without kaepipe's metadata
    work = tmp_path / "w"
    work.mkdir()
    overlay = tmp_path / "weights.yaml"
    overlay.write_text(f"datasets:\n  {DS}:\n    base:\n      weights: {weights}\n")
    run(work, mnist_root, P.fill(P.REPS, dataset=DS, draw=0, split="test"), overlays=(str(overlay),))
    ours = json.loads((work / "results" / DS / "draw0/base/metrics.json").read_text())
    theirs = json.loads((res / DS / "draw0/base/metrics.json").read_text())
    assert ours["trained"] is False
    assert ours["protocols"] == theirs["protocols"]
    a, _ = load_reps(work / "results" / DS / "draw0/reps/test.pt")
    b, _ = load_reps(res / DS / "draw0/reps/test.pt")
    for u, v in zip(a, b, strict=True):
        np.testing.assert_array_equal(u, v)
