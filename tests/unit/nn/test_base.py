"""kaepipe.nn.base and the base stage with your own network or given weights: built, saved, loaded and checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from kaepipe.config import config_subset
from kaepipe.data import to_frame
from kaepipe.errors import ConfigError, DataError
from kaepipe.io import write_parquet
from kaepipe.network import NetworkError
from kaepipe.nn.base import build_base, load_base, save_base
from kaepipe.nn.checkpoints import model_config, save_base_model
from kaepipe.nn.cnn import SmallCNN
from kaepipe.nn.resmlp import ResMLP
from kaepipe.reference import save_reference_base
from kaepipe.represent import fit_preprocessing, load_reps, reps_frame
from kaepipe.settings import default_eps
from kaepipe.stages.base import run_base_training
from kaepipe.stages.represent import check_kae_dims, layers_payload, recorded_subset
from kaepipe.tensor_io import save_torch

CNN = {"constructor": "kaepipe.nn.cnn:SmallCNN", "kwargs": {"channels": [4, 8], "hidden": [16, 12], "classes": 3},
       "layers": ["block2", "fc1", "fc2"]}
TRAIN = {"epochs": 2, "batch_size": 32, "lr": 0.01, "optimizer": "adamw", "schedule": "constant", "seed": 0}


def cnn_ds(**base) -> dict:
    return {"name": "toy", "classes": 3, "evaluation": {"paper": "test", "heldout": "test"},
            "splits": {"train": {"size": None}, "test": {"size": None}}, "base": {"network": CNN, **TRAIN, **base}}


def resmlp_ds(**base) -> dict:
    return {"name": "toy", "classes": 3, "evaluation": {"paper": "train", "heldout": "test"},
            "splits": {"train": {"size": None}, "test": {"size": None}},
            "base": {"width": 6, "blocks": 2, **TRAIN, **base}}


def splits(tmp_path, d: int, n: int = 96) -> dict[str, str]:
    rng = np.random.default_rng(0)
    out = {}
    for split in ("train", "test"):
        y = np.arange(n) % 3
        x = (rng.normal(size=(n, d)) + y[:, None]).astype(np.float32)
        out[split] = str(tmp_path / f"{split}.parquet")
        write_parquet(to_frame(x, y), out[split])
    return out


def run(tmp_path, ds, split_paths) -> tuple[dict, dict[str, str]]:
    out = {k: str(tmp_path / f"{k}.{ext}") for k, ext in (("model", "safetensors"), ("curve", "parquet"),
                                                             ("metrics", "json"))}
    m = run_base_training(ds, split_paths, out["model"], out["curve"], out["metrics"], torch.device("cpu"),
                          log=lambda _m: None)
    return m, out


def test_own_network_trains_saves_and_loads(tmp_path):
    ds = cnn_ds()
    metrics, out = run(tmp_path, ds, splits(tmp_path, 784))
    assert metrics["layers"] == CNN["layers"] and metrics["widths"] == [8 * 7 * 7, 16, 12] and metrics["trained"]
    net = load_base(out["model"], ds)
    x = torch.randn(5, 784)
    with torch.no_grad():  # the loaded head after fc2 is the CNN's `out`, called by hand
        h = net.module.fc2(net.module.fc1(net.module.block2(net.module.block1(x.reshape(-1, 1, 28, 28)))))
        torch.testing.assert_close(net.head(h), net.module.out(h))
        torch.testing.assert_close(net.head(h), net.module(x))
    assert [a.shape[1] for a in net.record(x)] == [392, 16, 12]


def test_checkpoint_of_another_network_is_refused(tmp_path):
    ds = cnn_ds()
    _, out = run(tmp_path, ds, splits(tmp_path, 784))
    other = cnn_ds()
    other["base"]["network"] = {**CNN, "layers": ["block1", "fc2"]}
    with pytest.raises(DataError, match=r"model\.safetensors: checkpoint is not of the configured network \(layers"):
        load_base(out["model"], other)
    with pytest.raises(DataError, match="names the ResMLP"):
        load_base(out["model"], resmlp_ds())


def test_weights_file_replaces_training_and_is_checked(tmp_path):
    torch.manual_seed(1)
    model = SmallCNN(**CNN["kwargs"])
    weights = tmp_path / "mine.safetensors"
    save_file(model.state_dict(), weights)
    paths = splits(tmp_path, 784)
    metrics, out = run(tmp_path, cnn_ds(weights=str(weights)), paths)
    assert metrics["trained"] is False
    loaded = load_base(out["model"], cnn_ds())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.module.state_dict()[k], v, rtol=0, atol=0)
    wrong = tmp_path / "wrong.safetensors"
    save_file(SmallCNN(channels=(4, 8), hidden=(16, 10), classes=3).state_dict(), wrong)
    with pytest.raises(NetworkError, match=r"wrong\.safetensors: weights do not fit SmallCNN: tensor 'fc2\.0\.weight' has shape \(10, 16\), the network's is \(12, 16\)"):
        run(tmp_path, cnn_ds(weights=str(wrong)), paths)
    pt = tmp_path / "mine.pt"
    torch.save(model.state_dict(), pt)
    with pytest.raises(NetworkError, match=r"mine\.pt: network weights must be a \.safetensors file"):
        run(tmp_path, cnn_ds(weights=str(pt)), paths)


def test_the_authors_reference_network_starts_the_pipeline(tmp_path):
    """base.weights in the reference format (the paper's released Yin-Yang ResMLP): loaded, not trained,
    saved as kaepipe's checkpoint with the same tensors."""
    ds = resmlp_ds()
    torch.manual_seed(3)
    model = ResMLP(model_config(ds, 2)).eval()
    ref = tmp_path / "resmlp2_toy.safetensors"
    save_reference_base(model, ref)
    metrics, out = run(tmp_path, resmlp_ds(weights=str(ref)), splits(tmp_path, 2))
    assert metrics["trained"] is False
    loaded = load_base(out["model"], ds)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.module.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(DataError, match="takes 2 features and has 3 classes; the dataset has 5 and 3"):
        run(tmp_path, resmlp_ds(weights=str(ref)), splits(tmp_path, 5))


def test_resmlp_checkpoint_is_written_as_before(tmp_path):
    """save_base of a ResMLP writes the same bytes as the ResMLP-only writer it replaces."""
    ds = resmlp_ds()
    torch.manual_seed(0)
    model = ResMLP(model_config(ds, 2)).eval()
    net = load_base_after_save(tmp_path, model)
    save_base(net, ds, tmp_path / "a.safetensors", {"dataset": "toy"})
    save_base_model(model, tmp_path / "b.safetensors", {"dataset": "toy"})
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()


def load_base_after_save(tmp_path, model):
    save_base_model(model, tmp_path / "m.safetensors")
    return load_base(tmp_path / "m.safetensors", resmlp_ds())


def test_build_base_draws_from_torchs_generator():
    torch.manual_seed(5)
    a = build_base(cnn_ds(), 784)
    torch.manual_seed(5)
    b = build_base(cnn_ds(), 784)
    for (k, u), v in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        torch.testing.assert_close(u, v, msg=k)


def test_reps_of_different_widths_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    layers = [rng.normal(size=(7, w)).astype(np.float32) for w in (5, 3, 2)]
    labels = np.arange(7) % 3
    save_torch({"layers": layers_payload(layers), "labels": torch.from_numpy(labels)}, tmp_path / "r.pt")
    back, back_labels = load_reps(tmp_path / "r.pt")
    for a, b in zip(layers, back, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(back_labels, labels)
    df = reps_frame(layers, labels)
    assert list(df.columns[-5:]) == ["h0", "h1", "h2", "h3", "h4"]
    narrow = df[df.layer == 2]
    np.testing.assert_array_equal(narrow[["h0", "h1"]].to_numpy(), layers[2])
    assert narrow[["h2", "h3", "h4"]].isna().all().all()
    assert isinstance(layers_payload([layers[0], layers[0]]), torch.Tensor)  # equal widths: one tensor


def test_first_and_last_layer_must_preprocess_to_one_dimension():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match=r"'block2' and the last layer 'fc2' preprocess to 5 and 2 dimensions.*"
                                          r"set preprocess\.pca_dim to at most 2"):
        check_kae_dims(fit_preprocessing([rng.normal(size=(20, 5)), rng.normal(size=(20, 2))]), ["block2", "fc2"])
    pre = fit_preprocessing([rng.normal(size=(20, 5)), rng.normal(size=(20, 3)), rng.normal(size=(20, 2))], pca_dim=2)
    assert [t.directions.shape for t in pre] == [(2, 5), (2, 3), (2, 2)]


def test_recorded_subset_is_stratified_and_only_for_training():
    labels = np.repeat(np.arange(4), 50)
    keep = recorded_subset({"represent": {"train_size": 40, "seed": 1}}, "train", labels)
    assert len(keep) == 40 and np.all(np.diff(keep) > 0)
    assert np.bincount(labels[keep]).tolist() == [10, 10, 10, 10]
    assert len(recorded_subset({"represent": {"train_size": 40}}, "test", labels)) == 200
    assert len(recorded_subset({}, "train", labels)) == 200
    assert json.dumps(recorded_subset({"represent": {"train_size": 500}}, "train", labels).tolist()) == json.dumps(
        list(range(200)))


def test_default_eps_follows_the_recorded_training_points():
    """The preprocessing is fitted on represent.train_size points: the derived eps is the paper's MNIST eps
    (0.166 / 0.14 for 60k digits) at the RMS radius of that many points: x sqrt(60000 / 10000), the value
    config.yaml gives MNIST's 10k digits by hand (0.4066 / 0.3429)."""
    ds = {"name": "fashion_cnn", "source": "fashion_mnist", "splits": {"train": {"size": None}},
          "preprocess": {"frobenius": 100}, "represent": {"train_size": 10000}}
    assert default_eps(ds) == {"layers": 0.4066, "iterates": 0.3429}
    assert default_eps({**ds, "represent": {}}) == {"layers": 0.166, "iterates": 0.14}
    sub = config_subset({**ds, "topology": {}, "kae": {}}, ("topology",))
    assert sub["represent"] == {"train_size": 10000}  # a rule measuring topology reruns when it changes
