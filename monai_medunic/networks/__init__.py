"""Networks: image and text encoders, projectors and the per-method model assemblies."""

from monai_medunic.networks.image import IMAGE_ENCODER_SPECS, CXRImageEncoder, available_image_encoders
from monai_medunic.networks.models import ImageEmbedder, MedUniC
from monai_medunic.networks.projection import ProjectionHead
from monai_medunic.networks.text import HFTextEncoder, find_transformer_layers

__all__ = [
    "CXRImageEncoder",
    "HFTextEncoder",
    "ProjectionHead",
    "MedUniC",
    "ImageEmbedder",
    "IMAGE_ENCODER_SPECS",
    "available_image_encoders",
    "find_transformer_layers",
]
