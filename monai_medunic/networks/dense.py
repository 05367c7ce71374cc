"""Pre-trained image encoders inside MONAI's dense networks: segmentation decoders and RetinaNet detection.

Med-UniC (Wan et al., 2023, Sec. 4.2 and App. D) and UniMedI (Sec. 4.2.2, 4.4.3, App. 7.2) judge a
pre-trained image encoder ``F_v`` on dense tasks with ``F_v`` **frozen**: only a U-Net decoder
(ResNet-50, Med-UniC "Medical Image Semantic Segmentation"), a SETR-PUP decoder (ViT, UniMedI App. 7.2,
Zheng et al. 2021 Sec. 3.3) or a detection head (YOLOv3 in Med-UniC; ViTDet's simple feature pyramid in
UniMedI) is trained, on 1 %, 10 % or 100 % of the labels. This module holds the pieces:

* :func:`load_encoder_weights`: pre-trained weights into an :class:`~monai_medunic.networks.ImageEncoder`
  **by name**. Every parameter and buffer of the encoder must be in the checkpoint with its shape, and
  every checkpoint entry must belong to the encoder; anything else (a checkpoint of another
  architecture) raises :class:`~monai_medunic.errors.EncoderWeightsError` listing the missing,
  unexpected and mismatched names. After loading, each tensor is compared with its source, so an
  encoder never silently keeps random weights.
* Segmentation: :class:`EncoderSegmentationNetwork` (``images -> logits``, one channel per finding) over
  one of three decoders: :class:`PyramidUNetDecoder` (MONAI ``FlexibleUNet``'s ``UNetDecoder`` and
  ``SegmentationHead`` over the ResNet pyramid; the encoder is this package's ResNet, which
  ``FlexibleUNet``'s MedicalNet-style ``resnet18`` backbone cannot hold), :class:`ProgressiveUpsamplingDecoder`
  (SETR-PUP over the ViT patch grid) and :class:`LinearSegmentationDecoder` (a 1x1 convolution on the
  last feature map, upsampled: the linear-probe baseline of dense tasks).
* Detection: :class:`EncoderRetinaNet`, MONAI's ``RetinaNet`` whose feature pyramid is MONAI's
  ``FeaturePyramidNetwork`` over the pre-trained ResNet's stages (:class:`ResNetFeaturePyramid`), or a :class:`ViTSimpleFeaturePyramid`
  (Li et al. 2022, ViTDet Sec. 3) over a ViT's last map; :func:`retinanet_detector` wraps it in MONAI's
  ``RetinaNetDetector`` with its anchor generator, ATSS matcher and hard-negative sampler.

A frozen encoder has ``requires_grad=False``, stays in eval mode whatever ``train()`` is called (its
BatchNorm statistics do not move), and runs without autograd.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.networks.retinanet_network import RetinaNet
from monai.apps.detection.utils.ATSS_matcher import ATSSMatcher
from monai.networks.blocks import Convolution, UpSample
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool
from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder
from torch import nn
from torch.nn import functional as F

from monai_medunic.errors import ConfigurationError, EncoderWeightsError, ModelLoadError

__all__ = [
    "DECODERS",
    "load_encoder_weights",
    "read_encoder_state",
    "freeze_module",
    "PyramidUNetDecoder",
    "ProgressiveUpsamplingDecoder",
    "LinearSegmentationDecoder",
    "EncoderSegmentationNetwork",
    "predict_masks",
    "ResNetFeaturePyramid",
    "ViTSimpleFeaturePyramid",
    "EncoderRetinaNet",
    "EncoderRetinaNetDetector",
    "retinanet_detector",
]

logger = logging.getLogger(__name__)

#: Segmentation decoders by name; ``"auto"`` is ``"unet"`` for a ResNet and ``"pup"`` for a ViT.
DECODERS: tuple[str, ...] = ("auto", "unet", "pup", "linear")

_LISTED = 8  # names shown per list in an EncoderWeightsError


# ----------------------------------------------------------------------------------------- weights
def read_encoder_state(source: nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors of a pre-trained encoder: a module's ``state_dict``, a state dict, or a checkpoint file
    (``.pt`` read with ``torch.load(weights_only=True)``, or ``.safetensors``). With ``prefix`` only the
    entries under it are kept, without it (``"model.image_encoder."`` selects the encoder of a whole
    trained bundle's ``models/model.pt``).

    Raises:
        ModelLoadError: the file cannot be read (names it).
    """
    if isinstance(source, nn.Module):
        state = source.state_dict()
    elif isinstance(source, Mapping):
        state = dict(source)
    else:
        path = Path(source)
        try:
            if path.suffix == ".safetensors":
                from safetensors.torch import load_file

                state = load_file(str(path))
            else:
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ModelLoadError(f"{path}: cannot read encoder weights: {type(err).__name__}: {str(err)[:300]}") from None
        if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
            state = state["state_dict"]
        if not isinstance(state, Mapping):
            raise ModelLoadError(f"{path}: not a state dict (got {type(state).__name__})")
        state = dict(state)
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _listed(names: Sequence[str]) -> str:
    names = sorted(names)
    more = f" (+{len(names) - _LISTED} more)" if len(names) > _LISTED else ""
    return "[" + ", ".join(names[:_LISTED]) + "]" + more


def load_encoder_weights(
    encoder: nn.Module,
    source: nn.Module | Mapping[str, torch.Tensor] | str | os.PathLike,
    prefix: str = "",
    source_name: str | None = None,
) -> int:
    """Load pre-trained weights into ``encoder`` by parameter / buffer name, and check that all of them landed.

    Args:
        encoder: the encoder inside a dense network (an :class:`~monai_medunic.networks.ImageEncoder`).
        source: the pre-trained encoder (a module), its state dict, or a checkpoint file.
        prefix: keep only the source entries under this name prefix (see :func:`read_encoder_state`).
        source_name: how error messages name the source (default: the path, or the module's class).

    Returns:
        the number of tensors loaded.

    Raises:
        EncoderWeightsError: the names or shapes differ (another architecture, another input channel
            count, a ViT of another image size): the message lists the missing, unexpected and
            mismatched names, and the error carries them as lists.
    """
    what = source_name or (type(source).__name__ if isinstance(source, nn.Module) else
                           "state dict" if isinstance(source, Mapping) else os.fspath(source))
    state = read_encoder_state(source, prefix)
    target = encoder.state_dict()
    missing = [k for k in target if k not in state]
    unexpected = [k for k in state if k not in target]
    mismatched = {k: (tuple(state[k].shape), tuple(v.shape)) for k, v in target.items() if k in state and state[k].shape != v.shape}
    name = getattr(encoder, "name", type(encoder).__name__)
    if not state:
        raise EncoderWeightsError(f"{what}: no encoder weights{f' under prefix {prefix!r}' if prefix else ''}; "
                                  f"the '{name}' encoder needs {len(target)} tensors", missing=list(target))
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing {_listed(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected {_listed(unexpected)}")
        if mismatched:
            shown = {k: mismatched[k] for k in sorted(mismatched)[:_LISTED]}
            parts.append(f"{len(mismatched)} with another shape (checkpoint, encoder) {shown}")
        raise EncoderWeightsError(
            f"{what}: the weights do not fit the '{name}' encoder (a checkpoint of another architecture?): " + "; ".join(parts),
            missing=missing, unexpected=unexpected, mismatched=mismatched,
        )
    encoder.load_state_dict(state, strict=True)
    landed = encoder.state_dict()
    differ = [k for k, v in state.items() if not torch.equal(landed[k].cpu(), v.to(landed[k].dtype).cpu())]
    if differ:  # load_state_dict succeeded yet a tensor is not the source's: never keep random weights silently
        raise EncoderWeightsError(f"{what}: {len(differ)} tensors did not land in the '{name}' encoder {_listed(differ)}",
                                  missing=differ)
    logger.info("loaded %d pre-trained tensors into the '%s' encoder from %s", len(state), name, what)
    return len(state)


def freeze_module(module: nn.Module) -> nn.Module:
    """``requires_grad=False`` on every parameter and eval mode (callers keep it in eval in ``train()``)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


# ------------------------------------------------------------------------------------ segmentation
class PyramidUNetDecoder(nn.Module):
    """The decoder and head of MONAI's ``FlexibleUNet`` (``UNetDecoder`` + ``SegmentationHead``, its
    defaults) over the ResNet pyramid of :class:`~monai_medunic.networks.ImageEncoder` (stem at 1/2, four
    stages at 1/4 .. 1/32): the U-Net fine-tuning setting of Med-UniC Sec. 4.2 (Ronneberger et al. 2015).

    Args:
        pyramid_channels: channels of the stem and the four stages, e.g. ``(64, 64, 128, 256, 512)`` (ResNet-18).
        out_channels: output channels (one per finding).
        in_channels: image channels (``FlexibleUNet`` counts them in its encoder channels).
        decoder_channels: channels of the five decoder stages.
        spatial_dims: 2 (radiographs) or 3.
    """

    def __init__(
        self,
        pyramid_channels: Sequence[int],
        out_channels: int,
        in_channels: int = 1,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        if len(pyramid_channels) != 5 or len(decoder_channels) != 5:
            raise ConfigurationError(f"the U-Net decoder needs 5 pyramid levels and 5 decoder channels, got "
                                     f"{list(pyramid_channels)} and {list(decoder_channels)}")
        self.decoder = UNetDecoder(
            spatial_dims=spatial_dims, encoder_channels=(in_channels, *pyramid_channels), decoder_channels=tuple(decoder_channels),
            act=("relu", {"inplace": True}), norm=("batch", {"eps": 1e-3, "momentum": 0.1}), dropout=0.0, bias=False,
            upsample="nontrainable", pre_conv="default", interp_mode="nearest", align_corners=None, is_pad=True,
        )
        self.head = SegmentationHead(spatial_dims, decoder_channels[-1], out_channels, kernel_size=3, act=None)

    def forward(self, features: Mapping[str, Any]) -> torch.Tensor:
        return self.head(self.decoder(list(features["pyramid"]), 4))


class ProgressiveUpsamplingDecoder(nn.Module):
    """SETR-PUP (Zheng et al. 2021, Sec. 3.3 "Progressive UPsampling"): alternate a 3x3 convolution
    (BatchNorm, ReLU) and a 2x bilinear upsampling until the patch grid is back at the image size, then
    a 1x1 classifier; UniMedI App. 7.2 puts it on the frozen pre-trained ViT.

    ``log2(patch_size)`` stages (4 for 16-pixel patches, as in SETR); a patch size that is not a power
    of two ends with an interpolation to the input size.

    Args:
        in_channels: the ViT width.
        out_channels: output channels (one per finding).
        patch_size: the ViT patch size.
        channels: decoder width (SETR: 256).
        spatial_dims: 2 or 3.
    """

    def __init__(self, in_channels: int, out_channels: int, patch_size: int = 16, channels: int = 256, spatial_dims: int = 2) -> None:
        super().__init__()
        stages = max(1, int(patch_size).bit_length() - 1)
        layers: list[nn.Module] = []
        ch = in_channels
        for _ in range(stages):
            layers.append(Convolution(spatial_dims, ch, channels, kernel_size=3, act="relu", norm="batch"))
            layers.append(UpSample(spatial_dims, scale_factor=2, mode="nontrainable", interp_mode="bilinear" if spatial_dims == 2 else "trilinear",
                                   align_corners=False))
            ch = channels
        self.stages = nn.Sequential(*layers)
        self.classifier = Convolution(spatial_dims, channels, out_channels, kernel_size=1, conv_only=True)

    def forward(self, features: Mapping[str, Any]) -> torch.Tensor:
        return self.classifier(self.stages(features["feature_map"]))


class LinearSegmentationDecoder(nn.Module):
    """The linear-probe baseline of a dense task: a 1x1 convolution (a linear classifier per feature
    location) on the encoder's last feature map, upsampled bilinearly to the image size by the network.

    Args:
        in_channels: the encoder's feature width (``out_dim``).
        out_channels: output channels (one per finding).
        spatial_dims: 2 or 3.
    """

    def __init__(self, in_channels: int, out_channels: int, spatial_dims: int = 2) -> None:
        super().__init__()
        self.classifier = Convolution(spatial_dims, in_channels, out_channels, kernel_size=1, conv_only=True)

    def forward(self, features: Mapping[str, Any]) -> torch.Tensor:
        return self.classifier(features["feature_map"])


def _pyramid_channels(encoder: nn.Module) -> tuple[int, ...]:
    trunk = encoder.backbone
    return tuple(int(m[-1].conv3.out_channels if hasattr(m[-1], "conv3") else m[-1].conv2.out_channels)
                 for m in (trunk.layer1, trunk.layer2, trunk.layer3, trunk.layer4))


class EncoderSegmentationNetwork(nn.Module):
    """``images -> logits`` ``(B, out_channels, *spatial)`` at the input size: an image encoder (pre-trained,
    frozen or fine-tuned) and a segmentation decoder over its features.

    Args:
        encoder: an :class:`~monai_medunic.networks.ImageEncoder` (load its pre-trained weights with
            :func:`load_encoder_weights` before or after; the network does not care).
        out_channels: output channels, one per segmented finding (sigmoid outputs: findings may overlap).
        decoder: ``"unet"`` (ResNet pyramid), ``"pup"`` (SETR-PUP, ViT), ``"linear"`` (linear probe) or
            ``"auto"`` (``unet`` for a ResNet, ``pup`` for a ViT).
        freeze_encoder: train the decoder only (Med-UniC's and UniMedI's protocol); ``False`` fine-tunes end to end.
        decoder_channels: the U-Net decoder's channels.
        pup_channels: the SETR-PUP decoder's width.

    Raises:
        ConfigurationError: an unknown decoder, or a U-Net decoder on an encoder without a pyramid (a ViT).
    """

    def __init__(
        self,
        encoder: nn.Module,
        out_channels: int,
        decoder: str = "auto",
        freeze_encoder: bool = True,
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16),
        pup_channels: int = 256,
    ) -> None:
        super().__init__()
        if decoder not in DECODERS:
            raise ConfigurationError(f"decoder must be one of {DECODERS}, got {decoder!r}")
        if int(out_channels) < 1:
            raise ConfigurationError(f"out_channels must be >= 1 (one per finding), got {out_channels}: an empty label set")
        family = getattr(encoder, "family", None)
        if family not in ("resnet", "vit"):
            raise ConfigurationError(f"the encoder must be a monai_medunic ImageEncoder (family resnet or vit), got {type(encoder).__name__}")
        if decoder == "auto":
            decoder = "unet" if family == "resnet" else "pup"
        dims = int(encoder.spatial_dims)
        self.encoder = encoder
        self.decoder_name = decoder
        self.freeze_encoder = bool(freeze_encoder)
        self.out_channels = int(out_channels)
        if decoder == "unet":
            if family != "resnet":
                raise ConfigurationError(f"the U-Net decoder needs the ResNet pyramid; '{encoder.name}' is a ViT (use decoder 'pup')")
            self.decoder = PyramidUNetDecoder((64, *_pyramid_channels(encoder)), out_channels, encoder.in_channels, decoder_channels, dims)
        elif decoder == "pup":
            patch = encoder.img_size[0] // encoder.grid[0] if family == "vit" else 32
            self.decoder = ProgressiveUpsamplingDecoder(encoder.out_dim, out_channels, patch, pup_channels, dims)
        else:
            self.decoder = LinearSegmentationDecoder(encoder.out_dim, out_channels, dims)
        if self.freeze_encoder:
            freeze_module(self.encoder)

    def train(self, mode: bool = True) -> "EncoderSegmentationNetwork":
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def encode(self, images: torch.Tensor) -> dict[str, Any]:
        """The encoder's features (without autograd when the encoder is frozen)."""
        if self.freeze_encoder:
            with torch.no_grad():
                return self.encoder(images)
        return self.encoder(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(self.encode(images))
        size = tuple(images.shape[2:])
        if tuple(logits.shape[2:]) != size:
            mode = "bilinear" if len(size) == 2 else "trilinear"
            logits = F.interpolate(logits, size=size, mode=mode, align_corners=False)
        return logits


def predict_masks(network: nn.Module, images: torch.Tensor, threshold: float = 0.5,
                  output_size: Sequence[int] | None = None) -> torch.Tensor:
    """Segmentation inference: ``network(images)`` logits -> sigmoid probabilities, resized bilinearly to
    ``output_size`` (the source image's rows and columns) when given, -> boolean masks ``>= threshold``,
    ``(B, F, *size)``. Runs under ``torch.inference_mode``; the caller sets eval mode. The one
    inference path of the segmentation bundle's app (and of its benchmark against the bare forward)."""
    with torch.inference_mode():
        probs = torch.sigmoid(network(images))
        if output_size is not None and tuple(output_size) != tuple(probs.shape[2:]):
            mode = "bilinear" if probs.ndim == 4 else "trilinear"
            probs = F.interpolate(probs, size=tuple(int(s) for s in output_size), mode=mode, align_corners=False)
        return probs >= float(threshold)


# --------------------------------------------------------------------------------------- detection
class ViTSimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid (Li et al. 2022, Sec. 3 and Fig. 2c) over a ViT's last map only:
    stride ``p/4`` and ``p/2`` by 2x2 transposed convolutions, ``p`` as is, ``2p`` by 2x2 max pooling
    (``p`` the patch size), each followed by a 1x1 and a 3x3 convolution to ``out_channels``. The
    feature extractor of :class:`EncoderRetinaNet` for a ViT (UniMedI Sec. 4.4.3).

    Returns an ordered dict of maps, finest first; ``out_channels`` is what MONAI's ``RetinaNet`` reads.

    Args:
        encoder: a ViT :class:`~monai_medunic.networks.ImageEncoder` (frozen or not; the caller decides).
        out_channels: channels of every pyramid level (RetinaNet: 256).
        scales: resampling factors of the last map, in ``(4, 2, 1, 0.5)``.
    """

    def __init__(self, encoder: nn.Module, out_channels: int = 256, scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5)) -> None:
        super().__init__()
        if getattr(encoder, "family", None) != "vit":
            raise ConfigurationError("ViTSimpleFeaturePyramid needs a ViT ImageEncoder")
        unknown = [s for s in scales if s not in (4.0, 2.0, 1.0, 0.5)]
        if unknown or not scales:
            raise ConfigurationError(f"scales must be among (4, 2, 1, 0.5), got {list(scales)}")
        dims, dim = int(encoder.spatial_dims), int(encoder.out_dim)
        self.body = encoder
        self.scales = tuple(float(s) for s in sorted(scales, reverse=True))
        self.out_channels = int(out_channels)
        norm = ("group", {"num_groups": 8})
        levels = []
        for s in self.scales:
            layers: list[nn.Module] = []
            ch = dim
            if s == 0.5:
                layers.append(nn.MaxPool2d(2) if dims == 2 else nn.MaxPool3d(2))
            for _ in range({4.0: 2, 2.0: 1}.get(s, 0)):
                layers.append(Convolution(dims, ch, ch // 2, strides=2, kernel_size=2, is_transposed=True, act="gelu", norm=norm, padding=0))
                ch //= 2
            layers.append(Convolution(dims, ch, out_channels, kernel_size=1, act=None, norm=norm))
            layers.append(Convolution(dims, out_channels, out_channels, kernel_size=3, act=None, norm=norm))
            levels.append(nn.Sequential(*layers))
        self.levels = nn.ModuleList(levels)

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        fmap = self.body(images)["feature_map"]
        return OrderedDict((str(i), level(fmap)) for i, level in enumerate(self.levels))


class ResNetFeaturePyramid(nn.Module):
    """An FPN (Lin et al. 2017) over stages of the ResNet pyramid of an
    :class:`~monai_medunic.networks.ImageEncoder`, with a max-pooled extra level: what MONAI's
    ``resnet_fpn_feature_extractor`` / ``BackboneWithFPN`` build, on MONAI's ``FeaturePyramidNetwork`` and
    ``LastLevelMaxPool``, without torchvision's ``IntermediateLayerGetter`` (torchvision does not install
    beside this torch) and without re-wiring the trunk (the encoder's own forward gives the stages).

    Returns an ordered dict of ``len(returned_layers) + 1`` maps, finest first, ``out_channels`` each.

    Args:
        encoder: a ResNet :class:`~monai_medunic.networks.ImageEncoder`.
        returned_layers: stages 1-4 feeding the FPN (RetinaNet: 1, 2, 3 at strides 4, 8, 16; the extra level at 32).
        out_channels: channels of every level (RetinaNet: 256).
    """

    def __init__(self, encoder: nn.Module, returned_layers: Sequence[int] = (1, 2, 3), out_channels: int = 256) -> None:
        super().__init__()
        if getattr(encoder, "family", None) != "resnet":
            raise ConfigurationError("ResNetFeaturePyramid needs a ResNet ImageEncoder")
        layers = sorted(int(v) for v in returned_layers)
        if not layers or layers[0] < 1 or layers[-1] > 4 or len(set(layers)) != len(layers):
            raise ConfigurationError(f"returned_layers must be distinct stages in 1..4, got {list(returned_layers)}")
        dims = int(encoder.spatial_dims)
        channels = _pyramid_channels(encoder)
        self.body = encoder
        self.returned_layers = tuple(layers)
        self.out_channels = int(out_channels)
        self.fpn = FeaturePyramidNetwork(dims, [channels[i - 1] for i in layers], int(out_channels), extra_blocks=LastLevelMaxPool(dims))

    def forward(self, images: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        pyramid = self.body(images)["pyramid"]  # stem, stage 1, .., stage 4
        return self.fpn(OrderedDict((str(i), pyramid[layer]) for i, layer in enumerate(self.returned_layers)))


class EncoderRetinaNet(RetinaNet):
    """MONAI's ``RetinaNet`` (Lin et al. 2017) over a pre-trained image encoder.

    ResNet: a :class:`ResNetFeaturePyramid` (an FPN over ``returned_layers`` of the ResNet pyramid, plus a
    max-pooled extra level, as MONAI's ``resnet_fpn_feature_extractor``). ViT: a :class:`ViTSimpleFeaturePyramid`. The encoder's weights are used as they are (load them first with
    :func:`load_encoder_weights`); with ``freeze_encoder`` the backbone (``feature_extractor.body``) is
    frozen and kept in eval mode, and only the pyramid and the heads train (Med-UniC Sec. 4.2:
    "only updating the detection head").

    Args:
        encoder: an :class:`~monai_medunic.networks.ImageEncoder` (2D or 3D; its ``in_channels`` is the input's).
        num_classes: detected classes (findings), without background.
        num_anchors: anchors per location (the anchor generator's).
        returned_layers: ResNet stages (1-4) feeding the FPN; ``len + 1`` pyramid levels.
        freeze_encoder: freeze the encoder.
        vit_scales: the ViT pyramid's scales.
        pyramid_channels: channels of every pyramid level, which RetinaNet's heads keep (Lin et al.: 256;
            the heads' cost grows with its square, at the finest level most).
    """

    def __init__(
        self,
        encoder: nn.Module,
        num_classes: int,
        num_anchors: int,
        returned_layers: Sequence[int] = (1, 2, 3),
        freeze_encoder: bool = True,
        vit_scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
        pyramid_channels: int = 256,
    ) -> None:
        family = getattr(encoder, "family", None)
        if int(num_classes) < 1:
            raise ConfigurationError(f"num_classes must be >= 1 (one per finding), got {num_classes}: an empty label set")
        dims = int(getattr(encoder, "spatial_dims", 2))
        if family == "resnet":
            extractor: nn.Module = ResNetFeaturePyramid(encoder, returned_layers, pyramid_channels)
            # stem stride 2, max pooling 2, then 2 per stage, and the extra level's pooling
            size_divisible = [2 * 2 ** max(returned_layers)] * dims
        elif family == "vit":
            extractor = ViTSimpleFeaturePyramid(encoder, pyramid_channels, scales=vit_scales)
            patch = encoder.img_size[0] // encoder.grid[0]
            size_divisible = [2 * patch] * dims
        else:
            raise ConfigurationError(f"the encoder must be a monai_medunic ImageEncoder, got {type(encoder).__name__}")
        super().__init__(spatial_dims=dims, num_classes=int(num_classes), num_anchors=int(num_anchors),
                         feature_extractor=extractor, size_divisible=size_divisible)
        #: pyramid levels (the anchor generator needs one scale per level)
        self.levels = len(returned_layers) + 1 if family == "resnet" else len(vit_scales)
        self.freeze_encoder = bool(freeze_encoder)
        if self.freeze_encoder:
            freeze_module(self.feature_extractor.body)

    def train(self, mode: bool = True) -> "EncoderRetinaNet":
        super().train(mode)
        if self.freeze_encoder:  # no parameter of the body needs a gradient, so autograd records nothing there
            self.feature_extractor.body.eval()
        return self


class EncoderRetinaNetDetector(RetinaNetDetector):
    """MONAI's ``RetinaNetDetector``, matching anchors with MONAI's ATSS matcher (Zhang et al. 2020) only.

    ``RetinaNetDetector.compute_anchor_matched_idxs`` first tests whether the matcher is torchvision's
    ``Matcher``; without torchvision (it does not install beside this torch) that test itself raises,
    so the ATSS path MONAI's detection tutorials use is called here directly. Everything else (losses,
    sampling, box coding, NMS) is MONAI's.
    """

    def compute_anchor_matched_idxs(
        self, anchors: list[torch.Tensor], targets: list[dict[str, torch.Tensor]], num_anchor_locs_per_level: Sequence[int]
    ) -> list[torch.Tensor]:
        if not isinstance(getattr(self, "proposal_matcher", None), ATSSMatcher):
            raise ConfigurationError("EncoderRetinaNetDetector matches anchors with an ATSS matcher: call set_atss_matcher(...)")
        matched = []
        for anchors_per_image, target in zip(anchors, targets):
            boxes = target[self.target_box_key].to(anchors_per_image.device)
            if boxes.numel() == 0:  # no ground-truth box: every anchor is background
                matched.append(torch.full((anchors_per_image.size(0),), -1, dtype=torch.int64, device=anchors_per_image.device))
                continue
            _, idxs = self.proposal_matcher(boxes, anchors_per_image, num_anchor_locs_per_level, self.num_anchors_per_loc)
            matched.append(idxs)
        return matched


def retinanet_detector(
    encoder: nn.Module,
    num_classes: int,
    base_anchor_shapes: Sequence[Sequence[float]],
    returned_layers: Sequence[int] = (1, 2, 3),
    freeze_encoder: bool = True,
    vit_scales: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
    pyramid_channels: int = 256,
    focal_gamma: float = 2.0,
    atss_candidates: int = 4,
    batch_size_per_image: int = 64,
    positive_fraction: float = 0.3,
    score_thresh: float = 0.05,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
):
    """MONAI's ``RetinaNetDetector`` (:class:`EncoderRetinaNetDetector`) around an :class:`EncoderRetinaNet`, set up as MONAI's detection
    tutorials do: ``AnchorGeneratorWithAnchorShape`` (``base_anchor_shapes`` at the finest level, doubled
    per level), focal classification loss, ATSS matching, hard-negative sampling, and NMS box selection.

    In training mode ``detector(images, targets)`` returns ``{"classification": loss, "box_regression":
    loss}`` (targets: ``[{"boxes": (N, 4) float, "labels": (N,) int64}]``, boxes in the image tensor's
    axis order, ``StandardMode``); in eval mode ``detector(images)`` returns one ``{"boxes", "labels",
    "labels_scores"}`` per image.

    Args:
        encoder: the (pre-trained) image encoder.
        num_classes: detected findings.
        base_anchor_shapes: anchor sizes ``[[h, w], ...]`` (pixels of the network input) at the finest level.
        returned_layers, freeze_encoder, vit_scales, pyramid_channels: see :class:`EncoderRetinaNet`.
        focal_gamma: the focal loss' gamma (Lin et al. 2017: 2).
        atss_candidates: ATSS candidates per level (Zhang et al. 2020).
        batch_size_per_image, positive_fraction: the hard-negative sampler's.
        score_thresh, nms_thresh, detections_per_img: the inference box selector's.
    """
    from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
    from monai.losses import FocalLoss

    shapes = [tuple(float(v) for v in s) for s in base_anchor_shapes]
    if not shapes:
        raise ConfigurationError("base_anchor_shapes must hold at least one anchor shape")
    network = EncoderRetinaNet(encoder, num_classes, len(shapes), returned_layers, freeze_encoder, vit_scales, pyramid_channels)
    anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=[2**i for i in range(network.levels)], base_anchor_shapes=shapes)
    detector = EncoderRetinaNetDetector(network=network, anchor_generator=anchors)
    detector.set_cls_loss(FocalLoss(reduction="mean", gamma=float(focal_gamma)))
    detector.set_atss_matcher(num_candidates=int(atss_candidates), center_in_gt=False)
    detector.set_hard_negative_sampler(batch_size_per_image=int(batch_size_per_image), positive_fraction=float(positive_fraction),
                                       pool_size=20, min_neg=16)
    detector.set_target_keys(box_key="boxes", label_key="labels")
    detector.set_box_selector_parameters(score_thresh=float(score_thresh), topk_candidates_per_level=1000,
                                         nms_thresh=float(nms_thresh), detections_per_img=int(detections_per_img))
    return detector
