"""Visual question answering pairs of the demo radiographs, in English and Spanish, from the phantoms' truth.

Uni-Mlip (Bawazir & Wu, Sec. 4-5) fine-tunes its encoders for VQA, answers cast as classes, and reports
open-ended, closed-ended and overall accuracy (Table 2). The demo dataset gets such a set for free:
each frontal radiograph was drawn from a :class:`~monai_medunic.data.demo.cases.DemoCase` whose
findings and sides are known, so every answer is true of the pixels.

Per frontal image, in the language of its report (``en`` or ``es``):

* closed, ``effusion_presence``: "Is there a pleural effusion?" / "¿Hay derrame pleural?" -> yes / no
  (sí / no), for every image;
* closed, ``finding_presence``: the same yes/no question about one other finding, drawn per image;
* closed, ``pneumothorax_side``: "Which side is the pneumothorax on?" / "¿De qué lado está el
  neumotórax?" -> left / right (izquierdo / derecho, the patient's side, as in the report), for
  images with a pneumothorax;
* open, ``finding``: "What abnormality is seen in this radiograph?" / "¿Qué anomalía se observa en
  esta radiografía?" -> the finding's name (or "no finding" / "sin hallazgos"), for images with
  exactly one finding or none (with two or more, the question has no single answer).

:data:`DEMO_VQA_ANSWERS` lists the canonical (English) answers, the classes; the Spanish answers are
aliases of them (:data:`DEMO_VQA_ALIASES`), so an English and a Spanish question about the same fact
have the same class. :func:`write_demo_vqa` writes ``vqa.jsonl`` (one question per line, with the
image path relative to the dataset folder, the question, the answer, ``answer_type`` open/closed,
``question_type``, ``language``, ``split`` and ``study_uid`` of the image) and ``vqa_answers.json``
(the :class:`~monai_medunic.text.answers.AnswerVocabulary`). Phrasings are drawn from the stream
``(seed, 11, study)``, so a seed reproduces the files byte for byte; every answer is checked against
the vocabulary as it is written (:class:`~monai_medunic.errors.UnknownAnswerError` otherwise).
``monai_medunic.data.vqa.vqa_datalist`` reads them back.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from monai_medunic.data.demo.cases import DEMO_FINDINGS, DemoCase
from monai_medunic.errors import ConfigurationError
from monai_medunic.text.answers import AnswerVocabulary

__all__ = ["DEMO_VQA_ANSWERS", "DEMO_VQA_ALIASES", "VQA_MANIFEST", "VQA_ANSWERS_FILE", "demo_vqa_vocabulary",
           "demo_vqa_questions", "write_demo_vqa"]

VQA_MANIFEST = "vqa.jsonl"
VQA_ANSWERS_FILE = "vqa_answers.json"

NO_FINDING = "no finding"
DEMO_VQA_ANSWERS: tuple[str, ...] = ("yes", "no", "left", "right", *(f.lower() for f in DEMO_FINDINGS), NO_FINDING)
_SPANISH_ANSWER = {
    "yes": "sí", "no": "no", "left": "izquierdo", "right": "derecho", "cardiomegaly": "cardiomegalia",
    "pleural effusion": "derrame pleural", "pneumothorax": "neumotórax", "nodule": "nódulo",
    "consolidation": "consolidación", "edema": "edema", NO_FINDING: "sin hallazgos",
}
#: Spanish answers (and feminine side forms) -> canonical answers
DEMO_VQA_ALIASES: dict[str, str] = {
    **{es: en for en, es in _SPANISH_ANSWER.items() if es != en}, "izquierda": "left", "derecha": "right",
}

# noun phrases for "Is there ...?" / "¿Hay ...?"
_PRESENCE_NOUN = {
    "en": {"Cardiomegaly": "cardiomegaly", "Pleural Effusion": "a pleural effusion", "Pneumothorax": "a pneumothorax",
           "Nodule": "a nodule", "Consolidation": "consolidation", "Edema": "edema"},
    "es": {"Cardiomegaly": "cardiomegalia", "Pleural Effusion": "derrame pleural", "Pneumothorax": "neumotórax",
           "Nodule": "algún nódulo", "Consolidation": "consolidación", "Edema": "edema"},
}
_TEMPLATES = {
    "presence": {"en": ("Is there {noun}?", "Does the radiograph show {noun}?"),
                 "es": ("¿Hay {noun}?", "¿Se observa {noun} en la radiografía?")},
    "pneumothorax_side": {"en": ("Which side is the pneumothorax on?", "On which side is the pneumothorax?"),
                          "es": ("¿De qué lado está el neumotórax?", "¿En qué lado se encuentra el neumotórax?")},
    "finding": {"en": ("What abnormality is seen in this radiograph?", "What is the main finding?"),
                "es": ("¿Qué anomalía se observa en esta radiografía?", "¿Cuál es el hallazgo principal?")},
}


def demo_vqa_vocabulary() -> AnswerVocabulary:
    """The answer classes of the demo VQA set, with the Spanish answers as aliases."""
    return AnswerVocabulary(DEMO_VQA_ANSWERS, DEMO_VQA_ALIASES)


def _answer(canonical: str, language: str) -> str:
    return _SPANISH_ANSWER[canonical] if language == "es" else canonical


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def demo_vqa_questions(case: DemoCase, language: str, rng: np.random.Generator) -> list[dict[str, str]]:
    """The questions of one study: ``question``, ``answer`` (in ``language``), ``answer_type``, ``question_type``."""
    if language not in ("en", "es"):
        raise ConfigurationError(f"demo VQA questions are written in 'en' or 'es', got '{language}'")
    labels = case.labels
    out: list[dict[str, str]] = []

    def presence(finding: str, qtype: str) -> None:
        question = _pick(rng, _TEMPLATES["presence"][language]).format(noun=_PRESENCE_NOUN[language][finding])
        out.append({"question": question, "answer": _answer("yes" if labels[finding] else "no", language),
                    "answer_type": "closed", "question_type": qtype})

    presence("Pleural Effusion", "effusion_presence")
    others = [f for f in DEMO_FINDINGS if f != "Pleural Effusion"]
    presence(others[int(rng.integers(len(others)))], "finding_presence")
    if labels["Pneumothorax"]:
        side = case.attrs["Pneumothorax"]["side"]
        out.append({"question": _pick(rng, _TEMPLATES["pneumothorax_side"][language]), "answer": _answer(side, language),
                    "answer_type": "closed", "question_type": "pneumothorax_side"})
    present = [f for f in DEMO_FINDINGS if labels[f]]
    if len(present) <= 1:
        answer = present[0].lower() if present else NO_FINDING
        out.append({"question": _pick(rng, _TEMPLATES["finding"][language]), "answer": _answer(answer, language),
                    "answer_type": "open", "question_type": "finding"})
    return out


def write_demo_vqa(out_dir: str | os.PathLike, records: Sequence[Mapping[str, Any]], cases: Sequence[DemoCase],
                   seed: int) -> dict[str, Any]:
    """Write ``vqa.jsonl`` and ``vqa_answers.json`` into ``out_dir`` for the studies' frontal images.

    Args:
        out_dir: the demo dataset folder.
        records: the radiograph manifest records, in study order (a study's frontal image first).
        cases: the studies' :class:`DemoCase` in the same order (one per study).
        seed: the dataset seed (phrasings come from the stream ``(seed, 11, study)``).

    Returns:
        counts: ``num_questions`` and per ``answer_type`` / ``question_type`` / ``language``.
    """
    frontal = [r for r in records if os.path.basename(str(r["image"])).startswith("frontal")]
    if len(frontal) != len(cases):
        raise ConfigurationError(f"{len(frontal)} frontal records for {len(cases)} demo cases: one frontal image per study")
    vocabulary = demo_vqa_vocabulary()
    path = os.path.join(os.fspath(out_dir), VQA_MANIFEST)
    counts: Counter[str] = Counter()
    lines = []
    for i, (rec, case) in enumerate(zip(frontal, cases)):
        if dict(rec["labels"]) != dict(case.labels):
            raise ConfigurationError(f"{rec['image']}: the record's labels are not those of demo case {case.index}")
        language = str(rec.get("language", "en"))
        rng = np.random.default_rng([seed, 11, i])
        for k, qa in enumerate(demo_vqa_questions(case, language, rng)):
            vocabulary.index(qa["answer"], path=path, line=len(lines) + 1)  # never write an answer outside the list
            lines.append(json.dumps({"qid": f"{rec['study_uid']}-{k}", "image": rec["image"], **qa, "language": language,
                                     "split": rec["split"], "study_uid": rec["study_uid"]}, ensure_ascii=False))
            counts["num_questions"] += 1
            counts[qa["answer_type"]] += 1
            counts[f"type_{qa['question_type']}"] += 1
            counts[f"lang_{language}"] += 1
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("".join(line + "\n" for line in lines))
    vocabulary.save(os.path.join(os.fspath(out_dir), VQA_ANSWERS_FILE))
    return dict(sorted(counts.items()))
