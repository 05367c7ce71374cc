"""UniMedI assembly: 2D / 3D / mixed forwards, slice selection inside the forward, the EMA teacher's
distillation outputs, gradients to every trainable parameter, the zero-shot encoders, and the DINO head
and attention-guided masking."""

from __future__ import annotations

import pytest
import torch

from monai_medunic.engines.teacher import EMATeacher
from monai_medunic.errors import BatchSizeError, ConfigurationError, DataError, ShapeMismatchError
from monai_medunic.losses import CVLLoss, DINOLoss, MaskedPatchDistillationLoss
from monai_medunic.networks import DistillationHead, UniMedI, attention_guided_mask, select_slices
from monai_medunic.transforms.slice_selection import cls_patch_attention, slice_relevance

IMG, VOL, K_OUT = 32, (16, 32, 32), 48


def _model(cfg: dict, **kw) -> UniMedI:
    args = dict(text_config=cfg, img_size=IMG, volume_size=VOL, embed_dim=16, num_slices=2,
                distill_dim=K_OUT, distill_hidden_dim=32, distill_bottleneck_dim=8)
    args.update(kw)
    return UniMedI("vit_tiny", **args)


def _batch(b2: int = 2, b3: int = 2) -> dict:
    return {"images": torch.rand(b2, 1, IMG, IMG), "volumes": torch.rand(b3, 1, *VOL),
            "input_ids": torch.randint(5, 100, (b2 + b3, 10)), "attention_mask": torch.ones(b2 + b3, 10, dtype=torch.long)}


def test_forward_2d_3d_and_mixed_without_teacher(tiny_bert_config) -> None:
    model = _model(tiny_bert_config)
    b = _batch()
    out2 = model(b["images"], b["input_ids"][:2])
    assert out2["image_emb"].shape == (2, 16) and out2["text_emb"].shape == (2, 16)
    assert out2["image_spatial_dims"].tolist() == [2, 2] and "slice_indices" not in out2
    out3 = model(b["volumes"], b["input_ids"][2:])
    assert out3["image_features"].shape == (2, 192) and out3["image_spatial_dims"].tolist() == [3, 3]
    assert out3["slice_scores"].shape == (2, 4) and out3["slice_indices"].shape == (2, 2)
    mixed = model(**b)
    assert mixed["image_emb"].shape == (4, 16) and mixed["image_spatial_dims"].tolist() == [2, 2, 3, 3]
    assert mixed["slice_indices"].shape == (2, 2)
    assert not any(k.startswith("distill_") for k in mixed)  # no teacher registered


def test_slices_in_the_forward_are_the_attended_ones(tiny_bert_config) -> None:
    model = _model(tiny_bert_config).eval()
    vols = torch.rand(2, 1, *VOL)
    with torch.no_grad():
        attn = model.image_encoder(vols)["cls_attention"]
        out = model(vols)
    expected = slice_relevance(cls_patch_attention(attn), model.image_encoder.grid_3d)
    assert torch.allclose(out["slice_scores"], expected)
    assert out["slice_indices"].tolist() == expected.topk(2, dim=1).indices.tolist()
    sel = select_slices(model, vols, k=3, last_layers=1)
    assert sel["slab_indices"].shape == (2, 3) and sel["slice_scores"].shape == (2, 16)
    assert torch.equal(sel["slice_indices"], sel["slab_indices"] * 4 + 2)
    with pytest.raises(DataError, match="ct_a.*4 slices.*k=5"):
        select_slices(model, vols, k=5, names=["ct_a", "ct_b"])


def test_baseline_slice_modes(tiny_bert_config) -> None:
    mid = _model(tiny_bert_config, slice_selection="middle").eval()
    with torch.no_grad():
        out = mid(torch.rand(3, 1, *VOL))
    assert out["slice_indices"].tolist() == [[1, 2]] * 3 and "slice_scores" not in out
    rnd = _model(tiny_bert_config, slice_selection="random", num_slices=0).eval()
    with torch.no_grad():
        assert "slice_indices" not in rnd(torch.rand(2, 1, *VOL))


def test_teacher_outputs_and_gradients_reach_every_trainable_parameter(tiny_bert_config) -> None:
    model = _model(tiny_bert_config, mask_ratio=0.5).train()
    teacher = EMATeacher(model, momentum=0.9)
    out = model(**_batch())
    for key in ("distill_student_cls", "distill_teacher_cls"):
        assert out[key].shape == (4, K_OUT)
    # per image: 2D 4 tokens -> 2 masked; 3D 16 + 2x4 tokens -> 8 + 2 + 2 masked
    assert out["distill_patch_index"].tolist() == [0, 0, 1, 1] + [2] * 12 + [3] * 12
    assert out["distill_student_patch"].shape == out["distill_teacher_patch"].shape == (28, K_OUT)
    assert not out["distill_teacher_cls"].requires_grad
    loss = (
        CVLLoss()(out["image_emb"], out["text_emb"])
        + DINOLoss(K_OUT)(out["distill_student_cls"], out["distill_teacher_cls"])
        + MaskedPatchDistillationLoss(K_OUT)(out["distill_student_patch"], out["distill_teacher_patch"], out["distill_patch_index"])
    )
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert missing == []
    assert all(p.grad is None and not p.requires_grad for p in teacher.teacher.parameters())
    # the teacher is outside the student's parameters and state_dict
    assert not {id(p) for p in teacher.teacher.parameters()} & {id(p) for p in model.parameters()}
    assert all(not k.startswith("teacher") for k in model.state_dict())
    # an objective without distillation terms: the training step passes the keys it reads
    lean = model(**_batch(), required_outputs={"image_emb", "text_emb"})
    assert not any(k.startswith("distill_") for k in lean) and lean["image_emb"].shape == (4, 16)


def test_teacher_chooses_the_student_mask(tiny_bert_config) -> None:
    model = _model(tiny_bert_config, mask_ratio=0.75).train()
    EMATeacher(model)
    x = torch.rand(2, 1, IMG, IMG)
    seen: list[torch.Tensor] = []
    hook = model.image_encoder.register_forward_pre_hook(lambda m, a: seen.append(a[2] if len(a) > 2 else None))
    with torch.no_grad():
        t_attn = model.teacher.image_encoder(x)["cls_attention"]
        out = model(x)
    hook.remove()
    mask = seen[-1]
    assert mask is not None and mask.sum(1).tolist() == [3, 3]
    kept = (~mask).nonzero()[:, 1]
    assert kept.tolist() == cls_patch_attention(t_attn).argmax(1).tolist()  # the most-attended token is kept
    assert out["distill_patch_index"].tolist() == [0, 0, 0, 1, 1, 1]


def test_encoders_for_zero_shot(tiny_bert_config) -> None:
    model = _model(tiny_bert_config).eval()
    with torch.no_grad():
        e2 = model.encode_image(torch.rand(2, 1, IMG, IMG))
        e3 = model.encode_image(torch.rand(2, 1, *VOL))
        t = model.encode_text(torch.randint(5, 100, (3, 8)))
    for e, n in ((e2, 2), (e3, 2), (t, 3)):
        assert e.shape == (n, 16) and torch.allclose(e.norm(dim=-1), torch.ones(n), atol=1e-5)
    with pytest.raises(ShapeMismatchError):
        model.encode_image(torch.rand(2, IMG, IMG))


def test_init_args_rebuild_the_same_network(tiny_bert_config) -> None:
    model = _model(tiny_bert_config, attention_layers=2, slab_reduce="mean")
    import json

    args = json.loads(json.dumps(model.init_args))
    rebuilt = UniMedI(text_config=tiny_bert_config, **args)
    assert rebuilt.load_state_dict(model.state_dict(), strict=True) is not None
    assert rebuilt.attention_layers == 2 and rebuilt.image_encoder.volume_size == VOL


def test_bad_inputs_and_configs(tiny_bert_config) -> None:
    model = _model(tiny_bert_config).train()
    with pytest.raises(ShapeMismatchError, match="2D image was given as a volume"):
        model(volumes=torch.rand(2, 1, IMG, IMG))
    with pytest.raises(ShapeMismatchError, match="3D tokenizer"):
        model(images=torch.rand(2, 1, IMG, IMG, IMG)[:, :, :8])
    with pytest.raises(ShapeMismatchError, match="one report per image row"):
        model(images=torch.rand(2, 1, IMG, IMG), volumes=torch.rand(2, 1, *VOL), input_ids=torch.randint(5, 100, (2, 10)))
    with pytest.raises(ConfigurationError, match="slab_reduce"):
        _model(tiny_bert_config, slab_reduce="max")
    with pytest.raises(BatchSizeError):
        model(images=torch.rand(1, 1, IMG, IMG))
    with pytest.raises(ConfigurationError, match="num_slices"):
        _model(tiny_bert_config, num_slices=5)
    with pytest.raises(ConfigurationError, match="slice_selection"):
        _model(tiny_bert_config, slice_selection="best")
    with pytest.raises(ConfigurationError, match="mask_ratio"):
        _model(tiny_bert_config, mask_ratio=1.0)
    with pytest.raises(ConfigurationError, match="teacher"):
        _model(tiny_bert_config, distill_dim=0).set_teacher(torch.nn.ModuleDict({"image_encoder": torch.nn.Linear(1, 1)}))


def test_distillation_head() -> None:
    head = DistillationHead(24, out_dim=40, hidden_dim=32, bottleneck_dim=8)
    x = torch.randn(5, 24)
    y = head(x)
    assert y.shape == (5, 40) and y.abs().max() <= 1.0 + 1e-5  # cosine logits: unit input, unit prototypes
    assert head(torch.randn(2, 7, 24)).shape == (2, 7, 40)
    with pytest.raises(ConfigurationError):
        DistillationHead(24, out_dim=0)


def test_attention_guided_mask_keeps_the_most_attended_tokens() -> None:
    scores = torch.tensor([[0.05, 0.4, 0.1, 0.2, 0.25, 0.0, 0.3, 0.7, 0.1, 0.2]])
    mask = attention_guided_mask(scores, 0.6)
    assert mask.sum().item() == 6  # 60 % of 10 masked
    assert sorted((~mask).nonzero()[:, 1].tolist()) == [1, 4, 6, 7]
    # every kept token scores at least as high as every masked one
    assert scores[~mask].min() >= scores[mask].max()
    seg = attention_guided_mask(scores, 0.5, segments=[6, 4])
    assert seg[:, :6].sum().item() == 3 and seg[:, 6:].sum().item() == 2
    assert sorted((~seg[0, :6]).nonzero()[:, 0].tolist()) == [1, 3, 4]
    assert sorted((~seg[0, 6:]).nonzero()[:, 0].tolist()) == [0, 1]
    assert attention_guided_mask(torch.rand(3, 5), 0.99).sum(1).tolist() == [4, 4, 4]  # at least one kept
    assert not attention_guided_mask(torch.rand(2, 5), 0.0).any()
    with pytest.raises(ConfigurationError):
        attention_guided_mask(scores, 1.0)
    with pytest.raises(ShapeMismatchError):
        attention_guided_mask(scores, 0.5, segments=[6, 3])
