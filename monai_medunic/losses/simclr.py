"""Uni-Mlip's uni-modal image self-supervision ``L_I2I`` (Eq. 2), a SimCLR loss over two strong views.

Reference: Bawazir & Wu, "Uni-Mlip: Unified Self-supervision for Medical Vision Language
Pre-training", Sec. 3.3, Eq. 2 (``shared/papers/uni-mlip.md``); Chen et al., SimCLR, ICML 2020.

Why not ``monai.losses.ContrastiveLoss`` (MONAI 1.6, read from its source): it L2-normalises (cosine
similarity) and averages both directions as Eq. 2 does, but

* its negatives are the ``2B - 1`` other rows of *both* views (SimCLR's original NT-Xent, with
  intra-view negatives ``sim(I^a_i, I^a_j)``), while the printed Eq. 2 sums over the ``B`` rows of
  the *other* view only;
* under ``torch.distributed`` it sees the local batch only (no gather), so negatives shrink with the
  number of GPUs;
* its temperature is a fixed float, and it computes ``-log(exp(s/t) / sum exp(s/t))`` without
  log-sum-exp, which overflows in fp32 once ``1/t`` exceeds ~88 (a CLIP logit scale of 100), and it
  materialises a ``(2B, 2B, D)`` tensor for the cosine similarities.

So it is not reused. Eq. 2 as printed is exactly Med-UniC's symmetric SSV loss (two directions,
cross-view negatives, cosine similarity, gathered negatives); :class:`I2ILoss` is that loss with
Uni-Mlip's defaults, plus an ``intra_view_negatives`` switch for SimCLR's original NT-Xent (which, in
one process and with a fixed temperature, equals ``monai.losses.ContrastiveLoss``: tested).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from monai_medunic.losses._checks import check_pair, no_autocast
from monai_medunic.losses.contrastive import SSVLoss
from monai_medunic.losses.distributed import gather_with_grad

__all__ = ["I2ILoss"]


class I2ILoss(SSVLoss):
    """Image-to-image contrastive loss over two strongly augmented views, Uni-Mlip Eq. 2.

    .. math::
        \\mathcal{L}_{I2I} = -\\frac{1}{2B}\\sum_i \\log\\frac{e^{sim(I^a_i, I^b_i)/\\tau}}{\\sum_j e^{sim(I^a_i, I^b_j)/\\tau}}
        -\\frac{1}{2B}\\sum_i \\log\\frac{e^{sim(I^a_i, I^b_i)/\\tau}}{\\sum_j e^{sim(I^a_j, I^b_i)/\\tau}}

    with ``sim`` the cosine similarity of the projected embeddings. Computed in fp32 with autocast
    off; under ``torch.distributed`` the ``j`` sums run over the global batch (gathered with
    gradients), so the mean of the per-rank losses is the loss of the concatenated batch.

    The paper does not give ``tau`` for Eq. 2 (Eq. 1's is learnable); the default 0.1 is SimCLR's and
    SLIP's value for its SimCLR branch, with ``learnable_temperature`` as an option (a parameter of
    this module, clamped at a logit scale of 100 like the ITC one).

    Args:
        temperature: ``tau``.
        learnable_temperature: learn ``log(1/tau)``.
        intra_view_negatives: also use the other rows of the same view as negatives (``2B - 1`` per
            anchor, SimCLR's NT-Xent as ``monai.losses.ContrastiveLoss`` computes it); default
            ``False``, Eq. 2 as printed.
        gather_distributed: under torch.distributed, take negatives from every rank.

    Shape:
        ``view_a``, ``view_b``: ``(B, d)`` embeddings of the two views ``I^a``, ``I^b``. Returns a scalar.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        learnable_temperature: bool = False,
        intra_view_negatives: bool = False,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__(temperature, symmetric=True, learnable_temperature=learnable_temperature, gather_distributed=gather_distributed)
        self.intra_view_negatives = intra_view_negatives

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
        check_pair("I2ILoss", view_a, view_b)
        if not self.intra_view_negatives:
            return super().forward(view_a, view_b)
        with no_autocast(view_a.device.type):
            a, b = F.normalize(view_a.float(), dim=-1), F.normalize(view_b.float(), dim=-1)
            if self.gather_distributed:
                a_all, offset = gather_with_grad(a)
                b_all, _ = gather_with_grad(b)
            else:
                a_all, b_all, offset = a, b, 0
            return 0.5 * (self._nt_xent(a, b_all, a_all, offset) + self._nt_xent(b, a_all, b_all, offset))

    def _nt_xent(self, queries: torch.Tensor, other: torch.Tensor, same: torch.Tensor, offset: int) -> torch.Tensor:
        """Mean over ``queries`` of ``-log softmax`` against ``[other view; same view]`` without the self-pair."""
        n, total = queries.shape[0], other.shape[0]
        rows = torch.arange(n, device=queries.device)
        logits = self.logit_scale * queries @ torch.cat([other, same]).t()
        self_pair = torch.zeros_like(logits, dtype=torch.bool)
        self_pair[rows, total + offset + rows] = True
        logits = logits.masked_fill(self_pair, float("-inf"))
        return F.cross_entropy(logits, rows + offset)
