"""BERT masked-language-model corruption as MONAI randomisable transforms.

Med-UniC Sec. 3.2 step (3): "we randomly choose tokens in the mixed sequences, replace them with the
[MASK] token and set 15% masking probability as in BERT". BERT (Devlin et al., 2019, Sec. 3.1)
selects 15% of the tokens; of those, 80% become ``[MASK]``, 10% a random token and 10% stay unchanged;
the loss is computed on the selected tokens only (label ``-100`` elsewhere).

This is the equivalent of ``transformers.DataCollatorForLanguageModeling`` done per sample as a
transform, so that it is seeded like any MONAI random transform (``set_determinism``, DataLoader worker
seeds) and re-drawn every epoch (dynamic masking). Two deliberate differences: special and padding
tokens are never selected nor used as random replacements, and every sequence with at least one
maskable token gets at least one selected token, so a batch never has an all-ignored loss (NaN).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable, Transform

from monai_medunic.errors import ConfigurationError
from monai_medunic.text.tokenize import load_tokenizer

__all__ = ["IGNORE_INDEX", "RandMaskTokens", "RandMaskTokensd"]

IGNORE_INDEX = -100  # label of tokens that do not count in the MLM loss (PyTorch CrossEntropyLoss default)


class RandMaskTokens(Randomizable, Transform):
    """Corrupt a 1-D tensor of token ids for MLM; returns ``(masked_ids, labels)``.

    Args:
        tokenizer: an HF tokenizer (directory or object) giving ``mask_token_id``, the special ids and the
            vocabulary size; alternatively pass ``mask_token_id``, ``vocab_size`` and ``special_ids``.
        prob: probability to select a token (BERT: 0.15).
        mask_fraction: fraction of selected tokens replaced by ``[MASK]`` (BERT: 0.8).
        random_fraction: fraction of selected tokens replaced by a random token (BERT: 0.1); the rest stay.
        mask_token_id: id of ``[MASK]`` (when no tokenizer is given).
        vocab_size: number of token ids (when no tokenizer is given).
        special_ids: ids never selected nor drawn as random tokens (when no tokenizer is given).
    """

    def __init__(self, tokenizer: str | os.PathLike | Any | None = None, prob: float = 0.15,
                 mask_fraction: float = 0.8, random_fraction: float = 0.1, mask_token_id: int | None = None,
                 vocab_size: int | None = None, special_ids: list[int] | None = None) -> None:
        if not 0.0 < prob < 1.0:
            raise ConfigurationError(f"prob must be in (0, 1), got {prob}")
        if mask_fraction < 0 or random_fraction < 0 or mask_fraction + random_fraction > 1.0:
            raise ConfigurationError(
                f"mask_fraction ({mask_fraction}) and random_fraction ({random_fraction}) must be >= 0 and sum to <= 1"
            )
        if tokenizer is not None:
            tok = load_tokenizer(tokenizer)
            if tok.mask_token_id is None:
                raise ConfigurationError("the tokenizer has no mask token ([MASK]); it cannot be used for MLM")
            mask_token_id = int(tok.mask_token_id)
            vocab_size = len(tok)
            special_ids = sorted(set(tok.all_special_ids))
        if mask_token_id is None or vocab_size is None:
            raise ConfigurationError("give a tokenizer, or mask_token_id and vocab_size")
        self.prob = float(prob)
        self.mask_fraction = float(mask_fraction)
        self.random_fraction = float(random_fraction)
        self.mask_token_id = int(mask_token_id)
        self.vocab_size = int(vocab_size)
        self.special_ids = np.asarray(sorted(set(special_ids or []) | {self.mask_token_id}), dtype=np.int64)
        self._replacement_ids = np.setdiff1d(np.arange(self.vocab_size, dtype=np.int64), self.special_ids)
        if self._replacement_ids.size == 0:
            raise ConfigurationError("the vocabulary has no non-special token to use as a random replacement")
        self._select = np.zeros(0, dtype=bool)
        self._action = np.zeros(0)
        self._random_tokens = np.zeros(0, dtype=np.int64)

    def randomize(self, data: np.ndarray) -> None:
        """Draw the selection of tokens (``data``: bool array of maskable positions) and their replacement."""
        maskable = data
        n = maskable.shape[0]
        select = (self.R.random_sample(n) < self.prob) & maskable
        if not select.any() and maskable.any():
            select[self.R.choice(np.flatnonzero(maskable))] = True
        self._select = select
        self._action = self.R.random_sample(n)
        self._random_tokens = self._replacement_ids[self.R.randint(0, self._replacement_ids.size, size=n)]

    def __call__(self, ids: torch.Tensor | np.ndarray, randomize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        ids_t = torch.as_tensor(ids, dtype=torch.long)
        if ids_t.ndim != 1:
            raise ConfigurationError(f"RandMaskTokens expects a 1-D tensor of token ids, got shape {tuple(ids_t.shape)}")
        arr = ids_t.cpu().numpy()
        maskable = ~np.isin(arr, self.special_ids)
        if randomize:
            self.randomize(maskable)
        select = self._select
        labels = np.where(select, arr, IGNORE_INDEX)
        out = arr.copy()
        to_mask = select & (self._action < self.mask_fraction)
        to_random = select & (self._action >= self.mask_fraction) & (
            self._action < self.mask_fraction + self.random_fraction
        )
        out[to_mask] = self.mask_token_id
        out[to_random] = self._random_tokens[to_random]
        return torch.as_tensor(out, dtype=torch.long), torch.as_tensor(labels, dtype=torch.long)


class RandMaskTokensd(Randomizable, MapTransform):
    """Dictionary form of :class:`RandMaskTokens`: corrupts ``keys`` in place and writes the labels.

    Args:
        keys: the token-id key (usually ``"input_ids"``, as written by ``TokenizeReportd``).
        labels_key: where to write the MLM labels (``-100`` on tokens that are not predicted).
        other arguments: as :class:`RandMaskTokens`.
    """

    def __init__(self, keys: KeysCollection = "input_ids", tokenizer: str | os.PathLike | Any | None = None,
                 prob: float = 0.15, mask_fraction: float = 0.8, random_fraction: float = 0.1,
                 labels_key: str = "labels", mask_token_id: int | None = None, vocab_size: int | None = None,
                 special_ids: list[int] | None = None, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ConfigurationError(f"RandMaskTokensd masks one key, got {self.keys}")
        self.masker = RandMaskTokens(tokenizer, prob, mask_fraction, random_fraction, mask_token_id, vocab_size,
                                     special_ids)
        self.labels_key = labels_key

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None
                         ) -> RandMaskTokensd:
        super().set_random_state(seed, state)
        self.masker.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:  # the array transform draws its own numbers
        return None

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key], d[self.labels_key] = self.masker(d[key])
        return d
