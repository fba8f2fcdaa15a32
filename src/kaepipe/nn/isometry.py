"""The isometry loss term of many Koopman autoencoders ("members") at once: value and gradient.

For one member with inputs x (n, q) and codes z (n, p)

    L(x, z) = (1/n^2) sum_{a,b} (|z_a - z_b| - |x_a - x_b|)^2,

differentiable in z only (x is data). `isometry_loss(x, z)` takes x (M, n, q) and z (M, n, p) and
returns the M values; its gradient equals autograd of `kaepipe.nn.losses.iso_loss` member by member.

Distances are those of the reference: |u| = sqrt(|u|^2 + EPS) off the diagonal, 0 on it, so
coincident points are finite (a coincident pair of codes has distance sqrt(EPS) and a zero direction
z_a - z_b, so it adds nothing to the gradient). The gradient is

    dL/dz_a = (4/n^2) sum_b c_ab (z_a - z_b),   c_ab = (dz_ab - dx_ab) / dz_ab,

computed in the forward pass (only when z needs one) and scaled in backward.

Two paths, with the same value and gradient up to rounding:

* CPU, float32/float64: a numba kernel. The points are cut into tiles of TILE = 64; for each pair of
  tiles (upper triangle of tiles only) the squared distances are summed from coordinate differences
  (not from the Gram matrix |a|^2 + |b|^2 - 2ab, which loses the small distances of near points in
  float32), two rows at a time with the accumulators in registers; c of the tile pair is kept in
  a stack buffer (and its transpose), and both sides of the gradient are accumulated from it with
  the tile's coordinates in registers: no n x n matrix is ever stored and nothing is divided or
  square-rooted twice. Members run one after the other on the calling thread (the result does not
  depend on any thread count; calls release the GIL); the loss is summed in float64 (float32
  partial sums of 64 terms). The kernel is compiled on first use (1.2-1.9 s per dtype on a loaded
  2-core machine) and cached on disk (cache=True, __pycache__ beside this file or numba's user
  cache): a later process loads it in about 0.3-0.5 s. numba compiles for the host's vector
  width (AVX-512 here; AVX2 machines get the same code in 256-bit halves). At n = 1024, q = 10,
  p = 20, float32, one core of a loaded AMD EPYC (Zen 5): 0.70-0.76 ms per member and call (value
  and gradient) against 2.4-2.5 ms for the blocked torch version kaepipe used before (bench/legacy_isoloss.py).
* CUDA (any other device, or CPU without numba): plain torch, the distances from the
  Gram form (batched bmm over members) in row blocks of the upper triangle; on CUDA the whole batch
  is one block (few large kernels) and nothing synchronises with the host.

Half precision (float16, bfloat16) is computed in float32 and returned in the dtype of z.
"""

from __future__ import annotations

import numpy as np
import torch

from kaepipe.errors import DataError

try:  # numba is a dependency; without it (an unsupported platform) the torch path is used everywhere
    import numba
    from numba import types as _nbtypes
    from numba.core import cgutils as _cgutils
    from numba.extending import intrinsic as _intrinsic
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None

EPS = 1e-12  # added to squared distances before the square root, as in the reference `kaepipe.nn.losses.iso_loss`
TILE = 64  # points per tile of the numba kernel (64 float32 = four 512-bit registers)
_TILE2 = TILE * TILE
CPU_BLOCK = 128  # rows per block of the torch path on the CPU (cache-sized); CUDA uses one block
METHODS = ("auto", "numba", "torch")


# ---------------------------------------------------------------------------------------------
# numba kernel (CPU)
# ---------------------------------------------------------------------------------------------

if numba is not None:

    @_intrinsic
    def _stack_buffer(typingctx, size, dtype):
        """A buffer of `size` (a compile-time constant) elements of `dtype` on the stack.

        LLVM knows that it aliases nothing, so loops over it are vectorised without run-time
        overlap checks and its fixed-index slots are kept in registers across the loops around
        them (a heap array passed in would be re-read and re-written on every iteration).
        """
        if not isinstance(size, _nbtypes.IntegerLiteral):
            return None
        count = size.literal_value

        def codegen(context, builder, signature, args):
            return _cgutils.alloca_once(builder, context.get_value_type(dtype.dtype), size=count)

        return _nbtypes.CPointer(dtype.dtype)(size, dtype), codegen

    _JIT = {"fastmath": True, "error_model": "numpy", "cache": True, "nogil": True}
    # fastmath lets LLVM reassociate the sums (vectorised reductions) and vectorise sqrt; error_model
    # "numpy" drops the ZeroDivisionError check, which would keep the division out of vector code;
    # nogil lets Python threads run calls side by side (each call has its own buffers).

    @numba.njit(**_JIT)
    def _gradient_side(cm, zv, zo, gv, zero):  # pragma: no cover - compiled
        """gv[k, j] += sum_i cm[i, j] (zv[k, j] - zo[k, i]) for every k: one side of a tile pair.

        zv, gv: (p, TILE) coordinates and gradient of the tile the sums go to, zo (p, TILE) the
        other tile; two coordinates k per pass, so that the eight accumulator registers are
        independent chains (one chain of fused multiply-adds would wait on its own latency).
        """
        p = zv.shape[0]
        acc0 = numba.carray(_stack_buffer(TILE, zv.dtype), TILE)  # on its own stack: kept in registers
        acc1 = numba.carray(_stack_buffer(TILE, zv.dtype), TILE)
        k = 0
        while k + 1 < p:
            for j in range(TILE):
                acc0[j] = zero
                acc1[j] = zero
            for i in range(TILE):
                o0 = zo[k, i]
                o1 = zo[k + 1, i]
                for j in range(TILE):
                    acc0[j] += cm[i, j] * (zv[k, j] - o0)
                    acc1[j] += cm[i, j] * (zv[k + 1, j] - o1)
            for j in range(TILE):
                gv[k, j] += acc0[j]
                gv[k + 1, j] += acc1[j]
            k += 2
        if k < p:  # odd p: the last coordinate, two rows per pass
            for j in range(TILE):
                acc0[j] = zero
                acc1[j] = zero
            for i in range(0, TILE, 2):
                o0 = zo[k, i]
                o1 = zo[k, i + 1]
                for j in range(TILE):
                    acc0[j] += cm[i, j] * (zv[k, j] - o0)
                    acc1[j] += cm[i + 1, j] * (zv[k, j] - o1)
            for j in range(TILE):
                gv[k, j] += acc0[j] + acc1[j]

    @numba.njit(**_JIT)
    def _member(x3, z3, v2, g3, eps, zero, need_grad):  # pragma: no cover - compiled
        """sum over ordered pairs a != b of (dz - dx)^2 for one member (float64), and if need_grad
        g3 += sum_b c_ab (z_a - z_b) (without the 4/n^2).

        x3 (tiles, q, TILE), z3 and g3 (tiles, p, TILE): the points cut into tiles, coordinates-major
        inside a tile; v2 (tiles, TILE) is 1 for a point and 0 for padding.
        """
        nt, q, _ = x3.shape
        p = z3.shape[1]
        sx0 = numba.carray(_stack_buffer(TILE, x3.dtype), TILE)
        sx1 = numba.carray(_stack_buffer(TILE, x3.dtype), TILE)
        sz0 = numba.carray(_stack_buffer(TILE, x3.dtype), TILE)
        sz1 = numba.carray(_stack_buffer(TILE, x3.dtype), TILE)
        cm = numba.carray(_stack_buffer(_TILE2, x3.dtype), (TILE, TILE))  # c of the tile pair
        ct = numba.carray(_stack_buffer(_TILE2, x3.dtype), (TILE, TILE))  # its transpose
        total = 0.0
        for ta in range(nt):
            for tc in range(ta, nt):
                diag = ta == tc
                s = 0.0
                for i in range(0, TILE, 2):  # rows i, i + 1 of tile ta against all of tile tc
                    for j in range(TILE):
                        sx0[j] = zero
                        sx1[j] = zero
                        sz0[j] = zero
                        sz1[j] = zero
                    for k in range(q):
                        a0 = x3[ta, k, i]
                        a1 = x3[ta, k, i + 1]
                        for j in range(TILE):
                            b = x3[tc, k, j]
                            sx0[j] += (b - a0) * (b - a0)
                            sx1[j] += (b - a1) * (b - a1)
                    for k in range(p):
                        a0 = z3[ta, k, i]
                        a1 = z3[ta, k, i + 1]
                        for j in range(TILE):
                            b = z3[tc, k, j]
                            sz0[j] += (b - a0) * (b - a0)
                            sz1[j] += (b - a1) * (b - a1)
                    w0 = v2[ta, i]
                    w1 = v2[ta, i + 1]
                    s0 = zero
                    s1 = zero
                    for j in range(TILE):
                        dz0 = np.sqrt(sz0[j] + eps)
                        r0 = (dz0 - np.sqrt(sx0[j] + eps)) * (w0 * v2[tc, j])  # 0 on padding
                        s0 += r0 * r0
                        cm[i, j] = r0 / dz0
                        dz1 = np.sqrt(sz1[j] + eps)
                        r1 = (dz1 - np.sqrt(sx1[j] + eps)) * (w1 * v2[tc, j])
                        s1 += r1 * r1
                        cm[i + 1, j] = r1 / dz1
                    s += s0
                    s += s1
                # a diagonal tile holds each of its pairs twice, (a, b) and (b, a); the others once
                total += s if diag else 2.0 * s
                if not need_grad:
                    continue
                if diag:  # c is symmetric here: one pass gives the whole sum over the tile for each point
                    _gradient_side(cm, z3[ta], z3[ta], g3[ta], zero)
                    continue
                for j in range(TILE):
                    for i in range(TILE):
                        ct[j, i] = cm[i, j]
                _gradient_side(ct, z3[ta], z3[tc], g3[ta], zero)  # rows: sum over j of c_ij (z_i - z_j)
                _gradient_side(cm, z3[tc], z3[ta], g3[tc], zero)  # columns: sum over i of c_ij (z_j - z_i)
        return total

    @numba.njit(cache=True, nogil=True)
    def _members(x4, z4, v2, g4, out, eps, zero, need_grad):  # pragma: no cover - compiled
        """_member for each member in turn (the order of the sums inside a member is fixed)."""
        for m in range(x4.shape[0]):
            out[m] = _member(x4[m], z4[m], v2, g4[m], eps, zero, need_grad)


def _tiles(x: torch.Tensor, npad: int) -> torch.Tensor:
    """(M, n, d) -> (M, npad / TILE, d, TILE) contiguous, zero padding after the n points."""
    m, n, d = x.shape
    if npad > n:
        x = torch.cat([x, x.new_zeros(m, npad - n, d)], 1)
    return x.reshape(m, npad // TILE, TILE, d).transpose(2, 3).contiguous()


def _numba_terms(x: torch.Tensor, z: torch.Tensor, need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Sum over ordered pairs of (dz - dx)^2 per member (float64, (M,)) and sum_b c_ab (z_a - z_b)."""
    m, n, p = z.shape
    npad = -(-n // TILE) * TILE
    x4, z4 = _tiles(x, npad), _tiles(z, npad)
    v2 = (torch.arange(npad) < n).to(z.dtype).reshape(npad // TILE, TILE)
    g4 = torch.zeros_like(z4) if need_grad else z4.new_zeros(m, 1, 1, 1)  # not read without need_grad
    out = torch.empty(m, dtype=torch.float64)
    np_dtype = np.float32 if z.dtype == torch.float32 else np.float64
    _members(x4.numpy(), z4.numpy(), v2.numpy(), g4.numpy(), out.numpy(), np_dtype(EPS), np_dtype(0.0), need_grad)
    grad = g4.transpose(2, 3).reshape(m, npad, p)[:, :n] if need_grad else None
    return out, grad


# ---------------------------------------------------------------------------------------------
# torch path (CUDA, fallback)
# ---------------------------------------------------------------------------------------------

def _distance_factors(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A, B (batched) with A[a] . B[:, b] = |x_a - x_b|^2: A = [-2x, |x|^2, 1], B = [x, 1, |x|^2]^T."""
    sq = (x * x).sum(-1, keepdim=True)
    one = torch.ones_like(sq)
    return torch.cat([x * -2.0, sq, one], -1), torch.cat([x, one, sq], -1).transpose(1, 2)


def _torch_terms(x: torch.Tensor, z: torch.Tensor, need_grad: bool,
                 block: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """As _numba_terms, with batched matrix products in row blocks of the upper triangle.

    Block rows r0:r1 meet the columns r0:n only (the matrices are symmetric); an off-diagonal part
    stands for (a, b) and (b, a), the square part on the diagonal holds both already. Each block's
    c updates its rows (c @ [z, 1]) and, off the diagonal, its columns (c^T @ [z, 1]).
    """
    m, n, p = z.shape
    rows = n if block is None else min(block, n)
    ax, bx = _distance_factors(x)
    az, bz = _distance_factors(z)
    za = torch.cat([z, z.new_ones(m, n, 1)], -1)
    acc = z.new_zeros(m, n, p + 1) if need_grad else None  # [sum_b c_ab z_b, sum_b c_ab]
    total = torch.zeros(m, dtype=torch.float64, device=z.device)
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        b = r1 - r0
        dz = torch.bmm(az[:, r0:r1], bz[:, :, r0:]).clamp_min_(0.0).add_(EPS).sqrt_()
        r = torch.bmm(ax[:, r0:r1], bx[:, :, r0:]).clamp_min_(0.0).add_(EPS).sqrt_().neg_().add_(dz)  # dz - dx
        r[:, :, :b].diagonal(dim1=1, dim2=2).zero_()  # the distance of a point to itself is 0 in both spaces
        flat = r.view(m, 1, -1)
        full = torch.bmm(flat, flat.transpose(1, 2)).view(m)  # sum of r^2 in the dtype of z, per block
        square = r[:, :, :b].square().sum((1, 2))
        total += (2.0 * full - square).to(torch.float64)
        if need_grad:
            c = r.div_(dz)
            acc[:, r0:r1].add_(torch.bmm(c, za[:, r0:]))
            if r1 < n:
                acc[:, r1:].add_(torch.bmm(c[:, :, b:].transpose(1, 2), za[:, r0:r1]))
    grad = z * acc[..., p:] - acc[..., :p] if need_grad else None
    return total, grad


# ---------------------------------------------------------------------------------------------
# the autograd function and the entry point
# ---------------------------------------------------------------------------------------------

def _use_numba(z: torch.Tensor, method: str) -> bool:
    if method not in METHODS:
        raise DataError(f"isometry_loss: method must be one of {METHODS}, got {method!r}")
    fits = numba is not None and z.device.type == "cpu" and z.dtype in (torch.float32, torch.float64)
    if method == "numba" and not fits:
        raise DataError("isometry_loss: method 'numba' needs numba and float32/float64 CPU tensors "
                        f"(got {z.dtype} on {z.device}{'' if numba is not None else ', numba not installed'})")
    return fits and method != "torch"


def _compute(x: torch.Tensor, z: torch.Tensor, method: str, need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Values (M,) in the dtype of z and, if need_grad, their gradients in z (M, n, p)."""
    n = z.shape[1]
    if z.dtype not in (torch.float32, torch.float64):  # half precision would lose EPS (and more): float32
        values, grad = _compute(x.float(), z.float(), method, need_grad)
        return values.to(z.dtype), None if grad is None else grad.to(z.dtype)
    with torch.no_grad():
        if _use_numba(z, method):
            total, grad = _numba_terms(x, z, need_grad)
        else:
            total, grad = _torch_terms(x, z, need_grad, None if z.device.type == "cuda" else CPU_BLOCK)
        scale = 1.0 / (n * n)
        if need_grad:
            grad = grad.mul_(4.0 * scale)
        return (total * scale).to(z.dtype), grad


class _IsometryFunction(torch.autograd.Function):
    """Values (M,) of the isometry term; the gradient in z is computed in forward and scaled in backward."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, x: torch.Tensor, method: str) -> torch.Tensor:
        values, grad = _compute(x, z, method, need_grad=True)
        ctx.save_for_backward(grad)
        return values

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out[:, None, None], None, None


def isometry_loss(x: torch.Tensor, z: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """(1/n^2) sum over all pairs (a, b) of (|z_a - z_b| - |x_a - x_b|)^2 for each member, differentiable in z.

    x (M, n, q) and z (M, n, p): M members, each with its own batch of n points; returns (M,) in
    the dtype of z. 2-D x (n, q) and z (n, p) are one member and give a scalar. x is detached
    (data) and cast to the dtype of z. method: "auto" (numba on CPU for float32/float64, torch
    otherwise), "numba" or "torch" (to compare the two).
    """
    if x.dim() != z.dim() or z.dim() not in (2, 3):
        raise DataError(f"isometry_loss: x and z must both be (n, d) or (M, n, d), got {tuple(x.shape)} and "
                        f"{tuple(z.shape)}")
    single = z.dim() == 2
    if single:
        x, z = x.unsqueeze(0), z.unsqueeze(0)
    if x.shape[:2] != z.shape[:2]:
        raise DataError(f"isometry_loss: x {tuple(x.shape)} and z {tuple(z.shape)} differ in members or points")
    if z.shape[1] == 0:
        raise DataError("isometry_loss: the batch has no points (the mean over pairs is undefined)")
    if x.device != z.device:
        raise DataError(f"isometry_loss: x is on {x.device}, z on {z.device}")
    if not z.is_floating_point():
        raise DataError(f"isometry_loss: z must be floating point, got {z.dtype}")
    x = x.detach().to(z.dtype)
    if z.requires_grad and torch.is_grad_enabled():
        values = _IsometryFunction.apply(z, x, method)
    else:  # no gradient wanted (torch.no_grad, or z a constant): the value alone, at about half the cost
        values, _ = _compute(x, z.detach(), method, need_grad=False)
    return values[0] if single else values
