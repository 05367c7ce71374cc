"""The answer list of a VQA task: answers as classes (Uni-Mlip Sec. 4.2, "we cast the VQA as a
classification task"), shared by the data code that labels question records and the model's head.

:class:`AnswerVocabulary` maps a normalised answer string (Unicode NFC, case-folded, spaces collapsed,
a final period dropped) to its class index, and aliases (other spellings, the answer in another
language: ``"sí" -> "yes"``) to the class of their canonical answer. An answer outside the list raises
:class:`UnknownAnswerError` naming the answer (and, when the caller gives them, the file, line and
field); it never becomes a silent extra class. The error lives in :mod:`monai_medunic.errors` with the
others (re-exported here). :class:`AnswerToClass` / :class:`AnswerToClassd` are
the transform forms.
"""

from __future__ import annotations

import json
import os
import re
import unicodedata
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

from monai_medunic.errors import ConfigurationError, DataError, UnknownAnswerError

__all__ = ["AnswerVocabulary", "UnknownAnswerError", "AnswerToClass", "AnswerToClassd", "normalize_answer"]

_SPACES = re.compile(r"\s+")


def normalize_answer(answer: str) -> str:
    """``"  Yes. "`` -> ``"yes"``: NFC, case-folded, inner whitespace collapsed, one final period dropped."""
    text = _SPACES.sub(" ", unicodedata.normalize("NFC", str(answer))).strip().casefold()
    return text[:-1].rstrip() if text.endswith(".") else text


class AnswerVocabulary:
    """Answers as class indices, in the order given.

    Args:
        answers: the canonical answers (duplicates after normalisation are an error).
        aliases: other answer strings mapped to a canonical answer (e.g. ``{"sí": "yes", "izquierda": "left"}``).

    Raises:
        ConfigurationError: no answer, duplicate answers, or an alias to an answer not in the list.
    """

    def __init__(self, answers: Sequence[str], aliases: Mapping[str, str] | None = None) -> None:
        if isinstance(answers, str) or not answers:
            raise ConfigurationError("an answer vocabulary needs a non-empty list of answers")
        self._answers = [normalize_answer(a) for a in answers]
        if "" in self._answers:
            raise ConfigurationError("an answer vocabulary cannot hold an empty answer")
        dupes = sorted({a for a in self._answers if self._answers.count(a) > 1})
        if dupes:
            raise ConfigurationError(f"duplicate answers after normalisation: {dupes}")
        self._index = {a: i for i, a in enumerate(self._answers)}
        self._aliases: dict[str, str] = {}
        for alias, target in (aliases or {}).items():
            a, t = normalize_answer(alias), normalize_answer(target)
            if t not in self._index:
                raise ConfigurationError(f"alias '{alias}' points to '{target}', which is not in the answer list")
            if a in self._index and a != t:
                raise ConfigurationError(f"alias '{alias}' is itself an answer of another class")
            self._aliases[a] = t

    @classmethod
    def from_answers(cls, answers: Iterable[str], aliases: Mapping[str, str] | None = None) -> AnswerVocabulary:
        """A vocabulary of the distinct (normalised) answers seen, sorted; aliases are not made classes."""
        alias_keys = {normalize_answer(a) for a in (aliases or {})}
        distinct = sorted({normalize_answer(a) for a in answers} - alias_keys - {""})
        return cls(distinct, aliases)

    @property
    def answers(self) -> list[str]:
        """The canonical answers in class order."""
        return list(self._answers)

    @property
    def aliases(self) -> dict[str, str]:
        return dict(self._aliases)

    def __len__(self) -> int:
        return len(self._answers)

    def __contains__(self, answer: object) -> bool:
        key = normalize_answer(str(answer))
        return key in self._index or key in self._aliases

    def index(self, answer: str, path: str | os.PathLike | None = None, field: str | None = "answer",
              line: int | None = None) -> int:
        """The class of ``answer``; :class:`UnknownAnswerError` (naming it, and the file/line/field if given) if absent."""
        key = normalize_answer(answer)
        key = self._aliases.get(key, key)
        if key not in self._index:
            raise UnknownAnswerError(str(answer), len(self), path, field, line)
        return self._index[key]

    def answer(self, index: int) -> str:
        """The canonical answer of a class index."""
        if not 0 <= int(index) < len(self._answers):
            raise ConfigurationError(f"answer class {index} is out of range [0, {len(self._answers)})")
        return self._answers[int(index)]

    def to_dict(self) -> dict[str, Any]:
        return {"answers": self.answers, "aliases": self.aliases}

    def save(self, path: str | os.PathLike) -> None:
        """Write ``{"answers": [...], "aliases": {...}}`` as UTF-8 JSON (next to a trained VQA head)."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False, indent=1)

    @classmethod
    def load(cls, path: str | os.PathLike) -> AnswerVocabulary:
        """Read a file written by :meth:`save`; :class:`~monai_medunic.errors.DataError` naming the file if it is not one."""
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(f"cannot read an answer vocabulary: {err.__class__.__name__}", path=path) from err
        if not isinstance(data, dict) or not isinstance(data.get("answers"), list):
            raise DataError("an answer vocabulary file needs a list under 'answers'", path=path, field="answers")
        try:
            return cls(data["answers"], data.get("aliases") or {})
        except ConfigurationError as err:
            raise DataError(str(err), path=path, field="answers") from err


class AnswerToClass(Transform):
    """``answer string -> class index`` (a 0-d ``torch.long``) with an :class:`AnswerVocabulary`."""

    def __init__(self, vocabulary: AnswerVocabulary | Sequence[str]) -> None:
        self.vocabulary = vocabulary if isinstance(vocabulary, AnswerVocabulary) else AnswerVocabulary(vocabulary)

    def __call__(self, answer: str, path: str | os.PathLike | None = None, field: str | None = "answer") -> torch.Tensor:
        return torch.tensor(self.vocabulary.index(answer, path=path, field=field), dtype=torch.long)


class AnswerToClassd(MapTransform):
    """Dictionary form of :class:`AnswerToClass`: reads the answer under ``keys`` and writes its class
    under ``label_key``; an unknown answer raises :class:`UnknownAnswerError` naming the answer, the
    key, and the record's file when ``path_key`` names an entry holding it."""

    def __init__(self, keys: KeysCollection = "answer", vocabulary: AnswerVocabulary | Sequence[str] = (),
                 label_key: str = "answer_label", path_key: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if len(self.keys) != 1:
            raise ConfigurationError(f"AnswerToClassd reads one answer key, got {self.keys}")
        self.converter = AnswerToClass(vocabulary)
        self.label_key = label_key
        self.path_key = path_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        path = d.get(self.path_key) if self.path_key else None
        for key in self.key_iterator(d):
            d[self.label_key] = self.converter(d[key], path=path if isinstance(path, (str, os.PathLike)) else None,
                                               field=str(key))
        return d
