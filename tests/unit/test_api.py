"""kaepipe.api.KoopmanAnalysis on a small network trained on Yin-Yang, checked against computations by hand
(the KAE's maps and the network's own modules), scipy's connected components and the pipeline's functions."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from kaepipe.api import KAE_DEFAULTS, KoopmanAnalysis, default_widths, kae_settings
from kaepipe.data import yinyang
from kaepipe.errors import ConfigError, DataError
from kaepipe.evaluate import accuracy_report, surrogate_predictions
from kaepipe.network import NetworkError
from kaepipe.nn.resmlp import ResMLP, ResMLPConfig, record_layers
from kaepipe.nn.train import TrainConfig, seed_all, train_classifier
from tests.toy_networks import Skip

LAYERS = ["block1", "block2", "block3"]


class Net(nn.Module):
    """Three blocks (Linear + ReLU) of widths 32, 32, 16 and a linear output layer."""

    def __init__(self) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Linear(2, 32), nn.ReLU())
        self.block2 = nn.Sequential(nn.Linear(32, 32), nn.ReLU())
        self.block3 = nn.Sequential(nn.Linear(32, 16), nn.ReLU())
        self.out = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.block3(self.block2(self.block1(x))))


@pytest.fixture(scope="module")
def data():
    x, y = yinyang(1000, seed=42)
    xt, yt = yinyang(500, seed=40)
    return x, y, xt, yt


@pytest.fixture(scope="module")
def net(data):
    x, y, _, _ = data
    seed_all(0)
    model = Net()
    train_classifier(model, torch.as_tensor(x), torch.as_tensor(y),
                     TrainConfig(epochs=300, batch_size=100, lr=0.05, clip_grad_norm=1.0))
    return model.eval()


@pytest.fixture(scope="module")
def fitted(net, data):
    x, y, _, _ = data
    return KoopmanAnalysis(net, LAYERS, pca_dim=16, seeds=(0, 1, 2)).fit(x, y)


def by_hand_preprocess(t, raw: np.ndarray) -> np.ndarray:
    """((x - mean) V^T / s) R, written out (docs/method.md section 4.2)."""
    return ((raw.astype(np.float64) - t.mean) @ t.directions.T / t.scale) @ t.align


def by_hand_layers(net: Net, x: np.ndarray) -> list[np.ndarray]:
    """The three blocks' outputs, calling the submodules one after the other."""
    with torch.no_grad():
        h1 = net.block1(torch.as_tensor(x))
        h2 = net.block2(h1)
        h3 = net.block3(h2)
    return [h.numpy() for h in (h1, h2, h3)]


def by_hand_macro(pred: np.ndarray, y: np.ndarray, classes: int = 3) -> float:
    return float(np.mean([100.0 * np.mean(pred[y == c] == c) for c in range(classes)]))


# ---------------------------------------------------------------------------------------------------
# fit and score


def test_fit_attributes(fitted, data):
    _, y, _, _ = data
    assert fitted.n_classes_ == 3 and fitted.layer_widths_ == [32, 32, 16] and fitted.q_ == 16
    assert len(fitted.preprocessing_) == 3 and len(fitted.kaes_) == 3 and len(fitted.loss_curves_) == 3
    assert fitted.kae_config_.in_features == 16
    assert (fitted.kae_config_.hidden, fitted.kae_config_.latent) == (48, 32)  # default_widths(16)
    assert fitted.lambda_iso_ == KAE_DEFAULTS["lambda_iso"] and fitted.train_config_.optimizer == "adamw"
    assert all(len(c) == KAE_DEFAULTS["epochs"] for c in fitted.loss_curves_)
    assert all(m["state_fvu"] < 0.05 for m in fitted.train_metrics_)
    assert fitted.x0_train_.shape == (1000, 16) and fitted.x0_train_.dtype == np.float32
    np.testing.assert_array_equal(fitted.y_train_, y)
    # the KAEs differ by seed
    assert not torch.equal(fitted.kaes_[0].koopman.weight, fitted.kaes_[1].koopman.weight)


def test_surrogate_accuracy_is_within_a_few_points_of_the_network(fitted, data):
    _, _, xt, yt = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "does not reproduce" warning
        df = fitted.score(xt, yt)
    assert list(df["model"]) == ["network", "surrogate", "surrogate", "surrogate", "surrogate mean", "surrogate std"]
    assert list(df["seed"][1:4]) == [0, 1, 2] and df["seed"].isna()[[0, 4, 5]].all()
    net = df.loc[0, "macro"]
    assert net > 95
    assert (abs(df["macro"][1:4] - net) < 3).all()
    sur = df["macro"][1:4].to_numpy()
    assert df.loc[4, "macro"] == pytest.approx(sur.mean()) and df.loc[5, "macro"] == pytest.approx(sur.std())
    assert list(df.columns) == ["model", "seed", "macro", "accuracy", "n", "class_0", "class_1", "class_2"]


def test_score_equals_the_kae_and_head_by_hand(fitted, net, data):
    _, _, xt, yt = data
    df = fitted.score(xt, yt)  # percentages rounded to 6 decimals (accuracy_report)
    pre0, pre_last = fitted.preprocessing_[0], fitted.preprocessing_[-1]
    x0 = torch.as_tensor(by_hand_preprocess(pre0, by_hand_layers(net, xt)[0]), dtype=torch.float32)
    with torch.no_grad():
        assert df.loc[0, "macro"] == pytest.approx(by_hand_macro(net(torch.as_tensor(xt)).argmax(1).numpy(), yt),
                                                   abs=1e-6)
        for i, kae in enumerate(fitted.kaes_):
            xl_hat = kae.decode(kae.advance(kae.encode(x0))).double().numpy()
            raw = (xl_hat @ pre_last.align.T * pre_last.scale) @ pre_last.directions + pre_last.mean
            pred = net.out(torch.as_tensor(raw, dtype=torch.float32)).argmax(1).numpy()
            assert df.loc[1 + i, "macro"] == pytest.approx(by_hand_macro(pred, yt), abs=1e-6)
            assert df.loc[1 + i, "accuracy"] == pytest.approx(100.0 * np.mean(pred == yt), abs=1e-6)


def test_the_dynamics_do_the_work(fitted, data):
    """With the k-step operator replaced by the identity (the autoencoder alone) the surrogate loses most
    of its accuracy: the surrogate's accuracy is the KAE's dynamics, not the aligned first layer."""
    _, _, xt, yt = data
    x0 = fitted.transform(xt, [0])[0]
    eye = np.eye(fitted.kae_config_.latent)
    for i, kae in enumerate(fitted.kaes_):
        trained = accuracy_report(fitted.surrogate(i).predict(x0), yt, 3)["macro"]
        identity = accuracy_report(fitted.surrogate(kae=kae.with_operator(eye)).predict(x0), yt, 3)["macro"]
        assert identity < trained - 20


def test_an_undertrained_kae_is_reported(net, data):
    x, y, xt, yt = data
    ka = KoopmanAnalysis(net, LAYERS, pca_dim=16, seeds=(0,), kae={"epochs": 1, "lr": 1e-6}, tolerance=10)
    ka.fit(x, y)
    with pytest.warns(UserWarning, match=r"the KAE does not reproduce the network: surrogate macro accuracy .* \(seed 0\) "
                                         r"against the network's .*more than 10 points apart.*undertrained"):
        ka.score(xt, yt)


@pytest.mark.filterwarnings("ignore:the KAE does not reproduce the network")  # three epochs: not trained
def test_loader_and_arrays_give_the_same_fit_and_the_global_generators_are_left_alone(net, data):
    x, y, xt, yt = data
    kae = {"epochs": 3}
    state = torch.random.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    a = KoopmanAnalysis(net, LAYERS, pca_dim=16, seeds=(5, 6), kae=kae).fit(x, y)
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    loader = DataLoader(TensorDataset(torch.as_tensor(x), torch.as_tensor(y)), batch_size=128)
    b = KoopmanAnalysis(net, LAYERS, pca_dim=16, seeds=(5, 6), kae=kae).fit(loader)
    c = KoopmanAnalysis(net, LAYERS, pca_dim=16, seeds=(5, 6), kae=kae).fit(TensorDataset(torch.as_tensor(x),
                                                                                      torch.as_tensor(y)))
    for other in (b, c):
        for m1, m2 in zip(a.kaes_, other.kaes_):
            for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
                assert torch.equal(v1, v2), k
    pd.testing.assert_frame_equal(a.score(xt, yt), b.score(DataLoader(TensorDataset(torch.as_tensor(xt),
                                                                                     torch.as_tensor(yt)), batch_size=64)))


def test_the_model_keeps_its_mode_and_inputs_may_come_without_labels(net, fitted, data):
    x, y, xt, _ = data
    net.train()
    try:
        KoopmanAnalysis(net, LAYERS, pca_dim=16, seeds=(0,), kae={"epochs": 1}).fit(x, y)
        assert net.training
    finally:
        net.eval()
    loader = DataLoader(torch.as_tensor(xt), batch_size=100)  # batches of x alone: enough where no label is needed
    for a, b in zip(fitted.transform(loader), fitted.transform(xt)):
        np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(fitted.topology(loader, eps=0.3, points=100), fitted.topology(xt, eps=0.3, points=100))
    with pytest.raises(DataError, match=r"batches must be \(x, y\) pairs, got Tensor"):
        fitted.score(loader)


@pytest.mark.filterwarnings("ignore:the KAE does not reproduce the network")  # five epochs: not trained
def test_the_resmlp_through_the_api_equals_the_pipeline(data):
    """For the paper's network the estimator's surrogate is the pipeline's (kaepipe.evaluate.surrogate_predictions)."""
    x, y, xt, yt = data
    seed_all(0)
    base = ResMLP(ResMLPConfig(in_features=2, width=10, blocks=5, classes=3))
    train_classifier(base, torch.as_tensor(x), torch.as_tensor(y), TrainConfig(epochs=20, batch_size=100, lr=0.05))
    layers = ["input_layer", *(f"blocks.{i}" for i in range(5))]
    ka = KoopmanAnalysis(base, layers, pca_dim=10, seeds=(21,), kae={"epochs": 5}).fit(x, y)
    assert ka.network_.head.head.graph is not None  # found with torch.fx
    reps = [h.numpy() for h in record_layers(base, torch.as_tensor(xt))]
    pred = surrogate_predictions(ka.kaes_[0], base, ka.preprocessing_[0], ka.preprocessing_[-1], reps[0])
    assert ka.score(xt, yt).loc[1, "macro"] == pytest.approx(accuracy_report(pred, yt, 3)["macro"], abs=1e-12)
    for got, raw, t in zip(ka.transform(xt), reps, ka.preprocessing_):
        np.testing.assert_array_equal(got, t.apply(raw))


# ---------------------------------------------------------------------------------------------------
# topology


def test_layer_beta0_equals_scipy_connected_components(fitted, net, data):
    _, _, xt, yt = data
    eps = 0.3
    table, curves = fitted.topology(xt, yt, eps=eps, points=None, curves=True)
    layers = table[table["source"] == "layer"]
    assert list(layers["layer"]) == LAYERS and list(layers["step"]) == [0, 1, 2]
    for raw, t, (_, row) in zip(by_hand_layers(net, xt), fitted.preprocessing_, layers.iterrows()):
        X = by_hand_preprocess(t, raw)
        want = connected_components(cdist(X, X) <= eps, directed=False)[0]
        assert 10 < want < 400  # a scale where the count says something
        assert row["betti0"] == want and row["n"] == 500 and row["eps"] == eps
    assert set(curves["source"]) == {"layer", "kae"}


def test_iterate_beta0_equals_scipy_on_the_path_by_hand(fitted, net, data):
    _, _, xt, _ = data
    eps = 0.3
    table = fitted.topology(xt, eps=eps, points=200, seed=3)
    idx = np.sort(np.random.default_rng(3).choice(500, 200, replace=False))
    x0 = torch.as_tensor(by_hand_preprocess(fitted.preprocessing_[0], by_hand_layers(net, xt[idx])[0]),
                         dtype=torch.float32)
    kae_rows = table[table["source"] == "kae"]
    assert list(kae_rows["seed"].unique()) == [0, 1, 2]
    k = fitted.kae_config_.k
    for i, kae in enumerate(fitted.kaes_):
        rows = kae_rows[kae_rows["seed"] == fitted.seeds[i]]
        assert list(rows["step"]) == list(range(k + 1)) and (rows["n"] == 200).all()
        with torch.no_grad():
            z = kae.encode(x0)
            for t in (0, 1, k // 2, k):
                X = kae.decode(kae.advance(z, t) if t else z).double().numpy()
                want = connected_components(cdist(X, X) <= eps, directed=False)[0]
                assert rows[rows["step"] == t]["betti0"].item() == want


def test_default_eps_is_the_papers_mnist_scale_carried_to_this_fit(fitted, data):
    _, _, xt, _ = data
    scale = math.sqrt(60000 / 1000)  # the paper's 60k-digit fit against our 1000 points, Frobenius 100 both
    assert fitted.default_eps() == {"layers": float(f"{0.166 * scale:.4g}"), "iterates": float(f"{0.14 * scale:.4g}")}
    table = fitted.topology(xt, points=50)
    assert set(table[table["source"] == "layer"]["eps"]) == {fitted.default_eps()["layers"]}
    assert set(table[table["source"] == "kae"]["eps"]) == {fitted.default_eps()["iterates"]}
    assert (fitted.topology(xt, points=50, eps=0.2)["eps"] == 0.2).all()  # one eps given: both


# ---------------------------------------------------------------------------------------------------
# unlearning


def test_region_forgets_the_target_class_on_held_out_data(fitted, data):
    _, _, xt, yt = data
    df = fitted.unlearn(2, xt, yt)
    assert list(df["method"]) == ["paper"] * 3 + ["region"] * 3 and list(df["seed"]) == [0, 1, 2] * 2
    region = df[df["method"] == "region"]
    assert (region["target_before"] > 90).all()
    assert (region["target_after"] < 10).all()
    assert (region["retained_after"] > 85).all() and (region["retained_after"] > region["retained_before"] - 10).all()
    assert region["settings"].iloc[0] == {"targets": "centroid", "reg": 0.3, "strength": 1.0}
    # before equals the unedited surrogate of score; after is the edited KAE's own surrogate
    score = fitted.score(xt, yt)
    np.testing.assert_allclose(df["macro_before"][:3], score["macro"][1:4])
    edited = fitted.edit(2, "region")
    x0 = fitted.transform(xt, [0])[0]
    for i, kae in enumerate(edited):
        assert kae.is_edited
        report = accuracy_report(fitted.surrogate(kae=kae).predict(x0), yt, 3)
        assert region["per_class_after"].iloc[i] == report["per_class"]


def test_unlearn_settings_reach_the_edit(fitted, data):
    _, _, xt, yt = data
    df = fitted.unlearn(2, xt, yt, methods=("paper",), settings={"reg": 0.5})
    assert (df["settings"].map(lambda s: s["reg"]) == 0.5).all()


@pytest.mark.parametrize("bad", [3, -1, 2.5])
def test_a_class_outside_the_network_is_refused(fitted, data, bad):
    _, _, xt, yt = data
    with pytest.raises(DataError, match=r"is not a class of this network: it has 3 classes, 0\.\.2"):
        fitted.unlearn(bad, xt, yt)


# ---------------------------------------------------------------------------------------------------
# errors


def test_a_missing_layer_lists_the_modules(net, data):
    x, y, _, _ = data
    with pytest.raises(NetworkError, match=r"Net has no module named 'block4' \(did you mean 'block3', 'block2', "
                                           r"'block1'\?\); its modules are: block1, block1.0, block1.1, block2, block2.0, "
                                           r"block2.1, block3, block3.0, block3.1, out"):
        KoopmanAnalysis(net, ["block1", "block4"]).fit(x, y)


def test_a_head_that_does_not_fit_the_layer_is_refused(net, data):
    x, y, _, _ = data
    with pytest.raises(NetworkError, match=r"the head \(given\) does not take layer 'block3''s output of shape \(16,\)"):
        KoopmanAnalysis(net, LAYERS, head=nn.Linear(32, 3), pca_dim=16).fit(x, y)
    torch.manual_seed(0)
    with pytest.raises(NetworkError, match=r"the head after 'block3' does not reproduce the network's logits"):
        KoopmanAnalysis(net, LAYERS, head=nn.Linear(16, 3), pca_dim=16).fit(x, y)


class Blocked(nn.Module):
    """Skip's computation with its skip connection inside one module, `block`."""

    class Block(nn.Module):
        def __init__(self, b: nn.Linear) -> None:
            super().__init__()
            self.b = b

        def forward(self, h: torch.Tensor) -> torch.Tensor:
            return torch.relu(self.b(h)) + h

    def __init__(self, model: Skip) -> None:
        super().__init__()
        self.a, self.block, self.out = model.a, self.Block(model.b), model.out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.block(torch.relu(self.a(x))))


def test_a_head_that_cannot_be_cut_must_be_given_and_a_wrong_one_is_refused(data):
    x, y, _, _ = data
    torch.manual_seed(0)
    model = Skip(2, 8, 3).eval()
    with pytest.raises(NetworkError, match=r"after 'b' also reads relu, computed from the input before it \(a skip "
                                           r"connection around the layer\?\); give the head explicitly"):
        KoopmanAnalysis(model, ["a", "b"]).fit(x, y)
    # a head of b's output alone cannot add h back: it does not reproduce the logits, and the error is not swallowed
    with pytest.raises(NetworkError, match="does not reproduce the network's logits"):
        KoopmanAnalysis(model, ["a", "b"], head=lambda hb: model.out(torch.relu(hb))).fit(x, y)
    # the same network with the skip inside the last named module: the head (out) is found
    blocked = Blocked(model)
    with torch.no_grad():
        torch.testing.assert_close(blocked(torch.as_tensor(x)), model(torch.as_tensor(x)), rtol=0, atol=0)
    ka = KoopmanAnalysis(blocked, ["a", "block"], seeds=(0,), kae={"epochs": 1}).fit(x, y)
    assert ka.network_.widths == [8, 8]


def test_first_and_last_layers_of_different_widths_need_pca_dim(net, data):
    x, y, _, _ = data
    with pytest.raises(ConfigError, match=r"first layer 'block1' \(width 32\) is preprocessed to 32 dimensions and "
                                          r"the last layer 'block3' \(width 16\) to 16.*set pca_dim <= 16"):
        KoopmanAnalysis(net, LAYERS).fit(x, y)


def test_labels_and_inputs_are_checked(net, fitted, data):
    x, y, xt, yt = data
    with pytest.raises(DataError, match=r"training labels \[3\] are outside the network's classes 0\.\.2"):
        KoopmanAnalysis(net, LAYERS, pca_dim=16).fit(x, np.where(y == 2, 3, y))
    with pytest.raises(DataError, match="give the labels y"):
        fitted.score(xt)
    with pytest.raises(DataError, match=r"labels must be one integer per sample, shape \(500,\)"):
        fitted.score(xt, yt[:10])
    with pytest.raises(DataError, match="y must be None when X is a DataLoader"):
        fitted.score(DataLoader(TensorDataset(torch.as_tensor(xt), torch.as_tensor(yt))), yt)
    with pytest.raises(DataError, match="X must be an array, a tensor, a DataLoader or a Dataset"):
        fitted.score(42)
    with pytest.raises(RuntimeError, match="not fitted yet"):
        KoopmanAnalysis(net, LAYERS).score(xt, yt)


def test_kae_settings():
    assert default_widths(10) == {"hidden": 30, "latent": 20}  # the paper's Yin-Yang KAE
    assert default_widths(784) == {"hidden": 1000, "latent": 800}  # and its MNIST KAE
    s = kae_settings({"epochs": 7, "hidden": 5}, 10)
    assert s["epochs"] == 7 and s["hidden"] == 5 and s["latent"] == 20 and s["lr"] == KAE_DEFAULTS["lr"]
    with pytest.raises(ConfigError, match=r"kae: unknown key\(s\) \['epoch'\]"):
        kae_settings({"epoch": 3}, 10)
    with pytest.raises(ConfigError, match="one isometry weight"):
        kae_settings({"lambda_iso": [1.0, 0.0]}, 10)
    with pytest.raises(ConfigError, match=r"kae: unknown key\(s\) \['hiden'\]"):
        KoopmanAnalysis(nn.Linear(2, 2), ["a", "b"], kae={"hiden": 3})
    with pytest.raises(ConfigError, match="seeds repeated"):
        KoopmanAnalysis(nn.Linear(2, 2), ["a", "b"], seeds=(1, 1))
