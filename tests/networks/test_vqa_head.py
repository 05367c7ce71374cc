"""Uni-Mlip VQA head (Sec. 4.2): 1-layer fusion, 20 learnable question tokens, 2-layer MLP over answer
classes; encoder/head learning rates as optimizer parameter groups."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
from monai.networks.blocks import TransformerBlock
from torch import nn

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.networks import CXRImageEncoder, HFTextEncoder
from monai_medunic.engines.optim import encoder_head_param_groups
from monai_medunic.networks.vqa import VQAHead, VQAModel


def _VQAModel(text_config: dict, num_answers: int = 5) -> VQAModel:
    """Encoders + head, the Uni-Mlip VQA assembly."""
    return VQAModel(CXRImageEncoder("resnet18", img_size=64), HFTextEncoder(config=text_config, freeze_layers=1), num_answers)


def test_head_structure_and_output() -> None:
    head = VQAHead(image_dim=64, text_dim=32, num_answers=7)
    assert head.question_tokens.shape == (1, 20, 32)
    assert len(head.fusion.blocks) == 1 and isinstance(head.fusion.blocks[0], TransformerBlock)
    assert [type(m) for m in head.classifier if isinstance(m, nn.Linear)] == [nn.Linear, nn.Linear]
    out = head(torch.randn(3, 9, 64), torch.randn(3, 6, 32))
    assert out["vqa_logits"].shape == (3, 7)


def test_question_padding_is_ignored_and_image_and_learned_tokens_matter() -> None:
    head = VQAHead(64, 32, 4).eval()
    img, q = torch.randn(2, 9, 64), torch.randn(2, 6, 32)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    with torch.no_grad():
        ref = head(img, q, mask)["vqa_logits"]
        q2 = q.clone()
        q2[1, 4:] = 100.0
        assert torch.allclose(head(img, q2, mask)["vqa_logits"], ref, atol=1e-5)
        assert not torch.allclose(head(torch.randn(2, 9, 64), q, mask)["vqa_logits"], ref, atol=1e-4)
        head.question_tokens.add_(torch.randn_like(head.question_tokens))
        assert not torch.allclose(head(img, q, mask)["vqa_logits"], ref, atol=1e-4)


def test_head_learns_answers_as_classes() -> None:
    torch.manual_seed(0)
    head = VQAHead(16, 32, 4, dropout_rate=0.0)
    img, q = torch.randn(12, 5, 16), torch.randn(12, 6, 32)
    answers = torch.arange(12) % 4
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2)
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(img, q)["vqa_logits"], answers)
        loss.backward()
        opt.step()
    assert torch.equal(head(img, q)["vqa_logits"].argmax(1), answers)
    assert head.question_tokens.grad is not None


def test_param_groups_give_encoders_the_lower_rate(tiny_bert_config) -> None:
    model = _VQAModel(tiny_bert_config)
    groups = encoder_head_param_groups(model, encoder_lr=5e-5, head_lr=5e-4)
    assert [g["name"] for g in groups] == ["encoders", "encoders_no_decay", "head", "head_no_decay"]
    assert [g["lr"] for g in groups] == [5e-5, 5e-5, 5e-4, 5e-4]
    wd = encoder_head_param_groups(model, weight_decay=0.05)
    assert [g["weight_decay"] for g in wd] == [0.05, 0.0, 0.05, 0.0]
    assert all(p.ndim >= 2 for p in wd[0]["params"]) and all(p.ndim < 2 for p in wd[1]["params"])
    listed = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(listed) == sorted(trainable) and len(set(listed)) == len(listed)  # every trainable one, once
    frozen = {id(p) for p in model.text_encoder.layers[0].parameters()}
    assert frozen and not frozen & set(listed)
    head_ids = {id(p) for g in groups[2:] for p in g["params"]}
    assert id(model.head.question_tokens) in head_ids
    assert all(id(p) in head_ids for p in model.head.parameters() if p.requires_grad)
    # one AdamW step moves each parameter by about its group's rate
    opt = torch.optim.AdamW(groups, weight_decay=0.0)
    before = {id(p): p.detach().clone() for g in groups for p in g["params"]}
    ids = torch.randint(5, tiny_bert_config["vocab_size"], (2, 8))
    out = model(torch.rand(2, 1, 64, 64), ids, torch.ones_like(ids))
    nn.functional.cross_entropy(out["vqa_logits"], torch.tensor([0, 3])).backward()
    opt.step()
    for g, lr in zip(groups, (5e-5, 5e-5, 5e-4, 5e-4)):
        step = max(float((p.detach() - before[id(p)]).abs().max()) for p in g["params"] if p.grad is not None)
        assert step == pytest.approx(lr, rel=0.05)


def test_param_groups_unwrap_ddp_and_take_objective_parameters(tiny_bert_config) -> None:
    model = _VQAModel(tiny_bert_config)
    temperature = nn.Parameter(torch.zeros(()))
    objective = nn.Module()
    objective.register_parameter("log_scale", temperature)
    with tempfile.TemporaryDirectory() as tmp:
        dist.init_process_group("gloo", init_method=f"file://{os.path.join(tmp, 'init')}", rank=0, world_size=1)
        try:
            ddp = nn.parallel.DistributedDataParallel(model)
            groups = encoder_head_param_groups(ddp, objective=objective)
        finally:
            dist.destroy_process_group()
    assert any(p is temperature for g in groups[2:] for p in g["params"])
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == sum(
        1 for m in (model.image_encoder, model.text_encoder) for p in m.parameters() if p.requires_grad
    )


def test_bad_configuration_raises_typed_errors(tiny_bert_config) -> None:
    model = _VQAModel(tiny_bert_config)
    with pytest.raises(ConfigurationError, match="vision_encoder"):
        encoder_head_param_groups(model, encoders=("vision_encoder",))
    with pytest.raises(ConfigurationError, match="learning rates"):
        encoder_head_param_groups(model, encoder_lr=-1.0)
    with pytest.raises(ConfigurationError, match="at least 2"):
        VQAHead(8, 8, 1)
    with pytest.raises(ShapeMismatchError, match="question mask"):
        VQAHead(8, 8, 3)(torch.randn(2, 4, 8), torch.randn(2, 5, 8), torch.ones(2, 4))
