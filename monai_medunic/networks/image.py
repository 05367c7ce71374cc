"""Image encoders for chest radiographs, built on MONAI networks and selected by name.

Med-UniC (Wan et al., 2023, Sec. 4.1) uses ResNet-50 and ViT backbones. Every encoder here returns the
pooled embedding (the input of the vision projector P_v) *and* the spatial features, which dense
downstream tasks (segmentation) and text-guided slice selection (UniMedI) need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from monai.networks.nets import ViT, resnet18, resnet50
from torch import nn

from monai_medunic.errors import ConfigurationError, ShapeMismatchError

__all__ = ["CXRImageEncoder", "ImageEncoderSpec", "IMAGE_ENCODER_SPECS", "available_image_encoders"]


@dataclass(frozen=True)
class ImageEncoderSpec:
    """What an encoder name means: the family and its hyper-parameters."""

    family: str  # "resnet" or "vit"
    kwargs: dict


# ViT sizes follow Dosovitskiy et al. (2021): B = 768/12/12, L = 1024/24/16. `vit_tiny` is a
# CPU-sized ViT (DeiT-Ti width) for tests and demos; `resnet18` is the small CNN.
IMAGE_ENCODER_SPECS: dict[str, ImageEncoderSpec] = {
    "resnet18": ImageEncoderSpec("resnet", {"depth": 18}),
    "resnet50": ImageEncoderSpec("resnet", {"depth": 50}),
    "vit_tiny": ImageEncoderSpec("vit", {"patch_size": 16, "hidden_size": 192, "mlp_dim": 768, "num_layers": 4, "num_heads": 3}),
    "vit_b16": ImageEncoderSpec("vit", {"patch_size": 16, "hidden_size": 768, "mlp_dim": 3072, "num_layers": 12, "num_heads": 12}),
    "vit_l32": ImageEncoderSpec("vit", {"patch_size": 32, "hidden_size": 1024, "mlp_dim": 4096, "num_layers": 24, "num_heads": 16}),
}

_RESNETS: dict[int, Callable[..., nn.Module]] = {18: resnet18, 50: resnet50}


def available_image_encoders() -> list[str]:
    """Names accepted by :class:`CXRImageEncoder`."""
    return sorted(IMAGE_ENCODER_SPECS)


class CXRImageEncoder(nn.Module):
    """A 2D image encoder selected by name: ``resnet18``, ``resnet50``, ``vit_tiny``, ``vit_b16``, ``vit_l32``.

    The networks are MONAI's ``resnet18``/``resnet50`` and ``ViT``. ResNets use a stride-2 7x7 stem
    (the ImageNet layout of He et al., 2016; MONAI's default stem has stride 1, which costs four times
    the compute at 224 px). The ViT uses a CLS token; its pooled embedding is the final-norm CLS token.

    Input: ``(B, C, H, W)`` with ``C`` equal to ``in_channels`` or, as a stated policy, 1 or 3: a
    1-channel radiograph given to a 3-channel encoder is repeated over channels, a 3-channel image
    given to a 1-channel encoder is averaged to gray. Any other channel count raises
    :class:`~monai_medunic.errors.ShapeMismatchError`.

    Returns a dict:
        ``pooled``: ``(B, D_v)`` global embedding (input of the vision projector P_v).
        ``feature_map``: ``(B, C', h, w)`` last spatial features (ResNet layer4; ViT patch tokens on their grid).
        ``tokens``: ``(B, h*w, C')`` the same features as a token sequence.

    Args:
        name: encoder name, see :func:`available_image_encoders`.
        in_channels: channels the network is built with.
        img_size: input size (ViT only: fixes the positional embedding grid).
        dropout_rate: ViT dropout.
    """

    def __init__(self, name: str = "resnet50", in_channels: int = 1, img_size: int = 224, dropout_rate: float = 0.0) -> None:
        super().__init__()
        if name not in IMAGE_ENCODER_SPECS:
            raise ConfigurationError(f"unknown image encoder '{name}'; choose one of {available_image_encoders()}")
        if in_channels not in (1, 3):
            raise ConfigurationError(f"in_channels must be 1 or 3, got {in_channels}")
        spec = IMAGE_ENCODER_SPECS[name]
        self.name = name
        self.family = spec.family
        self.in_channels = in_channels
        self.img_size = img_size
        if spec.family == "resnet":
            self.backbone = _RESNETS[spec.kwargs["depth"]](
                spatial_dims=2, n_input_channels=in_channels, feed_forward=False, conv1_t_stride=2
            )
            self.out_dim = 512 if spec.kwargs["depth"] < 50 else 2048
        else:
            kw = dict(spec.kwargs)
            if img_size % kw["patch_size"]:
                raise ConfigurationError(f"img_size {img_size} is not a multiple of the patch size {kw['patch_size']} of '{name}'")
            self.backbone = ViT(
                in_channels=in_channels,
                img_size=img_size,
                spatial_dims=2,
                classification=True,
                dropout_rate=dropout_rate,
                qkv_bias=True,
                **kw,
            )
            # the classification head is not used: the pooled embedding feeds the projector
            del self.backbone.classification_head
            self.out_dim = kw["hidden_size"]
            self.grid = img_size // kw["patch_size"]

    def _adapt_channels(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if c == self.in_channels:
            return x
        if c == 1 and self.in_channels == 3:
            return x.expand(-1, 3, -1, -1)
        if c == 3 and self.in_channels == 1:
            return x.mean(dim=1, keepdim=True)
        raise ShapeMismatchError(
            f"image encoder '{self.name}' input", tuple(x.shape), ("B", self.in_channels, "H", "W"), "expected 1 or 3 channels"
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.ndim != 4:
            raise ShapeMismatchError(f"image encoder '{self.name}' input", tuple(x.shape), ("B", "C", "H", "W"))
        x = self._adapt_channels(x)
        if self.family == "resnet":
            return self._forward_resnet(x)
        return self._forward_vit(x)

    def _forward_resnet(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        net = self.backbone
        x = net.act(net.bn1(net.conv1(x)))
        if not net.no_max_pool:
            x = net.maxpool(x)
        fmap = net.layer4(net.layer3(net.layer2(net.layer1(x))))
        pooled = torch.flatten(net.avgpool(fmap), 1)
        return {"pooled": pooled, "feature_map": fmap, "tokens": fmap.flatten(2).transpose(1, 2)}

    def _forward_vit(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ShapeMismatchError(
                f"ViT '{self.name}' input size", tuple(x.shape[-2:]), (self.img_size, self.img_size), "resize images to img_size"
            )
        net = self.backbone
        tokens = net.patch_embedding(x)
        cls = net.cls_token.expand(tokens.shape[0], -1, -1)
        h = torch.cat((cls, tokens), dim=1)
        for blk in net.blocks:
            h = blk(h)
        h = net.norm(h)
        patch = h[:, 1:]
        fmap = patch.transpose(1, 2).reshape(h.shape[0], self.out_dim, self.grid, self.grid)
        return {"pooled": h[:, 0], "feature_map": fmap, "tokens": patch}
