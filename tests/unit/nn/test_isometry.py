"""The batched isometry term: value and gradient against the autograd reference, member by member."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kaepipe.errors import DataError
from kaepipe.nn.isometry import isometry_loss
from kaepipe.nn.losses import iso_loss

METHODS = ["numba", "torch"]


def reference(x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values (M,) and gradients (M, n, p) of kaepipe.nn.losses.iso_loss, one member at a time, in float64."""
    vals, grads = [], []
    for xk, zk in zip(x.double(), z.double()):
        zk = zk.clone().requires_grad_()
        val = iso_loss(xk, zk)
        vals.append(val.detach())
        grads.append(torch.autograd.grad(val, zk)[0])
    return torch.stack(vals), torch.stack(grads)


def batched(x: torch.Tensor, z: torch.Tensor, method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    z = z.clone().requires_grad_()
    vals = isometry_loss(x, z, method)
    return vals.detach(), torch.autograd.grad(vals.sum(), z)[0]


def data(m: int, n: int, q: int = 5, p: int = 7, seed: int = 0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, n, q, generator=g, dtype=dtype), torch.randn(m, n, p, generator=g, dtype=dtype)


def close(got: tuple, want: tuple, rtol: float = 1e-10) -> None:
    """Values to rtol; gradients to rtol of the largest gradient entry of each member."""
    torch.testing.assert_close(got[0], want[0], rtol=rtol, atol=1e-14)
    scale = want[1].abs().amax((1, 2), keepdim=True).clamp_min(1e-300)
    torch.testing.assert_close(got[1] / scale, want[1] / scale, rtol=0, atol=rtol)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("m", "n"), [(1, 2), (3, 2), (1, 3), (3, 17), (1, 64), (3, 130)])
def test_matches_autograd_reference_in_float64(method, m, n):
    x, z = data(m, n, seed=n)
    close(batched(x, z, method), reference(x, z))


@pytest.mark.parametrize("method", METHODS)
def test_matches_autograd_reference_at_batch_1024(method):
    x, z = data(2, 1024, q=10, p=20, seed=1)
    x[1, 7] = x[1, 900]  # one coincident pair of inputs
    close(batched(x, z, method), reference(x, z))


@pytest.mark.parametrize("method", METHODS)
def test_duplicate_rows(method):
    """Coincident points: in both spaces (adds nothing), in x only, and a member whose points all coincide."""
    x, z = data(3, 40, seed=5)
    x[0, 10:20] = x[0, 3]
    z[0, 10:20] = z[0, 3]  # duplicated points: same input, same code
    x[1, 30:] = x[1, 0]  # coincident inputs, distinct codes
    x[2], z[2] = x[2, :1].expand(40, -1), z[2, :1].expand(40, -1)  # one point forty times
    got = batched(x, z, method)
    close(got, reference(x, z))
    assert got[0][2] == 0 and torch.all(got[1][2] == 0)


@pytest.mark.parametrize("method", METHODS)
def test_coincident_codes_of_distinct_inputs(method):
    """A collapsed encoder: c = 1 - dx / sqrt(1e-12) is about -1e6 dx there, against a zero direction.
    (The reference's own Gram-form rounding is ~1e-10 of the gradient then.)"""
    x, z = data(2, 50, seed=12)
    z[:, 10:20] = z[:, 3:4]
    close(batched(x, z, method), reference(x, z), rtol=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_one_point_is_zero(method):
    x, z = data(2, 1)
    vals, grads = batched(x, z, method)
    assert torch.all(vals == 0) and torch.all(grads == 0)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_property_small_shapes(draw):
    """Any small shape on a half-integer grid (many coincident points). Coincident codes sit 1e-6 apart
    (sqrt of the 1e-12 floor), where the gradient's terms are ill-conditioned: 1e-7 of the largest entry."""
    m, n = draw.draw(st.integers(1, 3)), draw.draw(st.integers(1, 40))
    q, p = draw.draw(st.integers(1, 6)), draw.draw(st.integers(1, 7))
    seed = draw.draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(rng.integers(-4, 5, (m, n, q)) / 2.0)
    z = torch.from_numpy(rng.integers(-4, 5, (m, n, p)) / 2.0)
    want = reference(x, z)
    for method in METHODS:
        close(batched(x, z, method), want, rtol=1e-7)


@pytest.mark.parametrize("method", METHODS)
def test_float32_is_close_to_float64(method):
    x, z = data(2, 300, q=10, p=20, seed=2)
    v32, g32 = batched(x.float(), z.float(), method)
    assert v32.dtype == torch.float32 and g32.dtype == torch.float32
    v64, g64 = reference(x, z)
    assert float(((v32.double() - v64).abs() / v64).max()) < 1e-5
    assert float(((g32.double() - g64).abs().amax((1, 2)) / g64.abs().amax((1, 2))).max()) < 1e-4


@pytest.mark.parametrize("method", METHODS)
def test_permuting_members_permutes_the_results(method):
    x, z = data(4, 50, seed=3, dtype=torch.float32)
    vals, grads = batched(x, z, method)
    perm = torch.tensor([2, 0, 3, 1])
    pv, pg = batched(x[perm], z[perm], method)
    torch.testing.assert_close(pv, vals[perm], rtol=1e-6, atol=0)
    torch.testing.assert_close(pg, grads[perm], rtol=1e-5, atol=1e-9)


def test_paths_agree_in_float32():
    x, z = data(3, 200, q=10, p=20, seed=4, dtype=torch.float32)
    a, b = batched(x, z, "numba"), batched(x, z, "torch")
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=0)
    torch.testing.assert_close(a[1], b[1], rtol=1e-3, atol=1e-5 * float(b[1].abs().max()))


def test_single_member_2d_inputs_and_weighted_backward():
    x, z = data(3, 30, seed=6)
    vals, grads = batched(x, z)
    z1 = z[1].clone().requires_grad_()
    one = isometry_loss(x[1], z1)
    assert one.shape == ()
    torch.testing.assert_close(one.detach(), vals[1], rtol=0, atol=0)
    torch.testing.assert_close(torch.autograd.grad(one, z1)[0], grads[1], rtol=0, atol=0)
    zw = z.clone().requires_grad_()  # the gradient of a weighted sum of the members' values
    w = torch.tensor([0.5, -2.0, 3.0], dtype=torch.float64)
    (gw,) = torch.autograd.grad((w * isometry_loss(x, zw)).sum(), zw)
    torch.testing.assert_close(gw, grads * w[:, None, None])


@pytest.mark.parametrize("method", METHODS)
def test_no_gradient_wanted_gives_the_same_value(method):
    x, z = data(2, 70, seed=7, dtype=torch.float32)
    vals, _ = batched(x, z, method)
    with torch.no_grad():
        torch.testing.assert_close(isometry_loss(x, z.requires_grad_(), method), vals, rtol=0, atol=0)
    torch.testing.assert_close(isometry_loss(x, z.detach(), method), vals, rtol=0, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_a_nan_code_gives_a_nan_value(method):
    x, z = data(2, 70, seed=8, dtype=torch.float32)
    z[1, 5, 2] = float("nan")
    vals = isometry_loss(x, z, method)
    assert torch.isfinite(vals[0]) and torch.isnan(vals[1])


def test_bad_inputs_are_named():
    x, z = data(2, 10)
    with pytest.raises(DataError, match="differ"):
        isometry_loss(x, z[:, :9])
    with pytest.raises(DataError, match="both"):
        isometry_loss(x[0], z)
    with pytest.raises(DataError, match="no points"):
        isometry_loss(x[:, :0], z[:, :0])
    with pytest.raises(DataError, match="method"):
        isometry_loss(x, z, "fast")
    with pytest.raises(DataError, match="numba"):
        isometry_loss(x.to("meta"), z.to("meta"), "numba")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA")
def test_cuda_matches_the_cpu():
    x, z = data(3, 700, q=10, p=20, seed=9)
    x[0, 5] = x[0, 0]
    cpu = batched(x, z)
    gpu = batched(x.cuda(), z.cuda())
    close((gpu[0].cpu(), gpu[1].cpu()), cpu, rtol=1e-9)
    g32 = batched(x.float().cuda(), z.float().cuda())
    assert float(((g32[0].double().cpu() - cpu[0]).abs() / cpu[0]).max()) < 1e-5


def test_half_precision_is_computed_in_float32():
    x, z = data(2, 40, seed=10, dtype=torch.float32)
    vals, grads = batched(x.bfloat16(), z.bfloat16(), "torch")
    assert vals.dtype == torch.bfloat16 and grads.dtype == torch.bfloat16
    want = batched(x.bfloat16().float(), z.bfloat16().float(), "torch")
    torch.testing.assert_close(vals, want[0].bfloat16())
    torch.testing.assert_close(grads, want[1].bfloat16())


def test_threads_calling_side_by_side_get_their_own_results():
    from concurrent.futures import ThreadPoolExecutor

    x, z = data(4, 200, q=10, p=20, seed=11, dtype=torch.float32)
    want = [batched(x[k:k + 1], z[k:k + 1]) for k in range(4)]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda k: batched(x[k:k + 1], z[k:k + 1]), range(4)))
    for (gv, gg), (wv, wg) in zip(got, want):
        assert torch.equal(gv, wv) and torch.equal(gg, wg)
