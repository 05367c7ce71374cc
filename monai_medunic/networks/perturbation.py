"""Feature-level perturbation of Uni-Mlip (Bawazir & Wu, Sec. 3.2 and 4.2).

"Perturbation applied to the image features is done after the last residual layer and before the
[...] pooling layer in the vision encoder, where a DropBlock method is utilized. [...] To generate the
perturbed text features, a dropout is applied after getting the text features from the text encoder."
(DropBlock p = 0.5 with 3x3 blocks, text dropout p = 0.75.) The perturbed embeddings replace ``I`` or
``T`` in the ITC loss (Eq. 1), which gives the terms ``L_~ITC`` and ``L_I~TC``; ITC itself is
:class:`monai_medunic.losses.CVLLoss`.

Both modules take what the encoders already return (``feature_map`` of
:class:`~monai_medunic.networks.CXRImageEncoder`, ``pooled`` of
:class:`~monai_medunic.networks.HFTextEncoder`), so the perturbed views cost no second backbone
forward. Neither MONAI nor PyTorch has a DropBlock (torchvision's ``DropBlock2d`` is not usable beside
this torch build), hence :class:`DropBlock`, after Ghiasi, Lin & Le, "DropBlock: A regularization
method for convolutional networks", NeurIPS 2018, Algorithm 1.
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_medunic.errors import ConfigurationError, ShapeMismatchError

__all__ = ["DropBlock", "dropblock_gamma", "ImageFeaturePerturbation", "TextFeaturePerturbation"]

GAMMA_MODES = ("exact", "paper")


def _coverage(size: int, block: int) -> list[int]:
    """For each position along one axis, how many valid block starts cover it."""
    return [min(y, size - block) - max(0, y - block + 1) + 1 for y in range(size)]


def _expected_drop(gamma: float, sizes: Sequence[int], block: Sequence[int]) -> float:
    """Expected dropped fraction when block starts are Bernoulli(gamma) on the valid region."""
    counts = [1]
    for n, b in zip(sizes, block):
        counts = [c * k for c in counts for k in _coverage(n, b)]
    keep = 1.0 - gamma
    return sum(1.0 - keep**c for c in counts) / len(counts)


@functools.lru_cache(maxsize=256)
def dropblock_gamma(drop_prob: float, sizes: tuple[int, ...], block: tuple[int, ...], mode: str = "exact") -> float:
    """The Bernoulli rate ``gamma`` of block starts for a target drop probability.

    ``mode="paper"`` is Ghiasi et al. Eq. 1, ``gamma = p / prod(b) * prod(n) / prod(n - b + 1)``, a
    first-order rate that ignores overlapping blocks: at ``p = 0.5`` with 3x3 blocks on a 7x7 map it
    drops 38.5% of the units, not 50%. ``mode="exact"`` solves (by bisection) for the ``gamma`` whose
    expected dropped fraction, overlaps included, is exactly ``p``.
    """
    if mode not in GAMMA_MODES:
        raise ConfigurationError(f"DropBlock gamma mode must be one of {GAMMA_MODES}, got '{mode}'")
    if drop_prob <= 0.0:
        return 0.0
    if mode == "paper":
        num = drop_prob * math.prod(sizes)
        return min(1.0, num / (math.prod(block) * math.prod(n - b + 1 for n, b in zip(sizes, block))))
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if _expected_drop(mid, sizes, block) < drop_prob:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class DropBlock(nn.Module):
    """DropBlock (Ghiasi et al., 2018, Algorithm 1) for 1D, 2D or 3D feature maps ``(B, C, *spatial)``.

    In train mode, block starts are drawn Bernoulli(``gamma``) on the region where a whole block fits
    (so every dropped block lies inside the map), each start zeroes a ``block_size`` block, and the
    output is rescaled by ``count(M) / count_ones(M)`` over the whole tensor (Algorithm 1, step 6), so
    the sum of the activations is preserved. In eval mode, or with ``drop_prob = 0``, it is the identity.

    Args:
        drop_prob: target fraction of dropped units (Uni-Mlip: 0.5); ``1 - keep_prob`` of the paper.
        block_size: block edge (Uni-Mlip: 3), an int or one per spatial axis; clamped to the map size
            (a block as large as the map drops whole channels, as on the 3x3 map of a 96 px ResNet).
        spatial_dims: 1, 2 or 3.
        shared_channels: one mask for all channels of a sample; default ``False``, a mask per channel
            (as in the reference implementations).
        gamma_mode: ``"exact"`` (default): the expected dropped fraction equals ``drop_prob``;
            ``"paper"``: Ghiasi et al. Eq. 1, which drops less when blocks overlap (see :func:`dropblock_gamma`).
    """

    def __init__(
        self,
        drop_prob: float = 0.5,
        block_size: int | Sequence[int] = 3,
        spatial_dims: int = 2,
        shared_channels: bool = False,
        gamma_mode: str = "exact",
    ) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ConfigurationError(f"DropBlock drop_prob must be in [0, 1), got {drop_prob}")
        if spatial_dims not in (1, 2, 3):
            raise ConfigurationError(f"DropBlock spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        block = (block_size,) * spatial_dims if isinstance(block_size, int) else tuple(int(b) for b in block_size)
        if len(block) != spatial_dims or min(block) < 1:
            raise ConfigurationError(f"DropBlock block_size must be >= 1 with one value per spatial axis, got {block_size}")
        if gamma_mode not in GAMMA_MODES:
            raise ConfigurationError(f"DropBlock gamma_mode must be one of {GAMMA_MODES}, got '{gamma_mode}'")
        self.drop_prob = float(drop_prob)
        self.block_size = block
        self.spatial_dims = spatial_dims
        self.shared_channels = shared_channels
        self.gamma_mode = gamma_mode

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}, block_size={self.block_size}, gamma_mode={self.gamma_mode}"

    def block_mask(self, x: torch.Tensor) -> torch.Tensor:
        """A ``{0, 1}`` keep-mask broadcastable to ``x`` (drawn from torch's global generator)."""
        sizes = tuple(x.shape[2:])
        block = tuple(min(b, n) for b, n in zip(self.block_size, sizes))
        gamma = dropblock_gamma(self.drop_prob, sizes, block, self.gamma_mode)
        channels = 1 if self.shared_channels else x.shape[1]
        valid = tuple(n - b + 1 for n, b in zip(sizes, block))
        starts = torch.rand((x.shape[0], channels, *valid), device=x.device) < gamma
        # a start at index i drops [i, i + b): unit y is dropped if a start lies in [y - b + 1, y], a
        # max over windows of width b of the starts padded by b - 1 on both sides (length n + b - 1 -> n),
        # one axis at a time as a max of b shifted views (same result as max_pool, ~3x faster on CPU)
        pad: list[int] = []
        for b in reversed(block):
            pad += [b - 1, b - 1]
        dropped = F.pad(starts.float(), pad)
        for axis, b in enumerate(block, start=2):
            n = dropped.shape[axis] - b + 1
            window = dropped.narrow(axis, 0, n)
            for k in range(1, b):
                window = torch.maximum(window, dropped.narrow(axis, k, n))
            dropped = window
        return 1.0 - dropped

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.spatial_dims + 2:
            raise ShapeMismatchError(
                "DropBlock input", tuple(x.shape), ("B", "C") + ("*",) * self.spatial_dims,
                f"expected a {self.spatial_dims}D feature map (batch, channels, *spatial)",
            )
        if not self.training or self.drop_prob == 0.0:
            return x
        mask = self.block_mask(x)
        scale = mask.numel() / mask.sum().clamp(min=1.0)
        return x * (mask * scale).to(x.dtype)


class ImageFeaturePerturbation(nn.Module):
    """Uni-Mlip "Image FP": DropBlock on the last feature map, then the encoder's pooling: ``~F_v(V)``.

    ``forward(feature_map (B, C, *spatial)) -> (B, C)``: the perturbed pooled features, to be projected
    by the same vision projector as the clean ``pooled`` features to give ``~I`` of ``L_~ITC``.

    The default pooling is global average pooling, which is what :class:`~monai_medunic.networks.CXRImageEncoder`
    applies to its ResNet ``layer4`` output (the paper's modified ResNet-50 uses attention pooling;
    pass that module as ``pool`` for such an encoder). For a ViT encoder, whose ``pooled`` is the CLS
    token, average pooling of the perturbed patch grid is *not* the clean pooling; the paper perturbs
    a ResNet.

    Args:
        drop_prob, block_size, gamma_mode, shared_channels: see :class:`DropBlock` (paper: 0.5, 3).
        spatial_dims: of the feature map (2 for radiographs, 3 for volumes).
        pool: a module mapping the perturbed map to ``(B, C)`` (default: global average pooling).
    """

    def __init__(
        self,
        drop_prob: float = 0.5,
        block_size: int | Sequence[int] = 3,
        spatial_dims: int = 2,
        gamma_mode: str = "exact",
        shared_channels: bool = False,
        pool: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.dropblock = DropBlock(drop_prob, block_size, spatial_dims, shared_channels, gamma_mode)
        if pool is None:
            avg = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)[spatial_dims - 1]
            pool = nn.Sequential(avg(1), nn.Flatten(1))
        self.pool = pool

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.pool(self.dropblock(feature_map))


class TextFeaturePerturbation(nn.Dropout):
    """Uni-Mlip "Text FP": dropout (p = 0.75) on the text features ``F_t(C)`` after the text encoder.

    ``forward(features (B, D) or tokens (B, L, D)) -> same shape``: the perturbed features, to be
    projected by the same text projector as the clean ones to give ``~T`` of ``L_I~TC``. Inverted
    dropout (kept units scaled by ``1 / (1 - p)``); the identity in eval mode.
    """

    def __init__(self, p: float = 0.75) -> None:
        if not 0.0 <= p < 1.0:
            raise ConfigurationError(f"text feature dropout p must be in [0, 1), got {p}")
        super().__init__(p=p)
