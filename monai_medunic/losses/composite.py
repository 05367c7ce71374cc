"""The Med-UniC objective: weighted CVL + SSV + CTR (Eq. 1), with every term reported for logging."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import nn

from monai_medunic.errors import ConfigurationError, NonFiniteLossError
from monai_medunic.losses.contrastive import CVLLoss, SSVLoss
from monai_medunic.losses.ctr import CTRLoss

__all__ = ["MedUniCLoss"]


class MedUniCLoss(nn.Module):
    """``L = w_cvl L_CVL + w_ssv L_SSV + w_ctr L_CTR`` (Med-UniC Eq. 1 has every weight at 1).

    ``forward`` takes the output dict of :class:`monai_medunic.networks.MedUniC` and reads
    ``image_emb``/``text_emb`` (CVL), ``image_emb``/``image_aug_emb`` (SSV) and ``ctr_a``/``ctr_b``
    (CTR). A term whose weight is 0 is not computed (ablations such as "without CTR").

    Returns a dict with ``loss`` (the weighted total, differentiable) and each active term's
    unweighted value (``cvl``, ``ssv``, ``ctr``) for logging.

    Args:
        cvl_weight, ssv_weight, ctr_weight: term weights.
        temperature: CVL ``sigma_1``. ssv_temperature: SSV ``sigma_2``. lambd: CTR ``lambda``.
        learnable_temperature: learn the CVL temperature.
        ssv_symmetric: use both SSV directions (the printed Eq. 4 has one).
        gather_distributed: gather across ranks under torch.distributed.
        check_finite: raise :class:`~monai_medunic.errors.NonFiniteLossError` naming the term that
            became NaN/inf, instead of letting the optimiser step on it.
    """

    TERMS = {"cvl": ("image_emb", "text_emb"), "ssv": ("image_emb", "image_aug_emb"), "ctr": ("ctr_a", "ctr_b")}

    def __init__(
        self,
        cvl_weight: float = 1.0,
        ssv_weight: float = 1.0,
        ctr_weight: float = 1.0,
        temperature: float = 0.07,
        ssv_temperature: float = 0.07,
        lambd: float = 5.1e-3,
        learnable_temperature: bool = False,
        ssv_symmetric: bool = False,
        gather_distributed: bool = True,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        self.weights = {"cvl": float(cvl_weight), "ssv": float(ssv_weight), "ctr": float(ctr_weight)}
        if any(w < 0 for w in self.weights.values()):
            raise ConfigurationError(f"MedUniCLoss weights must be non-negative, got {self.weights}")
        if not any(self.weights.values()):
            raise ConfigurationError("MedUniCLoss: every term weight is 0")
        self.cvl = CVLLoss(temperature, learnable_temperature, gather_distributed)
        self.ssv = SSVLoss(ssv_temperature, ssv_symmetric, gather_distributed=gather_distributed)
        self.ctr = CTRLoss(lambd, gather_distributed)
        self.check_finite = check_finite

    @property
    def active_terms(self) -> list[str]:
        return [t for t, w in self.weights.items() if w > 0]

    def forward(self, outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        terms: dict[str, torch.Tensor] = {}
        for term in self.active_terms:
            keys = self.TERMS[term]
            missing = [k for k in keys if outputs.get(k) is None]
            if missing:
                raise ConfigurationError(
                    f"MedUniCLoss term '{term}' needs {list(keys)} from the network output but {missing} is missing; "
                    "pass the second image view / train-mode text dropout view, or set its weight to 0"
                )
            value = getattr(self, term)(*(outputs[k] for k in keys))
            if self.check_finite and not torch.isfinite(value.detach()).all():
                raise NonFiniteLossError(term, float(value.detach()))
            terms[term] = value
        total = sum(self.weights[t] * v for t, v in terms.items())
        return {"loss": total, **terms}
