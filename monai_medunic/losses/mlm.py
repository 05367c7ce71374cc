"""Masked-language-model losses.

:class:`MaskedLMLoss` is BERT's MLM objective (Devlin et al., 2019, Sec. 3.1): cross-entropy over the
masked positions only. Med-UniC (Sec. 3.2) post-pre-trains its cross-lingual text encoder with it;
Uni-Mlip's fused-modal MLM (Eq. 3) applies the same loss to the fusion module's token predictions.
"""

from __future__ import annotations

import torch
from torch import nn

from monai_medunic.errors import ConfigurationError
from monai_medunic.text.masking import IGNORE_INDEX

__all__ = ["MaskedLMLoss"]


class MaskedLMLoss(nn.Module):
    """Cross-entropy over the masked positions (label ``!= ignore_index``), computed in fp32.

    Args:
        ignore_index: the label of positions that are not predicted (``-100``, as HF transformers).

    ``forward(logits (B, L, V), labels (B, L)) -> scalar``.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.shape[:-1] != labels.shape:
            raise ConfigurationError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} do not match")
        return nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                           ignore_index=self.ignore_index)
