"""Koopman autoencoders: the operator, the decoded path, the losses and training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kaepipe.errors import ConfigError, DataError
from kaepipe.nn.checkpoints import load_kae, save_kae
from kaepipe.nn.isometry import isometry_loss
from kaepipe.nn.kae import KAEConfig, KoopmanAutoencoder, KoopmanOperator
from kaepipe.nn.losses import distance_matrix, iso_loss, kae_losses, kae_metrics
from kaepipe.nn.train import TrainConfig, fit_kae


def model(parametrization: str = "exponential", k: int = 7) -> KoopmanAutoencoder:
    torch.manual_seed(0)
    return KoopmanAutoencoder(KAEConfig(in_features=4, hidden=12, latent=6, k=k, parametrization=parametrization))


def test_operator_w_starts_at_identity_and_kth_power_is_expm_w():
    m = model()
    torch.testing.assert_close(m.koopman.weight.detach(), torch.eye(6))
    torch.testing.assert_close(m.koopman.matrix(), torch.eye(6) * float(np.exp(1 / 7)))  # K = expm(I / k)
    assert torch.equal(model("linear").koopman.matrix(), torch.eye(6))
    with torch.no_grad():
        m.koopman.weight.copy_(torch.randn(6, 6) * 0.3)
    step = m.koopman.matrix()
    torch.testing.assert_close(torch.linalg.matrix_power(step, 7), torch.linalg.matrix_exp(m.koopman.weight),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(m.koopman.power(7), torch.linalg.matrix_exp(m.koopman.weight), atol=1e-6, rtol=1e-5)


def test_advance_uses_row_vector_convention():
    m = model("linear")
    with torch.no_grad():
        m.koopman.weight.copy_(torch.randn(6, 6))
    z = torch.randn(3, 6)
    torch.testing.assert_close(m.advance(z, 1), z @ m.koopman.weight.T)
    torch.testing.assert_close(m.advance(z, 2), z @ m.koopman.weight.T @ m.koopman.weight.T)


@pytest.mark.parametrize("parametrization", ["exponential", "linear"])
def test_path_endpoints(parametrization):
    m = model(parametrization)
    with torch.no_grad():
        m.koopman.weight.add_(torch.randn(6, 6) * 0.05)
    x0 = torch.randn(10, 4)
    path = m.path(x0)
    assert path.shape == (8, 10, 4)
    torch.testing.assert_close(path[0], m.decode(m.encode(x0)))
    torch.testing.assert_close(path[-1], m(x0), atol=1e-5, rtol=1e-5)


def test_kaiming_init_sets_reference_weights_and_biases():
    torch.manual_seed(0)
    m = KoopmanAutoencoder(KAEConfig(200, 400, 300, 5, init="kaiming"))
    first, last = m.encoder[0], m.decoder[-1]
    assert torch.all(first.bias == 0.01) and torch.all(last.bias == 0.01)
    assert abs(float(first.weight.detach().std()) - (2 / 200) ** 0.5) < 0.05 * (2 / 200) ** 0.5
    assert abs(float(last.weight.detach().std()) - (2 / 400) ** 0.5) < 0.05 * (2 / 400) ** 0.5
    torch.testing.assert_close(m.koopman.weight, torch.eye(300))  # the operator still starts at I
    default = KoopmanAutoencoder(KAEConfig(200, 400, 300, 5))
    assert float(default.encoder[0].weight.detach().std()) < 0.7 * (2 / 200) ** 0.5  # PyTorch's is narrower
    with pytest.raises(ConfigError, match="kae.init"):
        KAEConfig(2, 3, 4, 5, init="xavier")


def test_eigen_parametrization_starts_at_e_and_composes():
    torch.manual_seed(0)
    op = KoopmanOperator(6, 4, "eigen")
    torch.testing.assert_close(op.power(4), torch.e * torch.eye(6), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        op.rates.copy_(torch.linspace(-1, 2, 6))
    torch.testing.assert_close(torch.linalg.matrix_power(op.power(1), 4), op.power(4), atol=1e-4, rtol=1e-4)
    eig = torch.linalg.eigvals(op.power(4).double())
    torch.testing.assert_close(eig.real.sort().values, torch.exp(torch.linspace(-1, 2, 6)).double(), atol=1e-4, rtol=1e-4)
    assert eig.imag.abs().max() < 1e-6  # real spectrum only: no rotations
    m = KoopmanAutoencoder(KAEConfig(3, 5, 6, 4, parametrization="eigen"))
    x0 = torch.randn(7, 3)
    torch.testing.assert_close(m.path(x0)[-1], m(x0), atol=1e-5, rtol=1e-5)


def test_latent_stop_gradient_leaves_the_encoder_to_the_other_losses():
    torch.manual_seed(0)
    x0, xl = torch.randn(16, 4), torch.randn(16, 4)
    grads = {}
    for stop in (False, True):
        torch.manual_seed(1)
        m = KoopmanAutoencoder(KAEConfig(4, 8, 5, 3, latent_stop_gradient=stop))
        losses = kae_losses(m, x0, xl, 0.0)
        grads[stop] = torch.autograd.grad(losses["latent"], [m.encoder[0].weight, m.koopman.weight], allow_unused=True)
        assert float(losses["latent"].detach()) > 0
    assert grads[True][0] is None and grads[False][0].abs().sum() > 0  # no latent gradient into phi
    torch.testing.assert_close(grads[True][1], grads[False][1])  # K gets the same one


def test_pairwise_distances_and_finite_gradients_with_duplicates():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0]], requires_grad=True)
    d = distance_matrix(x)
    torch.testing.assert_close(d, torch.tensor([[0.0, 5.0, 5.0], [5.0, 0.0, 0.0], [5.0, 0.0, 0.0]]), atol=1e-5, rtol=0)
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_iso_loss_zero_for_isometry_positive_otherwise():
    torch.manual_seed(1)
    x = torch.randn(40, 5)
    q, _ = torch.linalg.qr(torch.randn(5, 5))
    assert iso_loss(x, x @ q) < 1e-8
    assert iso_loss(x, torch.cat([x, torch.zeros(40, 3)], 1)) < 1e-8  # padding is isometric too
    assert iso_loss(x, 2 * x) > 0.5


@pytest.mark.parametrize(("n", "block"), [(2, 128), (13, 4), (50, 16), (64, 64), (100, 32)])
def test_blocked_iso_loss_matches_autograd_reference(n, block):
    """Value and gradient of the blocked, hand-differentiated isometry term equal the autograd one,
    with coincident inputs (and so coincident codes) and a last block shorter than the others."""
    torch.manual_seed(n)
    m = KoopmanAutoencoder(KAEConfig(5, 8, 7, 3)).double()
    x = torch.randn(n, 5, dtype=torch.float64)
    x[-1] = x[0]
    z = m.encode(x).detach().requires_grad_()
    ref = iso_loss(x, z)
    (g_ref,) = torch.autograd.grad(ref, z)
    val = isometry_loss(x, z)
    (g,) = torch.autograd.grad(val, z)
    torch.testing.assert_close(val, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(g, g_ref, rtol=1e-7, atol=1e-10)
    with torch.no_grad():  # no gradient wanted: same value
        torch.testing.assert_close(isometry_loss(x, z), ref, rtol=1e-9, atol=1e-12)


def test_iso_loss_float32_gradient_is_close_to_float64():
    torch.manual_seed(0)
    x, z = torch.randn(300, 10, dtype=torch.float64), torch.randn(300, 20, dtype=torch.float64)
    z64 = z.clone().requires_grad_()
    (g64,) = torch.autograd.grad(iso_loss(x, z64), z64)
    z32 = z.float().requires_grad_()
    (g32,) = torch.autograd.grad(isometry_loss(x.float(), z32), z32)
    assert float((g32.double() - g64).abs().max() / g64.abs().max()) < 1e-4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_iso_loss_on_cuda_matches_the_cpu():
    """On CUDA (the batched torch path) value and gradient equal the CPU's fused kernel."""
    torch.manual_seed(3)
    x, z = torch.randn(700, 10, dtype=torch.float64), torch.randn(700, 20, dtype=torch.float64)
    x[5] = x[0]
    vals, grads = [], []
    for device in ("cpu", "cuda"):
        zd = z.to(device).requires_grad_()
        val = isometry_loss(x.to(device), zd)
        vals.append(val.cpu())
        grads.append(torch.autograd.grad(val, zd)[0].cpu())
    torch.testing.assert_close(vals[1], vals[0], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-7, atol=1e-10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_fit_kae_on_cuda_lowers_the_loss_like_the_cpu():
    """A short training run on CUDA starts where the CPU's does and ends close to it."""
    g = torch.Generator().manual_seed(0)
    x0, xl = torch.randn(600, 6, generator=g), torch.randn(600, 6, generator=g)
    curves = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        m = KoopmanAutoencoder(KAEConfig(6, 16, 8, 5)).to(device)
        cfg = TrainConfig(epochs=20, batch_size=256, lr=1e-2, optimizer="adamw", weight_decay=5e-4, seed=0)
        curves[device] = fit_kae(m, x0.to(device), xl.to(device), cfg, 1.0)
    cpu, gpu = curves["cpu"]["total"].to_numpy(), curves["cuda"]["total"].to_numpy()
    assert gpu[-1] < 0.8 * gpu[0]
    assert abs(gpu[0] - cpu[0]) < 1e-4 * cpu[0]
    assert abs(gpu[-1] - cpu[-1]) < 0.02 * cpu[-1]


def test_losses_match_their_definitions():
    m = model()
    x0, xl = torch.randn(16, 4), torch.randn(16, 4)
    losses = kae_losses(m, x0, xl, 0.5)
    mse = torch.nn.functional.mse_loss
    torch.testing.assert_close(losses["state"], mse(m(x0), xl))
    torch.testing.assert_close(losses["latent"], mse(m.advance(m.encode(x0)), m.encode(xl)))
    torch.testing.assert_close(losses["recon"], 0.5 * (mse(m.decode(m.encode(x0)), x0) + mse(m.decode(m.encode(xl)), xl)))
    torch.testing.assert_close(losses["iso"], iso_loss(x0, m.encode(x0)) + iso_loss(xl, m.encode(xl)))
    torch.testing.assert_close(losses["total"], losses["recon"] + losses["state"] + losses["latent"] + 0.5 * losses["iso"])


def test_training_fits_a_linear_flow_and_is_deterministic():
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(256, 4, generator=g)
    a = torch.linalg.matrix_exp(torch.randn(4, 4, generator=g) * 0.3)
    xl = x0 @ a.T
    cfg = TrainConfig(epochs=60, batch_size=64, lr=0.01, optimizer="adamw", weight_decay=5e-4, seed=3)

    def run():
        m = model(k=5)
        curve = fit_kae(m, x0, xl, cfg, 0.01)
        return m, curve

    m1, c1 = run()
    m2, c2 = run()
    assert c1["state"].iloc[-1] < 0.2 * c1["state"].iloc[0]
    metrics = kae_metrics(m1, x0, xl, 0.01)
    assert metrics["state_fvu"] < 0.2 and 0 <= metrics["recon_fvu"] < 0.2
    for v1, v2 in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(v1, v2)
    assert c1.equals(c2)


def test_kae_checkpoint_roundtrip_and_shape_check(tmp_path):
    m = model()
    save_kae(m, tmp_path / "kae.safetensors", {"lambda_iso": 0.1, "seed": 21})
    loaded, meta = load_kae(tmp_path / "kae.safetensors")
    assert meta["lambda_iso"] == 0.1 and meta["seed"] == 21
    x = torch.randn(5, 4)
    torch.testing.assert_close(loaded(x), m(x))
    with pytest.raises(DataError, match=r"kae.safetensors: checkpoint does not match the config \(latent: checkpoint 6 vs config 8\)"):
        load_kae(tmp_path / "kae.safetensors", {"hidden": 12, "latent": 8, "k": 7})


def test_eigen_kae_with_reference_options_round_trips_through_a_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = KAEConfig(10, 30, 20, 100, parametrization="eigen", init="kaiming", latent_stop_gradient=True)
    m = KoopmanAutoencoder(cfg)
    with torch.no_grad():
        m.koopman.rates.copy_(torch.linspace(-1, 1, 20))
    save_kae(m, tmp_path / "m.safetensors", {"seed": 1})
    loaded, meta = load_kae(tmp_path / "m.safetensors")
    assert loaded.cfg == cfg and meta["seed"] == 1
    x = torch.randn(5, 10)
    torch.testing.assert_close(loaded(x), m(x), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# The model API: phi, O_t = (K^t)^T for any t, the decoded path, edits, the surrogate through a head
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("parametrization", ["exponential", "linear", "eigen"])
def test_operator_for_any_t_matches_scipy(parametrization):
    import scipy.linalg

    torch.manual_seed(3)
    m = KoopmanAutoencoder(KAEConfig(in_features=4, hidden=8, latent=5, k=6, parametrization=parametrization)).double()
    with torch.no_grad():
        m.koopman.weight.add_(0.2 * torch.randn(5, 5, dtype=torch.float64))
    W = m.koopman.weight.detach().numpy()
    for t in (0, 1, 4, 6, 9):
        if parametrization == "exponential":
            K_t = scipy.linalg.expm(W * t / 6)
        elif parametrization == "linear":
            K_t = np.linalg.matrix_power(W, t)
        else:
            d = m.koopman.rates.detach().numpy()
            K_t = np.linalg.solve(W, np.exp(d * t / 6)[:, None] * W)
        np.testing.assert_allclose(m.operator(t).detach().numpy(), K_t.T, rtol=1e-9, atol=1e-11)
        np.testing.assert_allclose(m.operator_matrix(t), K_t.T, rtol=1e-9, atol=1e-11)
    x = torch.randn(7, 4, dtype=torch.float64)
    z = m.encode(x)
    torch.testing.assert_close(m.advance(z, 4), z @ m.operator(4))
    torch.testing.assert_close(m(x), m.decode(z @ m.operator()))


def test_path_iterates_and_observables_agree():
    torch.manual_seed(0)
    m = KoopmanAutoencoder(KAEConfig(in_features=3, hidden=6, latent=4, k=5)).eval()
    x0 = torch.randn(20, 3)
    with torch.no_grad():
        path = m.path(x0)
        assert path.shape == (6, 20, 3)
        for t in range(6):
            torch.testing.assert_close(path[t], m.decode(m.advance(m.encode(x0), t)))
        torch.testing.assert_close(path[-1], m(x0))
    its = list(m.iterates(x0.numpy(), batch_size=7))
    assert [t for t, _ in its] == list(range(6))
    for t, X in its:
        assert X.dtype == np.float64
        np.testing.assert_allclose(X, path[t].double().numpy(), rtol=1e-5, atol=1e-6)
    Z = m.observables(x0.numpy(), batch_size=6)
    np.testing.assert_allclose(Z, m.encode(x0).detach().double().numpy(), rtol=1e-6, atol=1e-7)


def test_an_edited_kae_is_the_same_model_with_another_operator():
    torch.manual_seed(1)
    m = KoopmanAutoencoder(KAEConfig(in_features=3, hidden=6, latent=4, k=5)).eval()
    new = np.diag([0.5, -1.0, 2.0, 0.0])
    e = m.with_operator(new)
    assert isinstance(e, KoopmanAutoencoder) and e.is_edited and not m.is_edited
    x = torch.randn(9, 3)
    with torch.no_grad():
        torch.testing.assert_close(e(x), m.decode(m.encode(x) @ torch.as_tensor(new, dtype=torch.float32)))
        assert not torch.allclose(e(x), m(x))
    np.testing.assert_array_equal(e.operator_matrix(), new)
    with pytest.raises(ValueError, match="k-step"):
        e.operator(1)
    with pytest.raises(DataError, match="shape"):
        m.with_operator(np.eye(3))


def test_surrogate_logits_through_a_head_match_a_hand_computation():
    from kaepipe.evaluate import NetworkHead, Surrogate
    from kaepipe.represent import fit_preprocessing

    rng = np.random.default_rng(0)
    first, last = rng.normal(size=(40, 6)), rng.normal(size=(40, 5))
    pre = fit_preprocessing([first, last], pca_dim=3)
    torch.manual_seed(2)
    m = KoopmanAutoencoder(KAEConfig(in_features=3, hidden=6, latent=4, k=5)).eval()
    out_layer = torch.nn.Linear(5, 3)
    s = Surrogate(m, NetworkHead(pre[1], out_layer), batch_size=16)
    x0 = pre[0].apply(first)
    with torch.no_grad():
        xl_hat = m(torch.as_tensor(x0, dtype=torch.float32)).double().numpy()
        raw = (xl_hat @ pre[1].align.T * pre[1].scale) @ pre[1].directions + pre[1].mean  # invert by hand
        expect = out_layer(torch.as_tensor(raw, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(s.logits(x0), expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(s.predict(x0), expect.argmax(1))
    Y = m.observables(x0) @ m.operator_matrix()
    np.testing.assert_allclose(s.output_logits(Y), expect, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# The loss-term registry: one definition per term, weights from the config
# ---------------------------------------------------------------------------------------------

def test_loss_weights_scale_the_total_and_a_zero_weight_skips_a_term():
    from kaepipe.errors import ConfigError
    from kaepipe.nn.losses import loss_weights

    torch.manual_seed(0)
    m = KoopmanAutoencoder(KAEConfig(4, 8, 5, 3))
    x0, xl = torch.randn(32, 4), torch.randn(32, 4)
    plain = kae_losses(m, x0, xl, 0.5)
    w = loss_weights({"recon": 2.0, "latent": 0.0}, lambda_iso=0.5)
    assert w == {"recon": 2.0, "state": 1.0, "latent": 0.0, "iso": 0.5}
    weighted = kae_losses(m, x0, xl, w)
    assert torch.isnan(weighted["latent"])
    torch.testing.assert_close(weighted["total"], 2.0 * plain["recon"] + plain["state"] + 0.5 * plain["iso"])
    with pytest.raises(ConfigError, match="unknown loss term 'recon2'"):
        loss_weights({"recon2": 1.0})
    with pytest.raises(ConfigError, match="'state'"):
        loss_weights({"state": float("nan")})


def test_a_registered_term_reaches_training_curves_and_the_total():
    """The seam: a new term is one register_term; training, curves and totals pick it up."""
    from kaepipe.nn import losses

    term = losses.LossTerm("zsize", lambda p, _iso: (p.z0 ** 2).mean(-1).mean(-1), None, "test term")
    losses.register_term(term)
    try:
        torch.manual_seed(0)
        m = KoopmanAutoencoder(KAEConfig(4, 8, 5, 3))
        x0, xl = torch.randn(16, 4), torch.randn(16, 4)
        out = kae_losses(m, x0, xl, {"zsize": 3.0})
        with torch.no_grad():
            zsize = (m.encode(x0) ** 2).mean()
        torch.testing.assert_close(out["zsize"], zsize)
        torch.testing.assert_close(out["total"], out["recon"] + out["state"] + out["latent"] + 3.0 * zsize)
        from kaepipe.nn.train import fit_kae

        curve = fit_kae(m, x0, xl, TrainConfig(epochs=2, batch_size=8, lr=1e-3, optimizer="adamw"),
                        {"zsize": 1.0}, log=lambda *_: None)
        assert "zsize" in curve.columns and np.isfinite(curve["zsize"]).all()
    finally:
        losses.TERMS.pop("zsize")
