"""A VQA manifest (JSONL, one question per line) -> MONAI data list with answers as classes.

Uni-Mlip casts VQA as classification (Sec. 4.2): every answer is a class of an
:class:`~monai_medunic.text.answers.AnswerVocabulary`. A line reads::

    {"image": "dicom/study_00001/frontal_1.dcm", "question": "Is there a pleural effusion?",
     "answer": "no", "answer_type": "closed", "question_type": "effusion_presence",
     "language": "en", "split": "train", "qid": "..."}

``image`` is relative to the manifest's folder (or absolute); ``answer_type`` is ``open`` or
``closed`` (the accuracy is reported for each, Uni-Mlip Table 2). The demo dataset writes such a file
(``vqa.jsonl``, :mod:`monai_medunic.data.demo.vqa`) and its vocabulary (``vqa_answers.json``).

Bad input is never silent: an answer outside the answer list raises
:class:`~monai_medunic.errors.UnknownAnswerError` naming the answer, the file and the line (a VQA set
whose answers drift from the vocabulary would otherwise train a classifier on the wrong classes); an
unreadable line, a missing field or a bad ``answer_type`` raises
:class:`~monai_medunic.errors.ManifestError` with the file, line and field.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

from monai_medunic.errors import ManifestError
from monai_medunic.text.answers import AnswerVocabulary

__all__ = ["vqa_datalist", "load_vqa_vocabulary", "ANSWER_TYPES", "DEFAULT_VOCABULARY_FILE"]

logger = logging.getLogger(__name__)

ANSWER_TYPES = ("open", "closed")
DEFAULT_VOCABULARY_FILE = "vqa_answers.json"
_REQUIRED = ("image", "question", "answer", "answer_type")


def load_vqa_vocabulary(vocabulary: AnswerVocabulary | str | os.PathLike | Sequence[str] | None,
                        manifest: str | os.PathLike) -> AnswerVocabulary:
    """An :class:`AnswerVocabulary` from an object, a file written by :meth:`AnswerVocabulary.save`, a list
    of answers, or (``None``) the ``vqa_answers.json`` next to ``manifest``."""
    if isinstance(vocabulary, AnswerVocabulary):
        return vocabulary
    if vocabulary is None:
        vocabulary = Path(manifest).parent / DEFAULT_VOCABULARY_FILE
    if isinstance(vocabulary, (str, os.PathLike)):
        return AnswerVocabulary.load(vocabulary)
    return AnswerVocabulary(list(vocabulary))


def vqa_datalist(
    manifest: str | os.PathLike,
    split: str | None = None,
    vocabulary: AnswerVocabulary | str | os.PathLike | Sequence[str] | None = None,
    languages: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """The questions of ``split`` (``None``: all) as dicts: ``image`` (absolute path), ``question``,
    ``answer``, ``answer_label`` (its class), ``answer_type``, ``question_type``, ``language``, ``id``.

    Args:
        manifest: the VQA JSONL file.
        split: keep the lines of this split.
        vocabulary: the answer classes (see :func:`load_vqa_vocabulary`).
        languages: keep the questions in these languages (default: all).

    Raises:
        UnknownAnswerError: an answer outside the vocabulary (names the answer, the file and the line).
        ManifestError: the file is missing or empty, a line is not a JSON object, lacks a field or has
            a bad ``answer_type``, or no question is left.
    """
    path = Path(manifest)
    vocab = load_vqa_vocabulary(vocabulary, path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"cannot read the VQA manifest: {type(err).__name__}", path=path) from None
    keep = {str(x) for x in languages} if languages else None
    out: list[dict[str, Any]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ManifestError(f"not valid JSON ({err.msg})", path=path, line=n) from None
        if not isinstance(rec, dict):
            raise ManifestError("a VQA line must be a JSON object", path=path, line=n)
        for key in _REQUIRED:
            if not isinstance(rec.get(key), str) or not rec[key].strip():
                raise ManifestError("missing or empty", path=path, field=key, line=n)
        if rec["answer_type"] not in ANSWER_TYPES:
            raise ManifestError(f"answer_type must be one of {ANSWER_TYPES}, got '{rec['answer_type']}'", path=path,
                                field="answer_type", line=n)
        label = vocab.index(rec["answer"], path=path, field="answer", line=n)  # UnknownAnswerError otherwise
        if split is not None and rec.get("split") != split:
            continue
        language = str(rec.get("language", "en"))
        if keep is not None and language not in keep:
            continue
        image = rec["image"] if os.path.isabs(rec["image"]) else str(path.parent / rec["image"])
        out.append({"image": image, "question": rec["question"], "answer": rec["answer"], "answer_label": label,
                    "answer_type": rec["answer_type"], "question_type": str(rec.get("question_type", "")),
                    "language": language, "id": str(rec.get("qid", f"{path.name}:{n}"))})
    if not out:
        raise ManifestError(f"no question for split '{split}'" + (f" and languages {sorted(keep)}" if keep else ""), path=path)
    logger.info("%s: %d questions for split '%s'", path, len(out), split)
    return out
