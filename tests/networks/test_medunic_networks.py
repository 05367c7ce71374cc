"""Med-UniC networks: encoders by name, HF text encoder loading/freezing/pooling, projectors, assembly."""

from __future__ import annotations

import pytest
import torch

from monai_medunic.errors import BatchSizeError, ConfigurationError, ModelLoadError, ShapeMismatchError
from monai_medunic.losses import MedUniCLoss
from monai_medunic.networks import CXRImageEncoder, HFTextEncoder, ImageEncoder, MedUniC, ProjectionHead, available_image_encoders


@pytest.mark.parametrize(
    "name,size,dim,grid",
    [("resnet18", 64, 512, 2), ("resnet50", 64, 2048, 2), ("vit_tiny", 64, 192, 4), ("vit_b16", 32, 768, 2), ("vit_l32", 64, 1024, 2)],
)
def test_image_encoders_by_name(name: str, size: int, dim: int, grid: int) -> None:
    enc = CXRImageEncoder(name, in_channels=1, img_size=size).eval()
    with torch.no_grad():
        out = enc(torch.rand(2, 1, size, size))
    assert enc.out_dim == dim
    assert out["pooled"].shape == (2, dim)
    assert out["feature_map"].shape == (2, dim, grid, grid)
    assert out["tokens"].shape == (2, grid * grid, dim)
    # the pooled embedding depends on the image
    with torch.no_grad():
        other = enc(torch.rand(2, 1, size, size))["pooled"]
    assert not torch.allclose(out["pooled"], other)


@pytest.mark.parametrize("name,size,dim,grid", [("resnet18", (32, 64, 64), 512, (1, 2, 2)), ("vit_tiny", (32, 64, 48), 192, (2, 4, 3))])
def test_3d_encoders_are_a_parameter(name: str, size: tuple, dim: int, grid: tuple) -> None:
    """The same encoder names encode volumes with spatial_dims=3 (anisotropic sizes included)."""
    enc = ImageEncoder(name, img_size=size, spatial_dims=3).eval()
    with torch.no_grad():
        out = enc(torch.rand(2, 1, *size))
    assert out["pooled"].shape == (2, dim) and out["feature_map"].shape == (2, dim, *grid)
    assert out["tokens"].shape == (2, grid[0] * grid[1] * grid[2], dim)
    with pytest.raises(ShapeMismatchError, match="3D image encoder"):
        enc(torch.rand(2, 1, 64, 64))  # a radiograph given to the volume encoder
    with pytest.raises(ShapeMismatchError, match="2D image encoder"):
        ImageEncoder(name, img_size=64)(torch.rand(2, 1, *size))  # and the reverse


def test_resnet_pyramid_for_dense_decoders() -> None:
    enc = ImageEncoder("resnet18", img_size=64).eval()
    with torch.no_grad():
        pyramid = enc(torch.rand(1, 1, 64, 64))["pyramid"]
    assert [tuple(p.shape[1:]) for p in pyramid] == [(64, 32, 32), (64, 16, 16), (128, 8, 8), (256, 4, 4), (512, 2, 2)]


def test_available_names() -> None:
    assert {"resnet50", "vit_b16", "vit_l32", "resnet18", "vit_tiny"} <= set(available_image_encoders())


@pytest.mark.parametrize("built_with,given", [(1, 3), (3, 1), (1, 1), (3, 3)])
def test_one_or_three_channel_input(built_with: int, given: int) -> None:
    enc = CXRImageEncoder("resnet18", in_channels=built_with).eval()
    gray = torch.rand(2, 1, 32, 32)
    x = gray.expand(-1, given, -1, -1)
    with torch.no_grad():
        out = enc(x)["pooled"]
        ref = enc(gray.expand(-1, built_with, -1, -1))["pooled"]
    # a gray image gives the same embedding whichever channel layout it arrives in
    assert torch.allclose(out, ref, atol=1e-5)


def test_bad_image_inputs() -> None:
    enc = CXRImageEncoder("resnet18", in_channels=1)
    with pytest.raises(ShapeMismatchError, match=r"\(2, 2, 32, 32\)"):
        enc(torch.rand(2, 2, 32, 32))
    with pytest.raises(ShapeMismatchError):
        enc(torch.rand(2, 32, 32))
    vit = CXRImageEncoder("vit_tiny", img_size=64)
    with pytest.raises(ShapeMismatchError, match="img_size"):
        vit(torch.rand(2, 1, 32, 32))
    with pytest.raises(ConfigurationError, match="unknown image encoder"):
        CXRImageEncoder("resnet7")
    with pytest.raises(ConfigurationError, match="multiple of the patch size"):
        CXRImageEncoder("vit_b16", img_size=100)


def test_text_encoder_from_local_directory(tmp_path, tiny_bert_config) -> None:
    from transformers import AutoConfig, BertForMaskedLM

    cfg = dict(tiny_bert_config)
    cfg.pop("model_type")
    mlm = BertForMaskedLM(AutoConfig.for_model("bert", **cfg)).eval()
    mlm.save_pretrained(tmp_path / "hf")
    enc = HFTextEncoder(tmp_path / "hf", pooling="cls").eval()
    ids = torch.randint(0, cfg["vocab_size"], (3, 7))
    with torch.no_grad():
        got = enc(ids)["pooled"]
        ref = mlm.bert(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[:, 0]
    # the weights were loaded, not re-initialised
    assert torch.allclose(got, ref, atol=1e-6)
    assert enc.model.pooler is None


def test_text_encoder_load_errors(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="not-a-model"):
        HFTextEncoder(tmp_path / "not-a-model")
    with pytest.raises(ConfigurationError):
        HFTextEncoder()
    with pytest.raises(ConfigurationError, match="pooling"):
        HFTextEncoder(config={"model_type": "bert"}, pooling="max")


def test_text_encoder_freezing(tiny_bert_config) -> None:
    enc = HFTextEncoder(config=tiny_bert_config, freeze_layers=3)
    frozen = [all(not p.requires_grad for p in layer.parameters()) for layer in enc.layers]
    assert frozen == [True, True, True, False]
    assert all(not p.requires_grad for p in enc.model.embeddings.parameters())
    enc2 = HFTextEncoder(config=tiny_bert_config, freeze_layers=3, freeze_embeddings=False)
    assert all(p.requires_grad for p in enc2.model.embeddings.parameters())
    enc0 = HFTextEncoder(config=tiny_bert_config)
    assert all(p.requires_grad for p in enc0.parameters())
    with pytest.raises(ConfigurationError, match=r"\[0, 4\]"):
        HFTextEncoder(config=tiny_bert_config, freeze_layers=5)


def test_text_pooling_cls_vs_mean_respects_padding(tiny_bert_config) -> None:
    enc = HFTextEncoder(config=tiny_bert_config, pooling="mean").eval()
    ids = torch.randint(5, 100, (1, 6))
    mask = torch.ones_like(ids)
    padded_ids = torch.cat([ids, torch.zeros(1, 4, dtype=ids.dtype)], 1)
    padded_mask = torch.cat([mask, torch.zeros(1, 4, dtype=mask.dtype)], 1)
    with torch.no_grad():
        a = enc(ids, mask)
        b = enc(padded_ids, padded_mask)
    assert torch.allclose(a["pooled"], b["pooled"], atol=1e-5)  # padding does not change the mean
    assert torch.allclose(a["pooled"], a["tokens"].mean(1), atol=1e-6)
    enc.pooling = "cls"
    with torch.no_grad():
        assert torch.allclose(enc(ids, mask)["pooled"], a["tokens"][:, 0], atol=1e-6)


def test_projection_head_layout() -> None:
    head = ProjectionHead(64, 512)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert head[-1].affine is False and head[1].affine is True
    assert head(torch.randn(4, 64)).shape == (4, 512)


def _tiny_medunic(cfg: dict, freeze_layers: int = 2) -> MedUniC:
    return MedUniC("resnet18", text_config=cfg, img_size=32, embed_dim=16, ctr_dim=24, freeze_layers=freeze_layers)


def test_medunic_outputs(tiny_bert_config) -> None:
    model = _tiny_medunic(tiny_bert_config)
    ids = torch.randint(0, 120, (4, 9))
    out = model(torch.rand(4, 1, 32, 32), ids, torch.ones_like(ids), torch.rand(4, 1, 32, 32))
    shapes = {k: tuple(v.shape) for k, v in out.items()}
    assert shapes["image_emb"] == shapes["image_aug_emb"] == shapes["text_emb"] == (4, 16)
    assert shapes["ctr_a"] == shapes["ctr_b"] == (4, 24)
    assert shapes["image_features"] == (4, 512) and shapes["text_features"] == (4, 32)
    # the two text views differ only by dropout
    assert not torch.allclose(out["ctr_a"], out["ctr_b"])
    model.eval()
    with torch.no_grad():
        ev = model(torch.rand(2, 1, 32, 32), ids[:2])
    assert "ctr_a" not in ev and "image_aug_emb" not in ev
    with torch.no_grad():
        e_img, e_txt = model.encode_image(torch.rand(3, 1, 32, 32)), model.encode_text(ids[:3])
    assert torch.allclose(e_img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(e_txt.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_gradients_reach_trainable_and_not_frozen(tiny_bert_config) -> None:
    model = _tiny_medunic(tiny_bert_config, freeze_layers=2).train()
    ids = torch.randint(0, 120, (4, 9))
    out = model(torch.rand(4, 1, 32, 32), ids, torch.ones_like(ids), torch.rand(4, 1, 32, 32))
    MedUniCLoss()(out)["loss"].backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
    assert no_grad == []
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any(".layer.0." in n for n in frozen) and any(".layer.1." in n for n in frozen)
    assert not any(".layer.2." in n or ".layer.3." in n for n in frozen)
    assert any("embeddings" in n for n in frozen)
    assert all(p.grad is None for p in model.parameters() if not p.requires_grad)


def test_medunic_batch_of_one_in_train_mode(tiny_bert_config) -> None:
    model = _tiny_medunic(tiny_bert_config).train()
    with pytest.raises(BatchSizeError, match="at least 2"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(ShapeMismatchError):
        model(torch.rand(2, 1, 32, 32), images_aug=torch.rand(2, 1, 16, 16))
