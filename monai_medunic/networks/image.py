"""Image encoders for radiographs and volumes, built on MONAI networks and selected by name.

Med-UniC (Wan et al., 2023, Sec. 4.1) uses ResNet-50 and ViT backbones; UniMedI (Sec. 3.2) encodes 2D
X-rays and 3D CT. Every encoder here returns the pooled embedding (the input of the vision projector
P_v) *and* the spatial features, which dense downstream tasks (segmentation, detection) and
text-guided slice selection need. The dimensionality is a parameter (``spatial_dims`` 2 or 3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from monai.networks.nets import ViT
from monai.networks.nets.resnet import ResNet, ResNetFeatures, get_inplanes
from torch import nn

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.networks.blocks import freeze_unused_cross_attention_norms

__all__ = ["ImageEncoder", "CXRImageEncoder", "ResNetTrunk", "ImageEncoderSpec", "IMAGE_ENCODER_SPECS", "available_image_encoders"]


@dataclass(frozen=True)
class ImageEncoderSpec:
    """What an encoder name means: the family and its hyper-parameters."""

    family: str  # "resnet" or "vit"
    kwargs: dict


# ViT sizes follow Dosovitskiy et al. (2021): B = 768/12/12, L = 1024/24/16. `vit_tiny` is a
# CPU-sized ViT (DeiT-Ti width) for tests and demos; `resnet18` is the small CNN.
IMAGE_ENCODER_SPECS: dict[str, ImageEncoderSpec] = {
    "resnet18": ImageEncoderSpec("resnet", {"block": "basic", "layers": [2, 2, 2, 2]}),
    "resnet50": ImageEncoderSpec("resnet", {"block": "bottleneck", "layers": [3, 4, 6, 3]}),
    "vit_tiny": ImageEncoderSpec("vit", {"patch_size": 16, "hidden_size": 192, "mlp_dim": 768, "num_layers": 4, "num_heads": 3}),
    "vit_b16": ImageEncoderSpec("vit", {"patch_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_layers": 12, "num_heads": 12}),
    "vit_l32": ImageEncoderSpec("vit", {"patch_size": 32, "hidden_size": 1024, "mlp_dim": 4096, "num_layers": 24, "num_heads": 16}),
}


def available_image_encoders() -> list[str]:
    """Names accepted by :class:`ImageEncoder`."""
    return sorted(IMAGE_ENCODER_SPECS)


class ResNetTrunk(ResNetFeatures):
    """MONAI's :class:`~monai.networks.nets.resnet.ResNetFeatures` (its ``forward`` returns the stem's and
    the four stages' feature maps) with the layout of He et al. (2016): a stride-2 7x7 stem and
    projection (type B) shortcuts with bias in every ResNet, as ``monai.networks.nets.resnet18`` /
    ``resnet50`` build them.

    ``ResNetFeatures(model_name)`` itself follows MedicalNet, whose ResNet-18/34 have parameter-free
    type-A shortcuts: a different network, whose weights a ResNet-18 trained here would not load into.
    """

    def __init__(self, block: str, layers: Sequence[int], spatial_dims: int = 2, in_channels: int = 1) -> None:
        ResNet.__init__(  # ResNetFeatures.__init__ would pick the MedicalNet shortcuts by name
            self,
            block=block,
            layers=list(layers),
            block_inplanes=get_inplanes(),
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            conv1_t_stride=2,
            shortcut_type="B",
            feed_forward=False,
            bias_downsample=True,
        )


def _as_size(size: int | Sequence[int], spatial_dims: int) -> tuple[int, ...]:
    size = (int(size),) * spatial_dims if isinstance(size, int) else tuple(int(s) for s in size)
    if len(size) != spatial_dims:
        raise ConfigurationError(f"img_size {size} does not have {spatial_dims} spatial dimensions")
    return size


class ImageEncoder(nn.Module):
    """An image encoder selected by name: ``resnet18``, ``resnet50``, ``vit_tiny``, ``vit_b16``, ``vit_l32``,
    for 2D images or 3D volumes (``spatial_dims``).

    The networks are MONAI's: :class:`ResNetTrunk` (``ResNetFeatures``' forward) and ``ViT`` (its own
    forward, which returns the normed CLS and patch tokens once the classification head is removed).
    The ViT's pooled embedding is the final-norm CLS token; the ResNet's is the average-pooled last map.

    Input: ``(B, C, *spatial)`` with ``C`` equal to ``in_channels`` or, as a stated policy, 1 or 3: a
    1-channel radiograph given to a 3-channel encoder is repeated over channels, a 3-channel image
    given to a 1-channel encoder is averaged to gray. Any other channel count, or a tensor whose
    dimensionality is not ``spatial_dims``, raises :class:`~monai_medunic.errors.ShapeMismatchError`.

    Returns a dict:
        ``pooled``: ``(B, D_v)`` global embedding (input of the vision projector P_v).
        ``feature_map``: ``(B, C', *grid)`` last spatial features (ResNet layer4; ViT patch tokens on their grid).
        ``tokens``: ``(B, prod(grid), C')`` the same features as a token sequence.
        ``pyramid`` (ResNet): the stem's and the four stages' maps, for dense downstream decoders.

    Args:
        name: encoder name, see :func:`available_image_encoders`.
        in_channels: channels the network is built with.
        img_size: input size, an int (isotropic) or one value per spatial dimension (ViT only: fixes
            the positional embedding grid).
        spatial_dims: 2 (radiographs) or 3 (volumes).
        dropout_rate: ViT dropout.
    """

    def __init__(
        self,
        name: str = "resnet50",
        in_channels: int = 1,
        img_size: int | Sequence[int] = 224,
        spatial_dims: int = 2,
        dropout_rate: float = 0.0,
    ) -> None:
        super().__init__()
        if name not in IMAGE_ENCODER_SPECS:
            raise ConfigurationError(f"unknown image encoder '{name}'; choose one of {available_image_encoders()}")
        if in_channels not in (1, 3):
            raise ConfigurationError(f"in_channels must be 1 or 3, got {in_channels}")
        if spatial_dims not in (2, 3):
            raise ConfigurationError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        spec = IMAGE_ENCODER_SPECS[name]
        self.name, self.family = name, spec.family
        self.in_channels, self.spatial_dims = in_channels, spatial_dims
        self.img_size = _as_size(img_size, spatial_dims)
        if spec.family == "resnet":
            self.backbone = ResNetTrunk(spec.kwargs["block"], spec.kwargs["layers"], spatial_dims, in_channels)
            self.out_dim = 512 if spec.kwargs["block"] == "basic" else 2048
            self.pool = nn.AdaptiveAvgPool2d(1) if spatial_dims == 2 else nn.AdaptiveAvgPool3d(1)
        else:
            kw = dict(spec.kwargs)
            patch = kw["patch_size"]
            if any(s % patch for s in self.img_size):
                raise ConfigurationError(f"img_size {self.img_size} is not a multiple of the patch size {patch} of '{name}'")
            self.backbone = ViT(in_channels=in_channels, img_size=self.img_size, spatial_dims=spatial_dims,
                                classification=True, dropout_rate=dropout_rate, qkv_bias=True, **kw)
            # the classification head is not used: ViT.forward then returns the normed CLS + patch tokens
            del self.backbone.classification_head
            freeze_unused_cross_attention_norms(self.backbone)
            self.out_dim = kw["hidden_size"]
            self.grid = tuple(s // patch for s in self.img_size)

    def _adapt_channels(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.in_channels:
            return x
        if c == 1 and self.in_channels == 3:
            return x.expand(-1, 3, *x.shape[2:])
        if c == 3 and self.in_channels == 1:
            return x.mean(dim=1, keepdim=True)
        raise ShapeMismatchError(
            f"image encoder '{self.name}' input", tuple(x.shape), ("B", self.in_channels, *self.img_size), "expected 1 or 3 channels"
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        if x.ndim != self.spatial_dims + 2:
            expected = ("B", "C", *("DHW"[-self.spatial_dims:]))
            raise ShapeMismatchError(f"{self.spatial_dims}D image encoder '{self.name}' input", tuple(x.shape), expected)
        x = self._adapt_channels(x)
        if self.family == "resnet":
            pyramid = self.backbone(x)
            fmap = pyramid[-1]
            return {"pooled": torch.flatten(self.pool(fmap), 1), "feature_map": fmap,
                    "tokens": fmap.flatten(2).transpose(1, 2), "pyramid": pyramid}
        if tuple(x.shape[2:]) != self.img_size:
            raise ShapeMismatchError(f"ViT '{self.name}' input size", tuple(x.shape[2:]), self.img_size, "resize images to img_size")
        h, _ = self.backbone(x)
        patch = h[:, 1:]
        fmap = patch.transpose(1, 2).reshape(h.shape[0], self.out_dim, *self.grid)
        return {"pooled": h[:, 0], "feature_map": fmap, "tokens": patch}


#: The 2D chest X-ray name of :class:`ImageEncoder` (monai-medunic 0.1.0 configs use it).
CXRImageEncoder = ImageEncoder
