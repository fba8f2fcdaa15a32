"""The isometry term as kaepipe computed it before the fused kernel (a blocked torch version with a
hand-written gradient): the baseline that bench_isometry.py measures the fused kernel against. Not used by the
package."""

from __future__ import annotations

import torch


class IsoLoss:
    """The isometry term with a hand-written gradient, computed in row blocks of the upper triangle.

    Same value and gradient as `iso_loss`; at batch 1024 on one CPU core 5-8 ms per call against
    37 ms with autograd and 6-9 ms for the earlier full-matrix version of this class: each
    block of `block` rows meets only the columns from its own diagonal on (the distance matrices
    are symmetric), its matrices stay in cache, and the gradient is accumulated in the same pass,
    so nothing n x n is ever stored. On CUDA the whole batch is one block (few large kernels).
    One instance per training run (it keeps its scratch buffers).
    """

    def __init__(self, block: int = 128) -> None:
        self.block = block
        self._buffers: dict[str, torch.Tensor] = {}

    def buffer(self, key: str, numel: int, like: torch.Tensor) -> torch.Tensor:
        """A flat scratch buffer of at least `numel` elements, reallocated only when it must grow."""
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel or buf.dtype != like.dtype or buf.device != like.device:
            buf = self._buffers[key] = torch.empty(numel, dtype=like.dtype, device=like.device)
        return buf

    def __call__(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(1/n^2) sum over all pairs (a, b) of (|z_a - z_b| - |x_a - x_b|)^2, differentiable in z."""
        return _IsoFunction.apply(z, x.detach(), self)


SZ_FLOOR = 1e-12  # squared code distances below this are rounding noise of the matrix-product form


def _distance_factors(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A, B with A[a] . B[:, b] = |x_a - x_b|^2: A = [-2x, |x|^2, 1], B = [x, 1, |x|^2]^T."""
    sq = (x * x).sum(1, keepdim=True)
    one = torch.ones_like(sq)
    return torch.cat([x * -2.0, sq, one], 1), torch.cat([x, one, sq], 1).T.contiguous()


class _IsoFunction(torch.autograd.Function):
    """Loss (1/n^2) sum_ab (dz - dx)^2 and its gradient (4/n^2) sum_b w_ab (z_a - z_b), w = (dz - dx) / dz.

    With s the squared distances, u = dx / dz = sx * rsqrt(sx * sz) and w = 1 - u, so (dz - dx)^2 =
    sz w^2: no square root, division or NaN clean-up per pair, and the loss is a sum of non-negative
    terms. sz is floored at SZ_FLOOR (like the 1e-12 under the reference's square root), so rounding
    noise in the distance of coincident codes cannot blow w up, and a tiny floor under sx * sz keeps
    coincident inputs (sx = 0, u = 0) finite; the diagonal of w is zeroed.
    The gradient is computed in the forward pass (when z needs one) and only scaled in backward.
    """

    @staticmethod
    def forward(ctx, z: torch.Tensor, x: torch.Tensor, iso: IsoLoss) -> torch.Tensor:
        n, p = z.shape
        need_grad = ctx.needs_input_grad[0]
        with torch.no_grad():
            ax, bx = _distance_factors(x)
            az, bz = _distance_factors(z)
            za = torch.cat([z, torch.ones(n, 1, dtype=z.dtype, device=z.device)], 1)
            acc = torch.zeros(n, p + 1, dtype=z.dtype, device=z.device)  # [-sum_b w_ab z_b, -sum_b w_ab]
            rows = n if z.is_cuda else min(iso.block, n)  # a GPU wants few large kernels, a CPU cache-sized blocks
            fsx, fsz, fv = (iso.buffer(k, rows * n, z) for k in ("sx", "sz", "v"))
            tiny = torch.finfo(z.dtype).tiny
            total = torch.zeros((), dtype=torch.float64, device=z.device)
            for r0 in range(0, n, rows):
                r1 = min(r0 + rows, n)
                b, w = r1 - r0, n - r0  # block rows r0:r1 against columns r0:n
                sx = torch.mm(ax[r0:r1], bx[:, r0:], out=fsx[: b * w].view(b, w)).clamp_min_(0.0)
                sz = torch.mm(az[r0:r1], bz[:, r0:], out=fsz[: b * w].view(b, w)).clamp_min_(SZ_FLOOR)
                v = torch.mul(sx, sz, out=fv[: b * w].view(b, w)).clamp_min_(tiny).rsqrt_()
                v.mul_(sx).sub_(1.0)  # u - 1 = -w
                v[:, :b].diagonal().zero_()
                t = sz.mul_(v)  # -sz w
                # off-diagonal blocks stand for both (a, b) and (b, a); the diagonal block only once
                total += 2.0 * torch.dot(t.view(-1), v.view(-1)) - (t[:, :b] * v[:, :b]).sum()
                if need_grad:
                    acc[r0:r1].addmm_(v, za[r0:])
                    if r1 < n:
                        acc[r1:].addmm_(v[:, b:].T, za[r0:r1])
            grad = (acc[:, :p] - z * acc[:, p:]) * (4.0 / (n * n)) if need_grad else None
        ctx.save_for_backward(grad)
        return (total / (n * n)).to(z.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None


