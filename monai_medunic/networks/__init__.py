"""Networks: image and text encoders, projectors and the per-method model assemblies."""

from monai_medunic.networks.image import IMAGE_ENCODER_SPECS, CXRImageEncoder, ImageEncoder, available_image_encoders
from monai_medunic.networks.models import ImageEmbedder, MedUniC
from monai_medunic.networks.projection import ProjectionHead
from monai_medunic.networks.text import HFTextEncoder, find_transformer_layers
from monai_medunic.networks.distillation import DistillationHead, attention_guided_mask
from monai_medunic.networks.unified_vit import UnifiedViT, available_unified_vits
from monai_medunic.networks.unimedi import UniMedI, select_slices
from monai_medunic.networks.perturbation import DropBlock, ImageFeaturePerturbation, TextFeaturePerturbation
from monai_medunic.networks.fusion import FusedMaskedLM, FusionTransformer
from monai_medunic.networks.vqa import VQAHead, VQAModel
from monai_medunic.networks.unimlip import UniMlip

__all__ = [
    "ImageEncoder",
    "CXRImageEncoder",
    "HFTextEncoder",
    "ProjectionHead",
    "MedUniC",
    "ImageEmbedder",
    "IMAGE_ENCODER_SPECS",
    "available_image_encoders",
    "find_transformer_layers",
    "UnifiedViT", "available_unified_vits", "UniMedI", "select_slices", "DistillationHead", "attention_guided_mask",
    "DropBlock", "ImageFeaturePerturbation", "TextFeaturePerturbation", "FusionTransformer", "FusedMaskedLM", "VQAHead", "VQAModel",
    "UniMlip",
]
