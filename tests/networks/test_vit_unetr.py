"""MONAI UNETR with a UnifiedViT encoder: the backbone returns the ViT's own tokens (depth-pooled to UNETR's
16^3 grid), the hidden states UNETR reads come from the blocks at the same relative depth, the decoder
trains the ViT (whole-model fine-tuning), and unusable geometries are refused."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import UNETR

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.networks import UnifiedViT
from monai_medunic.networks.vit_unetr import UnifiedViTUNETRBackbone, unetr_with_unified_vit

VOL = (16, 32, 32)


def test_backbone_tokens_are_the_vits_depth_pooled() -> None:
    vit = UnifiedViT("vit_tiny", img_size=32, volume_size=VOL, patch_depth=4).eval()
    backbone = UnifiedViTUNETRBackbone(vit)
    assert backbone.depth_pool == 4 and backbone.layer_of == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3]
    x = torch.rand(2, 1, *VOL)
    with torch.no_grad():
        tokens, hidden = backbone(x)
        ref = vit(x)["tokens"]  # (2, 4*2*2, 192), depth-major
    assert tokens.shape == (2, 4, 192) and len(hidden) == 12
    pooled = ref.reshape(2, 4, 4, 192).mean(dim=1)  # 4 slabs averaged per (h, w)
    assert torch.allclose(tokens, pooled, atol=1e-5)
    assert all(h.shape == (2, 4, 192) for h in hidden)
    assert torch.equal(hidden[3], hidden[0]) and not torch.equal(hidden[3], hidden[6])  # blocks 0 and 1 of a 4-block ViT


def test_backbone_without_pooling_matches_the_vit_exactly() -> None:
    vit = UnifiedViT("vit_tiny", img_size=32, volume_size=VOL, patch_depth=16).eval()
    with torch.no_grad():
        x = torch.rand(1, 1, *VOL)
        tokens, _ = UnifiedViTUNETRBackbone(vit)(x)
        assert torch.allclose(tokens, vit(x)["tokens"], atol=1e-6)


def test_unetr_segments_and_trains_the_vit() -> None:
    vit = UnifiedViT("vit_tiny", img_size=32, volume_size=VOL, patch_depth=4)
    net = unetr_with_unified_vit(vit, out_channels=3, feature_size=4)
    assert isinstance(net, UNETR) and net.vit.vit is vit  # shared, not copied
    assert not any(n.startswith("vit.patch_embedding.") for n, _ in net.named_parameters())  # MONAI's own ViT is gone
    x = torch.rand(2, 1, *VOL)
    y = net(x)
    assert y.shape == (2, 3, *VOL)
    y.mean().backward()
    assert vit.patch_embedding_3d.patch_embeddings.weight.grad.abs().sum() > 0
    assert vit.blocks[-1].mlp.linear1.weight.grad.abs().sum() > 0


def test_geometry_errors() -> None:
    with pytest.raises(ConfigurationError, match="divisible by 16"):
        unetr_with_unified_vit(UnifiedViT("vit_tiny", img_size=32, volume_size=(8, 32, 32), patch_depth=4), 2)
    with pytest.raises(ConfigurationError, match="patch_depth 3"):
        UnifiedViTUNETRBackbone(UnifiedViT("vit_tiny", img_size=32, volume_size=(48, 32, 32), patch_depth=3))
    backbone = UnifiedViTUNETRBackbone(UnifiedViT("vit_tiny", img_size=32, volume_size=VOL))
    with pytest.raises(ShapeMismatchError, match="3D volumes"):
        backbone(torch.rand(1, 1, 32, 32))
