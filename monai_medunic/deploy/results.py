"""The records passed between the operators of the ``cxr_findings`` Deploy app.

They hold no SDK types, so the SR writer and the JSON result can be built and tested from a plain
pydicom dataset and a prediction.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydicom.dataset import Dataset

__all__ = ["PreparedImage", "StudyFindings", "write_json_result", "RESULT_JSON_NAME", "SR_FILE_NAME"]

RESULT_JSON_NAME = "cxr_findings.json"
SR_FILE_NAME = "cxr_findings_sr.dcm"


@dataclass
class PreparedImage:
    """One frontal radiograph of a study, preprocessed for the network.

    Attributes:
        dataset: the source SOP instance (used for the SR's references and patient/study modules).
        image: ``(1, S, S)`` float32 tensor in [0, 1] (the output of the shared model-input transform).
        view: the view class of the instance (``"frontal"`` or ``"unknown"``).
        selection: the name of the series-selection rule that picked its series.
    """

    dataset: Dataset
    image: torch.Tensor
    view: str = "frontal"
    selection: str = ""

    @property
    def study_uid(self) -> str:
        return str(self.dataset.StudyInstanceUID)

    @property
    def series_uid(self) -> str:
        return str(self.dataset.SeriesInstanceUID)

    @property
    def sop_uid(self) -> str:
        return str(self.dataset.SOPInstanceUID)

    def identifiers(self) -> dict[str, str]:
        """The image's UIDs, view and series selection, for JSON results (no patient identifiers)."""
        return {
            "study_instance_uid": self.study_uid,
            "series_instance_uid": self.series_uid,
            "sop_instance_uid": self.sop_uid,
            "view": self.view,
            "series_selection": self.selection,
        }


@dataclass
class StudyFindings:
    """Zero-shot findings for one study (``probs`` and ``positive`` are in ``findings`` order)."""

    source: PreparedImage
    findings: list[str]
    probs: list[float]
    positive: list[bool]
    language: str
    algorithm_name: str
    algorithm_version: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (UIDs only: no patient identifiers)."""
        from monai_medunic.text.prompts import translate_finding

        return {
            **self.source.identifiers(),
            "language": self.language,
            "algorithm": {"name": self.algorithm_name, "version": self.algorithm_version},
            "findings": [
                {
                    "finding": key,
                    "name": translate_finding(key, self.language),
                    "probability": round(float(p), 6),
                    "positive": bool(pos),
                }
                for key, p, pos in zip(self.findings, self.probs, self.positive)
            ],
            "disclaimer": "Research use only; not a diagnosis.",
            **self.extra,
        }


def write_json_result(result: StudyFindings, path: str | os.PathLike, sr_path: str | os.PathLike | None = None) -> Path:
    """Write ``result`` as UTF-8 JSON (atomically), optionally naming the SR file written next to it."""
    path = Path(path)
    data = result.as_dict()
    if sr_path is not None:
        data["sr_file"] = Path(sr_path).name
    from monai_medunic.text.io_utils import atomic_file

    with atomic_file(path, "JSON result") as tmp:
        Path(tmp).write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return path
