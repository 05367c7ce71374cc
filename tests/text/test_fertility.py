"""Fertility and [UNK] rate, checked against hand counts on a tiny vocabulary."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from monai_medunic.errors import MetricInputError
from monai_medunic.text.fertility import tokenizer_stats, tokenizer_stats_by_language


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("ftok")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "effusion", "pleural", "der", "##rame", ".", "d",
             "##e", "##r", "##a", "##m"]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    from transformers import BertTokenizerFast

    BertTokenizerFast.from_pretrained(str(d), do_lower_case=True).save_pretrained(str(d))
    return AutoTokenizer.from_pretrained(str(d))


def test_hand_counted_fertility(tok):
    # words: no | pleural | effusion | .  -> 4 words, 4 tokens
    s = tokenizer_stats(tok, ["No pleural effusion."])
    assert (s.words, s.tokens, s.unk_tokens, s.split_words) == (4, 4, 0, 0) and s.fertility == 1.0
    # words: derrame | xyz -> derrame = der ##rame (2 tokens, split), xyz = [UNK] (1 token)
    s = tokenizer_stats(tok, ["derrame xyz"])
    assert (s.words, s.tokens, s.unk_tokens, s.split_words) == (2, 3, 1, 1)
    assert s.fertility == 1.5 and s.unk_rate == pytest.approx(1 / 3) and s.split_word_rate == 0.5


def test_by_language(tok):
    recs = [{"report": "No effusion", "language": "en"}, {"report": "derrame", "language": "es"}]
    by = tokenizer_stats_by_language(tok, recs)
    assert by["en"].fertility == 1.0 and by["es"].fertility == 2.0
    assert tokenizer_stats_by_language(tok, {"es": ["derrame derrame"]})["es"].tokens == 4


def test_no_words_is_an_error(tok):
    with pytest.raises(MetricInputError, match="no word"):
        tokenizer_stats(tok, ["   "])
