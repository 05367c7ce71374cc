"""Contrastive (InfoNCE) losses of Med-UniC: CVL (Eq. 2-3) and SSV (Eq. 4).

Reference: Wan et al., "Med-UniC: Unifying Cross-Lingual Medical Vision-Language Pre-Training by
Diminishing Bias", NeurIPS 2023 (``shared/papers/med-unic-with-equations.md``).

Both losses L2-normalise their inputs (the paper's ``s = v^T l`` are *cosine* similarities) and are
distributed-aware: under ``torch.distributed`` each rank scores its local rows against the rows of
all ranks, gathered with gradients, so negatives span the global batch (as open_clip does).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from monai_medunic.errors import ConfigurationError
from monai_medunic.losses._checks import check_pair, no_autocast
from monai_medunic.losses.distributed import gather_with_grad

__all__ = ["CVLLoss", "SSVLoss", "info_nce"]


def info_nce(queries: torch.Tensor, keys: torch.Tensor, offset: int, logit_scale: torch.Tensor | float) -> torch.Tensor:
    """Mean over the rows of ``queries`` of ``-log softmax(scale * q_i . k)[offset + i]``.

    ``queries`` are this rank's rows; ``keys`` the gathered rows of all ranks, with this rank's rows
    starting at ``offset``. Both are expected L2-normalised.
    """
    logits = logit_scale * queries @ keys.t()
    targets = torch.arange(queries.shape[0], device=queries.device) + offset
    return F.cross_entropy(logits, targets)


class _TemperatureMixin(nn.Module):
    def _init_temperature(self, temperature: float, learnable: bool, max_logit_scale: float = 100.0) -> None:
        if temperature <= 0:
            raise ConfigurationError(f"temperature must be > 0, got {temperature}")
        self.max_logit_scale = max_logit_scale
        init = torch.tensor(math.log(1.0 / temperature))
        if learnable:
            self.log_logit_scale = nn.Parameter(init)
        else:
            self.register_buffer("log_logit_scale", init, persistent=False)

    @property
    def logit_scale(self) -> torch.Tensor:
        """``1 / sigma``, at most ``max_logit_scale``.

        A learnable scale is clamped as CLIP does: the *parameter* is clamped in place (at
        ``log(max_logit_scale)``) before it is used, so it keeps a gradient and can come back down,
        where clamping only the exponential would leave it stuck with a zero gradient."""
        if isinstance(self.log_logit_scale, nn.Parameter):
            with torch.no_grad():
                self.log_logit_scale.clamp_(max=math.log(self.max_logit_scale))
            return self.log_logit_scale.exp()
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    @property
    def temperature(self) -> float:
        return float(1.0 / self.logit_scale.detach())


class CVLLoss(_TemperatureMixin):
    """Cross-lingual vision-language alignment, Med-UniC Eq. 2-3.

    .. math::
        \\mathcal{L}_{CVL} = \\frac{1}{2K}\\sum_i \\left(-\\log\\frac{e^{s^{v2l}_{ii}/\\sigma_1}}{\\sum_j e^{s^{v2l}_{ij}/\\sigma_1}}
        -\\log\\frac{e^{s^{l2v}_{ii}/\\sigma_1}}{\\sum_j e^{s^{l2v}_{ij}/\\sigma_1}}\\right)

    with cosine similarities ``s_ij = v_i^T l_j`` of the L2-normalised projected embeddings: the
    symmetric CLIP InfoNCE. Matched image-report pairs are the positives; every other report (or
    image) in the global batch is a negative.

    Args:
        temperature: ``sigma_1`` (0.07 in the paper).
        learnable_temperature: learn ``log(1/sigma_1)`` as in CLIP (clamped at a logit scale of 100).
        gather_distributed: under torch.distributed, take negatives from every rank.

    Shape:
        ``image_emb``, ``text_emb``: ``(K, d)``. Returns a scalar.
    """

    def __init__(self, temperature: float = 0.07, learnable_temperature: bool = False, gather_distributed: bool = True) -> None:
        super().__init__()
        self._init_temperature(temperature, learnable_temperature)
        self.gather_distributed = gather_distributed

    def forward(self, image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        check_pair("CVLLoss", image_emb, text_emb)
        with no_autocast(image_emb.device.type):
            v, t = F.normalize(image_emb.float(), dim=-1), F.normalize(text_emb.float(), dim=-1)
            if self.gather_distributed:
                v_all, offset = gather_with_grad(v)
                t_all, _ = gather_with_grad(t)
            else:
                v_all, t_all, offset = v, t, 0
            scale = self.logit_scale
            return 0.5 * (info_nce(v, t_all, offset, scale) + info_nce(t, v_all, offset, scale))


class SSVLoss(_TemperatureMixin):
    """Self-supervised vision alignment, Med-UniC Eq. 4.

    .. math::
        \\mathcal{L}_{SSV} = -\\frac{1}{K}\\sum_i \\log\\frac{e^{s^{v2v'}_{ii}/\\sigma_2}}{\\sum_j e^{s^{v2v'}_{ij}/\\sigma_2}},
        \\quad s^{v2v'}_{ij} = \\hat v_i^T \\hat v'_j

    The printed equation is one-directional (``v -> v'``), and that is the default. With
    ``symmetric=True`` the ``v' -> v`` direction is added and the two are averaged, as in SimCLR's
    NT-Xent without the intra-view negatives.

    Args:
        temperature: ``sigma_2`` (0.07 in the paper).
        symmetric: average both directions.
        learnable_temperature: learn ``log(1/sigma_2)``.
        gather_distributed: under torch.distributed, take negatives from every rank.
    """

    def __init__(
        self,
        temperature: float = 0.07,
        symmetric: bool = False,
        learnable_temperature: bool = False,
        gather_distributed: bool = True,
    ) -> None:
        super().__init__()
        self._init_temperature(temperature, learnable_temperature)
        self.symmetric = symmetric
        self.gather_distributed = gather_distributed

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor) -> torch.Tensor:
        check_pair("SSVLoss", view_a, view_b)
        with no_autocast(view_a.device.type):
            a, b = F.normalize(view_a.float(), dim=-1), F.normalize(view_b.float(), dim=-1)
            if self.gather_distributed:
                b_all, offset = gather_with_grad(b)
            else:
                b_all, offset = b, 0
            loss = info_nce(a, b_all, offset, self.logit_scale)
            if self.symmetric:
                a_all, _ = gather_with_grad(a) if self.gather_distributed else (a, 0)
                loss = 0.5 * (loss + info_nce(b, a_all, offset, self.logit_scale))
            return loss
