"""VQA answers as classes: normalisation, bilingual aliases, a typed error naming an unknown answer."""

from __future__ import annotations

import pytest
import torch

from monai_medunic.errors import ConfigurationError, DataError, MedUniCError
from monai_medunic.text.answers import (
    AnswerToClass,
    AnswerToClassd,
    AnswerVocabulary,
    UnknownAnswerError,
    normalize_answer,
)

ALIASES = {"sí": "yes", "si": "yes", "izquierda": "left", "derecha": "right"}


def _vocab() -> AnswerVocabulary:
    return AnswerVocabulary(["yes", "no", "left", "right", "pleural effusion"], ALIASES)


def test_normalisation() -> None:
    assert normalize_answer("  Yes. ") == "yes"
    assert normalize_answer("Pleural\n  Effusion") == "pleural effusion"
    assert normalize_answer("Si\u0301") == "s\u00ed"  # decomposed accent -> NFC


def test_index_answer_and_aliases() -> None:
    v = _vocab()
    assert len(v) == 5 and v.answers[0] == "yes"
    assert v.index("YES") == v.index("Sí.") == v.index("si") == 0
    assert v.index("Izquierda") == v.index("left") == 2
    assert v.answer(4) == "pleural effusion"
    assert "derecha" in v and "maybe" not in v
    with pytest.raises(ConfigurationError, match="out of range"):
        v.answer(5)


def test_unknown_answer_raises_a_typed_error_naming_it() -> None:
    v = _vocab()
    with pytest.raises(UnknownAnswerError, match="'cardiomegaly'") as info:
        v.index("cardiomegaly", path="vqa/train.jsonl", line=7)
    err = info.value
    assert isinstance(err, DataError) and isinstance(err, MedUniCError)
    assert err.answer == "cardiomegaly" and err.path == "vqa/train.jsonl" and err.line == 7 and err.field == "answer"
    assert "vqa/train.jsonl" in str(err) and "line 7" in str(err)


def test_from_answers_and_bad_vocabularies() -> None:
    v = AnswerVocabulary.from_answers(["No", "yes", "Yes.", "left", "sí"], aliases={"sí": "yes"})
    assert v.answers == ["left", "no", "yes"]
    with pytest.raises(ConfigurationError, match="duplicate"):
        AnswerVocabulary(["yes", "Yes."])
    with pytest.raises(ConfigurationError, match="not in the answer list"):
        AnswerVocabulary(["yes", "no"], {"sí": "si"})
    with pytest.raises(ConfigurationError, match="another class"):
        AnswerVocabulary(["yes", "no"], {"no": "yes"})
    with pytest.raises(ConfigurationError, match="non-empty"):
        AnswerVocabulary([])


def test_save_and_load_round_trip_and_bad_files(tmp_path) -> None:
    path = tmp_path / "answers.json"
    _vocab().save(path)
    loaded = AnswerVocabulary.load(path)
    assert loaded.answers == _vocab().answers and loaded.index("sí") == 0
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match="bad.json"):
        AnswerVocabulary.load(bad)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"labels": ["yes"]}', encoding="utf-8")
    with pytest.raises(DataError, match="answers"):
        AnswerVocabulary.load(wrong)


def test_transforms() -> None:
    assert AnswerToClass(["yes", "no"])("No") == torch.tensor(1)
    t = AnswerToClassd("answer", _vocab(), label_key="answer_label", path_key="image")
    out = t({"answer": "Derecha", "image": "study1/cr.dcm", "question": "¿De qué lado está el neumotórax?"})
    assert int(out["answer_label"]) == 3 and out["answer"] == "Derecha"
    with pytest.raises(UnknownAnswerError, match="study1/cr.dcm") as info:
        t({"answer": "both sides", "image": "study1/cr.dcm"})
    assert info.value.answer == "both sides" and info.value.field == "answer"
