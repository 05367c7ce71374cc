"""The demo VQA pairs (English and Spanish, closed and open, true of the phantoms), byte-reproducible per
seed, read back as classes; an answer outside the answer list is a typed error naming the answer and file."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from monai_medunic.data.demo import generate_demo_dataset, sample_case
from monai_medunic.data.demo.vqa import DEMO_VQA_ANSWERS, demo_vqa_questions, demo_vqa_vocabulary
from monai_medunic.data.vqa import vqa_datalist
from monai_medunic.errors import ManifestError, UnknownAnswerError

N = 30


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vqa") / "data"
    generate_demo_dataset(out, num_studies=N, seed=4, num_ct_studies=0, radiograph_truth=False)
    return out


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_bilingual_closed_and_open_questions_true_of_the_phantoms(data: Path) -> None:
    qa = _lines(data / "vqa.jsonl")
    records = {r["image"]: r for r in _lines(data / "manifest.jsonl")}
    types = Counter(q["question_type"] for q in qa)
    assert types["effusion_presence"] == N and types["finding_presence"] == N
    assert types["pneumothorax_side"] >= 1 and types["finding"] >= 1
    assert {q["language"] for q in qa} == {"en", "es"}
    assert {q["answer_type"] for q in qa} == {"open", "closed"}
    vocab = demo_vqa_vocabulary()
    for q in qa:
        rec = records[q["image"]]
        assert q["language"] == rec["language"] and q["split"] == rec["split"] and q["image"].endswith("frontal_1.dcm")
        answer = vocab.answer(vocab.index(q["answer"]))
        if q["question_type"] == "effusion_presence":
            assert answer == ("yes" if rec["labels"]["Pleural Effusion"] else "no")
            assert q["question"] in ("Is there a pleural effusion?", "Does the radiograph show a pleural effusion?",
                                     "¿Hay derrame pleural?", "¿Se observa derrame pleural en la radiografía?")
        elif q["question_type"] == "pneumothorax_side":
            assert rec["labels"]["Pneumothorax"] == 1 and answer in ("left", "right")
            # the side the report names, in the report's language
            side = {"left": ("left", "izquierdo"), "right": ("right", "derecho")}[answer]
            report = rec.get("report") or rec["translations"]["en" if rec["language"] == "es" else "es"]
            assert side[0] in report.lower() or side[1] in report.lower()
        elif q["question_type"] == "finding":
            present = [f.lower() for f, v in rec["labels"].items() if v]
            assert q["answer_type"] == "open" and len(present) <= 1
            assert answer == (present[0] if present else "no finding")
        if q["language"] == "es":
            assert q["question"].startswith("¿") and q["answer"] not in ("yes", "left", "right")


def test_byte_reproducible_per_seed(data: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    generate_demo_dataset(again, num_studies=N, seed=4, num_ct_studies=0, radiograph_truth=False)
    assert _digest(again / "vqa.jsonl") == _digest(data / "vqa.jsonl")
    assert _digest(again / "vqa_answers.json") == _digest(data / "vqa_answers.json")
    other = tmp_path / "other"
    generate_demo_dataset(other, num_studies=N, seed=5, num_ct_studies=0, radiograph_truth=False, vqa=False)
    assert not (other / "vqa.jsonl").exists()


def test_read_back_as_classes_with_spanish_aliases(data: Path) -> None:
    items = vqa_datalist(data / "vqa.jsonl")
    vocab = demo_vqa_vocabulary()
    assert len(vocab) == len(DEMO_VQA_ANSWERS) == 11
    assert all(Path(i["image"]).is_file() for i in items)
    sí = [i for i in items if i["answer"] == "sí"]
    assert sí and all(i["answer_label"] == vocab.index("yes") for i in sí)
    train = vqa_datalist(data / "vqa.jsonl", split="train", languages=["es"])
    assert train and all(i["language"] == "es" for i in train) and len(train) < len(items)


def test_questions_of_a_case_cover_the_finding_list() -> None:
    rng = np.random.default_rng(0)
    seen = set()
    for i in range(200):
        case = sample_case(np.random.default_rng([1, i]), i)
        for q in demo_vqa_questions(case, "en", rng):
            if q["question_type"] == "finding":
                seen.add(q["answer"])
    assert seen == {"cardiomegaly", "pleural effusion", "pneumothorax", "nodule", "consolidation", "edema", "no finding"}


def test_an_answer_outside_the_list_names_the_answer_file_and_line(data: Path, tmp_path: Path) -> None:
    lines = (data / "vqa.jsonl").read_text(encoding="utf-8").splitlines()
    bad = json.loads(lines[2])
    bad["answer"] = "atelectasis"
    lines[2] = json.dumps(bad, ensure_ascii=False)
    path = tmp_path / "vqa.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UnknownAnswerError, match="'atelectasis'") as info:
        vqa_datalist(path, split="train", vocabulary=data / "vqa_answers.json")
    assert info.value.path == str(path) and info.value.line == 3 and info.value.field == "answer"
    assert "vqa.jsonl: line 3" in str(info.value)


@pytest.mark.parametrize("line,field", [
    ('{"image": "a.dcm", "question": "Is there?", "answer": "yes"}', "answer_type"),
    ('{"image": "a.dcm", "question": "Is there?", "answer": "yes", "answer_type": "multiple"}', "answer_type"),
    ('{"image": "a.dcm", "answer": "yes", "answer_type": "closed"}', "question"),
    ('not json', None),
])
def test_malformed_lines_are_typed_errors(tmp_path: Path, line: str, field: str | None) -> None:
    path = tmp_path / "vqa.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    with pytest.raises(ManifestError) as info:
        vqa_datalist(path, vocabulary=DEMO_VQA_ANSWERS)
    assert info.value.line == 1 and info.value.field == field
