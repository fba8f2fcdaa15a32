"""The authors' checkpoint format: reading, writing, discovery, the accuracy table and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.linalg
import torch
import yaml
from safetensors.torch import save_file

from kaepipe.cli import main
from kaepipe.config import load_yaml, merged
from kaepipe.data import yinyang
from kaepipe.errors import DataError
from kaepipe.evaluate import accuracy_report, surrogate_predictions
from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder
from kaepipe.nn.losses import kae_losses
from kaepipe.nn.resmlp import ResMLP, ResMLPConfig, predict, record_layers
from kaepipe.reference import (
    UnsupportedReferenceError,
    evaluate_reference,
    find_reference_checkpoints,
    load_reference_base,
    load_reference_kae,
    load_reference_preprocessing,
    save_reference_base,
    save_reference_kae,
    summarise,
)
from kaepipe.represent import fit_preprocessing, save_preprocessing
from kaepipe.tensor_io import load_safetensors

KAE_NAME = "dim_20_k_100_loc_1_exponential_autoencoder_yinyang_model_seed_{}.safetensors"
PRE_NAME = "dim_20_k_100_loc_1_exponential_autoencoder_yinyang_preprocessing.safetensors"
SEEDS = (21, 365)
TRAIN, TEST = (300, 42), (200, 40)  # (size, seed) of the Yin-Yang splits used throughout


@torch.no_grad()
def randomise(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Give every parameter and BatchNorm buffer distinct random values, so a swapped key is caught."""
    g = torch.Generator().manual_seed(seed)
    for name, t in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            t.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
        elif name.endswith("running_var"):
            t.copy_(torch.rand(t.shape, generator=g) + 0.5)
        elif name.endswith("koopman.weight"):
            t.copy_(torch.eye(len(t)) + 0.3 * torch.randn(t.shape, generator=g))
        else:
            t.copy_(0.5 * torch.randn(t.shape, generator=g))
    return model.eval()


def make_base(seed: int = 0) -> ResMLP:
    return randomise(ResMLP(ResMLPConfig(in_features=2, width=10, blocks=5, classes=3)), seed)


def make_kae(seed: int, parametrization: str = "exponential") -> KoopmanAutoencoder:
    return randomise(KoopmanAutoencoder(KAEConfig(10, 30, 20, 100, parametrization)), seed)


def leaky(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x > 0, x, 0.01 * x)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny networks: one torch thread is faster than two on a shared CPU (no spin-waiting)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def fit(model: torch.nn.Module, loss_fn, steps: int, seed: int) -> None:
    """A few full-batch Adam steps: enough to make the predictions informative, cheap on the CPU."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """A folder in the reference format: a briefly trained Yin-Yang ResMLP (width 10, 5 blocks), two briefly
    trained KAE seeds and one preprocessing file fitted by kaepipe on the training split."""
    folder = tmp_path_factory.mktemp("release")
    x, y = (torch.as_tensor(a) for a in yinyang(*TRAIN))
    torch.manual_seed(0)
    base = ResMLP(ResMLPConfig(in_features=2, width=10, blocks=5, classes=3))
    fit(base, lambda: torch.nn.functional.cross_entropy(base(x), y), 80, 0)
    save_reference_base(base, folder / "resmlp5_yinyang.safetensors")
    layers = record_layers(base, x)
    transforms = fit_preprocessing([l.numpy() for l in layers], pca_dim=10)
    # like the authors' files, keep only the first and the last layer (means_0 .. norm_0, means_5 .. norm_5)
    save_preprocessing(transforms, folder / "all_layers.tmp")
    tensors, _ = load_safetensors(folder / "all_layers.tmp")
    save_file({k: v for k, v in tensors.items() if k.endswith(("_0", "_5"))}, str(folder / PRE_NAME))
    (folder / "all_layers.tmp").unlink()
    x0, xl = (torch.as_tensor(t.apply(l.numpy()), dtype=torch.float32)
              for t, l in ((transforms[0], layers[0]), (transforms[-1], layers[-1])))
    for seed in SEEDS:
        torch.manual_seed(seed)
        kae = KoopmanAutoencoder(KAEConfig(10, 30, 20, 100))
        fit(kae, lambda kae=kae: kae_losses(kae, x0, xl, 0.0)["total"], 60, seed)
        save_reference_kae(kae, folder / KAE_NAME.format(seed))
    (folder / "notes.txt").write_text("not a checkpoint")
    return folder


# ---------------------------------------------------------------------------------------------
# Base network
# ---------------------------------------------------------------------------------------------

def hand_base_file(model: ResMLP) -> tuple[dict, dict]:
    """The reference tensors and metadata of a ResMLP, spelled out by hand from docs/method.md section 10."""
    tensors = {
        "components.input_layer.components.linear.weight": model.input_layer.linear.weight,
        "components.input_layer.components.linear.bias": model.input_layer.linear.bias,
        "components.output_layer.components.linear.weight": model.output_layer.weight,
        "components.output_layer.components.linear.bias": model.output_layer.bias,
    }
    bn_names = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    for name in bn_names:
        tensors[f"components.input_layer.components.batchnorm.{name}"] = getattr(model.input_layer.bn, name)
    for n, block in enumerate(model.blocks, start=1):
        for j, (fc, bn) in enumerate(((block.fc1, block.bn1), (block.fc2, block.bn2)), start=1):
            pre = f"components.residual_block_{n}.components.fc{j}.components"
            tensors[f"{pre}.linear.weight"] = fc.weight
            tensors[f"{pre}.linear.bias"] = fc.bias
            for name in bn_names:
                tensors[f"{pre}.batchnorm.{name}"] = getattr(bn, name)
    meta = {"in_features": "2", "out_features": "3", "hidden_config": "[10, 10, 10, 10, 10]", "bias": "True",
            "batchnorm": "True", "nonlinearity": "relu", "model_class": "ResMLP"}
    return {k: v.detach().clone().contiguous() for k, v in tensors.items()}, meta


def test_base_hand_written_file_loads_with_identical_outputs(tmp_path):
    model = make_base()
    tensors, meta = hand_base_file(model)
    assert len(tensors) == 4 + 5 + 5 * 2 * 7
    save_file(tensors, str(tmp_path / "resmlp5_yinyang.safetensors"), metadata=meta)
    loaded = load_reference_base(tmp_path / "resmlp5_yinyang.safetensors")
    assert loaded.cfg == model.cfg and not loaded.training
    x = torch.as_tensor(yinyang(200, 7)[0])
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    for a, b in zip(record_layers(loaded, x), record_layers(model, x)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_base_writer_matches_the_hand_written_format(tmp_path):
    model = make_base(3)
    save_reference_base(model, tmp_path / "base.safetensors")
    written, meta = load_safetensors(tmp_path / "base.safetensors")
    hand, hand_meta = hand_base_file(model)
    assert set(written) == set(hand)
    for k in hand:
        torch.testing.assert_close(written[k], hand[k], rtol=0, atol=0)
    assert {k: meta[k] for k in hand_meta} == hand_meta
    reloaded = load_reference_base(tmp_path / "base.safetensors")
    for k, v in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[k], v, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# KAE
# ---------------------------------------------------------------------------------------------

def hand_kae_file(model: KoopmanAutoencoder) -> tuple[dict, dict]:
    """Reference KAE tensors by hand: encoder_0 (q->h), encoder_1 (h->p), decoder_1 (p->h), decoder_0 (h->q)."""
    pairs = {"encoder.encoder_0": model.encoder[0], "encoder.encoder_1": model.encoder[2],
             "decoder.decoder_1": model.decoder[0], "decoder.decoder_0": model.decoder[2]}
    tensors = {}
    for name, layer in pairs.items():
        tensors[f"components.{name}.components.linear.weight"] = layer.weight
        tensors[f"components.{name}.components.linear.bias"] = layer.bias
    tensors["components.koopman_matrix.components.linear.parametrizations.weight.original"] = model.koopman.weight
    meta = {"in_features": "10", "latent_features": "20", "hidden_config": "[30]", "k_steps": "100",
            "nonlinearity": "leaky_relu", "bias": "True", "batchnorm": "False",
            "model_class": "ExponentialKoopmanAutencoder"}
    return {k: v.detach().clone().contiguous() for k, v in tensors.items()}, meta


def reference_forward(tensors: dict, x: torch.Tensor, k: int) -> torch.Tensor:
    """psi(K^k phi(x)) computed from the raw reference tensors as the authors' code does (float64)."""
    t = {key: v.double() for key, v in tensors.items()}

    def lin(name, h):
        return h @ t[f"components.{name}.components.linear.weight"].T + t[f"components.{name}.components.linear.bias"]

    z = lin("encoder.encoder_1", leaky(lin("encoder.encoder_0", x.double())))
    w = t["components.koopman_matrix.components.linear.parametrizations.weight.original"].numpy()
    weight = torch.as_tensor(scipy.linalg.expm(w / k))  # the parametrized layer's weight
    for _ in range(k):
        z = z @ weight.T  # nn.Linear without bias
    return lin("decoder.decoder_0", leaky(lin("decoder.decoder_1", z)))


def test_kae_hand_written_file_loads_and_matches_the_reference_computation(tmp_path):
    model = make_kae(21)
    tensors, meta = hand_kae_file(model)
    save_file(tensors, str(tmp_path / KAE_NAME.format(21)), metadata=meta)
    loaded = load_reference_kae(tmp_path / KAE_NAME.format(21))
    assert loaded.cfg == model.cfg
    x = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    expected = reference_forward(tensors, x, 100)
    torch.testing.assert_close(loaded.double()(x.double()), expected, rtol=1e-9, atol=1e-9)


def test_koopman_step_is_expm_w_over_k_applied_as_z_kt():
    model = make_kae(5).double()
    w = model.koopman.weight.detach().numpy()
    k_step = scipy.linalg.expm(w / 100)
    np.testing.assert_allclose(model.koopman.matrix().detach().numpy(), k_step, rtol=1e-10, atol=1e-12)
    z = np.random.default_rng(0).normal(size=(8, 20))
    by_hand = z.copy()
    for _ in range(100):
        by_hand = by_hand @ k_step.T
    np.testing.assert_allclose(model.advance(torch.as_tensor(z)).detach().numpy(), by_hand, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(model.advance(torch.as_tensor(z), 7).detach().numpy(),
                               z @ np.linalg.matrix_power(k_step, 7).T, rtol=1e-10, atol=1e-12)


def test_eigen_kae_file_loads_and_matches_the_reference_computation(tmp_path):
    """The authors' eigendecomposition class: `_V.weight`, `_D`; K^k = V^-1 expm(diag(D)) V, applied as z K^T."""
    model = make_kae(4)
    tensors, meta = hand_kae_file(model)
    del tensors["components.koopman_matrix.components.linear.parametrizations.weight.original"]
    g = torch.Generator().manual_seed(2)
    tensors["_V.weight"] = torch.eye(20) + 0.3 * torch.randn(20, 20, generator=g)
    tensors["_D"] = torch.linspace(-2.0, 1.0, 20)
    save_file(tensors, str(tmp_path / KAE_NAME.format(4)), metadata=meta)
    loaded = load_reference_kae(tmp_path / KAE_NAME.format(4))
    assert loaded.cfg.parametrization == "eigen"
    t = {key: v.double() for key, v in tensors.items()}
    x = torch.randn(16, 10, generator=g).double()

    def lin(name, h):
        return h @ t[f"components.{name}.components.linear.weight"].T + t[f"components.{name}.components.linear.bias"]

    v = t["_V.weight"]
    d_k = torch.diag(torch.exp(t["_D"]))  # matrix_power(expm(diag(D) / k), k)
    z = lin("encoder.encoder_1", leaky(lin("encoder.encoder_0", x)))
    z = z @ v.T @ d_k @ torch.linalg.inv(v).T  # the reference's koopman_forward
    expected = lin("decoder.decoder_0", leaky(lin("decoder.decoder_1", z)))
    torch.testing.assert_close(loaded.double()(x), expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("parametrization", ["exponential", "linear", "eigen"])
def test_kae_writer_round_trip(tmp_path, parametrization):
    model = make_kae(9, parametrization)
    path = tmp_path / "kae_seed_1.safetensors"
    save_reference_kae(model, path)
    written, meta = load_safetensors(path)
    hand, hand_meta = hand_kae_file(model)
    key = "components.koopman_matrix.components.linear"
    if parametrization == "linear":
        hand[f"{key}.weight"] = hand.pop(f"{key}.parametrizations.weight.original")
        hand_meta["model_class"] = "KoopmanAutoencoder"
    if parametrization == "eigen":
        hand["_V.weight"] = hand.pop(f"{key}.parametrizations.weight.original")
        hand["_D"] = model.koopman.rates.detach().clone()
    assert set(written) == set(hand)
    for k in hand:
        torch.testing.assert_close(written[k], hand[k], rtol=0, atol=0)
    assert {k: meta[k] for k in hand_meta} == hand_meta
    loaded = load_reference_kae(path)
    assert loaded.cfg.parametrization == parametrization
    x = torch.randn(32, 10, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,key", [
    ("base", "components.residual_block_3.components.fc2.components.batchnorm.running_var"),
    ("kae", "components.decoder.decoder_1.components.linear.weight"),
    ("kae", "components.koopman_matrix.components.linear.parametrizations.weight.original"),
])
def test_missing_tensor_names_file_and_key(tmp_path, kind, key):
    tensors, meta = hand_base_file(make_base()) if kind == "base" else hand_kae_file(make_kae(1))
    del tensors[key]
    path = tmp_path / f"{kind}.safetensors"
    save_file(tensors, str(path), metadata=meta)
    loader = load_reference_base if kind == "base" else load_reference_kae
    with pytest.raises(DataError, match="missing tensor") as err:
        loader(path)
    assert key in str(err.value) and str(path) in str(err.value)


def test_shape_and_metadata_mismatch_are_named(tmp_path):
    tensors, meta = hand_base_file(make_base())
    save_file(tensors, str(tmp_path / "a.safetensors"), metadata={**meta, "hidden_config": "[12, 12, 12, 12, 12]"})
    with pytest.raises(DataError, match="components.input_layer.components.linear.weight.*shape"):
        load_reference_base(tmp_path / "a.safetensors")
    save_file(tensors, str(tmp_path / "b.safetensors"), metadata={**meta, "hidden_config": "[10, 10, 10, 10]"})
    with pytest.raises(DataError, match="unexpected tensor.*residual_block_5"):
        load_reference_base(tmp_path / "b.safetensors")
    del meta["out_features"]
    save_file(tensors, str(tmp_path / "c.safetensors"), metadata=meta)
    with pytest.raises(DataError, match="missing metadata key 'out_features'"):
        load_reference_base(tmp_path / "c.safetensors")


def test_active_whitening_is_refused(tmp_path, release):
    tensors, _ = load_safetensors(release / PRE_NAME)
    save_file({**tensors, "wh_alpha_0": torch.tensor(1.0)}, str(tmp_path / "ok.safetensors"))
    assert set(load_reference_preprocessing(tmp_path / "ok.safetensors", [0, 5])) == {0, 5}
    save_file({**tensors, "wh_alpha_0": torch.tensor(0.5)}, str(tmp_path / "wh.safetensors"))
    with pytest.raises(UnsupportedReferenceError, match="wh_alpha_0") as err:
        load_reference_preprocessing(tmp_path / "wh.safetensors")
    assert isinstance(err.value, NotImplementedError)


# ---------------------------------------------------------------------------------------------
# Discovery and the accuracy table
# ---------------------------------------------------------------------------------------------

def test_find_reference_checkpoints(release, tmp_path):
    base, kaes, pres = find_reference_checkpoints(release)
    assert base.name == "resmlp5_yinyang.safetensors"
    assert kaes == {s: release / KAE_NAME.format(s) for s in SEEDS}
    assert pres == {None: release / PRE_NAME}
    # several preprocessing files: each KAE takes the one sharing the longest file-name prefix
    for p in release.glob("*.safetensors"):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / PRE_NAME).rename(tmp_path / "run_b_preprocessing.safetensors")
    (tmp_path / KAE_NAME.format(21)).rename(tmp_path / "run_a_seed_21.safetensors")
    (tmp_path / "run_a_preprocessing.safetensors").write_bytes((release / PRE_NAME).read_bytes())
    (tmp_path / KAE_NAME.format(365)).rename(tmp_path / "run_b_seed_365.safetensors")
    _, kaes, pres = find_reference_checkpoints(tmp_path)
    assert sorted(kaes) == [21, 365]
    assert pres == {21: tmp_path / "run_a_preprocessing.safetensors", 365: tmp_path / "run_b_preprocessing.safetensors"}


def yinyang_ds() -> dict:
    return {"name": "yinyang", "classes": 3, "evaluation": {"paper": "train", "heldout": "test"}}


def test_evaluate_reference_matches_kaepipe_surrogate(release, tmp_path):
    import shutil

    from kaepipe.represent import load_preprocessing

    splits = {"train": yinyang(*TRAIN), "test": yinyang(*TEST)}
    df = evaluate_reference(release, yinyang_ds(), splits, "cpu")
    assert list(df.protocol) == ["paper"] * 3 + ["heldout"] * 3
    assert list(df.model) == ["MLP", "KAE", "KAE"] * 2
    assert df.seed.isna().tolist() == [True, False, False] * 2
    assert {"dataset", "protocol", "split", "seed", "acc", "acc_class_0", "acc_class_1", "acc_class_2"} <= set(df)
    base = load_reference_base(release / "resmlp5_yinyang.safetensors")
    pre = load_preprocessing(release / PRE_NAME, [0, 5])
    for row in df.itertuples():
        x, y = splits[row.split]
        if row.model == "MLP":
            pred = predict(base, torch.as_tensor(x)).numpy()
        else:
            kae = load_reference_kae(release / KAE_NAME.format(row.seed))
            layer0 = record_layers(base, torch.as_tensor(x))[0].numpy()
            pred = surrogate_predictions(kae, base, pre[0], pre[5], layer0)
        report = accuracy_report(pred, y, 3)
        assert row.acc == report["macro"]
        assert [row.acc_class_0, row.acc_class_1, row.acc_class_2] == report["per_class"]
    # informative predictions: the trained MLP beats chance clearly
    assert (df[df.model == "MLP"].acc > 50).all()
    # each KAE row is its own seed's file: with seed 365 replaced by an untrained KAE, only its rows change, by
    # far more than a numeric path moves them (the two briefly trained seeds may tie: they did on an Intel
    # AVX-512 CPU, so comparing their accuracies tested the last bits, not the seed-to-file mapping)
    swapped = tmp_path / "swapped"
    shutil.copytree(release, swapped)
    save_reference_kae(make_kae(365), swapped / KAE_NAME.format(365))
    other = evaluate_reference(swapped, yinyang_ds(), splits, "cpu")
    kept = (df.model == "MLP") | (df.seed == 21)
    assert other[kept].acc.tolist() == df[kept].acc.tolist()
    assert ((other[~kept].acc - df[~kept].acc).abs() > 5).all(), (df, other)


def test_summarise_uses_population_std():
    df = pd.DataFrame({"dataset": "yy", "protocol": "paper", "split": "train", "model": ["MLP", "KAE", "KAE", "KAE"],
                       "seed": pd.array([None, 1, 2, 3], dtype="Int64"), "acc": [99.31, 98.0, 99.0, 100.0]})
    out = summarise(df)
    assert list(out.model) == ["MLP", "KAE"]
    kae = out[out.model == "KAE"].iloc[0]
    assert kae.n_seeds == 3 and kae.acc_mean == pytest.approx(99.0)
    assert kae.acc_std == pytest.approx(np.sqrt(2 / 3))  # ddof 0; ddof 1 would give 1.0
    assert kae.cell == "99.00 (0.82)"
    assert out[out.model == "MLP"].iloc[0].cell == "99.31"


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def tiny_config(tmp_path, repo):
    config = merged(load_yaml(repo / "config.yaml"), {
        "run": ["yinyang"], "device": "cpu",
        "datasets": {"yinyang": {"splits": {"train": {"size": TRAIN[0], "seed": TRAIN[1]},
                                            "test": {"size": TEST[0], "seed": TEST[1]}}}}})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_cli_evaluate_reference(release, tiny_config, tmp_path, capsys):
    out = tmp_path / "results.csv"
    rc = main(["evaluate-reference", str(release), "--dataset", "yinyang", "--config", str(tiny_config),
               "--device", "cpu", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    got = pd.read_csv(out)
    expected = evaluate_reference(release, yinyang_ds(), {"train": yinyang(*TRAIN), "test": yinyang(*TEST)}, "cpu")
    assert len(got) == len(expected) == 6
    keys = ["protocol", "split", "model", "seed"]
    both = expected.astype({"seed": "float"}).merge(got.astype({"seed": "float"}), on=keys, suffixes=("", "_cli"))
    assert len(both) == 6
    np.testing.assert_allclose(both.acc_cli, both.acc, rtol=1e-6)
    for cell in summarise(expected).cell:
        assert cell in printed


def test_cli_version_and_errors(capsys, tmp_path, tiny_config):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and "kaepipe 0.1.0" in capsys.readouterr().out
    rc = main(["evaluate-reference", str(tmp_path / "nowhere"), "--dataset", "yinyang", "--config", str(tiny_config),
               "--device", "cpu"])
    assert rc == 1 and "nowhere" in capsys.readouterr().err
    assert main([]) == 2
