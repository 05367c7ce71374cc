"""SR writer operator: one Comprehensive 3D SR (highdicom, TID 1500) and one JSON result per study.

Why not the SDK's ``DICOMTextSRWriterOperator``: it writes a Basic Text SR holding one free-text
item. Zero-shot findings are structured data (a finding concept, a probability, a present / absent
decision, the algorithm that produced them) and the IHE AI Results profile asks for qualitative AI
findings in a Comprehensive 3D SR with TID 1500, which PACS viewers and downstream systems can parse
without text mining. See :mod:`monai_medunic.deploy.sr`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from monai.deploy.core import Fragment, Operator, OperatorSpec

from monai_medunic.text.prompts import translate_finding

from .results import RESULT_JSON_NAME, SR_FILE_NAME, StudyFindings, write_json_result
from .sr import build_findings_sr, write_findings_sr

__all__ = ["FindingsSRWriterOperator", "write_study_outputs"]

logger = logging.getLogger(__name__)


def write_study_outputs(result: StudyFindings, output_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``<output_dir>/<StudyInstanceUID>/cxr_findings_sr.dcm`` and ``cxr_findings.json`` for one study."""
    study_dir = Path(output_dir) / result.source.study_uid
    sr = build_findings_sr(result)
    sr_path = write_findings_sr(sr, study_dir / SR_FILE_NAME)
    json_path = write_json_result(
        result, study_dir / RESULT_JSON_NAME, sr_path=sr_path
    )
    return sr_path, json_path


class FindingsSRWriterOperator(Operator):
    """Writes the SR and the JSON result of every study it receives.

    Named input:
        findings: ``list[StudyFindings]`` from :class:`~monai_medunic.deploy.findings.ZeroShotFindingsOperator`.

    Args:
        fragment: the application.
        output_folder: where ``<StudyInstanceUID>/`` folders are written.
    """

    def __init__(self, fragment: Fragment, *args, output_folder: str | os.PathLike, **kwargs) -> None:
        self.output_folder = Path(output_folder)
        self.input_name = "findings"
        self.written: list[Path] = []
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.input_name)

    def compute(self, op_input, op_output, context) -> None:
        results: list[StudyFindings] = op_input.receive(self.input_name)
        for result in results:
            sr_path, json_path = write_study_outputs(result, self.output_folder)
            self.written.append(sr_path)
            positives = [translate_finding(f, result.language) for f, p in zip(result.findings, result.positive) if p]
            logger.info(
                "study %s: wrote %s and %s (%d findings, positive: %s)",
                result.source.study_uid,
                sr_path.relative_to(self.output_folder),
                json_path.name,
                len(result.findings),
                ", ".join(positives) or "none",
            )
