"""A fast, differentiable matrix exponential: :func:`expm`.

``torch.linalg.matrix_exp`` is accurate and fast in the forward pass, but its
backward pass evaluates the exponential of the ``2p x 2p`` block matrix
``[[W^T, G], [0, W^T]]``: every matrix product there costs 8 products of size
``p`` and the block matrix has a larger norm (more squarings).  For the Koopman
operator of a KAE (``p = 800``, one ``expm`` per training step) that backward
pass dominates training time on the CPU.

:func:`expm` computes the same function with the same family of approximants
(the Bader-Blanes-Casas optimized Taylor polynomials of degree 4, 8, 12 and 18
that torch uses, combined with scaling and squaring), written with ordinary
``p x p`` tensor operations so that autograd differentiates through them.
The backward pass then costs two ``p x p`` products per forward product, so
forward + backward costs about 3x the forward instead of ~10x.  The gradient is
the exact derivative of the approximant ``r(W) = T_m(W / 2^s)^(2^s)``; by
Al-Mohy & Higham (SIAM J. Matrix Anal. Appl. 30, 2009) the Frechet derivative
of an approximant with relative backward error ``<= u`` is itself the exact
Frechet derivative of ``exp`` at a perturbed point with a perturbation of the
same size, so the gradient is as accurate as the value.

Choice of degree ``m`` and number of squarings ``s`` (each call, from the data):

* ``mu = trace(W) / p`` is split off, ``exp(W) = e^mu exp(W - mu I)``, when
  that lowers the 1-norm (``W`` starts at the identity in the KAE).  ``mu`` is
  a constant, so this is exact for the value and for the gradient.
* The relative backward error of ``T_m`` is ``h_m(A) = sum_{k>m} h_k A^k`` with
  ``h_m(x) = log(e^{-x} T_m(x))``; we require
  ``sum_k |h_k| b_k / ||A||_1 <= u`` (``u`` = unit roundoff of the dtype,
  ``2^-24`` for float32, ``2^-53`` for float64), where ``b_k`` bounds
  ``||A^k||_1`` using the exact 1-norms of the powers ``A, A^2, A^3, A^6`` that
  the approximant computes anyway (``||A^k|| <= prod ||A^{e_i}||`` over any
  split ``k = sum e_i``).  With ``b_k = ||A||_1^k`` this is exactly the test
  that gives torch's thresholds ``theta_m`` (3.01 for m = 18 in float32, 1.09 in
  float64), so :func:`expm` never uses more squarings than the
  ``||W||_1``-based rule of ``torch.linalg.matrix_exp``, and uses fewer when
  the norms of the powers decay faster than ``||W||_1^k`` (typical for random
  and non-normal matrices; cf. Al-Mohy & Higham, SIAM J. Matrix Anal. Appl. 31,
  2009).  The coefficients ``h_k`` were computed in 60-digit arithmetic from
  the polynomials below (see ``tests/unit/test_linalg.py``).
* The cheapest of ``m = 4, 8, 12`` (with ``s = 0``) that passes the test is
  used; otherwise ``m = 18`` with the smallest passing ``s``.

Small matrices (``p < 32``) go to ``torch.linalg.matrix_exp``: there its C++
forward and cheap ``2p``-size backward beat the Python-level scheme (~1.2 ms
against ~1.9 ms forward + backward at ``p = 20``).

float32 accuracy (relative Frobenius error against ``torch.linalg.matrix_exp``
in float64; CPU; ``bench/bench_expm.py`` prints the table):

=========  ==============  ==================  ==================
p          matrix          value torch / expm  grad torch / expm
=========  ==============  ==================  ==================
64         I + 0.1 randn   5.6e-7 / 1.6e-7     3.3e-6 / 2.1e-7
64         3 randn/sqrt p  9.4e-7 / 2.7e-7     3.5e-6 / 2.7e-7
64         skew (rot.)     1.3e-6 / 8.9e-7     3.7e-6 / 7.5e-7
64         1-norm 50       2.7e-6 / 3.1e-7     4.0e-6 / 3.3e-7
800        I + 0.1 randn   6.3e-6 / 4.1e-7     3.2e-5 / 4.0e-7
800        3 randn/sqrt p  5.4e-6 / 4.1e-7     2.9e-5 / 4.2e-7
800        skew (rot.)     8.6e-6 / 1.3e-6     2.1e-4 / 1.1e-6
800        1-norm 50       5.9e-6 / 4.0e-7     2.5e-5 / 3.7e-7
=========  ==============  ==================  ==================

(the gradient is ``W.grad`` for ``expm(W).backward(G)`` with a random ``G``).
The value is at the level of float32 roundoff times the conditioning; it is
more accurate than torch's float32 result mainly because fewer squarings are
used (e.g. ``s = 1`` instead of 5 at ``p = 800``), and the gradient avoids the
``2p x 2p`` exponential with its larger norm.  In float64 ``expm`` agrees with
``scipy.linalg.expm`` / ``expm_frechet`` to ~1e-14 relative.

Notes: the degree-8 polynomial uses the coefficient
``x7 = (89 - sqrt(177)) / (5040 x3^2)`` of Bader, Blanes & Casas; torch 2.13's
``compute_T8`` divides by ``x3`` only, which breaks the Taylor match at degree
5 (e.g. ``torch.linalg.matrix_exp(0.5 * torch.eye(40))`` has relative error
1.9e-5 in float32; ``expm`` 3e-8).  On CUDA the forward products are run
without TF32; the backward products follow the global
``torch.backends.cuda.matmul`` setting (TF32 is off by default).  CUDA was not
benchmarked.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence

import torch

__all__ = ["expm"]

# Unit roundoff of the supported real dtypes.
_UNIT_ROUNDOFF = {torch.float32: 2.0**-24, torch.float64: 2.0**-53}

# Below this size torch.linalg.matrix_exp is faster (Python and autograd overhead
# dominate; its 2p x 2p backward is cheap); measured crossover on one CPU thread ~24-32.
_TORCH_BELOW = 32

# Shifting by mu = trace / p multiplies the result by e^mu; restrict |mu| so
# that e^(+-mu) is far from overflow/underflow in float32.
_MAX_SHIFT = 40.0

# |h_k|, k = m+1 .. m+30, of h_m(x) = log(e^{-x} T_m(x)) = sum_{k>m} h_k x^k, the
# relative backward error series of the degree-m approximants below (computed
# with mpmath at 60 digits; tests/unit/test_linalg.py recomputes them).
_H: dict[int, tuple[float, ...]] = {
    4: (0.008333333333333333, 0.006944444444444444, 0.002976190476190476, 0.0008680555555555555,
        0.00019290123456790122, 4.7477838728798994e-66, 5.260942760942761e-05, 4.8225308641975306e-05,
        2.7822293447293448e-05, 1.2056327160493826e-05, 4.018775720164609e-06, 7.535204475308642e-07,
        2.9549821471798594e-07, 4.4653063557384544e-07, 3.172717673814165e-07, 1.6744898834019203e-07,
        6.977041180841336e-08, 2.0931123542524004e-08, 1.5167480827915947e-09, 3.77923063962239e-09,
        3.6978318258459076e-09, 2.3256803936137784e-09, 1.141306119088243e-09, 4.3606507380258343e-10,
        1.0442171307533129e-10, 1.5343030374535345e-11, 3.946467065776069e-11, 3.116553044827492e-11,
        1.7832908110753797e-11, 8.075279144492286e-12),
    8: (2.7557319223985893e-06, 2.48015873015873e-06, 1.1273448773448773e-06, 3.4446649029982366e-07,
        7.9492266992267e-08, 1.4762849584278155e-08, 2.2964432686654908e-09, 3.0755936633912826e-10,
        3.6183454863426854e-11, 8.150111170944041e-71, 6.474934028192174e-12, 6.151187326782565e-12,
        3.742785939576693e-12, 1.7086631463284903e-12, 6.261560598346641e-13, 1.9188558349641378e-13,
        5.0568292640150317e-14, 1.1696206061177165e-14, 2.4045340426359926e-15, 4.2982951881137615e-16,
        5.0560810809186644e-17, 1.1260322605481122e-17, 1.4041227806696024e-17, 8.380918874711251e-18,
        3.904228740898846e-18, 1.5403906073208942e-18, 5.311128438342222e-19, 1.6296425780588385e-19,
        4.504200896441187e-20, 1.1271053128530664e-20),
    12: (1.6059043836821145e-10, 1.4911969277048565e-10, 6.95891899595602e-11, 2.174662186236259e-11,
         5.116852202908854e-12, 9.66516527216121e-13, 1.5260787271833664e-13, 2.0711068440346283e-14,
         2.4656033857556856e-15, 2.615033893983758e-16, 2.5013367681594375e-17, 2.1791949116563316e-18,
         1.7433559293296648e-19, 1.4582533021111194e-31, 2.306026361534353e-20, 2.2236682771959442e-20,
         1.3865977475620542e-20, 6.4856991418227644e-21, 2.4315560223464877e-21, 7.611688576167143e-22,
         2.0461616484471652e-22, 4.821379520773159e-23, 1.0115159308868103e-23, 1.9129363550284085e-24,
         3.2936980435069774e-25, 5.205873228916945e-26, 7.604084491677163e-27, 1.0292233069102274e-27,
         1.2576350731953495e-28, 1.062324858246115e-29),
    18: (8.220635246582169e-18, 7.809603484289312e-18, 3.718858802044008e-18, 1.183273255195897e-18,
         2.8295664798163173e-19, 5.423335752981303e-20, 8.677337204770142e-21, 1.191941923732187e-21,
         1.4347449081962457e-22, 1.537226687353423e-23, 1.4842188705489827e-24, 1.3043135529088652e-25,
         1.0518657684801451e-26, 7.83842279408238e-28, 5.4292105935626e-29, 3.513018619892068e-30,
         2.132904163090515e-31, 1.2197981343103302e-32, 6.593503459496752e-34, 7.198776496921347e-43,
         6.255375023256014e-35, 6.098990656664777e-35, 3.876668119561419e-35, 1.8481789873040243e-35,
         7.056032180278464e-36, 2.2472176323178927e-36, 6.140663070027335e-37, 1.4696295061027994e-37,
         3.129286248213289e-38, 6.002145687028377e-39),
}
_LOG_H = {m: tuple(math.log(h) for h in hs) for m, hs in _H.items()}

# Degree 8 (Bader, Blanes & Casas 2019, eq. (12)), 3 products.
_SQRT177 = math.sqrt(177.0)
_X3 = 2.0 / 3.0
_X1 = _X3 * ((1.0 + _SQRT177) / 88.0)
_X2 = _X3 * ((1.0 + _SQRT177) / 352.0)
_X4 = (-271.0 + 29.0 * _SQRT177) / (315.0 * _X3)
_X5 = (-11.0 + 11.0 * _SQRT177) / (1260.0 * _X3)
_X6 = (-99.0 + 11.0 * _SQRT177) / (5040.0 * _X3)
_X7 = (89.0 - _SQRT177) / (5040.0 * _X3 * _X3)
_Y2 = (857.0 - 58.0 * _SQRT177) / 630.0

# Degree 12: rows are the coefficients of B_i on (I, A, A^2, A^3); 4 products.
_B12 = (
    (9.0198e-16, 0.46932117595418237389, -0.20099424927047284052, -0.04623946134063071740),
    (5.31597895759871264183, 1.19926790417132231573, 0.01179296240992997031, 0.01108844528519167989),
    (0.18188869982170434744, 0.05502798439925399070, 0.09351590770535414968, 0.00610700528898058230),
    (-2.0861320e-13, -0.13181061013830184015, -0.02027855540589259079, -0.00675951846863086359),
)

# Degree 18: rows are the coefficients of B_i on (I, A, A^2, A^3, A^6); 5 products.
_B18 = (
    (0.0, -1.00365581030144618291e-01, -8.02924648241156932449e-03, -8.92138498045729985177e-04, 0.0),
    (0.0, 3.97849749499645077844e-01, 1.36783778460411720168e00, 4.98289622525382669416e-01,
     -6.37898194594723280150e-04),
    (-1.09676396052962061844e01, 1.68015813878906206114e00, 5.71779846478865511061e-02,
     -6.98210122488052056106e-03, 3.34975017086070470649e-05),
    (-9.04316832390810593223e-02, -6.76404519071381882256e-02, 6.75961301770459654925e-02,
     2.95552570429315521194e-02, -1.39180257516060693404e-05),
    (0.0, 0.0, -9.23364619367118555360e-02, -1.69364939002081722752e-02, -1.40086798182036094347e-05),
)


def expm(W: torch.Tensor) -> torch.Tensor:
    """Matrix exponential of ``W`` (``(..., p, p)``), differentiable; a drop-in for ``torch.linalg.matrix_exp``.

    float32 and float64 inputs (CPU or CUDA) use the scaling-and-squaring
    scheme described in the module docstring, differentiated by autograd
    (about 3x the forward cost for forward + backward, against ~10x for
    ``torch.linalg.matrix_exp``).  Small matrices (``p < 32``, where torch's
    C++ implementation is faster than this Python-level one), other dtypes
    (complex, half) and empty batches are passed on to
    ``torch.linalg.matrix_exp``.  Leading batch dimensions (a KAE ensemble's
    members) are handled one matrix at a time with exactly the operations of a
    single matrix, but the norms that choose each member's degree are read
    back together: at most four host synchronisations per call, not four per
    matrix (what a GPU waits for).  Either way a member of a batch gets the
    same bits, value and gradient, whatever the batch's size (for ``p < 32``,
    torch's batch algorithm, also for a batch of one).

    Raises:
        TypeError: ``W`` is not a tensor.
        ValueError: ``W`` has fewer than 2 dimensions or is not square.
    """
    if not isinstance(W, torch.Tensor):
        raise TypeError(f"expm expects a torch.Tensor, got {type(W).__name__}")
    if W.dim() < 2:
        raise ValueError(f"expm expects a (..., p, p) matrix, got shape {tuple(W.shape)}")
    if W.shape[-1] != W.shape[-2]:
        raise ValueError(f"expm expects square matrices, got shape {tuple(W.shape)}")
    if W.dtype not in _UNIT_ROUNDOFF or W.numel() == 0:
        return torch.linalg.matrix_exp(W)
    if W.shape[-1] < _TORCH_BELOW:
        return torch.linalg.matrix_exp(W) if W.dim() == 2 else _matrix_exp_batch(W)
    if W.dim() == 2:
        return _expm_2d(W)
    flat = W.reshape(-1, W.shape[-2], W.shape[-1])
    return torch.stack(_expm_members(flat.unbind(0))).reshape(W.shape)


def _matrix_exp_batch(W: torch.Tensor) -> torch.Tensor:
    """``torch.linalg.matrix_exp`` of a batch (..., p, p), each member independent of the batch's size.

    torch evaluates a batch of two or more matrices with one algorithm (degree 18, each member scaled by its
    own norm, its products batch-invariant on the CPU) and a single matrix with another (the cheapest sufficient
    degree), so an ensemble member's operator, and its gradient, would change with the number of members.
    A batch of one is evaluated with a zero matrix beside it: the same member gives the same bits in a
    batch of any size.
    """
    flat = W.reshape(-1, W.shape[-2], W.shape[-1])
    if len(flat) > 1:
        return torch.linalg.matrix_exp(W)
    return torch.linalg.matrix_exp(torch.cat([flat, torch.zeros_like(flat)]))[:1].reshape(W.shape)


@contextlib.contextmanager
def _no_tf32(device: torch.device) -> Iterator[None]:
    """Full-precision float32 products on CUDA (as torch.linalg.matrix_exp does)."""
    if device.type != "cuda" or not torch.backends.cuda.matmul.allow_tf32:
        yield
        return
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = True


class _Overflow(Exception):
    """A power of A overflowed the dtype."""


def _log_norm1(X: torch.Tensor) -> float:
    """log of the matrix 1-norm (max column sum); -inf for 0 (nilpotent A)."""
    n = torch.linalg.matrix_norm(X.detach(), 1).item()
    if not math.isfinite(n):
        raise _Overflow
    return math.log(n) if n > 0.0 else -math.inf


def _log_power_bounds(log_norms: dict[int, float], kmax: int) -> list[float]:
    """lb[k] >= log ||A^k||_1 for k <= kmax, from exact norms of some powers (submultiplicativity)."""
    items = sorted(log_norms.items())
    lb = [0.0] * (kmax + 1)
    for k in range(1, kmax + 1):
        best = math.inf
        for e, ln in items:
            if e > k:
                break
            v = lb[k - e] + ln
            if v < best:
                best = v
        lb[k] = best
    return lb


_LN2 = math.log(2.0)


def _backward_error_bound(m: int, lb: list[float], log_n1: float, s: int) -> float:
    """Bound on the relative backward error of T_m(A / 2^s): sum_k |h_k| ||(A/2^s)^k|| / ||A/2^s||."""
    offset = s * _LN2 - log_n1
    total = 0.0
    k = m + 1
    for log_h in _LOG_H[m]:
        t = log_h + lb[k] - s * k * _LN2 + offset
        if t > 700.0:
            return math.inf
        total += math.exp(t)
        k += 1
    return total


def _min_squarings(m: int, lb: list[float], log_n1: float, u: float) -> int:
    """Smallest s >= 0 with backward error bound of T_m(A / 2^s) below u."""
    # The first term alone must be below u: a lower bound on s.
    first = _LOG_H[m][0] + lb[m + 1] - log_n1 - math.log(u)
    s = max(0, math.ceil(first / (m * _LN2))) if math.isfinite(first) else 0
    while _backward_error_bound(m, lb, log_n1, s) > u:
        s += 1
    return s


def _lincomb(coeffs: tuple[float, ...], mats: tuple[torch.Tensor, ...], eye_coeff: float = 0.0) -> torch.Tensor:
    """sum_i coeffs[i] * mats[i] + eye_coeff * I (a new tensor; zero coefficients skipped)."""
    terms = [(c, M) for c, M in zip(coeffs, mats) if c != 0.0]
    c0, M0 = terms[0]
    out = M0 * c0
    for c, M in terms[1:]:
        out.add_(M, alpha=c)
    if eye_coeff != 0.0:
        out.diagonal().add_(eye_coeff)
    return out


def _t4(A: torch.Tensor, A2: torch.Tensor, c: float) -> torch.Tensor:
    """c * (I + A + A^2 (I/2 + A/6 + A^2/24)): 1 product beyond A^2."""
    inner = _lincomb((1.0 / 6.0, 1.0 / 24.0), (A, A2), 0.5)
    base = _lincomb((c,), (A,), c)
    return torch.addmm(base, A2, inner, alpha=c)


def _t8(A: torch.Tensor, A2: torch.Tensor, c: float) -> torch.Tensor:
    """c * T8(A) (Bader-Blanes-Casas degree 8): 2 products beyond A^2."""
    A4 = A2 @ _lincomb((_X1, _X2), (A, A2))
    left = _lincomb((_X3, 1.0), (A2, A4))
    right = _lincomb((_X5, _X6, _X7), (A, A2, A4), _X4)
    base = _lincomb((c, c * _Y2), (A, A2), c)
    return torch.addmm(base, left, right, alpha=c)


def _t12(A: torch.Tensor, A2: torch.Tensor, A3: torch.Tensor, c: float) -> torch.Tensor:
    """c * T12(A): 2 products beyond A^2, A^3."""
    mats = (A, A2, A3)
    B0 = _lincomb(tuple(c * b for b in _B12[0][1:]), mats, c * _B12[0][0])
    B1 = _lincomb(tuple(c * b for b in _B12[1][1:]), mats, c * _B12[1][0])
    B2 = _lincomb(_B12[2][1:], mats, _B12[2][0])
    B3 = _lincomb(_B12[3][1:], mats, _B12[3][0])
    A6 = torch.addmm(B2, B3, B3)
    return torch.addmm(B0, torch.add(B1, A6, alpha=c), A6)


def _t18(A: torch.Tensor, A2: torch.Tensor, A3: torch.Tensor, A6: torch.Tensor, s: int, c: float) -> torch.Tensor:
    """c * T18(A / 2^s), the scaling folded into the coefficients: 2 products beyond A^2, A^3, A^6."""
    scale = (2.0**-s, 4.0**-s, 8.0**-s, 64.0**-s)
    mats = (A, A2, A3, A6)

    def comb(row: tuple[float, ...], factor: float = 1.0) -> torch.Tensor:
        return _lincomb(tuple(factor * b * f for b, f in zip(row[1:], scale)), mats, factor * row[0])

    B0, B1, B2, B3, B4 = comb(_B18[0]), comb(_B18[1], c), comb(_B18[2], c), comb(_B18[3]), comb(_B18[4])
    A9 = torch.addmm(B3, B0, B4)
    return torch.addmm(B1, torch.add(B2, A9, alpha=c), A9)


def _expm_2d(W: torch.Tensor) -> torch.Tensor:
    """expm of one p x p float32/float64 matrix, p >= 2."""
    u = _UNIT_ROUNDOFF[W.dtype]
    p = W.shape[-1]
    Wd = W.detach()
    eye = torch.eye(p, dtype=W.dtype, device=W.device)
    mu_t = Wd.diagonal().sum() / p
    shifted = W - mu_t * eye
    n1_w, n1_shifted, mu = torch.stack(
        [torch.linalg.matrix_norm(Wd, 1), torch.linalg.matrix_norm(shifted.detach(), 1), mu_t]
    ).tolist()
    if not (math.isfinite(n1_w) and math.isfinite(n1_shifted)):
        return torch.linalg.matrix_exp(W)  # propagates inf / nan the way torch does
    # exp(W) = e^mu exp(W - mu I) for any constant mu: exact for value and gradient.
    if n1_shifted < n1_w and abs(mu) <= _MAX_SHIFT:
        A, n1 = shifted, n1_shifted
    else:
        A, n1, mu = W, n1_w, 0.0

    with _no_tf32(W.device):
        try:
            return _scaled_taylor(A, n1, mu, u)
        except _Overflow:  # a power of A overflowed: leave the extreme case to torch
            return torch.linalg.matrix_exp(W)


def _scaled_taylor(A: torch.Tensor, n1: float, mu: float, u: float) -> torch.Tensor:
    """e^mu exp(A), choosing degree and squarings from the norms of A, A^2, A^3, A^6."""
    if n1 == 0.0:  # A = 0
        return _lincomb((math.exp(mu),), (A,), math.exp(mu))
    c = math.exp(mu)
    kmax = 18 + len(_H[18])
    log_norms = {1: math.log(n1)}

    A2 = A @ A
    log_norms[2] = _log_norm1(A2)
    lb = _log_power_bounds(log_norms, kmax)
    if _backward_error_bound(4, lb, log_norms[1], 0) <= u:
        return _t4(A, A2, c)
    if _backward_error_bound(8, lb, log_norms[1], 0) <= u:
        return _t8(A, A2, c)

    A3 = A2 @ A
    log_norms[3] = _log_norm1(A3)
    lb = _log_power_bounds(log_norms, kmax)
    if _backward_error_bound(12, lb, log_norms[1], 0) <= u:
        return _t12(A, A2, A3, c)

    A6 = A3 @ A3
    log_norms[6] = _log_norm1(A6)
    lb = _log_power_bounds(log_norms, kmax)
    s = _min_squarings(18, lb, log_norms[1], u)
    X = _t18(A, A2, A3, A6, s, math.exp(mu / 2.0**s))
    for _ in range(s):
        X = X @ X
    return X


def _expm_members(mats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """expm of each p x p matrix of a sequence, with the operations of :func:`_expm_2d` per matrix (so each result
    equals it exactly), the norms of all matrices at each stage read back in one synchronisation."""
    u = _UNIT_ROUNDOFF[mats[0].dtype]
    p = mats[0].shape[-1]
    eye = torch.eye(p, dtype=mats[0].dtype, device=mats[0].device)
    out: list[torch.Tensor | None] = [None] * len(mats)
    mus = [W.detach().diagonal().sum() / p for W in mats]
    shifted = [W - mu * eye for W, mu in zip(mats, mus)]
    stats = torch.stack([torch.stack([torch.linalg.matrix_norm(W.detach(), 1),
                                      torch.linalg.matrix_norm(S.detach(), 1), mu])
                         for W, S, mu in zip(mats, shifted, mus)]).tolist()
    todo: dict[int, tuple[torch.Tensor, float, float]] = {}  # member -> (A, ||A||_1, mu)
    for i, (n1_w, n1_shifted, mu) in enumerate(stats):
        if not (math.isfinite(n1_w) and math.isfinite(n1_shifted)):
            out[i] = torch.linalg.matrix_exp(mats[i])
        elif n1_shifted < n1_w and abs(mu) <= _MAX_SHIFT:
            todo[i] = (shifted[i], n1_shifted, mu)
        else:
            todo[i] = (mats[i], n1_w, 0.0)
    with _no_tf32(mats[0].device):
        for i in [i for i, (A, n1, mu) in todo.items() if n1 == 0.0]:
            A, _, mu = todo.pop(i)
            out[i] = _lincomb((math.exp(mu),), (A,), math.exp(mu))
        kmax = 18 + len(_H[18])
        powers = {i: {1: A} for i, (A, _, _) in todo.items()}
        log_norms = {i: {1: math.log(n1)} for i, (_, n1, _) in todo.items()}

        def add_power(k: int, a: int, b: int) -> None:
            """A^k = A^a A^b for every member left; their norms in one read-back; overflow: torch's expm."""
            for i in todo:
                powers[i][k] = powers[i][a] @ powers[i][b]
            norms = torch.stack([torch.linalg.matrix_norm(powers[i][k].detach(), 1) for i in todo]).tolist()
            for i, n in zip(list(todo), norms):
                if not math.isfinite(n):  # a power overflowed: leave the extreme case to torch
                    del todo[i]
                    out[i] = torch.linalg.matrix_exp(mats[i])
                else:
                    log_norms[i][k] = math.log(n) if n > 0.0 else -math.inf

        def finish(degree_ok: Callable[[int, list[float]], Callable[[], torch.Tensor] | None]) -> None:
            for i in list(todo):
                lb = _log_power_bounds(log_norms[i], kmax)
                make = degree_ok(i, lb)
                if make is not None:
                    out[i] = make()
                    del todo[i]

        def low(i: int, lb: list[float]):
            A, A2, c = powers[i][1], powers[i][2], math.exp(todo[i][2])
            if _backward_error_bound(4, lb, log_norms[i][1], 0) <= u:
                return lambda: _t4(A, A2, c)
            if _backward_error_bound(8, lb, log_norms[i][1], 0) <= u:
                return lambda: _t8(A, A2, c)
            return None

        def twelve(i: int, lb: list[float]):
            if _backward_error_bound(12, lb, log_norms[i][1], 0) <= u:
                P, c = powers[i], math.exp(todo[i][2])
                return lambda: _t12(P[1], P[2], P[3], c)
            return None

        def eighteen(i: int, lb: list[float]):
            P, mu = powers[i], todo[i][2]
            s = _min_squarings(18, lb, log_norms[i][1], u)

            def make() -> torch.Tensor:
                X = _t18(P[1], P[2], P[3], P[6], s, math.exp(mu / 2.0**s))
                for _ in range(s):
                    X = X @ X
                return X
            return make

        for k, a, b, choose in ((2, 1, 1, low), (3, 2, 1, twelve), (6, 3, 3, eighteen)):
            if not todo:
                break
            add_power(k, a, b)
            finish(choose)
    return out
