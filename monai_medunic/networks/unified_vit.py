"""One ViT for 2D radiographs and 3D CT volumes: UniMedI's vision encoder.

He et al., "Unified Medical Image Pre-training in Language-Guided Common Semantic Space" (UniMedI),
Sec. 3.1 and 4.1.2: "This vision encoder has tokenizers for 2D and 3D images, respectively, and a
shared backbone"; ViT-B/16 in the paper. The pieces are MONAI's: two ``PatchEmbeddingBlock`` (2D and
3D, conv projection, learnable positional embeddings) and a stack of ``TransformerBlock`` whose
``SABlock`` keeps its attention matrix (``save_attn=True``), so the CLS-to-patch attention of every
layer comes out of the same forward pass that computes the embeddings.

3D patch: ``patch_depth x 16 x 16`` voxels, ``patch_depth = 4`` by default. In-plane it equals the 2D
patch, so a 3D token covers the same field of view as a token of a slice of the same volume; 4 voxel
slices per token keep a 64-slice volume at 16 token layers, which is both affordable and fine enough
for slice selection (UniMedI Eq. 2 scores whole token layers; see
:mod:`monai_medunic.transforms.slice_selection`). MONAI's ``UNETR`` hard-codes 16^3 patches: use
``patch_depth=16`` for a drop-in UNETR encoder, or resample the depth when adapting.
"""

from __future__ import annotations

from typing import Sequence

import torch
from monai.networks.blocks import PatchEmbeddingBlock, TransformerBlock
from monai.networks.layers import trunc_normal_
from torch import nn

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.networks.blocks import freeze_unused_cross_attention_norms
from monai_medunic.networks.image import IMAGE_ENCODER_SPECS

__all__ = ["UnifiedViT", "available_unified_vits"]


def available_unified_vits() -> list[str]:
    """Sizes accepted by :class:`UnifiedViT`: the ViT entries of :data:`~monai_medunic.networks.IMAGE_ENCODER_SPECS`."""
    return sorted(n for n, s in IMAGE_ENCODER_SPECS.items() if s.family == "vit")


class UnifiedViT(nn.Module):
    """A ViT with a 2D and a 3D patch tokenizer, a shared CLS token and a shared transformer backbone.

    Sizes by name (:func:`available_unified_vits`): ``vit_b16`` (the paper: 768 wide, 12 layers, 12
    heads), ``vit_tiny`` (192/4/3, trains on a CPU), ``vit_l32``.

    ``forward(x, slices=None, mask=None)``:

    * ``x``: ``(B, C, H, W)`` with ``(H, W) == img_size``, or ``(B, C, D, H, W)`` with
      ``(D, H, W) == volume_size``; the number of dimensions picks the tokenizer.
    * ``slices``: ``(B, k, C, H, W)`` 2D slices (at ``img_size``) of each volume ``x`` (UniMedI Sec.
      3.3: the selected slices and the volume "are tokenized by the 2D and 3D tokenizers ... All tokens
      are concatenated and processed together"). Token order: ``[CLS, volume tokens, slice 1 tokens,
      ..., slice k tokens]``.
    * ``mask``: ``(B, N)`` bool over the patch tokens, ``True`` = masked: the token is replaced by a
      learnable mask token plus its positional embedding (iBOT, Zhou et al. 2021) for the self-distillation student.

    Returns a dict:

    ``cls``            ``(B, hidden)`` final-norm CLS embedding
    ``tokens``         ``(B, N, hidden)`` final-norm patch tokens
    ``cls_attention``  ``(B, layers, heads, N)`` float32 CLS-to-patch attention of every layer, the
                       softmax restricted to the patch tokens (UniMedI Eq. 1 before averaging); taken
                       from each block's saved attention matrix, detached (no gradient)
    ``feature_map``    ``(B, hidden, *grid)`` the tokens of ``x`` (not of the slices) on their grid

    Args:
        name: size name. in_channels: input channels (both tokenizers).
        img_size: 2D input size (int or ``(H, W)``). volume_size: 3D input size ``(D, H, W)``.
        patch_depth: voxel slices per 3D token. dropout_rate: ViT dropout. qkv_bias: attention qkv bias.
    """

    def __init__(
        self,
        name: str = "vit_b16",
        in_channels: int = 1,
        img_size: int | Sequence[int] = 224,
        volume_size: Sequence[int] = (64, 128, 128),
        patch_depth: int = 4,
        dropout_rate: float = 0.0,
        qkv_bias: bool = True,
    ) -> None:
        super().__init__()
        if name not in available_unified_vits():
            raise ConfigurationError(f"unknown UnifiedViT size '{name}'; choose one of {available_unified_vits()}")
        kw = IMAGE_ENCODER_SPECS[name].kwargs
        p, hidden, heads = int(kw["patch_size"]), int(kw["hidden_size"]), int(kw["num_heads"])
        size_2d = (int(img_size),) * 2 if isinstance(img_size, int) else tuple(int(s) for s in img_size)
        size_3d = tuple(int(s) for s in volume_size)
        if len(size_2d) != 2 or len(size_3d) != 3:
            raise ConfigurationError(f"img_size must be (H, W) and volume_size (D, H, W), got {size_2d} and {size_3d}")
        if patch_depth < 1:
            raise ConfigurationError(f"patch_depth must be >= 1, got {patch_depth}")
        patch_3d = (int(patch_depth), p, p)
        for what, size, patch in (("img_size", size_2d, (p, p)), ("volume_size", size_3d, patch_3d)):
            if any(s % q or s < q for s, q in zip(size, patch)):
                raise ConfigurationError(f"{what} {size} is not a multiple of the patch size {patch} of '{name}'")
        self.name, self.in_channels = name, int(in_channels)
        self.img_size, self.volume_size, self.patch_size, self.patch_depth = size_2d, size_3d, p, int(patch_depth)
        self.hidden_size = self.out_dim = hidden
        self.num_heads, self.num_layers = heads, int(kw["num_layers"])
        self.grid_2d = tuple(s // q for s, q in zip(size_2d, (p, p)))
        self.grid_3d = tuple(s // q for s, q in zip(size_3d, patch_3d))
        self.tokens_2d = self.grid_2d[0] * self.grid_2d[1]
        self.tokens_3d = self.grid_3d[0] * self.grid_3d[1] * self.grid_3d[2]
        common = dict(in_channels=in_channels, hidden_size=hidden, num_heads=heads, proj_type="conv",
                      pos_embed_type="learnable", dropout_rate=dropout_rate)
        self.patch_embedding_2d = PatchEmbeddingBlock(img_size=size_2d, patch_size=p, spatial_dims=2, **common)
        self.patch_embedding_3d = PatchEmbeddingBlock(img_size=size_3d, patch_size=patch_3d, spatial_dims=3, **common)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, hidden))
        trunc_normal_(self.cls_token, mean=0.0, std=0.02, a=-2.0, b=2.0)
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden, int(kw["mlp_dim"]), heads, dropout_rate, qkv_bias=qkv_bias, save_attn=True)
            for _ in range(self.num_layers)
        )
        freeze_unused_cross_attention_norms(self.blocks)
        self.norm = nn.LayerNorm(hidden)

    # -- tokenizers ---------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor, spatial_dims: int) -> None:
        expected = self.img_size if spatial_dims == 2 else self.volume_size
        layout = ("B", "C", "H", "W") if spatial_dims == 2 else ("B", "C", "D", "H", "W")
        if x.ndim != spatial_dims + 2:
            other = "3D volume (B, C, D, H, W)" if x.ndim == 5 else "2D image (B, C, H, W)" if x.ndim == 4 else f"{x.ndim}-d tensor"
            raise ShapeMismatchError(
                f"UnifiedViT {spatial_dims}D tokenizer input", tuple(x.shape), layout,
                f"a {other} was given to the {spatial_dims}D tokenizer",
            )
        if x.shape[1] != self.in_channels or tuple(x.shape[2:]) != expected:
            raise ShapeMismatchError(
                f"UnifiedViT {spatial_dims}D tokenizer input", tuple(x.shape), ("B", self.in_channels, *expected),
                f"resample {'images' if spatial_dims == 2 else 'volumes'} to {expected} with {self.in_channels} channel(s)",
            )

    def tokenize_2d(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, tokens_2d, hidden)`` patch embeddings plus positional embeddings."""
        self._check(x, 2)
        return self.patch_embedding_2d(x)

    def tokenize_3d(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, D, H, W)`` -> ``(B, tokens_3d, hidden)`` patch embeddings plus positional embeddings."""
        self._check(x, 3)
        return self.patch_embedding_3d(x)

    def segment_sizes(self, spatial_dims: int, num_slices: int = 0) -> list[int]:
        """Token counts of the segments of a forward: ``[tokens of x] + [tokens_2d] * num_slices``."""
        if spatial_dims not in (2, 3):
            raise ConfigurationError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        return [self.tokens_2d if spatial_dims == 2 else self.tokens_3d] + [self.tokens_2d] * num_slices

    def _position_embeddings(self, spatial_dims: int, num_slices: int) -> torch.Tensor:
        first = self.patch_embedding_2d if spatial_dims == 2 else self.patch_embedding_3d
        pos = [first.position_embeddings] + [self.patch_embedding_2d.position_embeddings] * num_slices
        return torch.cat(pos, dim=1)

    # -- forward ------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, slices: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if x.ndim not in (4, 5):
            raise ShapeMismatchError("UnifiedViT input", tuple(x.shape), ("B", "C", "[D]", "H", "W"), "a 2D image or a 3D volume")
        spatial_dims = x.ndim - 2
        b = x.shape[0]
        tokens = self.tokenize_2d(x) if spatial_dims == 2 else self.tokenize_3d(x)
        k = 0
        if slices is not None:
            if spatial_dims != 3:
                raise ShapeMismatchError("UnifiedViT slices", tuple(x.shape), ("B", "C", "D", "H", "W"),
                                         "slices go with a 3D volume, not a 2D image")
            if slices.ndim != 5 or slices.shape[0] != b:
                raise ShapeMismatchError("UnifiedViT slices", tuple(slices.shape), (b, "k", self.in_channels, *self.img_size))
            k = slices.shape[1]
            if k:
                flat = self.tokenize_2d(slices.reshape(b * k, *slices.shape[2:]))
                tokens = torch.cat([tokens, flat.reshape(b, k * self.tokens_2d, -1)], dim=1)
        if mask is not None:
            if mask.shape != tokens.shape[:2]:
                raise ShapeMismatchError("UnifiedViT token mask", tuple(mask.shape), tuple(tokens.shape[:2]))
            masked = self.mask_token.to(tokens.dtype) + self._position_embeddings(spatial_dims, k).to(tokens.dtype)
            tokens = torch.where(mask.unsqueeze(-1), masked, tokens)
        h = torch.cat([self.cls_token.expand(b, -1, -1).to(tokens.dtype), tokens], dim=1)
        attention = []
        for blk in self.blocks:
            h = blk(h)
            row = blk.attn.att_mat[:, :, 0, 1:].float()  # (B, heads, N): CLS query against patch keys
            attention.append(row / row.sum(dim=-1, keepdim=True))
            blk.attn.att_mat = torch.Tensor()  # drop the (B, heads, N+1, N+1) matrix now
        h = self.norm(h)
        patch = h[:, 1:]
        first = patch[:, : self.segment_sizes(spatial_dims)[0]]
        grid = self.grid_2d if spatial_dims == 2 else self.grid_3d
        return {
            "cls": h[:, 0],
            "tokens": patch,
            "cls_attention": torch.stack(attention, dim=1),
            "feature_map": first.transpose(1, 2).reshape(b, self.hidden_size, *grid),
        }

    def backbone_state_dict(self, spatial_dims: int = 3) -> dict[str, torch.Tensor]:
        """Weights in the layout of MONAI's ``ViT(classification=False)`` built with this size, ``qkv_bias=True``
        and the ``spatial_dims`` tokenizer: ``patch_embedding.*``, ``blocks.*``, ``norm.*`` (for dense adapters such as UNETR)."""
        if spatial_dims not in (2, 3):
            raise ConfigurationError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        embed = f"patch_embedding_{spatial_dims}d."
        out = {}
        for key, value in self.state_dict().items():
            if key.startswith(embed):
                out["patch_embedding." + key[len(embed):]] = value
            elif key.startswith(("blocks.", "norm.")):
                out[key] = value
        return out
