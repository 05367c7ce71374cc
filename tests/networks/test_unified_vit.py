"""UnifiedViT: one MONAI transformer backbone with 2D and 3D tokenizers; CLS attention from the same forward."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import ViT

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.networks import UnifiedViT, available_unified_vits

IMG, VOL = 32, (16, 32, 32)  # 2x2 2D tokens; 4x2x2 3D tokens with 4x16x16 patches


@pytest.fixture(scope="module")
def vit() -> UnifiedViT:
    torch.manual_seed(0)
    return UnifiedViT("vit_tiny", img_size=IMG, volume_size=VOL).eval()


def test_sizes_by_name() -> None:
    assert {"vit_tiny", "vit_b16"} <= set(available_unified_vits())
    b16 = UnifiedViT("vit_b16", img_size=32, volume_size=(4, 32, 32))
    assert (b16.hidden_size, b16.num_layers, b16.num_heads, b16.patch_size) == (768, 12, 12, 16)
    tiny = UnifiedViT("vit_tiny", img_size=IMG, volume_size=VOL)
    assert (tiny.hidden_size, tiny.num_layers, tiny.num_heads) == (192, 4, 3)
    assert tiny.grid_2d == (2, 2) and tiny.grid_3d == (4, 2, 2) and tiny.tokens_3d == 16
    # both tokenizers feed one backbone: a single stack of blocks
    assert sum(isinstance(m, torch.nn.ModuleList) for m in tiny.children()) == 1


@pytest.mark.parametrize("dims", [2, 3, "mixed"])
def test_shapes_and_dtypes(vit: UnifiedViT, dims) -> None:
    b, k = 3, 2
    x = torch.rand(b, 1, IMG, IMG) if dims == 2 else torch.rand(b, 1, *VOL)
    slices = torch.rand(b, k, 1, IMG, IMG) if dims == "mixed" else None
    n = {2: 4, 3: 16, "mixed": 16 + k * 4}[dims]
    with torch.no_grad():
        out = vit(x, slices)
    assert out["cls"].shape == (b, 192) and out["cls"].dtype == torch.float32
    assert out["tokens"].shape == (b, n, 192)
    assert out["cls_attention"].shape == (b, 4, 3, n) and out["cls_attention"].dtype == torch.float32
    assert out["feature_map"].shape == ((b, 192, 2, 2) if dims == 2 else (b, 192, 4, 2, 2))
    assert not out["cls_attention"].requires_grad
    # CLS-to-patch attention is a distribution over the patch tokens (Eq. 1 softmax)
    assert torch.allclose(out["cls_attention"].sum(-1), torch.ones(b, 4, 3), atol=1e-5)
    assert (out["cls_attention"] >= 0).all()


def test_attention_equals_recomputed_from_q_k_in_one_pass() -> None:
    torch.manual_seed(1)
    vit = UnifiedViT("vit_tiny", img_size=IMG, volume_size=VOL).double().eval()
    inputs: list[torch.Tensor] = []
    hooks = [blk.register_forward_pre_hook(lambda m, a: inputs.append(a[0].detach())) for blk in vit.blocks]
    x, slices = torch.rand(2, 1, *VOL, dtype=torch.float64), torch.rand(2, 3, 1, IMG, IMG, dtype=torch.float64)
    with torch.no_grad():
        out = vit(x, slices)
    for h in hooks:
        h.remove()
    assert len(inputs) == vit.num_layers  # each block ran once: no second forward pass
    heads, dim = vit.num_heads, vit.hidden_size // vit.num_heads
    for layer, (blk, h) in enumerate(zip(vit.blocks, inputs)):
        qkv = blk.attn.qkv(blk.norm1(h)).reshape(h.shape[0], h.shape[1], 3, heads, dim)
        q, k = qkv[:, :, 0].transpose(1, 2), qkv[:, :, 1].transpose(1, 2)  # (B, heads, T, dim)
        logits = torch.einsum("bhd,bhnd->bhn", q[:, :, 0], k[:, :, 1:]) / dim**0.5
        expected = logits.softmax(dim=-1)  # Eq. 1: softmax of the CLS query against the patch keys
        assert torch.allclose(out["cls_attention"][:, layer].double(), expected, atol=1e-10)
        assert blk.attn.att_mat.numel() == 0  # the full matrix is not kept after the pass


def test_mask_replaces_tokens_with_the_mask_token(vit: UnifiedViT) -> None:
    x = torch.rand(2, 1, IMG, IMG)
    other = torch.rand(2, 1, IMG, IMG)
    mask = torch.tensor([[True, False, True, False], [False, False, False, False]])
    keep = ~mask
    other[keep.view(2, 1, 2, 2).repeat_interleave(16, 2).repeat_interleave(16, 3)] = x[
        keep.view(2, 1, 2, 2).repeat_interleave(16, 2).repeat_interleave(16, 3)
    ]
    with torch.no_grad():
        a, b = vit(x, mask=mask), vit(other, mask=mask)
        full = vit(x)
    # image 0: only its unmasked pixels matter; image 1 (nothing masked) is the plain forward
    assert torch.allclose(a["cls"][0], b["cls"][0], atol=1e-5)
    assert torch.allclose(a["cls"][1], full["cls"][1], atol=1e-5)
    assert not torch.allclose(a["cls"][0], full["cls"][0], atol=1e-4)
    with pytest.raises(ShapeMismatchError, match="token mask"):
        vit(x, mask=mask[:, :3])


def test_bad_inputs_raise_typed_errors(vit: UnifiedViT) -> None:
    with pytest.raises(ShapeMismatchError, match="2D image .* given to the 3D tokenizer"):
        vit.tokenize_3d(torch.rand(1, 1, IMG, IMG))
    with pytest.raises(ShapeMismatchError, match="3D volume .* given to the 2D tokenizer"):
        vit.tokenize_2d(torch.rand(1, 1, *VOL))
    with pytest.raises(ShapeMismatchError, match=r"resample volumes to \(16, 32, 32\)"):
        vit(torch.rand(1, 1, 8, 32, 32))
    with pytest.raises(ShapeMismatchError, match=r"resample images to \(32, 32\)"):
        vit(torch.rand(1, 1, 48, 48))
    with pytest.raises(ShapeMismatchError, match="channel"):
        vit(torch.rand(1, 3, IMG, IMG))
    with pytest.raises(ShapeMismatchError, match="slices go with a 3D volume"):
        vit(torch.rand(1, 1, IMG, IMG), slices=torch.rand(1, 2, 1, IMG, IMG))
    with pytest.raises(ShapeMismatchError):
        vit(torch.rand(1, 1, *VOL), slices=torch.rand(1, 2, 1, 16, 16))
    with pytest.raises(ShapeMismatchError):
        vit(torch.rand(IMG, IMG))
    with pytest.raises(ConfigurationError, match="not a multiple of the patch size"):
        UnifiedViT("vit_tiny", img_size=40)
    with pytest.raises(ConfigurationError, match=r"volume_size \(18, 32, 32\)"):
        UnifiedViT("vit_tiny", img_size=IMG, volume_size=(18, 32, 32))
    with pytest.raises(ConfigurationError, match="unknown UnifiedViT size"):
        UnifiedViT("resnet50")


def test_backbone_weights_load_into_monai_vit(vit: UnifiedViT) -> None:
    net = ViT(1, VOL, (4, 16, 16), 192, 768, 4, 3, classification=False, qkv_bias=True)
    net.load_state_dict(vit.backbone_state_dict(3), strict=True)
    assert torch.equal(net.patch_embedding.position_embeddings, vit.patch_embedding_3d.position_embeddings)
    net2 = ViT(1, IMG, 16, 192, 768, 4, 3, classification=False, qkv_bias=True, spatial_dims=2)
    net2.load_state_dict(vit.backbone_state_dict(2), strict=True)
    # the shared blocks compute the same thing in both networks (MONAI's ViT has no CLS token)
    tokens = vit.tokenize_3d(torch.rand(1, 1, *VOL))
    with torch.no_grad():
        assert torch.allclose(net.blocks[0](tokens), vit.blocks[0](tokens))
