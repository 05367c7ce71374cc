"""Inference outputs of the zero-shot bundles: ``predictions.json`` and ``predictions.csv``."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Sequence

from ignite.engine import Engine, Events

from monai_medunic.engines.handlers import _atomic_write_json

__all__ = ["ZeroShotPredictionWriter"]

logger = logging.getLogger(__name__)


class ZeroShotPredictionWriter:
    """Collect :class:`~monai_medunic.engines.iterations.ZeroShotInferStep` outputs and write
    ``predictions.json`` and ``predictions.csv`` (one row per image: id, image path, SOP Instance UID,
    language, the decision rule, each finding's probability, decision and whether the bundle's calibration
    made it, and the findings on which the other prompt languages decide otherwise) to ``output_dir``
    when the run completes."""

    def __init__(self, output_dir: str | os.PathLike, findings: Sequence[str], language: str = "en") -> None:
        self.output_dir = Path(output_dir)
        self.findings = list(findings)
        self.language = language
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        out = engine.state.output
        for i, ident in enumerate(out["id"]):
            row = {"id": str(ident), "image_path": str((out.get("image_path") or [""] * (i + 1))[i]),
                   "sop_instance_uid": str((out.get("sop_instance_uid") or [""] * (i + 1))[i]),
                   "language": self.language, "decision_rule": out.get("decision_rule", "s_pos > s_neg (uncalibrated)")}
            cal = out.get("calibrated")
            disagree: dict[str, dict[str, bool]] = {}
            for j, f in enumerate(self.findings):
                mine = bool(out["positive"][i, j])
                row[f] = {"probability": float(out["probs"][i, j]), "positive": mine,
                          "calibrated": bool(cal[j]) if cal is not None else False}
                theirs = {lang: bool(pos[i, j]) for lang, pos in (out.get("other_languages") or {}).items()}
                if any(v != mine for v in theirs.values()):
                    disagree[f] = {self.language: mine, **theirs}
            row["language_disagreement"] = disagree
            self.rows.append(row)

    def _write(self, engine: Engine) -> None:
        import csv

        _atomic_write_json(self.output_dir / "predictions.json", self.rows)
        fd, tmp = tempfile.mkstemp(prefix=".predictions.csv.", dir=self.output_dir)
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "image_path", "sop_instance_uid", "language", "decision_rule"]
                       + [f"{x} probability" for x in self.findings] + [f"{x} positive" for x in self.findings]
                       + ["prompt languages disagree on"])
            for r in self.rows:
                w.writerow([r["id"], r["image_path"], r["sop_instance_uid"], r["language"], r["decision_rule"]]
                           + [f"{r[x]['probability']:.4f}" for x in self.findings] + [int(r[x]["positive"]) for x in self.findings]
                           + ["; ".join(r["language_disagreement"])])
        os.replace(tmp, self.output_dir / "predictions.csv")
        logger.info("wrote %d zero-shot predictions to %s", len(self.rows), self.output_dir)
