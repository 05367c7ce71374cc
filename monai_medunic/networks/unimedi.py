"""UniMedI: one vision encoder for 2D radiographs and 3D CT volumes, a text encoder, and their projectors.

He et al., "Unified Medical Image Pre-training in Language-Guided Common Semantic Space" (UniMedI),
``shared/papers/unimedi.txt``: Sec. 3.1 (pipeline), 3.2 (attentive slice selection, Eq. 1-2), 3.3
(VL contrastive learning on the 2D image, or on the 3D volume together with its selected slices),
3.4 (self-distillation with an EMA teacher and attention-guided masking).
"""

from __future__ import annotations

import os
from typing import Any, Collection, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from monai_medunic.errors import BatchSizeError, ConfigurationError, ShapeMismatchError
from monai_medunic.networks.distillation import DistillationHead, attention_guided_mask
from monai_medunic.networks.projection import ProjectionHead
from monai_medunic.networks.text import HFTextEncoder
from monai_medunic.networks.unified_vit import UnifiedViT
from monai_medunic.transforms.slice_selection import (
    SLICE_SELECTION_MODES,
    choose_slices,
    cls_patch_attention,
    extract_slices,
    slab_to_voxel_slices,
    slice_relevance,
    top_k_slices,
    voxel_slice_scores,
)

__all__ = ["UniMedI", "UniMedIVisionEncoder", "select_slices", "volume_slices"]


def select_slices(
    model: nn.Module, volumes: torch.Tensor, k: int, last_layers: int | None = None, names: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """UniMedI's attentive slice selection (Sec. 3.2, Eq. 1-2): run ``model``'s vision encoder on ``volumes``
    (no gradient) and rank the slices by the CLS token's attention.

    Args:
        model: a :class:`UnifiedViT`, or a model holding one as ``image_encoder`` (:class:`UniMedI`).
        volumes: ``(B, C, D, H, W)`` at the encoder's ``volume_size`` (slices along ``D``).
        k: slices to select. last_layers: Eq. 1's ``L`` (``None``: every layer).
        names: one name per volume (its file), for the error raised when a volume is thinner than ``k``.

    Returns:
        ``slab_scores`` ``(B, S)`` Eq. 2 per token slab, ``slab_indices`` ``(B, k)`` the top-k slabs (best
        first), ``slice_scores`` ``(B, D)`` the same scores per voxel slice, ``slice_indices`` ``(B, k)``
        the central voxel slice of each selected slab.
    """
    encoder = getattr(model, "image_encoder", model)
    if not isinstance(encoder, UnifiedViT):
        raise ConfigurationError(f"select_slices needs a UnifiedViT (or a model with one as image_encoder), got {type(encoder).__name__}")
    with torch.no_grad():
        attention = encoder(volumes)["cls_attention"]
    scores = slice_relevance(cls_patch_attention(attention, last_layers), encoder.grid_3d)
    top = top_k_slices(scores, k, names)
    return {
        "slab_scores": scores,
        "slab_indices": top,
        "slice_scores": voxel_slice_scores(scores, encoder.patch_depth),
        "slice_indices": slab_to_voxel_slices(top, encoder.patch_depth),
    }


def volume_slices(
    encoder: UnifiedViT,
    x: torch.Tensor,
    num_slices: int,
    mode: str = "attention",
    attention_layers: int | None = None,
    slab_reduce: str = "center",
    selector: UnifiedViT | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """The ``num_slices`` slices of each volume of ``x`` that go with it through ``encoder`` (UniMedI Sec. 3.2-3.3).

    Returns ``(slices, slab_scores, slab_indices)``: ``slices`` ``(B, k, C, h, w)`` at the encoder's 2D
    size, the Eq. 2 scores ``(B, S)`` (``attention`` mode only, from ``selector``'s attention, default
    ``encoder``) and the chosen slabs ``(B, k)``; three ``None`` for a 2D ``x`` or ``num_slices == 0``.
    """
    if x.ndim != 5 or num_slices == 0:
        return None, None, None
    selector = encoder if selector is None else selector
    scores = None
    if mode == "attention":
        scores = select_slices(selector, x, num_slices, attention_layers)["slab_scores"]
    idx = choose_slices(mode, scores, x.shape[0], selector.grid_3d[0], num_slices, device=x.device)
    return extract_slices(x, idx, encoder.patch_depth, encoder.img_size, slab_reduce), scores, idx


class UniMedIVisionEncoder(nn.Module):
    """UniMedI's vision side as an image encoder for downstream tasks: 2D images, or 3D volumes encoded
    together with their ``num_slices`` selected slices exactly as :meth:`UniMedI.encode_image` does.

    ``forward(x) -> {"pooled": (B, hidden) CLS, "tokens", "feature_map", "cls_attention"}``, with
    ``out_dim``: the interface of :class:`~monai_medunic.metrics.probe.LinearProbeNetwork` (linear probe
    and fine-tuning, UniMedI Sec. 4.2.1). The slices are chosen without gradient (a discrete choice);
    the forward that encodes them is differentiable.

    Args:
        image_encoder: the :class:`UnifiedViT` (of a trained UniMedI, or a fresh one for a random-init baseline).
        num_slices, slice_selection, attention_layers, slab_reduce: as :class:`UniMedI`.
    """

    def __init__(self, image_encoder: UnifiedViT, num_slices: int = 0, slice_selection: str = "attention",
                 attention_layers: int | None = None, slab_reduce: str = "center") -> None:
        super().__init__()
        if not isinstance(image_encoder, UnifiedViT):
            raise ConfigurationError(f"UniMedIVisionEncoder needs a UnifiedViT, got {type(image_encoder).__name__}")
        if slice_selection not in SLICE_SELECTION_MODES:
            raise ConfigurationError(f"slice_selection must be one of {SLICE_SELECTION_MODES}, got '{slice_selection}'")
        if not 0 <= num_slices <= image_encoder.grid_3d[0]:
            raise ConfigurationError(f"num_slices must be in [0, {image_encoder.grid_3d[0]}], got {num_slices}")
        self.image_encoder = image_encoder
        self.num_slices, self.slice_selection = int(num_slices), slice_selection
        self.attention_layers, self.slab_reduce = attention_layers, slab_reduce
        self.out_dim = image_encoder.out_dim

    @classmethod
    def from_model(cls, model: nn.Module) -> "UniMedIVisionEncoder":
        """The vision side of a :class:`UniMedI` (shared modules, not copies), with its slice settings."""
        model = getattr(model, "model", model)  # an ImageEmbedder around it
        if not isinstance(model, UniMedI):
            raise ConfigurationError(f"expected a UniMedI (or an ImageEmbedder around one), got {type(model).__name__}")
        return cls(model.image_encoder, model.num_slices, model.slice_selection, model.attention_layers, model.slab_reduce)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        slices, _, _ = volume_slices(self.image_encoder, x, self.num_slices, self.slice_selection,
                                     self.attention_layers, self.slab_reduce)
        out = self.image_encoder(x, slices)
        return {"pooled": out["cls"], **out}


class UniMedI(nn.Module):
    """UniMedI: a :class:`UnifiedViT` ``E``, an HF text encoder, projectors ``P_v`` / ``P_l`` to the joint
    space (``d``) and a DINO :class:`DistillationHead`, assembled like :class:`~monai_medunic.networks.MedUniC`.

    ``forward(images=None, input_ids=None, attention_mask=None, volumes=None)``: ``images`` is a 2D
    ``(B, C, H, W)`` or 3D ``(B, C, D, H, W)`` batch; ``volumes`` an optional further 3D batch, so that
    one step can mix dimensions (its rows follow those of ``images``; ``input_ids`` holds one report
    per row of both). For each 3D row, ``num_slices`` slices are chosen (``slice_selection``:
    ``attention`` = Eq. 1-2, or ``random`` / ``middle`` baselines), cut out at the 2D size and
    encoded together with the volume (Sec. 3.3). Returned keys (absent inputs give absent keys):

    ==========================  =====================================================================
    ``image_features``          CLS embedding ``(B, D_v)``
    ``image_emb``               ``P_v(CLS)`` ``(B, d)`` (CLIP, :class:`~monai_medunic.losses.CVLLoss`)
    ``image_spatial_dims``      ``(B,)`` 2 or 3 per row
    ``slice_scores``            ``(B3, S)`` Eq. 2 slab scores of the 3D rows (``attention`` mode)
    ``slice_indices``           ``(B3, k)`` selected slabs of the 3D rows
    ``text_features``           ``(B, D_l)``; ``text_emb`` ``P_l`` of it ``(B, d)``
    ``distill_student_cls``     ``(B, K)`` head logits of the student CLS (masked input)
    ``distill_teacher_cls``     ``(B, K)`` head logits of the teacher CLS (full input)
    ``distill_student_patch``   ``(M, K)`` student logits of the ``M`` masked patch tokens
    ``distill_teacher_patch``   ``(M, K)`` teacher logits at the same tokens
    ``distill_patch_index``     ``(M,)`` batch row of each masked token
    ==========================  =====================================================================

    The ``distill_*`` keys appear in train mode once an EMA teacher is registered with
    :meth:`set_teacher` (:class:`monai_medunic.engines.teacher.EMATeacher` does it), unless
    ``required_outputs`` (the keys the objective reads, passed by the training step) names none of them. The teacher sees
    the full input; its CLS attention picks the tokens the student keeps (``mask_ratio`` masked per
    segment, :func:`attention_guided_mask`) and, in ``attention`` mode, the slices. The student's one
    gradient pass is the masked one, and its CLS also feeds the CLIP loss (as Attentive Mask CLIP
    [38], which UniMedI's masking follows). Without a teacher the student sees the full input and
    selects the slices itself. Embeddings are not normalised (the losses normalise);
    :meth:`encode_image` / :meth:`encode_text` return L2-normalised joint-space embeddings.

    Under DDP use ``find_unused_parameters=True`` unless every step uses both tokenizers (3D rows
    with slices) and the distillation head.

    Args:
        image_encoder: a :class:`UnifiedViT` size name (``vit_b16``, ``vit_tiny``) or a ready UnifiedViT.
        text_model_name_or_path, text_config, text_encoder, freeze_layers, freeze_embeddings, pooling: as MedUniC.
        in_channels, img_size, volume_size, patch_depth, dropout_rate: see :class:`UnifiedViT`.
        embed_dim: ``d``. proj_hidden_dim: projector hidden width (default: input width).
        num_slices: ``k`` slices per volume (0: the volume alone). slice_selection: ``attention`` | ``random`` | ``middle``.
        attention_layers: Eq. 1's ``L`` (``None``: every layer). slab_reduce: ``center`` | ``mean`` (see ``extract_slices``).
        distill_dim: head prototypes ``K`` (0 or ``None``: no head, no self-distillation).
        distill_hidden_dim, distill_bottleneck_dim: head sizes. mask_ratio: student tokens masked.
    """

    teacher_modules = ("image_encoder", "distill_head")

    def __init__(
        self,
        image_encoder: str | UnifiedViT = "vit_b16",
        text_model_name_or_path: str | os.PathLike | None = None,
        text_config: Mapping[str, Any] | None = None,
        text_encoder: nn.Module | None = None,
        in_channels: int = 1,
        img_size: int = 224,
        volume_size: Sequence[int] = (64, 128, 128),
        patch_depth: int = 4,
        dropout_rate: float = 0.0,
        embed_dim: int = 512,
        proj_hidden_dim: int | None = None,
        freeze_layers: int = 0,
        freeze_embeddings: bool | None = None,
        pooling: str = "cls",
        num_slices: int = 4,
        slice_selection: str = "attention",
        attention_layers: int | None = None,
        slab_reduce: str = "center",
        distill_dim: int | None = 8192,
        distill_hidden_dim: int = 2048,
        distill_bottleneck_dim: int = 256,
        mask_ratio: float = 0.5,
    ) -> None:
        super().__init__()
        self.init_args = {
            "image_encoder": image_encoder if isinstance(image_encoder, str) else None,
            "in_channels": in_channels, "img_size": img_size, "volume_size": [int(s) for s in volume_size],
            "patch_depth": patch_depth, "dropout_rate": dropout_rate, "embed_dim": embed_dim,
            "proj_hidden_dim": proj_hidden_dim, "freeze_layers": freeze_layers, "freeze_embeddings": freeze_embeddings,
            "pooling": pooling, "num_slices": num_slices, "slice_selection": slice_selection,
            "attention_layers": attention_layers, "slab_reduce": slab_reduce, "distill_dim": distill_dim,
            "distill_hidden_dim": distill_hidden_dim, "distill_bottleneck_dim": distill_bottleneck_dim, "mask_ratio": mask_ratio,
        }
        if isinstance(image_encoder, str):
            image_encoder = UnifiedViT(image_encoder, in_channels, img_size, volume_size, patch_depth, dropout_rate)
        if not isinstance(image_encoder, UnifiedViT):
            raise ConfigurationError(f"UniMedI needs a UnifiedViT image encoder, got {type(image_encoder).__name__}")
        if slice_selection not in SLICE_SELECTION_MODES:
            raise ConfigurationError(f"slice_selection must be one of {SLICE_SELECTION_MODES}, got '{slice_selection}'")
        slabs = image_encoder.grid_3d[0]
        if not 0 <= num_slices <= slabs:
            raise ConfigurationError(f"num_slices must be in [0, {slabs}] (token slabs of a {image_encoder.volume_size} volume), got {num_slices}")
        if not 0.0 <= mask_ratio < 1.0:
            raise ConfigurationError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if slab_reduce not in ("center", "mean"):
            raise ConfigurationError(f"slab_reduce must be 'center' or 'mean', got '{slab_reduce}'")
        if attention_layers is not None and not 1 <= attention_layers <= image_encoder.num_layers:
            raise ConfigurationError(f"attention_layers must be in [1, {image_encoder.num_layers}], got {attention_layers}")
        self.image_encoder = image_encoder
        if text_encoder is None:
            text_encoder = HFTextEncoder(text_model_name_or_path, text_config, freeze_layers=freeze_layers,
                                         freeze_embeddings=freeze_embeddings, pooling=pooling)
        self.text_encoder = text_encoder
        text_dim = getattr(text_encoder, "out_dim", None)
        if text_dim is None:
            raise ConfigurationError("text_encoder must expose its output width as `out_dim`")
        self.image_projection = ProjectionHead(image_encoder.out_dim, embed_dim, proj_hidden_dim)
        self.text_projection = ProjectionHead(text_dim, embed_dim, proj_hidden_dim)
        self.distill_head = (
            DistillationHead(image_encoder.out_dim, int(distill_dim), distill_hidden_dim, distill_bottleneck_dim) if distill_dim else None
        )
        self.embed_dim, self.num_slices, self.slice_selection = embed_dim, int(num_slices), slice_selection
        self.attention_layers, self.slab_reduce, self.mask_ratio = attention_layers, slab_reduce, float(mask_ratio)
        self.__dict__["_teacher"] = None

    # -- the EMA teacher (not a submodule: outside parameters(), state_dict(), the optimizer and DDP) -------------
    @property
    def teacher(self) -> nn.Module | None:
        return self.__dict__.get("_teacher")

    def set_teacher(self, teacher: nn.Module | None) -> None:
        """Register the EMA teacher: a module with ``image_encoder`` and ``distill_head`` (the :attr:`teacher_modules`)."""
        if teacher is not None:
            missing = [n for n in self.teacher_modules if not isinstance(getattr(teacher, n, None), nn.Module)]
            if missing or self.distill_head is None:
                raise ConfigurationError(f"UniMedI teacher needs {list(self.teacher_modules)} (missing {missing}) "
                                         "and the student a distillation head (distill_dim > 0)")
        self.__dict__["_teacher"] = teacher

    def _distilling(self) -> bool:
        return self.training and self.teacher is not None and self.distill_head is not None

    # -- image side ---------------------------------------------------------------------------------------------
    def _slices(self, x: torch.Tensor, selector: UnifiedViT) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        return volume_slices(self.image_encoder, x, self.num_slices, self.slice_selection, self.attention_layers,
                             self.slab_reduce, selector)

    def _encode_group(self, x: torch.Tensor, distill: bool) -> dict[str, torch.Tensor]:
        teacher = self.teacher if distill and self._distilling() else None
        selector = teacher.image_encoder if teacher is not None else self.image_encoder
        slices, scores, idx = self._slices(x, selector)
        out: dict[str, torch.Tensor] = {}
        if scores is not None:
            out["slice_scores"] = scores
        if idx is not None:
            out["slice_indices"] = idx
        mask = None
        if teacher is not None:
            with torch.no_grad():
                t = teacher.image_encoder(x, slices)
                if self.mask_ratio > 0:
                    segments = self.image_encoder.segment_sizes(x.ndim - 2, 0 if slices is None else slices.shape[1])
                    mask = attention_guided_mask(cls_patch_attention(t["cls_attention"], self.attention_layers), self.mask_ratio, segments)
                out["distill_teacher_cls"] = teacher.distill_head(t["cls"])
                if mask is not None:
                    out["distill_teacher_patch"] = teacher.distill_head(t["tokens"][mask])
        s = self.image_encoder(x, slices, mask)
        out["image_features"] = s["cls"]
        out["image_spatial_dims"] = torch.full((x.shape[0],), x.ndim - 2, dtype=torch.long, device=x.device)
        if teacher is not None:
            head = self.distill_head
            out["distill_student_cls"] = head(s["cls"])
            if mask is not None:
                out["distill_student_patch"] = head(s["tokens"][mask])
                out["distill_patch_index"] = mask.nonzero()[:, 0]
            else:  # no masked tokens: empty patch outputs keep the keys (and the loss's shapes) stable
                out["distill_student_patch"] = out["distill_teacher_patch"] = s["cls"].new_zeros(0, head.out_dim)
                out["distill_patch_index"] = torch.zeros(0, dtype=torch.long, device=x.device)
        return out

    def forward(
        self,
        images: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        volumes: torch.Tensor | None = None,
        required_outputs: Collection[str] | None = None,
    ) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        distill = required_outputs is None or any(k.startswith("distill_") for k in required_outputs)
        if volumes is not None and volumes.ndim != 5:
            raise ShapeMismatchError("UniMedI volumes", tuple(volumes.shape), ("B", "C", "D", "H", "W"),
                                     "a 2D image was given as a volume; pass 2D images as `images`")
        groups = [g for g in (images, volumes) if g is not None]
        if groups and input_ids is not None and input_ids.shape[0] != sum(g.shape[0] for g in groups):
            raise ShapeMismatchError("UniMedI reports and images", (input_ids.shape[0],), (sum(g.shape[0] for g in groups),),
                                     "one report per image row (images first, then volumes)")
        if groups:
            self._check_batch(sum(g.shape[0] for g in groups), "images")
            parts = [self._encode_group(g, distill) for g in groups]
            rows = 0
            for part, g in zip(parts, groups):
                if "distill_patch_index" in part:
                    part["distill_patch_index"] = part["distill_patch_index"] + rows
                rows += g.shape[0]
            for key in dict.fromkeys(k for p in parts for k in p):
                values = [p[key] for p in parts if key in p]
                out[key] = values[0] if len(values) == 1 else torch.cat(values, dim=0)
            out["image_emb"] = self.image_projection(out["image_features"])
        if input_ids is not None:
            self._check_batch(input_ids.shape[0], "reports")
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            pooled = self.text_encoder(input_ids, attention_mask)["pooled"]
            out["text_features"] = pooled
            out["text_emb"] = self.text_projection(pooled)
        return out

    #: what producing an output takes, for the error the training step raises when an objective term reads one
    #: the network cannot give (:meth:`available_outputs`)
    output_requirements: dict[str, str] = {
        "image_emb": "the forward argument 'images' or 'volumes'",
        "text_emb": "the forward argument 'input_ids'",
        **{k: "an EMA teacher registered with the network (monai_medunic.engines.teacher.EMATeacher among the training "
              "handlers) and a distillation head (distill_dim > 0)"
           for k in ("distill_student_cls", "distill_teacher_cls", "distill_student_patch", "distill_teacher_patch", "distill_patch_index")},
    }

    def available_outputs(self, inputs: Collection[str]) -> set[str]:
        """The output keys a train-mode forward with the arguments named in ``inputs`` produces (the training
        step checks the objective's terms against them before the first step)."""
        given, out = set(inputs), set()
        if given & {"images", "volumes"}:
            out |= {"image_features", "image_emb", "image_spatial_dims"}
            if self.num_slices:  # for the 3D rows
                out |= {"slice_indices"} | ({"slice_scores"} if self.slice_selection == "attention" else set())
            if self.teacher is not None and self.distill_head is not None:
                out |= set(k for k in self.output_requirements if k.startswith("distill_"))
        if "input_ids" in given:
            out |= {"text_features", "text_emb"}
        return out

    def _check_batch(self, n: int, what: str) -> None:
        if self.training and n < 2:
            raise BatchSizeError(f"UniMedI in train mode needs at least 2 {what} per batch (BatchNorm projectors), got {n}")

    def export_settings(self) -> dict[str, Any]:
        """The method-specific fields of a trained bundle's ``pretrained`` section (``pretrained.unimedi``):
        what a consumer needs to feed volumes and select slices without rebuilding the network."""
        enc = self.image_encoder
        return {"spatial_dims": [2, 3], "img_size": list(enc.img_size), "volume_size": list(enc.volume_size),
                "patch_depth": enc.patch_depth, "num_slices": self.num_slices, "slice_selection": self.slice_selection,
                "attention_layers": self.attention_layers, "slab_reduce": self.slab_reduce}

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised joint-space embeddings ``(B, d)`` of 2D images or 3D volumes (a volume is encoded
        with its ``num_slices`` selected slices, as in training)."""
        if images.ndim not in (4, 5):
            raise ShapeMismatchError("UniMedI.encode_image input", tuple(images.shape), ("B", "C", "[D]", "H", "W"))
        slices, _, _ = self._slices(images, self.image_encoder)
        cls = self.image_encoder(images, slices)["cls"]
        return F.normalize(self.image_projection(cls), dim=-1)

    def slab_text_similarity(self, volumes: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Text-guided slice relevance: the cosine similarity ``(B, S)`` between each token slab of ``volumes``
        (its slice as :func:`extract_slices` cuts it, encoded as a 2D image, as the selected slices are in
        training) and the joint-space embedding of the text (one text per volume, or one for all).

        UniMedI's Eq. 1-2 rank slabs by the CLS attention alone, with the report guiding it only through
        training; this asks the joint space directly which slab a given report or prompt describes.
        """
        if volumes.ndim != 5:
            raise ShapeMismatchError("slab_text_similarity volumes", tuple(volumes.shape), ("B", "C", "D", "H", "W"))
        enc = self.image_encoder
        b, slabs = volumes.shape[0], enc.grid_3d[0]
        idx = torch.arange(slabs, device=volumes.device).expand(b, slabs)
        slices = extract_slices(volumes, idx, enc.patch_depth, enc.img_size, self.slab_reduce)
        emb = self.encode_image(slices.reshape(b * slabs, *slices.shape[2:])).view(b, slabs, -1)
        text = self.encode_text(input_ids, attention_mask)
        if text.shape[0] not in (1, b):
            raise ShapeMismatchError("slab_text_similarity texts", (text.shape[0],), (b,), "one text per volume, or one for all")
        return torch.einsum("bsd,bd->bs", emb, text.expand(b, -1))

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """L2-normalised joint-space text embeddings ``(B, d)``."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return F.normalize(self.text_projection(self.text_encoder(input_ids, attention_mask)["pooled"]), dim=-1)
