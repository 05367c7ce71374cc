"""MONAI's ``UNETR`` with a pre-trained :class:`~monai_medunic.networks.UnifiedViT` as its encoder (UniMedI App. 7.2).

UniMedI (``shared/papers/unimedi.txt``, Sec. 4.2.2 and App. 7.2, "3D Medical Image Segmentation"):
"We use the UNETR [13] architecture by replac[ing] the encoder with pre-trained UniMedI. We train the
entire model", with a Dice + CE loss. MONAI's :class:`~monai.networks.nets.UNETR` (Hatamizadeh et al.,
WACV 2022) reads its ViT through one call, ``x, hidden_states = self.vit(x_in)``, and takes the hidden
states of blocks 3, 6 and 9 of a 12-block ViT with ``16^3``-voxel patches. :func:`unetr_with_unified_vit`
builds MONAI's UNETR for the ViT's volume size and width and puts :class:`UnifiedViTUNETRBackbone` in
the place of ``unetr.vit``; the decoder, skip paths and output block are MONAI's, unchanged.

Two mismatches are adapted, not hidden:

* **Patch depth.** UniMedI's 3D tokenizer has ``patch_depth x 16 x 16`` patches (``patch_depth = 4`` by
  default, fine enough for slice selection), UNETR's decoder expects a ``D/16 x H/16 x W/16`` token
  grid. The backbone runs the pre-trained tokenizer and blocks at their own patch depth and
  average-pools each returned token grid along depth by ``16 / patch_depth`` (the transformer itself
  keeps the fine grid it was pre-trained on; only what the decoder reads is resampled). The other
  option, pre-training with ``patch_depth = 16``, leaves a 32-slice volume with 2 slabs to select
  from, which defeats slice selection. Needs ``16 % patch_depth == 0`` and ``D % 16 == 0``.
* **Depth of the transformer.** UNETR reads blocks 3, 6, 9 (0-based, of 12) and the final output. A
  ViT of ``L`` blocks gives, at those positions, the blocks at the same relative depth:
  ``round((i + 1) L / 12) - 1`` (for ``L = 12`` exactly 3, 6, 9; for the 4-block ``vit_tiny`` 0, 1, 2),
  and the final layer-normed tokens (as MONAI's ViT returns ``norm(x)``).

The CLS token is dropped from what UNETR reads (MONAI's UNETR ViT has none). UNETR's constructor
builds a 12-block MONAI ViT of the same width that is discarded at once (a transient allocation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import UNETR
from torch import nn

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.networks.image import IMAGE_ENCODER_SPECS
from monai_medunic.networks.unified_vit import UnifiedViT

__all__ = ["UnifiedViTUNETRBackbone", "unetr_with_unified_vit", "UNETR_PATCH", "UNETR_LAYERS"]

UNETR_PATCH = 16  # MONAI's UNETR: 16^3-voxel patches
UNETR_LAYERS = 12  # ... and a 12-block ViT whose blocks 3, 6, 9 feed the skip paths


def _check_geometry(vit: UnifiedViT) -> int:
    if UNETR_PATCH % vit.patch_depth:
        raise ConfigurationError(f"UNETR needs 16-deep patches: the UnifiedViT's patch_depth {vit.patch_depth} must divide 16")
    if vit.patch_size != UNETR_PATCH:
        raise ConfigurationError(f"UNETR needs 16x16 in-plane patches, the UnifiedViT '{vit.name}' has {vit.patch_size}")
    if any(s % UNETR_PATCH for s in vit.volume_size):
        raise ConfigurationError(f"UNETR needs a volume size divisible by 16 in every axis, got {vit.volume_size}")
    return UNETR_PATCH // vit.patch_depth


class UnifiedViTUNETRBackbone(nn.Module):
    """``x -> (tokens, hidden_states)`` as MONAI's ViT returns them, from a :class:`UnifiedViT`'s 3D path.

    ``tokens``: the final layer-normed patch tokens, ``hidden_states``: 12 entries, the block outputs at
    UNETR's relative depths (module docstring); all on the ``D/16 x H/16 x W/16`` grid (depth pooled by
    ``16 / patch_depth``), CLS token dropped.

    Args:
        vit: the (pre-trained) UnifiedViT; its modules are used, not copied.
    """

    def __init__(self, vit: UnifiedViT) -> None:
        super().__init__()
        if not isinstance(vit, UnifiedViT):
            raise ConfigurationError(f"UnifiedViTUNETRBackbone needs a UnifiedViT, got {type(vit).__name__}")
        self.depth_pool = _check_geometry(vit)
        self.vit = vit
        n = vit.num_layers
        self.layer_of = [min(n - 1, max(0, round((i + 1) * n / UNETR_LAYERS) - 1)) for i in range(UNETR_LAYERS)]

    def _regrid(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.depth_pool == 1:
            return tokens
        b, _, c = tokens.shape
        d, h, w = self.vit.grid_3d
        grid = tokens.transpose(1, 2).reshape(b, c, d, h, w)
        grid = F.avg_pool3d(grid, kernel_size=(self.depth_pool, 1, 1))
        return grid.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if x.ndim != 5:
            raise ShapeMismatchError("UNETR input", tuple(x.shape), ("B", "C", "D", "H", "W"), "UNETR segments 3D volumes")
        vit = self.vit
        tokens = vit.tokenize_3d(x)
        h = torch.cat([vit.cls_token.expand(x.shape[0], -1, -1).to(tokens.dtype), tokens], dim=1)
        per_block = []
        for blk in vit.blocks:
            h = blk(h)
            blk.attn.att_mat = torch.Tensor()  # the blocks keep their attention for slice selection: not needed here
            per_block.append(h[:, 1:])
        wanted = {j: self._regrid(per_block[j]) for j in set(self.layer_of)}
        return self._regrid(vit.norm(h)[:, 1:]), [wanted[j] for j in self.layer_of]


def unetr_with_unified_vit(
    vit: UnifiedViT,
    out_channels: int,
    feature_size: int = 16,
    norm_name: tuple | str = "instance",
    conv_block: bool = True,
    res_block: bool = True,
    dropout_rate: float = 0.0,
) -> UNETR:
    """MONAI's :class:`~monai.networks.nets.UNETR` for ``vit.volume_size`` whose ``vit`` is ``vit``'s 3D path.

    Args:
        vit: the UnifiedViT (pre-trained, or fresh for the random-init baseline). Its modules are shared:
            pass a copy to keep the original untouched by fine-tuning.
        out_channels: segmentation classes (background included).
        feature_size, norm_name, conv_block, res_block, dropout_rate: MONAI UNETR's decoder settings.

    Returns:
        the UNETR, ``(B, C_in, D, H, W) -> (B, out_channels, D, H, W)`` logits.
    """
    if not isinstance(vit, UnifiedViT):
        raise ConfigurationError(f"unetr_with_unified_vit needs a UnifiedViT, got {type(vit).__name__}")
    _check_geometry(vit)
    spec = IMAGE_ENCODER_SPECS[vit.name].kwargs
    net = UNETR(
        in_channels=vit.in_channels, out_channels=int(out_channels), img_size=tuple(vit.volume_size), feature_size=int(feature_size),
        hidden_size=vit.hidden_size, mlp_dim=int(spec["mlp_dim"]), num_heads=vit.num_heads, proj_type="conv", norm_name=norm_name,
        conv_block=conv_block, res_block=res_block, dropout_rate=dropout_rate, spatial_dims=3,
    )
    net.vit = UnifiedViTUNETRBackbone(vit)
    return net

