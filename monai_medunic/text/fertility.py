"""Tokeniser fertility and ``[UNK]`` rate, per language.

Fertility is the mean number of subword tokens per word (Rust et al., 2021, "How Good is Your
Tokenizer?"): 1.0 means every word is one vocabulary entry; an English-only WordPiece vocabulary
splits Spanish words into many pieces (or ``[UNK]``), which is what Med-UniC's vocabulary extension
(Sec. 3.2, steps 1-2) is meant to fix. Words are found with a tokenizer-independent rule (runs of
letters/digits, and single punctuation marks), so that two tokenizers are compared on the same words.

* ``fertility``: subword tokens / words (special tokens excluded);
* ``unk_rate``: ``[UNK]`` tokens / subword tokens;
* ``split_word_rate``: fraction of words cut into two or more tokens (Rust et al.'s "continued words").
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from monai_medunic.errors import MetricInputError
from monai_medunic.text.tokenize import load_tokenizer

__all__ = ["TokenizerStats", "tokenizer_stats", "tokenizer_stats_by_language", "WORD_RE"]

WORD_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class TokenizerStats:
    """Counts and rates of one tokenizer on one set of texts."""

    texts: int
    words: int
    tokens: int
    unk_tokens: int
    split_words: int

    @property
    def fertility(self) -> float:
        return self.tokens / self.words if self.words else float("nan")

    @property
    def unk_rate(self) -> float:
        return self.unk_tokens / self.tokens if self.tokens else float("nan")

    @property
    def split_word_rate(self) -> float:
        return self.split_words / self.words if self.words else float("nan")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(fertility=self.fertility, unk_rate=self.unk_rate, split_word_rate=self.split_word_rate)
        return d


def tokenizer_stats(tokenizer: Any, texts: Iterable[str], batch_size: int = 512) -> TokenizerStats:
    """Fertility, ``[UNK]`` rate and split-word rate of ``tokenizer`` on ``texts``.

    Args:
        tokenizer: an HF tokenizer object or directory.
        texts: the texts (one language).
        batch_size: texts tokenised per call.

    Raises:
        MetricInputError: no text holds a word.
    """
    tok = load_tokenizer(tokenizer)
    unk_id = tok.unk_token_id
    n_texts = n_words = n_tokens = n_unk = n_split = 0
    batch: list[list[str]] = []

    def flush() -> None:
        nonlocal n_words, n_tokens, n_unk, n_split
        if not batch:
            return
        enc = tok(batch, is_split_into_words=True, add_special_tokens=False, return_attention_mask=False)
        for i, words in enumerate(batch):
            ids = enc["input_ids"][i]
            word_ids = enc.word_ids(i)
            per_word: dict[int, int] = defaultdict(int)
            for w in word_ids:
                if w is not None:
                    per_word[w] += 1
            n_words += len(words)
            n_tokens += len(ids)
            n_unk += sum(1 for t in ids if t == unk_id)
            n_split += sum(1 for c in per_word.values() if c > 1)
        batch.clear()

    for text in texts:
        if not isinstance(text, str):
            raise MetricInputError(f"texts must be strings, got {type(text).__name__}")
        n_texts += 1
        words = WORD_RE.findall(text)
        if words:
            batch.append(words)
        if len(batch) >= batch_size:
            flush()
    flush()
    if n_words == 0:
        raise MetricInputError(f"no word in the {n_texts} texts: fertility is undefined")
    return TokenizerStats(texts=n_texts, words=n_words, tokens=n_tokens, unk_tokens=n_unk, split_words=n_split)


def tokenizer_stats_by_language(
    tokenizer: Any, records: Sequence[Mapping[str, str]] | Mapping[str, Sequence[str]],
    text_key: str = "report", language_key: str = "language",
) -> dict[str, TokenizerStats]:
    """:func:`tokenizer_stats` per language.

    Args:
        tokenizer: an HF tokenizer object or directory.
        records: either ``{language: [texts]}`` or record dicts with ``text_key`` and ``language_key``.
    """
    if isinstance(records, Mapping):
        groups = {str(k): list(v) for k, v in records.items()}
    else:
        groups = defaultdict(list)
        for r in records:
            groups[str(r[language_key])].append(r[text_key])
    if not groups:
        raise MetricInputError("no records: fertility is undefined")
    tok = load_tokenizer(tokenizer)
    return {lang: tokenizer_stats(tok, texts) for lang, texts in sorted(groups.items())}
