"""kaepipe.linalg.expm: a fast differentiable matrix exponential (drop-in for torch.linalg.matrix_exp)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import kaepipe.linalg as L
from kaepipe.linalg import expm

F64 = torch.float64
F32 = torch.float32


def rel(X: torch.Tensor, R: torch.Tensor) -> float:
    """Relative Frobenius error of X against the reference R."""
    return (torch.linalg.matrix_norm(X.double() - R.double()) / torch.linalg.matrix_norm(R.double())).item()


def family(name: str, p: int, seed: int = 0) -> torch.Tensor:
    """The test matrices of the brief, in float64."""
    g = torch.Generator().manual_seed(seed + 1000 * p)
    R = torch.randn(p, p, generator=g, dtype=F64)
    if name == "I+0.1randn":
        return torch.eye(p, dtype=F64) + 0.1 * R
    if name == "3randn/sqrt(p)":
        return 3.0 * R / math.sqrt(p)
    if name == "skew":  # rotation generator, eigenvalues ~ +-3i
        return 3.0 * (R - R.T) / math.sqrt(2 * p)
    if name == "norm50":
        return 50.0 * R / torch.linalg.matrix_norm(R, 1)
    if name == "nonnormal":
        return 0.5 * torch.triu(R, 1) + 0.1 * torch.eye(p, dtype=F64)
    raise KeyError(name)


FAMILIES = ["I+0.1randn", "3randn/sqrt(p)", "skew", "norm50"]


@pytest.fixture(autouse=True)
def one_thread():
    """Small products run faster (and steadier on a shared CPU) single-threaded, as the KAE jobs do."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def close(X: torch.Tensor, Y: torch.Tensor, rtol: float = 1e-12, atol: float = 1e-12, equal_nan: bool = False) -> bool:
    """Same shape and dtype, and allclose (torch.testing's first call costs seconds of imports)."""
    return X.shape == Y.shape and X.dtype == Y.dtype and torch.allclose(X, Y, rtol, atol, equal_nan)


def grad_of(fn, W: torch.Tensor, G: torch.Tensor) -> torch.Tensor:
    W = W.detach().clone().requires_grad_(True)
    fn(W).backward(G)
    return W.grad


# ---------------------------------------------------------------- input checks


@pytest.mark.parametrize("shape", [(), (3,), (3, 4), (2, 3, 4)])
def test_rejects_non_square(shape):
    with pytest.raises(ValueError):
        expm(torch.zeros(shape))


def test_rejects_non_tensor():
    with pytest.raises(TypeError):
        expm(np.eye(3))


def test_fallbacks_match_torch():
    for W in (torch.zeros(0, 0), torch.randn(1, 1), torch.randn(5, 5), torch.randn(2, 0, 6, 6),
              torch.randn(40, 40, dtype=torch.complex64) * 0.1):
        assert close(expm(W), torch.linalg.matrix_exp(W), 0.0, 0.0)


# ---------------------------------------------------------------- the approximants


def test_backward_error_coefficients_and_torch_thresholds():
    """Recompute |h_k| of h_m(x) = log(e^-x T_m(x)) in 60 digits; torch's theta_m give exactly u."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = 60
    n = 50

    def mul(a, b):
        r = [mp.mpf(0)] * n
        for i, x in enumerate(a):
            if x:
                for j in range(n - i):
                    r[i + j] += x * b[j]
        return r

    def lin(coeffs, mats, eye=0.0):
        r = [mp.mpf(0)] * n
        r[0] += mp.mpf(eye)
        for c, M in zip(coeffs, mats):
            for k in range(n):
                r[k] += mp.mpf(c) * M[k]
        return r

    A = [mp.mpf(0), mp.mpf(1)] + [mp.mpf(0)] * (n - 2)
    A2 = mul(A, A)
    A3 = mul(A2, A)
    A6 = mul(A3, A3)
    a4 = mul(A2, lin((L._X1, L._X2), (A, A2)))
    t8 = lin((1.0, L._Y2, 1.0), (A, A2, mul(lin((L._X3, 1.0), (A2, a4)), lin((L._X5, L._X6, L._X7), (A, A2, a4),
                                                                            L._X4))), 1.0)
    B = [lin(r[1:], (A, A2, A3), r[0]) for r in L._B12]
    a6 = lin((1.0, 1.0), (B[2], mul(B[3], B[3])))
    t12 = lin((1.0, 1.0), (B[0], mul(lin((1.0, 1.0), (B[1], a6)), a6)))
    B = [lin(r[1:], (A, A2, A3, A6), r[0]) for r in L._B18]
    a9 = lin((1.0, 1.0), (B[3], mul(B[0], B[4])))
    t18 = lin((1.0, 1.0), (B[1], mul(lin((1.0, 1.0), (B[2], a9)), a9)))
    t4 = lin((1.0, 1.0), (A, mul(A2, lin((1 / 6, 1 / 24), (A, A2), 0.5))), 1.0)

    theta32 = {4: 5.116619363445086e-02, 8: 5.800524627688768e-01, 12: 1.461661507209034e00, 18: 3.010066362817634e00}
    theta64 = {4: 3.397168839976962e-04, 8: 4.991228871115323e-02, 12: 2.996158913811580e-01, 18: 1.090863719290036e00}
    for m, t in ((4, t4), (8, t8), (12, t12), (18, t18)):
        err = [t[k] - 1 / mp.factorial(k) for k in range(n)]
        assert max(abs(e) * mp.factorial(k) for k, e in enumerate(err[: m + 1])) < 1e-14  # Taylor to degree m
        q = mul([(-1) ** k / mp.factorial(k) for k in range(n)], err)  # e^-x T(x) - 1
        h, qp = [mp.mpf(0)] * n, q
        for j in range(1, n // (m + 1) + 2):
            h = lin((1.0, (-1) ** (j + 1) / j), (h, qp))
            qp = mul(qp, q)
        ref = np.array([float(abs(x)) for x in h[m + 1: m + 1 + len(L._H[m])]])
        np.testing.assert_allclose(L._H[m], ref, rtol=1e-9, atol=1e-12 * ref.max())
        for th, u in ((theta32[m], 2.0**-24), (theta64[m], 2.0**-53)):
            lb = [k * math.log(th) for k in range(m + 40)]
            assert L._backward_error_bound(m, lb, math.log(th), 0) == pytest.approx(u, rel=2e-3)


def test_never_more_squarings_than_torch_rule(monkeypatch):
    seen = []
    real = L._min_squarings
    monkeypatch.setattr(L, "_min_squarings", lambda *a: seen.append(real(*a)) or seen[-1])
    for name in FAMILIES + ["nonnormal"]:
        for dtype, theta in ((F32, 3.010066362817634), (F64, 1.090863719290036)):
            W = family(name, 64).to(dtype)
            seen.clear()
            expm(W)
            n1 = torch.linalg.matrix_norm(W, 1).item()
            torch_s = max(0, math.ceil(math.log2(n1 / theta)))
            assert all(s <= torch_s for s in seen), (name, dtype, seen, torch_s)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("p", [64, 200])
@pytest.mark.parametrize("name", FAMILIES + ["nonnormal"])
def test_float32_accuracy_vs_torch(name, p):
    W = family(name, p)
    R = torch.linalg.matrix_exp(W)
    err_torch = rel(torch.linalg.matrix_exp(W.float()), R)
    err_ours = rel(expm(W.float()), R)
    assert err_ours <= 2.0 * err_torch + 1e-6, (err_ours, err_torch)
    assert expm(W.float()).dtype == F32


@pytest.mark.parametrize("name", FAMILIES + ["nonnormal"])
def test_small_p_algorithm_float32_and_float64(name):
    """The algorithm itself at p = 20 (the public function hands p < 32 to torch)."""
    W = family(name, 20)
    R = torch.linalg.matrix_exp(W)
    assert rel(L._expm_2d(W.float()), R) <= 2.0 * rel(torch.linalg.matrix_exp(W.float()), R) + 1e-6
    assert rel(L._expm_2d(W), R) < 1e-13


@pytest.mark.parametrize("name", FAMILIES + ["nonnormal"])
def test_float64_matches_scipy(name):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    W = family(name, 48)
    assert rel(expm(W), torch.from_numpy(scipy_linalg.expm(W.numpy()))) < 1e-13


def test_special_matrices():
    p = 40
    eye = torch.eye(p, dtype=F64)
    for c in (0.0, 1.0, -3.0, 25.0):  # multiples of I: exp(c) I exactly (shift path)
        assert close(expm(c * eye), math.exp(c) * eye, rtol=1e-15, atol=0.0)
    N = torch.triu(torch.randn(p, p, dtype=F64), 1)  # nilpotent
    assert close(expm(N), torch.linalg.matrix_exp(N))
    D = torch.diag(torch.linspace(-20, 20, p, dtype=F64))
    assert close(expm(D), torch.diag(torch.exp(torch.diagonal(D))), atol=0.0)
    assert torch.isnan(expm(torch.full((p, p), float("nan")))).all()


def test_degree8_uses_corrected_coefficient():
    """torch 2.13's T8 has x7 = (89 - sqrt 177) / (5040 x3) instead of / (5040 x3^2): float32 error ~5e-6 here."""
    W = 0.5 * torch.ones(40, 40) / 40  # ||W^k||_1 = 0.5^k: degree 8 in float32
    R = torch.linalg.matrix_exp(W.double())
    assert rel(expm(W), R) < 3e-7
    X = 0.5 * torch.eye(4, dtype=F64)
    assert close(L._t8(X, X @ X, 1.0), math.exp(0.5) * torch.eye(4, dtype=F64), rtol=1e-8, atol=0.0)


def test_overflowing_powers_fall_back_to_torch():
    W = 1e25 * torch.randn(40, 40)
    assert close(expm(W), torch.linalg.matrix_exp(W), 0.0, 0.0, equal_nan=True)


def test_batch_dims():
    W = torch.stack([family(n, 36) for n in FAMILIES]).reshape(2, 2, 36, 36)
    assert close(expm(W), torch.linalg.matrix_exp(W))
    Wg = W.clone().requires_grad_(True)
    G = torch.randn_like(W)
    expm(Wg).backward(G)
    assert close(Wg.grad, grad_of(torch.linalg.matrix_exp, W, G), 1e-10, 1e-10)


def _mixed_batch(p: int = 40, dtype=torch.float64) -> torch.Tensor:
    """Members that take every path: degrees 4, 8, 12 and 18 (with 0 and several squarings), the zero
    matrix, the identity shift, a non-finite member and one whose powers overflow."""
    g = torch.Generator().manual_seed(3)
    r = lambda: torch.randn(p, p, generator=g, dtype=dtype) / p**0.5  # noqa: E731
    members = [1e-5 * r(), 0.003 * r(), 0.1 * r(), 0.8 * r(), 60.0 * r(), torch.zeros(p, p, dtype=dtype),
               torch.eye(p, dtype=dtype) + 0.1 * r(), torch.full((p, p), math.inf, dtype=dtype), 1e25 * r()]
    return torch.stack(members)


DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_members_equal_one_at_a_time_exactly(dtype, device):
    """A batch (an ensemble's operators) gives each member exactly what expm gives it alone, value and gradient:
    only the read-back of the norms is shared."""
    W = _mixed_batch(dtype=dtype).to(device)
    batched = expm(W)
    for w, b in zip(W.unbind(0), batched.unbind(0)):
        alone = expm(w)
        assert torch.equal(alone, b) or (alone.isnan().any() and torch.equal(alone.isnan(), b.isnan()))
    finite = W[:7].clone().requires_grad_(True)
    G = torch.randn_like(finite)
    (expm(finite) * G).sum().backward()
    for i in range(7):
        w = W[i].clone().requires_grad_(True)
        (expm(w) * G[i]).sum().backward()
        assert torch.equal(w.grad, finite.grad[i])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_small_batches_give_a_member_the_same_bits_at_any_size(dtype):
    """p < 32 goes to torch, whose batch algorithm differs from its single-matrix one: a member of a batch of
    one (padded) gets exactly what it gets in a batch of five, value and gradient."""
    W = _mixed_batch(p=20, dtype=dtype)[:5]
    G = torch.randn_like(W)
    five = W.clone().requires_grad_(True)
    batched = expm(five)
    (batched * G).sum().backward()
    for i in range(5):
        one = W[i:i + 1].clone().requires_grad_(True)
        value = expm(one)
        (value * G[i:i + 1]).sum().backward()
        assert torch.equal(value[0], batched[i]) and torch.equal(one.grad[0], five.grad[i]), i
    # what the padding avoids: torch alone takes another path for some member
    assert any(not torch.equal(batched[i], torch.linalg.matrix_exp(W[i])) for i in range(5))


@pytest.mark.parametrize("device", DEVICES)
def test_batched_members_read_norms_back_a_few_times_not_per_member(monkeypatch, device):
    """What a GPU waits for: host read-backs (tolist/item) per call, at most 4 however many members."""
    calls = []
    for name in ("tolist", "item"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, _o=original, _n=name: calls.append(_n) or _o(self))
    W = _mixed_batch()[:7].repeat(3, 1, 1).to(device)  # 21 members, every degree
    expm(W)
    assert len(calls) <= 4, calls
    calls.clear()
    for w in W.unbind(0):
        expm(w)
    assert len(calls) >= len(W)  # one matrix at a time: at least one per member


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("scale,degree", [(1e-5, "_t4"), (0.003, "_t8"), (0.1, "_t12"), (0.8, "_t18"),
                                          (10.0, "_t18"), (60.0, "_t18")])
def test_gradcheck_all_degrees(scale, degree, monkeypatch):
    """float64 gradcheck of the algorithm on small p, for each approximant (and 0, 4, 6 squarings)."""
    used = []
    for name in ("_t4", "_t8", "_t12", "_t18"):
        fn = getattr(L, name)
        monkeypatch.setattr(L, name, lambda *a, _fn=fn, _name=name: used.append(_name) or _fn(*a))
    g = torch.Generator().manual_seed(int(scale * 1000))
    W = (scale * torch.randn(6, 6, generator=g, dtype=F64) / 6**0.5 + 0.5 * torch.eye(6, dtype=F64))
    assert torch.autograd.gradcheck(L._expm_2d, (W.requires_grad_(True),))
    assert set(used) == {degree}


def test_gradcheck_public_p32():
    W = (family("3randn/sqrt(p)", 32) + torch.eye(32, dtype=F64)).requires_grad_(True)
    assert torch.autograd.gradcheck(expm, (W,), fast_mode=True)


@pytest.mark.parametrize("name", FAMILIES)
def test_float32_gradient_p64(name):
    p = 64
    W = family(name, p)
    G = torch.randn(p, p, dtype=F64, generator=torch.Generator().manual_seed(7))
    ref = grad_of(torch.linalg.matrix_exp, W, G)  # torch's gradient, float64
    ours = grad_of(expm, W.float(), G.float())
    theirs = grad_of(torch.linalg.matrix_exp, W.float(), G.float())
    assert rel(ours, ref) < 3e-6
    assert rel(ours, theirs) < 2.0 * rel(theirs, ref) + 3e-6
    assert rel(grad_of(expm, W, G), ref) < 1e-12


def test_float64_gradient_matches_scipy_frechet():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    W, G = family("nonnormal", 48), family("3randn/sqrt(p)", 48, seed=3)
    L_ref = scipy_linalg.expm_frechet(W.numpy().T, G.numpy(), compute_expm=False)  # grad = L(W^T, G)
    assert rel(grad_of(expm, W, G), torch.from_numpy(L_ref)) < 1e-12


def test_p800_float32_value_and_gradient():
    """The KAE size: value vs torch float64, gradient vs torch float32 and vs the float64 gradient."""
    p = 800
    W = family("I+0.1randn", p)
    G = torch.randn(p, p, dtype=F64, generator=torch.Generator().manual_seed(8))
    W32 = W.float().requires_grad_(True)
    Y = expm(W32)
    Y.backward(G.float())
    ours = W32.grad
    Wt = W.float().requires_grad_(True)
    Yt = torch.linalg.matrix_exp(Wt)
    Yt.backward(G.float())
    R = torch.linalg.matrix_exp(W)
    assert rel(Y.detach(), R) <= 2.0 * rel(Yt.detach(), R) + 1e-6
    ref = grad_of(expm, W, G)  # float64 (validated against torch and scipy at p = 48, 64)
    assert rel(ours, ref) < 3e-6
    assert rel(ours, Wt.grad) < 1e-4  # torch's own float32 gradient error here is ~3e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_cuda():
    W = family("norm50", 128).cuda()
    for dtype in (F32, F64):
        Wd = W.to(dtype).requires_grad_(True)
        G = torch.randn_like(Wd)
        expm(Wd).backward(G)
        tol = 1e-4 if dtype == F32 else 1e-12
        assert close(expm(Wd.detach()).cpu().double(), torch.linalg.matrix_exp(W.cpu()), tol, tol)
        ref = grad_of(torch.linalg.matrix_exp, W.cpu(), G.cpu().double())
        assert rel(Wd.grad.cpu(), ref) < (1e-5 if dtype == F32 else 1e-12)
