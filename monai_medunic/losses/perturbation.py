"""Uni-Mlip's cross-modal terms: ITC with a learnable temperature (Eq. 1) and its feature-perturbed forms.

Reference: Bawazir & Wu, "Uni-Mlip: Unified Self-supervision for Medical Vision Language
Pre-training", Sec. 3.1-3.2 and 3.5 (``shared/papers/uni-mlip.md``).

* ``L_ITC`` (Eq. 1) is CLIP's symmetric InfoNCE with a learnable temperature ``tau``: exactly
  :class:`~monai_medunic.losses.CVLLoss` with ``learnable_temperature=True`` (the logit scale is
  clamped at 100 in place, as CLIP does). No second InfoNCE is written: :func:`itc_loss` builds that
  CVLLoss.
* ``L_~ITC`` and ``L_I~TC`` (Sec. 3.2) are Eq. 1 with the image embedding ``I`` replaced by the
  perturbed ``~I`` (DropBlock on the last feature map), or the text embedding ``T`` by ``~T`` (dropout
  on the text features). "The temperature tau" is one parameter of the model, so both terms use the
  *same* loss module as ``L_ITC``: in :func:`~monai_medunic.losses.build_objective` the library terms
  ``itc_perturbed_image`` / ``itc_perturbed_text`` share the module of ``itc`` (or of Med-UniC's
  ``cvl``, or UniMedI's ``clip``, when the objective mixes the methods), and :class:`UniMlipLoss` builds them that way.
  The perturbed embeddings themselves come from :class:`monai_medunic.networks.UniMlip`.
* The total (Eq. 4) is ``lambda_cm (L_ITC + L_~ITC + L_I~TC) + lambda_um L_I2I + lambda_fm L_MLM`` with
  ``lambda_cm = 0.5 / 3``, ``lambda_um = 0.5``, ``lambda_fm = 0.5`` (Sec. 4.2): :class:`UniMlipLoss`.
"""

from __future__ import annotations

from monai_medunic.losses.contrastive import CVLLoss
from monai_medunic.losses.mlm import MaskedLMLoss
from monai_medunic.losses.objective import CompositeObjective, ObjectiveTerm
from monai_medunic.losses.simclr import I2ILoss

__all__ = ["itc_loss", "UniMlipLoss", "UNIMLIP_LAMBDA_CM", "UNIMLIP_LAMBDA_UM", "UNIMLIP_LAMBDA_FM"]

UNIMLIP_LAMBDA_CM = 0.5 / 3  # the paper prints 0.167
UNIMLIP_LAMBDA_UM = 0.5
UNIMLIP_LAMBDA_FM = 0.5


def itc_loss(temperature: float = 0.07, learnable_temperature: bool = True, gather_distributed: bool = True) -> CVLLoss:
    """``L_ITC`` of Uni-Mlip Eq. 1: :class:`~monai_medunic.losses.CVLLoss` with a learnable ``tau``
    (initialised at ``temperature``, CLIP's 0.07; logit scale clamped at 100)."""
    return CVLLoss(temperature, learnable_temperature, gather_distributed)


class UniMlipLoss(CompositeObjective):
    """The Uni-Mlip objective, Eq. 4, a preset of :class:`~monai_medunic.losses.CompositeObjective`:

    .. math::
        \\mathcal{L} = \\lambda_{cm}(\\mathcal{L}_{ITC} + \\mathcal{L}_{\\tilde ITC} + \\mathcal{L}_{I\\tilde TC})
        + \\lambda_{um}\\mathcal{L}_{I2I} + \\lambda_{fm}\\mathcal{L}_{MLM}

    Terms (names as in :data:`~monai_medunic.losses.TERM_LIBRARY`, tensors as
    :class:`~monai_medunic.networks.UniMlip` names them): ``itc`` (``image_emb``, ``text_emb``),
    ``itc_perturbed_image`` (``image_emb_perturbed``, ``text_emb``), ``itc_perturbed_text``
    (``image_emb``, ``text_emb_perturbed``) -- the three share one loss module, so one ``tau`` --,
    ``i2i`` (``image_strong_a_emb``, ``image_strong_b_emb``) and ``fused_mlm`` (``mlm_logits``,
    ``mlm_labels``). A weight of 0 drops a term (ablations, Table 4); ``perturbed_weight`` sets both
    perturbed terms (default ``lambda_cm``).

    Args:
        lambda_cm, lambda_um, lambda_fm: Eq. 4's weights (paper: 0.167, 0.5, 0.5).
        perturbed_weight: the weight of each perturbed ITC term (default ``lambda_cm``).
        temperature: initial ``tau`` of ITC. learnable_temperature: learn it (Eq. 1).
        i2i_temperature: ``tau`` of Eq. 2 (see :class:`~monai_medunic.losses.I2ILoss`).
        gather_distributed: contrastive negatives from every rank under torch.distributed.
        check_finite: raise a typed error naming a NaN/inf term.
    """

    def __init__(
        self,
        lambda_cm: float = UNIMLIP_LAMBDA_CM,
        lambda_um: float = UNIMLIP_LAMBDA_UM,
        lambda_fm: float = UNIMLIP_LAMBDA_FM,
        perturbed_weight: float | None = None,
        temperature: float = 0.07,
        learnable_temperature: bool = True,
        i2i_temperature: float = 0.1,
        gather_distributed: bool = True,
        check_finite: bool = True,
    ) -> None:
        itc = itc_loss(temperature, learnable_temperature, gather_distributed)
        pw = lambda_cm if perturbed_weight is None else perturbed_weight
        super().__init__(
            {
                "itc": ObjectiveTerm(itc, ("image_emb", "text_emb"), lambda_cm),
                "itc_perturbed_image": ObjectiveTerm(itc, ("image_emb_perturbed", "text_emb"), pw),
                "itc_perturbed_text": ObjectiveTerm(itc, ("image_emb", "text_emb_perturbed"), pw),
                "i2i": ObjectiveTerm(I2ILoss(i2i_temperature, gather_distributed=gather_distributed),
                                     ("image_strong_a_emb", "image_strong_b_emb"), lambda_um),
                "fused_mlm": ObjectiveTerm(MaskedLMLoss(), ("mlm_logits", "mlm_labels"), lambda_fm),
            },
            check_finite=check_finite,
        )
