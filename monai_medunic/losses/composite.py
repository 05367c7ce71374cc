"""The Med-UniC objective: weighted CVL + SSV + CTR (Eq. 1), a preset of :class:`CompositeObjective`."""

from __future__ import annotations

from monai_medunic.losses.contrastive import CVLLoss, SSVLoss
from monai_medunic.losses.ctr import CTRLoss
from monai_medunic.losses.objective import CompositeObjective, ObjectiveTerm

__all__ = ["MedUniCLoss"]


class MedUniCLoss(CompositeObjective):
    """``L = w_cvl L_CVL + w_ssv L_SSV + w_ctr L_CTR`` (Med-UniC Eq. 1 has every weight at 1).

    ``forward`` takes the output dict of :class:`monai_medunic.networks.MedUniC` and reads
    ``image_emb``/``text_emb`` (CVL), ``image_emb``/``image_aug_emb`` (SSV) and ``ctr_a``/``ctr_b``
    (CTR). A term whose weight is 0 is not computed (ablations such as "without CTR").

    Returns a dict with ``loss`` (the weighted total, differentiable) and each active term's
    unweighted value (``cvl``, ``ssv``, ``ctr``) for logging.

    Args:
        cvl_weight, ssv_weight, ctr_weight: term weights.
        temperature: CVL ``sigma_1``. ssv_temperature: SSV ``sigma_2``. lambd: CTR ``lambda``.
        learnable_temperature: learn the CVL temperature (a parameter of this module: give it to the
            optimizer with :func:`monai_medunic.engines.trainable_parameters`).
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
        losses = {
            "cvl": CVLLoss(temperature, learnable_temperature, gather_distributed),
            "ssv": SSVLoss(ssv_temperature, ssv_symmetric, gather_distributed=gather_distributed),
            "ctr": CTRLoss(lambd, gather_distributed),
        }
        weights = {"cvl": cvl_weight, "ssv": ssv_weight, "ctr": ctr_weight}
        super().__init__(
            {t: ObjectiveTerm(losses[t], self.TERMS[t], float(weights[t])) for t in self.TERMS}, check_finite=check_finite
        )
