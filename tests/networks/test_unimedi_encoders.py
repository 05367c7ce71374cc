"""UniMedI's vision side for downstream use (UniMedIVisionEncoder: the CLS that encode_image projects, volumes
with their selected slices), the report-guided slab relevance, and the settings written at export."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.networks import UniMedI
from monai_medunic.networks.unimedi import UniMedIVisionEncoder, volume_slices
from monai_medunic.transforms.slice_selection import extract_slices

IMG, VOL = 32, (16, 32, 32)


def _model(cfg: dict, **kw) -> UniMedI:
    return UniMedI("vit_tiny", text_config=cfg, img_size=IMG, volume_size=VOL, embed_dim=16, num_slices=2, distill_dim=16,
                   distill_hidden_dim=16, distill_bottleneck_dim=8, **kw).eval()


def test_vision_encoder_gives_what_encode_image_projects(tiny_bert_config) -> None:
    model = _model(tiny_bert_config)
    enc = UniMedIVisionEncoder.from_model(model)
    assert enc.image_encoder is model.image_encoder and enc.num_slices == 2 and enc.out_dim == 192
    vols, imgs = torch.rand(3, 1, *VOL), torch.rand(3, 1, IMG, IMG)
    with torch.no_grad():
        for x in (vols, imgs):
            pooled = enc(x)["pooled"]
            assert pooled.shape == (3, 192)
            assert torch.allclose(F.normalize(model.image_projection(pooled), dim=-1), model.encode_image(x), atol=1e-5)
        # a volume goes through the ViT with its 2 attention-selected slices: not the volume alone
        assert not torch.allclose(enc(vols)["pooled"], model.image_encoder(vols)["cls"], atol=1e-4)
        slices, scores, idx = volume_slices(model.image_encoder, vols, 2)
    assert slices.shape == (3, 2, 1, IMG, IMG) and scores.shape == (3, 4) and idx.shape == (3, 2)
    with pytest.raises(ConfigurationError, match="UniMedI"):
        UniMedIVisionEncoder.from_model(torch.nn.Linear(2, 2))


def test_fine_tuning_reaches_the_vit_through_the_selected_slices(tiny_bert_config) -> None:
    enc = UniMedIVisionEncoder.from_model(_model(tiny_bert_config)).train()
    enc(torch.rand(2, 1, *VOL))["pooled"].sum().backward()
    assert enc.image_encoder.patch_embedding_2d.patch_embeddings.weight.grad.abs().sum() > 0  # the slices' tokenizer
    assert enc.image_encoder.patch_embedding_3d.patch_embeddings.weight.grad.abs().sum() > 0


def test_slab_text_similarity_is_the_cosine_of_each_slab_slice_and_the_text(tiny_bert_config) -> None:
    model = _model(tiny_bert_config)
    vols = torch.rand(2, 1, *VOL)
    ids = torch.randint(5, 100, (2, 8))
    with torch.no_grad():
        sim = model.slab_text_similarity(vols, ids)
        assert sim.shape == (2, 4)
        slab2 = extract_slices(vols, torch.full((2, 1), 2), 4, (IMG, IMG))[:, 0]
        expected = (model.encode_image(slab2) * model.encode_text(ids)).sum(-1)
        assert torch.allclose(sim[:, 2], expected, atol=1e-5)
        shared = model.slab_text_similarity(vols, ids[:1])  # one text for every volume
        assert torch.allclose(shared[0], sim[0], atol=1e-5)
    with pytest.raises(ShapeMismatchError):
        model.slab_text_similarity(vols[:, :, 0], ids)


def test_export_settings(tiny_bert_config) -> None:
    s = _model(tiny_bert_config, attention_layers=2).export_settings()
    assert s == {"spatial_dims": [2, 3], "img_size": [IMG, IMG], "volume_size": list(VOL), "patch_depth": 4, "num_slices": 2,
                 "slice_selection": "attention", "attention_layers": 2, "slab_reduce": "center"}
