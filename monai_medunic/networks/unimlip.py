"""Uni-Mlip: Med-UniC's towers and projectors plus feature perturbation, an I2I head and a fusion MLM.

Bawazir & Wu, "Uni-Mlip: Unified Self-supervision for Medical Vision Language Pre-training"
(``shared/papers/uni-mlip.md``), Sec. 3 and Fig. 1. A preset, not a fork: :class:`UniMlip` is a
:class:`~monai_medunic.networks.MedUniC` (same image and text encoders, same projectors ``P_v`` and
``P_l``, optional CTR projector), so one network gives every tensor that the terms of Med-UniC *and*
Uni-Mlip read, and one objective (:func:`~monai_medunic.losses.build_objective`) can mix them.

Choices where the paper leaves room (each tested in ``tests/networks/test_unimlip_network.py``):

* **One backbone pass.** The clean view, Med-UniC's second view and the two strong views go through
  the image encoder as one batch: strong views share the BatchNorm batch statistics of the clean view
  (what the paper's Table 3 is about) and are cheap to add. The perturbed image features ``~F_v(V)``
  are DropBlock on the clean view's last feature map, pooled as the encoder pools (Sec. 3.2: "after
  the last residual layer and before the [...] pooling layer"): no second backbone forward. The
  perturbed text features are dropout (p = 0.75) on the clean report's pooled features.
* **Projector statistics.** ``~I = P_v(~F_v(V))`` and ``~T = P_l(~F_t(C))`` use the projectors of
  ``I`` and ``T``. A BatchNorm projector in train mode would otherwise fold perturbed batches into its
  running statistics, which evaluation (retrieval, zero-shot) normalises with; so the perturbed
  features are normalised with their own batch statistics *without updating* the running ones
  (``track_running_stats`` off for that call). The clean path alone defines the running statistics.
  Frozen statistics (:class:`~monai_medunic.engines.batchnorm.FreezeBatchNormStatistics`) are kept.
* **I2I head.** The strong views' embeddings ``I^a``, ``I^b`` (Eq. 2) come from a separate projector
  ``P_s`` (``i2i_head=True``, SLIP's design, which Uni-Mlip follows), so SimCLR does not pull on the
  joint image-text space through ``P_v``; ``i2i_head=False`` uses ``P_v``.
* **Fused MLM.** The report is tokenised once; the masked copy (``mlm_input_ids``, 15% BERT masking by
  :class:`~monai_medunic.text.masking.RandMaskTokensd`) goes through the text encoder in the same
  batch as the clean report (and CTR's dropout view); the fusion module (4 MONAI transformer blocks,
  :class:`~monai_medunic.networks.fusion.FusedMaskedLM`) reads its tokens and the clean image tokens.
  ITC reads the unmasked report (Sec. 2: masked inputs weaken zero-shot use).
* **Only what is asked.** ``required_outputs`` (the keys of the objective's active terms, passed by
  :class:`~monai_medunic.engines.step.TrainStep`) decides what is computed: without an active I2I
  term no strong view is encoded (``strong_views="required"``), without fused MLM no masked copy.
  ``strong_views="always"`` encodes given strong views regardless: Table 3's row "strong views in the
  forward pass with the I2I weight at 0".
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Collection, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.networks.fusion import FusedMaskedLM
from monai_medunic.networks.models import MedUniC
from monai_medunic.networks.perturbation import ImageFeaturePerturbation, TextFeaturePerturbation
from monai_medunic.networks.projection import ProjectionHead

__all__ = ["UniMlip", "running_statistics_untouched", "STRONG_VIEW_MODES"]

STRONG_VIEW_MODES = ("required", "always")


@contextlib.contextmanager
def running_statistics_untouched(module: nn.Module) -> Iterator[None]:
    """Within the block, BatchNorm layers of ``module`` in train mode normalise with batch statistics but
    do not update their running mean and variance (layers in eval mode, or frozen by a hook, keep using
    the running statistics)."""
    layers = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    for m in layers:
        m.track_running_stats = False
    try:
        yield
    finally:
        for m in layers:
            m.track_running_stats = True


class UniMlip(MedUniC):
    """Uni-Mlip's network (Fig. 1): image and text encoders with projectors (as :class:`MedUniC`), image
    and text feature perturbation, an I2I projector and a fused-modal MLM.

    ``forward(images, input_ids, attention_mask, images_aug, images_strong_a, images_strong_b,
    mlm_input_ids, mlm_token_labels, required_outputs)`` returns (absent inputs or unrequested outputs
    give absent keys), besides :class:`MedUniC`'s keys (``image_emb``, ``image_aug_emb``, ``text_emb``,
    ``ctr_a``/``ctr_b``, ``image_features``, ``image_feature_map``, ``text_features``):

    ========================  ==============================================================
    ``image_tokens``          the clean view's encoder tokens ``(B, N, D_v)`` (fusion input)
    ``image_emb_perturbed``   ``~I = P_v(pool(DropBlock(F_v map)))`` ``(B, d)`` (``L_~ITC``)
    ``text_emb_perturbed``    ``~T = P_l(Dropout(F_t(C)))`` ``(B, d)`` (``L_I~TC``)
    ``image_strong_a_emb``    ``I^a = P_s(F_v(V^a))`` ``(B, d_s)`` (``L_I2I``, Eq. 2)
    ``image_strong_b_emb``    ``I^b = P_s(F_v(V^b))``
    ``mlm_logits``            fused MLM predictions at the masked positions ``(M, V)`` (Eq. 3),
                              or ``(B, L, V)`` without ``mlm_token_labels``
    ``mlm_labels``            their targets ``(M,)``
    ========================  ==============================================================

    Args:
        image_encoder, text_model_name_or_path, text_config, text_encoder, in_channels, img_size,
            embed_dim, proj_hidden_dim, freeze_layers, freeze_embeddings, pooling, spatial_dims: as
            :class:`MedUniC`.
        ctr_dim: Med-UniC's CTR projector width (default 0: none; set it to mix CTR into the objective).
        image_drop_prob, image_block_size: DropBlock of the image features (paper: 0.5, 3x3).
        text_drop_prob: dropout of the text features (paper: 0.75).
        i2i_head: a separate projector ``P_s`` for the strong views (default) or ``P_v`` (``False``).
        i2i_dim: ``P_s`` output width (default ``embed_dim``).
        fused_mlm: build the fusion module and its MLM head (Sec. 3.4).
        fusion_layers: its transformer blocks (paper: 4). fusion_hidden_size, fusion_heads: its width
            and heads (default: the text width, ``width // 64`` heads). fusion_dropout: its dropout.
        fusion_max_image_tokens: its image position table (a 7x7 ResNet grid needs 49, ViT-B/16 at 224 px 196).
        strong_views: ``"required"`` (encode the strong views when an active term reads them) or
            ``"always"`` (whenever they are given).
    """

    output_requirements: dict[str, str] = {
        **MedUniC.output_requirements,
        "image_emb_perturbed": "the forward argument 'images'",
        "text_emb_perturbed": "the forward argument 'input_ids'",
        "image_strong_a_emb": "the two strong views (forward arguments 'images_strong_a' and 'images_strong_b')",
        "image_strong_b_emb": "the two strong views (forward arguments 'images_strong_a' and 'images_strong_b')",
        "mlm_logits": "a fusion module (UniMlip(fused_mlm=True)) and the forward arguments 'images', 'input_ids' and "
                      "'mlm_input_ids' (a masked copy of the report: RandMaskTokensd on a copy of input_ids)",
        "mlm_labels": "a fusion module (UniMlip(fused_mlm=True)) and the forward arguments 'images', 'input_ids', "
                      "'mlm_input_ids' and 'mlm_token_labels' (the labels RandMaskTokensd writes)",
    }

    def __init__(
        self,
        image_encoder: str | nn.Module = "resnet50",
        text_model_name_or_path: str | os.PathLike | None = None,
        text_config: Mapping[str, Any] | None = None,
        text_encoder: nn.Module | None = None,
        in_channels: int = 1,
        img_size: int | Sequence[int] = 224,
        embed_dim: int = 512,
        proj_hidden_dim: int | None = None,
        freeze_layers: int = 0,
        freeze_embeddings: bool | None = None,
        pooling: str = "cls",
        spatial_dims: int = 2,
        ctr_dim: int = 0,
        image_drop_prob: float = 0.5,
        image_block_size: int = 3,
        text_drop_prob: float = 0.75,
        i2i_head: bool = True,
        i2i_dim: int | None = None,
        fused_mlm: bool = True,
        fusion_layers: int = 4,
        fusion_hidden_size: int | None = None,
        fusion_heads: int | None = None,
        fusion_dropout: float = 0.1,
        fusion_max_image_tokens: int = 256,
        strong_views: str = "required",
    ) -> None:
        if strong_views not in STRONG_VIEW_MODES:
            raise ConfigurationError(f"strong_views must be one of {STRONG_VIEW_MODES}, got '{strong_views}'")
        if ctr_dim < 0:
            raise ConfigurationError(f"ctr_dim must be >= 0 (0: no CTR projector), got {ctr_dim}")
        super().__init__(
            image_encoder, text_model_name_or_path, text_config, text_encoder, in_channels, img_size, embed_dim, ctr_dim,
            proj_hidden_dim, freeze_layers, freeze_embeddings, pooling, text_dropout_view=ctr_dim > 0, spatial_dims=spatial_dims,
        )
        self.init_args = {
            "image_encoder": self.init_args["image_encoder"], "in_channels": in_channels, "img_size": img_size,
            "embed_dim": embed_dim, "proj_hidden_dim": proj_hidden_dim, "freeze_layers": freeze_layers,
            "freeze_embeddings": freeze_embeddings, "pooling": pooling, "spatial_dims": spatial_dims, "ctr_dim": ctr_dim,
            "image_drop_prob": image_drop_prob, "image_block_size": image_block_size, "text_drop_prob": text_drop_prob,
            "i2i_head": i2i_head, "i2i_dim": i2i_dim, "fused_mlm": fused_mlm, "fusion_layers": fusion_layers,
            "fusion_hidden_size": fusion_hidden_size, "fusion_heads": fusion_heads, "fusion_dropout": fusion_dropout,
            "fusion_max_image_tokens": fusion_max_image_tokens, "strong_views": strong_views,
        }
        image_dim, text_dim = self.image_encoder.out_dim, self.text_encoder.out_dim
        self.image_perturbation = ImageFeaturePerturbation(image_drop_prob, image_block_size, spatial_dims)
        self.text_perturbation = TextFeaturePerturbation(text_drop_prob)
        self.i2i_projection = ProjectionHead(image_dim, i2i_dim or embed_dim, proj_hidden_dim) if i2i_head else None
        self.fused_mlm: FusedMaskedLM | None = None
        if fused_mlm:
            embeddings = self.text_encoder.model.get_input_embeddings() if hasattr(self.text_encoder, "model") else None
            if embeddings is None:
                raise ConfigurationError("fused_mlm needs an HF text encoder (its vocabulary size); pass fused_mlm=False")
            self.fused_mlm = FusedMaskedLM(image_dim, text_dim, int(embeddings.num_embeddings), fusion_hidden_size,
                                           fusion_layers, fusion_heads, dropout_rate=fusion_dropout,
                                           max_image_tokens=fusion_max_image_tokens)
        self.strong_views = strong_views

    def available_outputs(self, inputs: Collection[str]) -> set[str]:
        given = set(inputs)
        out = super().available_outputs(given)
        if "images" in given:
            out |= {"image_tokens", "image_emb_perturbed"}
            if {"images_strong_a", "images_strong_b"} <= given:
                out |= {"image_strong_a_emb", "image_strong_b_emb"}
        if "input_ids" in given:
            out.add("text_emb_perturbed")
        if self.fused_mlm is not None and {"images", "input_ids", "mlm_input_ids"} <= given:
            out.add("mlm_logits")
            if "mlm_token_labels" in given:
                out.add("mlm_labels")
        return out

    def forward(  # type: ignore[override]
        self,
        images: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        images_aug: torch.Tensor | None = None,
        images_strong_a: torch.Tensor | None = None,
        images_strong_b: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_token_labels: torch.Tensor | None = None,
        required_outputs: Collection[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        req = None if required_outputs is None else set(required_outputs)

        def want(*keys: str) -> bool:
            return req is None or bool(req.intersection(keys))

        out: dict[str, torch.Tensor] = {}
        if images is not None:
            out.update(self._image_side(images, images_aug, images_strong_a, images_strong_b, want))
        if input_ids is not None:
            run_mlm = self.fused_mlm is not None and mlm_input_ids is not None and want("mlm_logits", "mlm_labels")
            if run_mlm and images is None:
                raise ConfigurationError("the fused MLM needs the images of the reports (forward argument 'images')")
            out.update(self._text_side(input_ids, attention_mask, mlm_input_ids if run_mlm else None, want))
            if run_mlm:
                assert self.fused_mlm is not None
                fused = self.fused_mlm(out["image_tokens"], out.pop("_mlm_tokens"), out.pop("_mlm_mask"), mlm_token_labels)
                out["mlm_logits"] = fused["mlm_logits"]
                if "mlm_labels" in fused:
                    out["mlm_labels"] = fused["mlm_labels"]
        return out

    def _image_side(self, images, images_aug, strong_a, strong_b, want) -> dict[str, torch.Tensor]:
        n = images.shape[0]
        self._check_batch(n, "images")
        views = [images]
        aug = images_aug is not None and want("image_aug_emb")
        if aug:
            if images_aug.shape != images.shape:
                raise ShapeMismatchError("UniMlip image views (images, images_aug)", tuple(images.shape), tuple(images_aug.shape))
            views.append(images_aug)
        strong = (strong_a is not None and strong_b is not None
                  and (self.strong_views == "always" or want("image_strong_a_emb", "image_strong_b_emb")))
        if strong:
            for name, v in (("images_strong_a", strong_a), ("images_strong_b", strong_b)):
                if v.shape != images.shape:
                    raise ShapeMismatchError(f"UniMlip image views (images, {name})", tuple(images.shape), tuple(v.shape))
            views += [strong_a, strong_b]
        enc = self.image_encoder(torch.cat(views) if len(views) > 1 else images)
        pooled, fmap = enc["pooled"], enc["feature_map"]
        k = 2 * n if aug else n
        emb = self.image_projection(pooled[:k])
        out = {"image_features": pooled[:n], "image_feature_map": fmap[:n], "image_tokens": enc["tokens"][:n], "image_emb": emb[:n]}
        if aug:
            out["image_aug_emb"] = emb[n:k]
        if strong:
            head = self.i2i_projection if self.i2i_projection is not None else self.image_projection
            z = head(pooled[k:])
            out["image_strong_a_emb"], out["image_strong_b_emb"] = z[:n], z[n:]
        if want("image_emb_perturbed"):
            with running_statistics_untouched(self.image_projection):
                out["image_emb_perturbed"] = self.image_projection(self.image_perturbation(fmap[:n]))
        return out

    def _text_side(self, input_ids, attention_mask, mlm_input_ids, want) -> dict[str, torch.Tensor]:
        n = input_ids.shape[0]
        self._check_batch(n, "reports")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        ctr = self.training and self.text_dropout_view and self.ctr_projection is not None and want("ctr_a", "ctr_b")
        rows, masks = [input_ids] * (2 if ctr else 1), [attention_mask] * (2 if ctr else 1)
        if mlm_input_ids is not None:
            if mlm_input_ids.shape != input_ids.shape:
                raise ShapeMismatchError("UniMlip reports (input_ids, mlm_input_ids)", tuple(input_ids.shape),
                                         tuple(mlm_input_ids.shape), "mlm_input_ids is a masked copy of input_ids")
            rows, masks = rows + [mlm_input_ids], masks + [attention_mask]
        enc = self.text_encoder(torch.cat(rows) if len(rows) > 1 else input_ids, torch.cat(masks) if len(masks) > 1 else attention_mask)
        pooled = enc["pooled"]
        out = {"text_features": pooled[:n], "text_emb": self.text_projection(pooled[:n])}
        if ctr:
            z = self.ctr_projection(pooled[: 2 * n])
            out["ctr_a"], out["ctr_b"] = z[:n], z[n:]
        if want("text_emb_perturbed"):
            with running_statistics_untouched(self.text_projection):
                out["text_emb_perturbed"] = self.text_projection(self.text_perturbation(pooled[:n]))
        if mlm_input_ids is not None:  # the masked copy has the clean report's padding
            out["_mlm_tokens"], out["_mlm_mask"] = enc["tokens"][-n:], attention_mask
        return out
