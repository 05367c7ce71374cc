"""VQA accuracy, open-ended, closed-ended and overall (Uni-Mlip Sec. 5.1, Table 2).

Answers are classes (:class:`~monai_medunic.text.answers.AnswerVocabulary`); a question is right when
the arg-max class is its answer's class. Accuracy is reported over the closed-ended questions (yes/no,
left/right), the open-ended ones (the finding) and all of them; an answer type with no question gets
``None`` (``NaN`` in an Ignite metric), never a made-up number.

* :func:`vqa_accuracy`: the numbers from predictions, labels and answer types (optionally grouped,
  e.g. by language);
* :class:`VQAAccuracy`: an Ignite metric (one answer type or all) for ``SupervisedEvaluator``;
* :class:`VQAReportWriter`: an Ignite handler writing ``vqa_report.json`` (overall / open / closed, by
  language and by question type) when an evaluation completes.

The evaluator's output is a dict with ``vqa_logits`` ``(B, A)``, ``answer_label`` ``(B,)``,
``answer_type`` (``B`` strings) and optionally ``language`` and ``question_type``
(:class:`monai_medunic.engines.iterations.NamedInputsEvalStep` gives it).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from ignite.engine import Events
from ignite.metrics import Metric

from monai_medunic.errors import MetricInputError

__all__ = ["vqa_accuracy", "VQAAccuracy", "VQAReportWriter", "vqa_output"]

logger = logging.getLogger(__name__)

ANSWER_TYPES = ("open", "closed")


def _classes(pred: Any) -> torch.Tensor:
    t = torch.as_tensor(pred)
    return t.argmax(dim=-1) if t.ndim == 2 else t.long()


def vqa_accuracy(pred: Any, labels: Any, answer_types: Sequence[str]) -> dict[str, Any]:
    """Overall, open and closed accuracy.

    Args:
        pred: ``(N, A)`` logits or ``(N,)`` predicted classes.
        labels: ``(N,)`` answer classes.
        answer_types: ``N`` of ``"open"`` / ``"closed"``.

    Returns:
        ``{"overall", "open", "closed", "n", "n_open", "n_closed"}`` (an accuracy is ``None`` without questions).
    """
    p, y = _classes(pred), torch.as_tensor(labels).long()
    types = [str(t) for t in answer_types]
    if p.shape != y.shape or len(types) != len(y):
        raise MetricInputError(f"VQA accuracy needs one prediction, label and answer type per question, got "
                               f"{tuple(p.shape)}, {tuple(y.shape)} and {len(types)}")
    bad = sorted(set(types) - set(ANSWER_TYPES))
    if bad:
        raise MetricInputError(f"answer types must be {ANSWER_TYPES}, got {bad}")
    right = (p == y).tolist()
    out: dict[str, Any] = {"n": len(right), "overall": sum(right) / len(right) if right else None}
    for kind in ANSWER_TYPES:
        sel = [r for r, t in zip(right, types) if t == kind]
        out[kind] = sum(sel) / len(sel) if sel else None
        out[f"n_{kind}"] = len(sel)
    return out


def vqa_output(output: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Evaluator output -> ``(logits, labels, answer types)``."""
    return output["vqa_logits"], output["answer_label"], list(output["answer_type"])


class VQAAccuracy(Metric):
    """Accuracy over the questions of one answer type (``"open"``, ``"closed"``) or all (``None``), as an
    Ignite metric; ``NaN`` when no question of that type was seen."""

    def __init__(self, answer_type: str | None = None, output_transform: Callable = vqa_output, device: str | torch.device = "cpu") -> None:
        if answer_type not in (None, *ANSWER_TYPES):
            raise MetricInputError(f"answer_type must be None or one of {ANSWER_TYPES}, got '{answer_type}'")
        self.answer_type = answer_type
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._right = 0
        self._n = 0

    def update(self, output: tuple[torch.Tensor, torch.Tensor, list[str]]) -> None:
        logits, labels, types = output
        right = (_classes(logits.detach().cpu()) == torch.as_tensor(labels).cpu().long()).tolist()
        for r, t in zip(right, types):
            if self.answer_type is None or t == self.answer_type:
                self._right += int(r)
                self._n += 1

    def compute(self) -> float:
        return self._right / self._n if self._n else math.nan


class VQAReportWriter:
    """Ignite handler: collects every question's prediction during an evaluation and, when it completes,
    writes ``output_file`` (JSON): the answer-type accuracies overall, ``by_language``, ``by_question_type``.

    Args:
        output_file: the JSON report.
        answers: the answer strings in class order (recorded with each wrong prediction count).
    """

    def __init__(self, output_file: str | os.PathLike, answers: Sequence[str] | None = None) -> None:
        self.output_file = Path(output_file)
        self.answers = list(answers) if answers is not None else None

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self)

    def _reset(self, engine) -> None:
        self._rows: list[tuple[int, int, str, str, str]] = []

    def _collect(self, engine) -> None:
        out = engine.state.output
        pred = _classes(out["vqa_logits"].detach().cpu()).tolist()
        labels = torch.as_tensor(out["answer_label"]).cpu().long().tolist()
        n = len(pred)
        langs = list(out.get("language", ["?"] * n))
        qtypes = list(out.get("question_type", [""] * n))
        self._rows += list(zip(pred, labels, list(out["answer_type"]), langs, qtypes))

    def __call__(self, engine) -> None:
        rows = self._rows
        if not rows:
            raise MetricInputError("the VQA evaluation saw no question")
        pred, labels, types = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
        report: dict[str, Any] = vqa_accuracy(pred, labels, types)
        for field, index in (("by_language", 3), ("by_question_type", 4)):
            groups: dict[str, list[int]] = defaultdict(list)
            for i, r in enumerate(rows):
                groups[r[index]].append(i)
            report[field] = {g: vqa_accuracy([pred[i] for i in idx], [labels[i] for i in idx], [types[i] for i in idx])
                             for g, idx in sorted(groups.items())}
        if self.answers is not None:
            report["answers"] = self.answers
        self.output_file.parent.mkdir(parents=True, exist_ok=True)
        self.output_file.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        logger.info("VQA accuracy: overall %s, open %s, closed %s (n=%d) -> %s", report["overall"], report["open"],
                    report["closed"], report["n"], self.output_file)
