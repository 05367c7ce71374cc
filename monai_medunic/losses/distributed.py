"""Gathering embeddings across ranks with gradients, so that contrastive negatives span every GPU.

This follows the approach of open_clip's ``ClipLoss`` (gather with gradients, loss over the local
rows against all gathered columns): with DDP's gradient averaging, ``mean_r(L_r)`` then has exactly
the gradient of the same loss computed on the concatenated global batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "gather_with_grad"]


def is_distributed() -> bool:
    """True inside an initialised process group with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _GatherWithGrad(torch.autograd.Function):
    """``all_gather`` along dim 0 of tensors padded to a common size; backward sums the gradients of
    every rank's loss with respect to this rank's rows (all_reduce) and returns its slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int], offset: int) -> torch.Tensor:  # type: ignore[override]
        padded = x.new_zeros((max(sizes), *x.shape[1:]))
        padded[: x.shape[0]] = x
        out = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(out, padded.contiguous())
        ctx.offset, ctx.n = offset, x.shape[0]
        return torch.cat([o[:n] for o, n in zip(out, sizes)], dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.offset : ctx.offset + ctx.n], None, None


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Concatenate ``x`` from all ranks along dim 0, differentiably (ranks may hold different batch sizes).

    Returns:
        The gathered tensor and the index of this rank's first row in it. Outside a distributed run:
        ``(x, 0)``.
    """
    if not is_distributed():
        return x, 0
    n = torch.tensor([x.shape[0]], device=x.device, dtype=torch.long)
    all_n = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(all_n, n)
    sizes = [int(t.item()) for t in all_n]
    offset = sum(sizes[: dist.get_rank()])
    return _GatherWithGrad.apply(x, sizes, offset), offset
