"""Model assemblies: Med-UniC."""

from __future__ import annotations

import os
from typing import Any, Collection, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_medunic.errors import BatchSizeError, ConfigurationError, ShapeMismatchError
from monai_medunic.networks.image import ImageEncoder
from monai_medunic.networks.projection import ProjectionHead
from monai_medunic.networks.text import HFTextEncoder

__all__ = ["MedUniC", "ImageEmbedder"]


class MedUniC(nn.Module):
    """Med-UniC: an image encoder ``F_v``, a cross-lingual text encoder ``F_l``, the projectors ``P_v``
    and ``P_l`` to the joint space (``d``) and the CTR projector ``P_d`` (``D'``).

    Wan et al., "Med-UniC", NeurIPS 2023, Sec. 3 and App. C (d = 512, D' = 1024, 9 of 12 text layers frozen).

    ``forward`` returns a dict with everything one Med-UniC step needs (absent inputs give absent keys):

    ========================  ==========================================================
    ``image_features``        ``F_v(v)``, ``(B, D_v)``
    ``image_feature_map``     the encoder's last spatial features
    ``image_emb``             ``P_v(F_v(v))``, ``(B, d)`` (CVL, SSV)
    ``image_aug_emb``         ``P_v(F_v(v'))`` of the second augmented view (SSV)
    ``text_features``         ``F_l(l)``, ``(B, D_l)``
    ``text_emb``              ``P_l(F_l(l))``, ``(B, d)`` (CVL)
    ``ctr_a``, ``ctr_b``      ``Z^A = P_d(l)`` and ``Z^B = P_d(l')``, ``(B, D')``, where ``l'`` is a
                              second encoding of the same text under another dropout mask (CTR)
    ========================  ==========================================================

    The embeddings are *not* L2-normalised (the losses normalise); :meth:`encode_image` and
    :meth:`encode_text` return normalised joint-space embeddings for zero-shot use. Both image views go
    through the encoder in one batch, and so do both text views, which is cheaper than two passes and
    gives the two text views independent dropout masks.

    Args:
        image_encoder: an encoder name (see :class:`~monai_medunic.networks.ImageEncoder`) or a module returning ``{"pooled": ...}``.
        text_model_name_or_path: HF directory or hub id of the text encoder.
        text_config: HF config dict, used when no path is given (offline runs, tests).
        text_encoder: a ready text module returning ``{"pooled": ...}`` (overrides the two above).
        in_channels, img_size, spatial_dims: image encoder input (``spatial_dims=3`` encodes volumes).
        embed_dim: ``d``. ctr_dim: ``D'`` (0: no CTR projector, no ``ctr_a``/``ctr_b``). proj_hidden_dim: hidden
            width of the projectors (default: input width).
        freeze_layers, freeze_embeddings, pooling: see :class:`HFTextEncoder`.
        text_dropout_view: compute ``ctr_a``/``ctr_b`` in train mode (disable to save compute when CTR is off).
    """

    def __init__(
        self,
        image_encoder: str | nn.Module = "resnet50",
        text_model_name_or_path: str | os.PathLike | None = None,
        text_config: Mapping[str, Any] | None = None,
        text_encoder: nn.Module | None = None,
        in_channels: int = 1,
        img_size: int | Sequence[int] = 224,
        embed_dim: int = 512,
        ctr_dim: int = 1024,
        proj_hidden_dim: int | None = None,
        freeze_layers: int = 0,
        freeze_embeddings: bool | None = None,
        pooling: str = "cls",
        text_dropout_view: bool = True,
        spatial_dims: int = 2,
    ) -> None:
        super().__init__()
        # JSON-able construction arguments, written next to the weights when a bundle is exported
        self.init_args = {
            "image_encoder": image_encoder if isinstance(image_encoder, str) else None,
            "in_channels": in_channels,
            "img_size": img_size,
            "embed_dim": embed_dim,
            "ctr_dim": ctr_dim,
            "proj_hidden_dim": proj_hidden_dim,
            "freeze_layers": freeze_layers,
            "freeze_embeddings": freeze_embeddings,
            "pooling": pooling,
            "text_dropout_view": text_dropout_view,
            "spatial_dims": spatial_dims,
        }
        if isinstance(image_encoder, str):
            image_encoder = ImageEncoder(image_encoder, in_channels=in_channels, img_size=img_size, spatial_dims=spatial_dims)
        self.image_encoder = image_encoder
        if text_encoder is None:
            text_encoder = HFTextEncoder(
                text_model_name_or_path, text_config, freeze_layers=freeze_layers, freeze_embeddings=freeze_embeddings, pooling=pooling
            )
        self.text_encoder = text_encoder
        image_dim = getattr(image_encoder, "out_dim", None)
        text_dim = getattr(text_encoder, "out_dim", None)
        if image_dim is None or text_dim is None:
            raise ConfigurationError("image_encoder and text_encoder must expose their output width as `out_dim`")
        self.image_projection = ProjectionHead(image_dim, embed_dim, proj_hidden_dim)
        self.text_projection = ProjectionHead(text_dim, embed_dim, proj_hidden_dim)
        self.ctr_projection = ProjectionHead(text_dim, ctr_dim, proj_hidden_dim) if ctr_dim else None
        self.embed_dim, self.ctr_dim = embed_dim, ctr_dim
        self.text_dropout_view = text_dropout_view

    def _check_batch(self, n: int, what: str) -> None:
        if self.training and n < 2:
            raise BatchSizeError(f"MedUniC in train mode needs at least 2 {what} per batch (BatchNorm projectors), got {n}")

    def forward(
        self,
        images: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        images_aug: torch.Tensor | None = None,
        required_outputs: Collection[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every embedding the inputs allow (see the class docstring). ``required_outputs``, the keys
        the objective reads (the training step passes them), lets the text dropout view be skipped
        when no active term reads ``ctr_a``/``ctr_b``."""
        out: dict[str, torch.Tensor] = {}
        if images is not None:
            n = images.shape[0]
            self._check_batch(n, "images")
            if images_aug is not None and images_aug.shape != images.shape:
                raise ShapeMismatchError("MedUniC image views", tuple(images.shape), tuple(images_aug.shape))
            both = images if images_aug is None else torch.cat([images, images_aug], 0)
            enc = self.image_encoder(both)
            emb = self.image_projection(enc["pooled"])
            out["image_features"] = enc["pooled"][:n]
            if "feature_map" in enc:
                out["image_feature_map"] = enc["feature_map"][:n]
            out["image_emb"] = emb[:n]
            if images_aug is not None:
                out["image_aug_emb"] = emb[n:]
        if input_ids is not None:
            n = input_ids.shape[0]
            self._check_batch(n, "reports")
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            ctr_needed = required_outputs is None or bool({"ctr_a", "ctr_b"} & set(required_outputs))
            views = 2 if (self.training and self.text_dropout_view and ctr_needed and self.ctr_projection is not None) else 1
            pooled = self.text_encoder(input_ids.repeat(views, 1), attention_mask.repeat(views, 1))["pooled"]
            out["text_features"] = pooled[:n]
            out["text_emb"] = self.text_projection(pooled[:n])
            if views == 2:
                z = self.ctr_projection(pooled)
                out["ctr_a"], out["ctr_b"] = z[:n], z[n:]
        return out

    #: what producing an output takes, for the error raised when an objective term reads one the network cannot give
    output_requirements: dict[str, str] = {
        "image_emb": "the forward argument 'images'",
        "image_aug_emb": "the second augmented image view (forward argument 'images_aug')",
        "text_emb": "the forward argument 'input_ids'",
        "ctr_a": "'input_ids', a CTR projector (ctr_dim > 0) and text_dropout_view=True",
        "ctr_b": "'input_ids', a CTR projector (ctr_dim > 0) and text_dropout_view=True",
    }

    def available_outputs(self, inputs: Collection[str]) -> set[str]:
        """The output keys a train-mode forward with the arguments named in ``inputs`` produces (the
        training step checks the objective's terms against them before the first step)."""
        given = set(inputs)
        out: set[str] = set()
        if "images" in given:
            out |= {"image_features", "image_feature_map", "image_emb"}
            if "images_aug" in given:
                out.add("image_aug_emb")
        if "input_ids" in given:
            out |= {"text_features", "text_emb"}
            if self.text_dropout_view and self.ctr_projection is not None:
                out |= {"ctr_a", "ctr_b"}
        return out

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised joint-space image embeddings ``(B, d)``."""
        return F.normalize(self.image_projection(self.image_encoder(images)["pooled"]), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised joint-space text embeddings ``(B, d)``."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return F.normalize(self.text_projection(self.text_encoder(input_ids, attention_mask)["pooled"]), dim=-1)


class ImageEmbedder(nn.Module):
    """``images -> encode_image(images)``: a vision-language network as the single-input inference
    network of a trained bundle (``(B, C, *spatial) -> (B, d)`` L2-normalised embeddings).

    It is the ``network_def`` of a trained bundle's ``inference.json``, which ``models/model.pt`` and
    ``network_data_format`` describe, so MONAI's ``verify_net_in_out``, ``ckpt_export`` and inferers
    work with their defaults. ``encode_image`` / ``encode_text`` pass through to the wrapped network,
    the protocol that zero-shot evaluation, the Deploy apps and MONAI Label use.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model.encode_text(input_ids, attention_mask)
