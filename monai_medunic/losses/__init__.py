"""Losses of the vision-language pre-training methods (each documents its paper and equation)."""

from monai_medunic.losses.composite import MedUniCLoss
from monai_medunic.losses.contrastive import CVLLoss, SSVLoss, info_nce
from monai_medunic.losses.ctr import CTRLoss, TextFeatureAlignmentLoss, TextToTextAlignmentLoss
from monai_medunic.losses.distill import DINOLoss, MaskedPatchDistillationLoss, distillation_cross_entropy
from monai_medunic.losses.distributed import gather_with_grad, is_distributed
from monai_medunic.losses.mlm import MaskedLMLoss
from monai_medunic.losses.objective import (
    TERM_LIBRARY,
    CompositeObjective,
    ObjectiveTerm,
    TermSpec,
    build_objective,
    register_term,
)
from monai_medunic.losses.simclr import I2ILoss
from monai_medunic.losses.perturbation import UniMlipLoss, itc_loss

__all__ = [
    "CVLLoss",
    "SSVLoss",
    "CTRLoss",
    "TextFeatureAlignmentLoss",
    "TextToTextAlignmentLoss",
    "MedUniCLoss",
    "MaskedLMLoss",
    "I2ILoss",
    "UniMlipLoss",
    "itc_loss",
    "CompositeObjective",
    "ObjectiveTerm",
    "TermSpec",
    "TERM_LIBRARY",
    "build_objective",
    "register_term",
    "DINOLoss", "MaskedPatchDistillationLoss", "distillation_cross_entropy",
    "info_nce",
    "gather_with_grad",
    "is_distributed",
]
