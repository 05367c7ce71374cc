"""Cross-lingual Text Alignment Regularization (CTR) of Med-UniC, Eq. 5-7.

Reference: Wan et al., "Med-UniC", NeurIPS 2023, Sec. 3.4 (``shared/papers/med-unic-with-equations.md``).
The two views ``Z^A = P_d(l)`` and ``Z^B = P_d(l')`` come from the same reports encoded twice with
different dropout masks and projected by the CTR projector ``P_d`` to ``D'`` dimensions.

Both terms are Barlow-Twins-style redundancy reductions: :func:`redundancy_reduction` computes
``sum_j (1 - C_jj)^2 + lambda * sum_{j != k} C_jk^2`` of the cross-correlation ``C`` of two inputs
standardised along their first dimension, exactly as MONAI's :class:`monai.losses.BarlowTwinsLoss`
(a test holds them equal). It does not call it: that loss weights the off-diagonal through a boolean
index of the ``D' x D'`` matrix, which took 60-75 % of ``L_TF``'s time and grew faster than ``D'^2``
(``benchmarks/bench_loss_growth.py``); here the off-diagonal sum is ``sum C^2 - sum diag(C)^2``.
Deliberate choices, each tested:

* **Squared off-diagonal.** Eq. 5 and 6 print the off-diagonal term without a square, which would
  reward negative correlations without bound. We square it, as Barlow Twins (Zbontar et al., 2021),
  which the paper cites for this term and for ``lambda = 5.1e-3``, does.
* **Standard deviation.** The paper's ``sigma`` is not specified; we use the unbiased estimate plus
  ``1e-6`` (MONAI's convention), so a perfectly aligned pair gives diagonal entries ``(K-1)/K``
  rather than 1 (a constant offset of the loss, not of its minimiser).
* **Normalisation.** TF is divided by ``D'`` and TT by ``K``, as the text says.
* **Global batch.** Under ``torch.distributed`` the views are gathered from all ranks (with
  gradients) so the statistics are those of the global batch, as in the single-process loss.
* **Precision.** Computed in float32 with autocast disabled.
"""

from __future__ import annotations

import torch
from torch import nn

from monai_medunic.errors import ConfigurationError
from monai_medunic.losses._checks import check_pair, no_autocast
from monai_medunic.losses.distributed import gather_with_grad

__all__ = ["TextFeatureAlignmentLoss", "TextToTextAlignmentLoss", "CTRLoss", "redundancy_reduction"]


def redundancy_reduction(a: torch.Tensor, b: torch.Tensor, lambd: float) -> torch.Tensor:
    """``sum_j (1 - C_jj)^2 + lambd * sum_{j != k} C_jk^2`` with ``C = a~^T b~ / N`` (Barlow Twins, Zbontar
    et al. 2021), each column of ``a`` and ``b`` (``(N, F)``) standardised along ``N`` with the unbiased
    standard deviation plus ``1e-6``: the value of MONAI's ``BarlowTwinsLoss(lambd)(a, b)``, in
    ``O(N F^2)`` time and one ``F x F`` matrix."""
    n = a.shape[0]
    a = (a - a.mean(0)) / a.std(0).add(1e-6)
    b = (b - b.mean(0)) / b.std(0).add(1e-6)
    c = torch.mm(a.t(), b) / n
    diag = torch.diagonal(c)
    on = (1.0 - diag).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + lambd * off


class _DecorrelationLoss(nn.Module):
    name = ""

    def __init__(self, lambd: float = 5.1e-3, gather_distributed: bool = True) -> None:
        super().__init__()
        if lambd < 0:
            raise ConfigurationError(f"{type(self).__name__}: lambd must be non-negative, got {lambd}")
        self.lambd = lambd
        self.gather_distributed = gather_distributed

    def _views(self, z_a: torch.Tensor, z_b: torch.Tensor, min_batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        check_pair(type(self).__name__, z_a, z_b)
        z_a, z_b = z_a.float(), z_b.float()
        if self.gather_distributed:
            z_a, z_b = gather_with_grad(z_a)[0], gather_with_grad(z_b)[0]
        check_pair(type(self).__name__, z_a, z_b, min_batch=min_batch)
        return z_a, z_b


class TextFeatureAlignmentLoss(_DecorrelationLoss):
    """Text-feature alignment ``L_TF``, Med-UniC Eq. 5.

    Each of the ``D'`` features is standardised along the batch (``z~ = (Z - mu_K) / (sqrt(K) sigma)``),
    the ``D' x D'`` cross-correlation ``C = z~_A^T z~_B`` is built, and

    .. math:: \\mathcal{L}_{TF} = \\frac{1}{D'}\\Big[\\sum_j (1 - C_{jj})^2 + \\lambda \\sum_j\\sum_{k\\neq j} C_{jk}^2\\Big]

    (off-diagonal squared; see the module docstring). Needs a batch of at least 2.

    Args:
        lambd: ``lambda``, the weight of the off-diagonal (gap-reduction) term.
        gather_distributed: compute over the global batch under torch.distributed.
    """

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        with no_autocast(z_a.device.type):
            a, b = self._views(z_a, z_b, min_batch=2)
            return redundancy_reduction(a, b, self.lambd) / a.shape[1]


class TextToTextAlignmentLoss(_DecorrelationLoss):
    """Text-to-text alignment ``L_TT``, Med-UniC Eq. 6.

    Each of the ``K`` samples is standardised along its ``D'`` features
    (``z^ = (Z - mu_D') / (sqrt(D') sigma)``), the ``K x K`` matrix ``C = z^_A z^_B^T`` is built, and

    .. math:: \\mathcal{L}_{TT} = \\frac{1}{K}\\Big[\\sum_j (1 - C_{jj})^2 + \\lambda \\sum_j\\sum_{k\\neq j} C_{jk}^2\\Big]

    The diagonal aligns each report with its own second view; the off-diagonal pushes different
    reports apart without the softmax competition of InfoNCE. Needs ``D' >= 2``.
    """

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        with no_autocast(z_a.device.type):
            a, b = self._views(z_a, z_b, min_batch=1)
            if a.shape[1] < 2:
                raise ConfigurationError(f"TextToTextAlignmentLoss needs at least 2 features to standardise, got {a.shape[1]}")
            return redundancy_reduction(a.t(), b.t(), self.lambd) / a.shape[0]


class CTRLoss(nn.Module):
    """Cross-lingual Text Alignment Regularization ``L_CTR = L_TF + L_TT``, Med-UniC Eq. 7.

    Args:
        lambd: ``lambda`` of Eq. 5 and 6 (5.1e-3 in the paper, following Barlow Twins).
        gather_distributed: compute over the global batch under torch.distributed.

    Shape:
        ``z_a``, ``z_b``: ``(K, D')`` with ``K >= 2``. Returns a scalar.
    """

    def __init__(self, lambd: float = 5.1e-3, gather_distributed: bool = True) -> None:
        super().__init__()
        self.tf = TextFeatureAlignmentLoss(lambd, gather_distributed)
        self.tt = TextToTextAlignmentLoss(lambd, gather_distributed)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return self.tf(z_a, z_b) + self.tt(z_a, z_b)
