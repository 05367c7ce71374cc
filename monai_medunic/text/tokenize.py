"""Report tokenisation for MONAI pipelines: a Hugging Face tokenizer loaded from a directory, as a transform.

The text encoder of Med-UniC is a BERT-style model whose tokenizer has been extended with Spanish
WordPiece tokens (Sec. 3.2). Every pipeline of this package tokenises reports the same way:
``tokenizer(text, max_length=L, padding="max_length", truncation=True)`` with ``L = 256`` by default,
giving fixed-size ``input_ids`` / ``attention_mask`` tensors that batch with MONAI's default collate.

* :func:`load_tokenizer` loads (and caches) a tokenizer from an HF directory, offline.
* :class:`TokenizeReport` is the array transform (``str -> (input_ids, attention_mask)``).
* :class:`TokenizeReportd` is its dictionary form, e.g. on ``{"report": str, "language": "en"}`` records.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from monai_medunic.errors import ConfigurationError, ModelLoadError, ReportTextError

__all__ = ["load_tokenizer", "TokenizeReport", "TokenizeReportd", "DEFAULT_MAX_LENGTH"]

DEFAULT_MAX_LENGTH = 256


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ModelLoadError(f"{path}: cannot load a Hugging Face tokenizer: {err}") from err


def load_tokenizer(tokenizer: str | os.PathLike | Any) -> Any:
    """Load a tokenizer with ``AutoTokenizer.from_pretrained`` (offline) or pass a tokenizer object through.

    Args:
        tokenizer: an HF tokenizer directory (``tokenizer.json`` / ``vocab.txt`` + ``tokenizer_config.json``)
            or an already loaded ``PreTrainedTokenizerBase``.

    Raises:
        ModelLoadError: the directory does not exist or holds no loadable tokenizer.
    """
    if not isinstance(tokenizer, (str, os.PathLike)):
        if not callable(tokenizer) or not hasattr(tokenizer, "convert_ids_to_tokens"):
            raise ConfigurationError(f"expected a tokenizer directory or an HF tokenizer, got {type(tokenizer).__name__}")
        return tokenizer
    path = os.path.abspath(os.fspath(tokenizer))
    if not os.path.isdir(path):
        raise ModelLoadError(f"{path}: tokenizer directory not found")
    # the cache key includes the directory's modification time, so that a re-written directory is re-read
    return _load_cached(path, os.path.getmtime(path))


class TokenizeReport(Transform):
    """Tokenise one report to fixed-length ``input_ids`` and ``attention_mask`` (1-D ``torch.long``).

    Args:
        tokenizer: an HF tokenizer directory or object (see :func:`load_tokenizer`).
        max_length: pad / truncate to this many tokens, special tokens included (Med-UniC: 256).
        lowercase: lower-case the text first (only needed when the tokenizer does not do it itself).
    """

    def __init__(self, tokenizer: str | os.PathLike | Any, max_length: int = DEFAULT_MAX_LENGTH,
                 lowercase: bool = False) -> None:
        if int(max_length) < 2:
            raise ConfigurationError(f"max_length must be >= 2 (room for [CLS] and [SEP]), got {max_length}")
        self.tokenizer = load_tokenizer(tokenizer)
        model_max = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(model_max, int) and model_max < max_length:
            raise ConfigurationError(f"max_length {max_length} exceeds the tokenizer's model_max_length {model_max}")
        self.max_length = int(max_length)
        self.lowercase = lowercase

    def __call__(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(text, str):
            raise ReportTextError(f"report text must be a string, got {type(text).__name__}")
        if self.lowercase:
            text = text.lower()
        enc = self.tokenizer(
            text,
            max_length=self.max_length,
            padding="max_length",
            truncation=True,
            return_attention_mask=True,
            return_token_type_ids=False,
        )
        ids = torch.as_tensor(enc["input_ids"], dtype=torch.long)
        mask = torch.as_tensor(enc["attention_mask"], dtype=torch.long)
        return ids, mask


class TokenizeReportd(MapTransform):
    """Dictionary form of :class:`TokenizeReport`.

    With a single key (the usual ``"report"``), writes ``input_ids`` and ``attention_mask``; with
    several keys, writes ``<key>_input_ids`` and ``<key>_attention_mask`` for each.

    Args:
        keys: the text key(s).
        tokenizer: an HF tokenizer directory or object.
        max_length: pad / truncate length (Med-UniC: 256).
        input_ids_key: output key of the token ids (single key only).
        attention_mask_key: output key of the attention mask (single key only).
        lowercase: lower-case the text first.
        allow_missing_keys: skip records without the key.

    Raises:
        ReportTextError: a record's text is not a string; the message names the key and, when the record
            carries one, its ``source`` / ``path``.
    """

    def __init__(self, keys: KeysCollection, tokenizer: str | os.PathLike | Any,
                 max_length: int = DEFAULT_MAX_LENGTH, input_ids_key: str = "input_ids",
                 attention_mask_key: str = "attention_mask", lowercase: bool = False,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.tokenize = TokenizeReport(tokenizer, max_length=max_length, lowercase=lowercase)
        self.input_ids_key = input_ids_key
        self.attention_mask_key = attention_mask_key

    def _out_keys(self, key: Hashable) -> tuple[str, str]:
        if len(self.keys) == 1:
            return self.input_ids_key, self.attention_mask_key
        return f"{key}_{self.input_ids_key}", f"{key}_{self.attention_mask_key}"

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            text = d[key]
            if not isinstance(text, str):
                where = d.get("source") or d.get("path") or d.get("filename")
                raise ReportTextError(
                    f"report text must be a string, got {type(text).__name__}",
                    path=where if isinstance(where, str) else None,
                    field=str(key),
                )
            ids_key, mask_key = self._out_keys(key)
            d[ids_key], d[mask_key] = self.tokenize(text)
        return d
