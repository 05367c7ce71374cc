"""Uni-Mlip fused-modal MLM (Sec. 3.4, Eq. 3): a 4-layer MONAI-TransformerBlock fusion over image tokens
and masked report tokens, an MLM head over the vocabulary, MaskedLMLoss on the masked positions only."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.blocks import TransformerBlock

from monai_medunic.errors import ConfigurationError, ShapeMismatchError
from monai_medunic.losses import MaskedLMLoss
from monai_medunic.networks import CXRImageEncoder, HFTextEncoder
from monai_medunic.networks.fusion import FusedMaskedLM, FusionTransformer
from monai_medunic.text.masking import IGNORE_INDEX, RandMaskTokens

VOCAB = 120
SPECIAL = [0, 1, 2, 3, 4]  # [PAD], [UNK], [CLS], [SEP], [MASK] of the tiny BERT config
MASK_ID = 4


def _masked_batch(b: int = 3, length: int = 12, pad_last: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(5, VOCAB, (b, length), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    attn = torch.ones(b, length, dtype=torch.long)
    attn[-1, -pad_last:] = 0
    ids[-1, -pad_last:] = 0
    masker = RandMaskTokens(prob=0.4, mask_token_id=MASK_ID, vocab_size=VOCAB, special_ids=SPECIAL)
    masker.set_random_state(0)
    pairs = [masker(row) for row in ids]
    return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), attn


def _eq3_loop(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Eq. 3 transcribed: the mean over masked positions of -log p(y_mask | V, C)."""
    total, count = 0.0, 0
    for i in range(labels.shape[0]):
        for j in range(labels.shape[1]):
            y = int(labels[i, j])
            if y == IGNORE_INDEX:
                continue
            row = [float(v) for v in logits[i, j]]
            top = max(row)
            log_z = top + math.log(sum(math.exp(v - top) for v in row))
            total += log_z - row[y]
            count += 1
    return total / count


def test_fusion_is_four_monai_transformer_blocks_over_the_concatenated_tokens() -> None:
    mlm = FusedMaskedLM(image_dim=64, text_dim=32, vocab_size=VOCAB)
    assert len(mlm.fusion.blocks) == 4 and all(isinstance(b, TransformerBlock) for b in mlm.fusion.blocks)
    out = FusionTransformer(64, 32, num_layers=2)(torch.randn(2, 9, 64), torch.randn(2, 7, 32))
    assert out["tokens"].shape == (2, 16, 32)
    assert out["text_tokens"].shape == (2, 7, 32) and out["image_tokens"].shape == (2, 9, 32)


def test_fused_mlm_loss_equals_loop_transcription_of_eq3() -> None:
    torch.manual_seed(0)
    masked_ids, labels, attn = _masked_batch()
    assert (labels != IGNORE_INDEX).sum() > 3 and torch.all(labels[attn == 0] == IGNORE_INDEX)
    text = torch.nn.Embedding(VOCAB, 32)(masked_ids)  # stand-in token features of the masked report
    image = torch.randn(3, 4, 64)
    mlm = FusedMaskedLM(64, 32, VOCAB, dropout_rate=0.0)
    logits = mlm(image, text, attn)["mlm_logits"]
    assert logits.shape == (3, 12, VOCAB)
    loss = MaskedLMLoss()(logits, labels)
    assert float(loss.detach()) == pytest.approx(_eq3_loop(logits.detach(), labels), rel=1e-5)
    # the selected-positions output gives the same loss
    sel = mlm(image, text, attn, labels=labels)
    assert sel["mlm_logits"].shape == (int((labels != IGNORE_INDEX).sum()), VOCAB)
    assert torch.equal(sel["mlm_labels"], labels[labels != IGNORE_INDEX])
    assert float(MaskedLMLoss()(sel["mlm_logits"], sel["mlm_labels"]).detach()) == pytest.approx(float(loss.detach()), rel=1e-5)


def test_only_masked_positions_count() -> None:
    _, labels, attn = _masked_batch()
    mlm = FusedMaskedLM(64, 32, VOCAB, dropout_rate=0.0)
    logits = mlm(torch.randn(3, 4, 64), torch.randn(3, 12, 32), attn)["mlm_logits"].detach().requires_grad_(True)
    loss = MaskedLMLoss()(logits, labels)
    loss.backward()
    unmasked = labels == IGNORE_INDEX
    assert torch.all(logits.grad[unmasked] == 0)
    assert torch.all(logits.grad[~unmasked].abs().sum(-1) > 0)
    scrambled = logits.detach().clone()
    scrambled[unmasked] = torch.randn_like(scrambled[unmasked]) * 10
    assert float(MaskedLMLoss()(scrambled, labels)) == pytest.approx(float(loss.detach()), rel=1e-6)


def test_predictions_use_the_image_and_ignore_report_padding() -> None:
    _, _, attn = _masked_batch()
    mlm = FusedMaskedLM(64, 32, VOCAB).eval()
    text, image = torch.randn(3, 12, 32), torch.randn(3, 4, 64)
    with torch.no_grad():
        ref = mlm(image, text, attn)["mlm_logits"]
        other_image = mlm(torch.randn(3, 4, 64), text, attn)["mlm_logits"]
        text2 = text.clone()
        text2[attn == 0] = torch.randn_like(text2[attn == 0]) * 5
        other_padding = mlm(image, text2, attn)["mlm_logits"]
    assert not torch.allclose(ref, other_image, atol=1e-4)  # fused-modal: the image is context
    real = attn == 1
    assert torch.allclose(ref[real], other_padding[real], atol=1e-5)  # padding is masked as a key


def test_with_the_real_encoders_gradients_reach_both_towers(tiny_bert_config) -> None:
    masked_ids, labels, attn = _masked_batch(b=2, length=10, pad_last=2)
    image_encoder = CXRImageEncoder("resnet18", img_size=64)
    text_encoder = HFTextEncoder(config=tiny_bert_config)
    mlm = FusedMaskedLM(image_encoder.out_dim, text_encoder.out_dim, tiny_bert_config["vocab_size"])
    img = image_encoder(torch.rand(2, 1, 64, 64))
    txt = text_encoder(masked_ids, attn)
    out = mlm(img["tokens"], txt["tokens"], attn, labels=labels)
    loss = MaskedLMLoss()(out["mlm_logits"], out["mlm_labels"])
    loss.backward()
    assert torch.isfinite(loss)
    assert image_encoder.backbone.layer4[-1].conv2.weight.grad.abs().sum() > 0
    assert text_encoder.model.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in mlm.parameters() if p.requires_grad)  # DDP-safe: no unused parameter


def test_bad_inputs_raise_typed_errors() -> None:
    mlm = FusedMaskedLM(64, 32, VOCAB, max_image_tokens=8)
    with pytest.raises(ShapeMismatchError, match="widths"):
        mlm(torch.randn(2, 4, 63), torch.randn(2, 5, 32))
    with pytest.raises(ShapeMismatchError):
        mlm(torch.randn(3, 4, 64), torch.randn(2, 5, 32))
    with pytest.raises(ShapeMismatchError, match="mask"):
        mlm(torch.randn(2, 4, 64), torch.randn(2, 5, 32), torch.ones(2, 6))
    with pytest.raises(ShapeMismatchError, match="labels"):
        mlm(torch.randn(2, 4, 64), torch.randn(2, 5, 32), labels=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ConfigurationError, match="max_image_tokens"):
        mlm(torch.randn(2, 9, 64), torch.randn(2, 5, 32))
    with pytest.raises(ConfigurationError, match="divisible"):
        FusionTransformer(64, 30, num_heads=4)
