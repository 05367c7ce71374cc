"""Student-side pieces of UniMedI's self-distillation: the DINO projection head and attention-guided masking.

UniMedI Sec. 3.4 (``shared/papers/unimedi.txt``): "The head and loss of DINO [5] is used ... applied
to both the global tokens ... and all local patch tokens"; "the mask strategy here is also based on
attention weights, similar to the slice selection method. Tokens with highest attention weights are
retained" (Attentive Mask CLIP, Yang et al., ICCV 2023, the paper's reference [38]). The loss is
:mod:`monai_medunic.losses.distill`.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers import trunc_normal_
from torch import nn

from monai_medunic.errors import ConfigurationError, ShapeMismatchError

__all__ = ["DistillationHead", "attention_guided_mask"]


class DistillationHead(nn.Module):
    """DINO's projection head (Caron et al., ICCV 2021, Sec. 3.1 and App.): an MLP ``in -> hidden -> ...
    -> bottleneck`` with GELU, L2 normalisation, then a weight-normalised linear layer to ``out_dim``
    prototypes whose weight norm is fixed at 1 (DINO's ``norm_last_layer=True``, which DINO reports
    stabilises training). Written as ``linear(normalize(x), normalize(W))``, i.e. cosine logits in [-1, 1].

    Applied to the CLS embedding and to patch tokens (one head shared by both, iBOT's ``shared_head``).

    Args:
        in_dim: input width (the ViT width). out_dim: prototypes ``K`` (65536 in DINO, 8192 in iBOT).
        hidden_dim: MLP width (2048). bottleneck_dim: width before the prototypes (256). num_layers: MLP layers (3).
    """

    def __init__(self, in_dim: int, out_dim: int = 8192, hidden_dim: int = 2048, bottleneck_dim: int = 256, num_layers: int = 3) -> None:
        super().__init__()
        if num_layers < 1 or min(in_dim, out_dim, hidden_dim, bottleneck_dim) < 1:
            raise ConfigurationError(
                f"DistillationHead needs positive sizes and num_layers >= 1, got in={in_dim} out={out_dim} "
                f"hidden={hidden_dim} bottleneck={bottleneck_dim} layers={num_layers}"
            )
        dims = [in_dim] + [hidden_dim] * (num_layers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        self.prototypes = nn.Parameter(torch.empty(out_dim, bottleneck_dim))
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, mean=0.0, std=0.02, a=-2.0, b=2.0)
                nn.init.zeros_(m.bias)
        trunc_normal_(self.prototypes, mean=0.0, std=0.02, a=-2.0, b=2.0)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in_dim)`` -> ``(..., out_dim)`` prototype logits (before temperature and softmax)."""
        z = F.normalize(self.mlp(x), dim=-1, eps=1e-6)
        return F.linear(z, F.normalize(self.prototypes, dim=-1).to(z.dtype))


def attention_guided_mask(scores: torch.Tensor, mask_ratio: float, segments: Sequence[int] | None = None) -> torch.Tensor:
    """Mask the least-attended tokens, keep the most-attended ones (Attentive Mask CLIP, UniMedI Sec. 3.4).

    Within each segment of ``n`` tokens (the volume, each slice, or the whole sequence), the
    ``n - round(n * mask_ratio)`` tokens with the highest score are kept (at least one), the others
    are masked. Per segment, so that a volume's slices are not masked away entirely when the volume
    draws the attention (or the reverse).

    Args:
        scores: ``(B, N)`` per-token scores (e.g. the teacher's CLS-to-patch attention, UniMedI Eq. 1).
        mask_ratio: fraction of tokens to mask, in ``[0, 1)``.
        segments: token counts of consecutive segments summing to ``N``; ``None``: one segment.

    Returns:
        ``(B, N)`` bool, ``True`` = masked.
    """
    if scores.ndim != 2:
        raise ShapeMismatchError("attention_guided_mask scores", tuple(scores.shape), ("B", "N"))
    if not 0.0 <= mask_ratio < 1.0:
        raise ConfigurationError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    segments = [scores.shape[1]] if segments is None else [int(s) for s in segments]
    if sum(segments) != scores.shape[1] or min(segments) < 1:
        raise ShapeMismatchError("attention_guided_mask segments", (sum(segments),), (scores.shape[1],),
                                 f"segments {segments} must be positive and sum to the token count")
    mask = torch.ones_like(scores, dtype=torch.bool)
    start = 0
    for n in segments:
        keep = max(1, n - int(round(n * mask_ratio)))
        top = scores[:, start : start + n].topk(keep, dim=1).indices
        mask[:, start : start + n].scatter_(1, top, False)
        start += n
    return mask
