"""TokenizeReportd (fixed-length ids + mask) and RandMaskTokensd (BERT 15%, 80/10/10)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_medunic.data.corpora import IUXRayCorpus, PadChestCorpus
from monai_medunic.errors import ConfigurationError, ModelLoadError, ReportTextError
from monai_medunic.text.masking import IGNORE_INDEX, RandMaskTokens, RandMaskTokensd
from monai_medunic.text.tokenize import TokenizeReportd, load_tokenizer
from monai_medunic.text.vocab import train_wordpiece_tokenizer


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    train_wordpiece_tokenizer(IUXRayCorpus(limit=500).texts(), d, vocab_size=800)
    return str(d)


def test_tokenize_reportd_pads_and_truncates(tok_dir):
    t = TokenizeReportd("report", tokenizer=tok_dir, max_length=16)
    out = t({"report": "No pleural effusion.", "language": "en"})
    ids, mask = out["input_ids"], out["attention_mask"]
    assert ids.shape == mask.shape == (16,) and ids.dtype == torch.long
    tok = load_tokenizer(tok_dir)
    assert tok.convert_ids_to_tokens(ids[:6].tolist()) == ["[CLS]", "no", "pleural", "effusion", ".", "[SEP]"]
    assert mask.tolist() == [1] * 6 + [0] * 10 and set(ids[6:].tolist()) == {tok.pad_token_id}
    long = t({"report": "heart size normal " * 20})
    assert long["attention_mask"].sum() == 16 and long["input_ids"][-1] == tok.sep_token_id
    assert out["language"] == "en"


def test_tokenize_errors(tok_dir, tmp_path):
    with pytest.raises(ReportTextError, match="reports.jsonl.*field 'report'"):
        TokenizeReportd("report", tok_dir)({"report": None, "source": "reports.jsonl"})
    with pytest.raises(ModelLoadError, match="not found"):
        TokenizeReportd("report", tmp_path / "none")
    with pytest.raises(ConfigurationError, match="model_max_length"):
        TokenizeReportd("report", tok_dir, max_length=4096)


def test_masking_follows_bert_80_10_10(tok_dir):
    tok = load_tokenizer(tok_dir)
    texts = PadChestCorpus(limit=400).texts() + IUXRayCorpus(limit=400).texts()
    tk = TokenizeReportd("report", tok_dir, max_length=64)
    masker = RandMaskTokensd("input_ids", tokenizer=tok_dir, prob=0.15).set_random_state(0)
    special = set(tok.all_special_ids)
    n_maskable = n_sel = n_mask = n_same = n_rand = 0
    for text in texts:
        d = tk({"report": text})
        orig = d["input_ids"].clone()
        out = masker(d)
        labels, ids = out["labels"], out["input_ids"]
        sel = labels != IGNORE_INDEX
        assert torch.equal(labels[sel], orig[sel])  # labels are the original tokens
        assert not any(int(i) in special for i in orig[sel])  # [CLS]/[SEP]/[PAD] never selected
        assert torch.equal(ids[~sel], orig[~sel])  # unselected tokens untouched
        assert sel.any()
        n_maskable += sum(int(i) not in special for i in orig)
        n_sel += int(sel.sum())
        n_mask += int((ids[sel] == tok.mask_token_id).sum())
        n_same += int((ids[sel] == orig[sel]).sum())
        n_rand += int(((ids[sel] != orig[sel]) & (ids[sel] != tok.mask_token_id)).sum())
    assert n_sel / n_maskable == pytest.approx(0.15, abs=0.015)
    assert n_mask / n_sel == pytest.approx(0.8, abs=0.03)
    assert n_rand / n_sel == pytest.approx(0.1, abs=0.03)
    assert n_same / n_sel == pytest.approx(0.1, abs=0.03)  # a random draw may hit the same id: tiny effect


def test_masking_is_seeded_and_redrawn():
    m = RandMaskTokens(mask_token_id=4, vocab_size=50, special_ids=[0, 1, 2, 3], prob=0.3)
    ids = torch.arange(5, 45)
    a = m.set_random_state(3)(ids)
    b = RandMaskTokens(mask_token_id=4, vocab_size=50, special_ids=[0, 1, 2, 3], prob=0.3).set_random_state(3)(ids)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = m(ids)
    assert not torch.equal(a[1], c[1])  # dynamic masking: a new draw per call
    replaced = a[0][(a[1] != IGNORE_INDEX) & (a[0] != ids) & (a[0] != 4)]
    assert all(int(r) >= 4 for r in replaced) and np.all(a[0].numpy() < 50)


def test_masking_config_errors():
    with pytest.raises(ConfigurationError, match="prob"):
        RandMaskTokens(mask_token_id=4, vocab_size=10, prob=0.0)
    with pytest.raises(ConfigurationError, match="sum to <= 1"):
        RandMaskTokens(mask_token_id=4, vocab_size=10, mask_fraction=0.9, random_fraction=0.2)
    with pytest.raises(ConfigurationError, match="1-D"):
        RandMaskTokens(mask_token_id=4, vocab_size=10)(torch.zeros(2, 3, dtype=torch.long))
