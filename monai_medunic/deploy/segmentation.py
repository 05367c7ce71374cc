"""Operators of the ``cxr_segmentation`` Deploy app: prepared radiographs -> finding masks -> DICOM SEG.

The app reads a study exactly as ``cxr_findings`` does (the shared loader, series selection and
:class:`~monai_medunic.deploy.preprocessing.CXRPreprocessOperator`), then:

* :class:`SegmentationOperator`: the trained ``cxr_segmentation`` bundle (:func:`load_segmentation_bundle`)
  on each study's prepared image; masks through :func:`~monai_medunic.networks.dense.predict_masks`
  (sigmoid, bilinear resize of the probabilities to the source image's rows and columns, threshold),
  so each mask lies on the source pixels.
* :class:`StudySEGWriterOperator`: the SDK's ``DICOMSegmentationWriterOperator`` writing one DICOM
  Segmentation per study (BINARY, one segment per finding, coded with SNOMED CT as the demo truth SEGs),
  referencing the one source image it was computed from and kept in the source study
  (``<output>/<StudyInstanceUID>/<SEG SOPInstanceUID>.dcm``), with a JSON summary next to it. The SDK
  operator writes the first study it gets, from the first series' every instance; this subclass gives
  it, per study, a series holding just the segmented instance.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from monai.deploy.core import Fragment, Operator, OperatorSpec
from monai.deploy.core.domain.dicom_series import DICOMSeries
from monai.deploy.operators.dicom_seg_writer_operator import DICOMSegmentationWriterOperator, SegmentDescription
from monai.deploy.operators.dicom_utils import ModelInfo
from pydicom.sr.coding import Code

from monai_medunic.errors import ConfigurationError, MedUniCError
from monai_medunic.pretrained import SegmentationModel, load_segmentation_bundle

from .results import PreparedImage

__all__ = [
    "SEG_JSON_NAME",
    "FINDING_CATEGORY",
    "SegmentationModel",
    "StudySegmentation",
    "load_segmentation_bundle",
    "segment_prepared",
    "segment_descriptions",
    "SegmentationOperator",
    "StudySEGWriterOperator",
]

logger = logging.getLogger(__name__)

SEG_JSON_NAME = "cxr_segmentation.json"
#: CID 7150 category of every segment (the demo truth SEGs use it too).
FINDING_CATEGORY = Code("49755003", "SCT", "Morphologically Abnormal Structure")


@dataclass
class StudySegmentation:
    """The finding masks of one study's image: ``masks`` ``(F, rows, columns)`` bool on the source pixels."""

    source: PreparedImage
    findings: list[str]
    masks: np.ndarray
    algorithm_name: str
    algorithm_version: str
    seg_file: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (UIDs only: no patient identifiers)."""
        spacing = self.source.dataset.get("PixelSpacing") or self.source.dataset.get("ImagerPixelSpacing")
        pixel_mm2 = float(spacing[0]) * float(spacing[1]) if spacing and float(spacing[0]) > 0 and float(spacing[1]) > 0 else None
        return {
            **self.source.identifiers(),
            "algorithm": {"name": self.algorithm_name, "version": self.algorithm_version},
            "seg_file": self.seg_file,
            "findings": [
                {"finding": f, "pixels": int(m.sum()), "area_mm2": None if pixel_mm2 is None else round(float(m.sum()) * pixel_mm2, 2)}
                for f, m in zip(self.findings, self.masks)
            ],
            "disclaimer": "Research use only; not a diagnosis.",
            **self.extra,
        }


def segment_prepared(model: SegmentationModel, images: Sequence[PreparedImage], batch_size: int = 4) -> list[StudySegmentation]:
    """Masks of prepared images on their source pixels (batched; each image resized back to its own size)."""
    from monai_medunic.networks.dense import predict_masks

    device = next(model.network.parameters()).device
    results: list[StudySegmentation] = []
    for start in range(0, len(images), batch_size):
        chunk = list(images[start : start + batch_size])
        batch = torch.stack([torch.as_tensor(p.image, dtype=torch.float32) for p in chunk]).to(device)
        with torch.inference_mode():
            for i, prepared in enumerate(chunk):
                size = (int(prepared.dataset.Rows), int(prepared.dataset.Columns))
                masks = predict_masks(model.network, batch[i : i + 1], model.threshold, size)[0].cpu().numpy()
                results.append(StudySegmentation(prepared, list(model.findings), masks, model.name, model.version))
    return results


def segment_descriptions(findings: Sequence[str], algorithm_name: str, algorithm_version: str) -> list[SegmentDescription]:
    """The SDK's segment descriptions of ``findings`` (SNOMED CT types of
    :data:`monai_medunic.data.demo.truth.SEG_PROPERTY_TYPES`, category :data:`FINDING_CATEGORY`).

    Raises:
        ConfigurationError: a finding without a SNOMED CT code (names it).
    """
    from monai_medunic.data.demo.truth import SEG_PROPERTY_TYPES

    unknown = [f for f in findings if f not in SEG_PROPERTY_TYPES]
    if unknown:
        raise ConfigurationError(f"no SNOMED CT code for the findings {unknown}; known: {sorted(SEG_PROPERTY_TYPES)}")
    return [SegmentDescription(segment_label=f, segmented_property_category=FINDING_CATEGORY,
                               segmented_property_type=SEG_PROPERTY_TYPES[f], algorithm_name=algorithm_name,
                               algorithm_version=algorithm_version) for f in findings]


class SegmentationOperator(Operator):
    """Finding masks of each prepared study.

    Named input:
        images: ``list[PreparedImage]`` from :class:`~monai_medunic.deploy.preprocessing.CXRPreprocessOperator`.

    Named output:
        segmentations: ``list[StudySegmentation]``.

    Args:
        fragment: the application.
        model: the loaded bundle (:func:`load_segmentation_bundle`).
        batch_size: studies per forward pass.
    """

    def __init__(self, fragment: Fragment, *args, model: SegmentationModel, batch_size: int = 4, **kwargs) -> None:
        self.model = model
        self.batch_size = int(batch_size)
        self.input_name, self.output_name = "images", "segmentations"
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.input_name)
        spec.output(self.output_name)

    def compute(self, op_input, op_output, context) -> None:
        images = op_input.receive(self.input_name)
        t0 = time.perf_counter()
        results = segment_prepared(self.model, images, self.batch_size)
        logger.info("segmented %d study(ies) in %.3f s", len(results), time.perf_counter() - t0)
        op_output.emit(results, self.output_name)


class StudySEGWriterOperator(DICOMSegmentationWriterOperator):
    """The SDK's ``DICOMSegmentationWriterOperator``, one DICOM SEG per study it receives.

    Each SEG is the SDK writer's (``create_dicom_seg``: highdicom, BINARY, the segment descriptions, the
    model's Contributing Equipment) for a series that holds only the segmented source instance, so it
    references that image and stays in its study. Empty segments are kept (``omit_empty_frames=False``):
    a SEG then states that the finding was looked for and not found.

    Named input:
        segmentations: ``list[StudySegmentation]``.

    Args:
        fragment: the application.
        output_folder: where ``<StudyInstanceUID>/`` folders are written.
        findings, algorithm_name, algorithm_version: the segments and the algorithm that made them.
    """

    def __init__(self, fragment: Fragment, *args, output_folder: str | os.PathLike, findings: Sequence[str],
                 algorithm_name: str, algorithm_version: str, **kwargs) -> None:
        self.written: list[Path] = []
        self.input_name_segmentations = "segmentations"
        info = ModelInfo(creator="monai-medunic", name=algorithm_name, version=algorithm_version)
        super().__init__(fragment, *args, segment_descriptions=segment_descriptions(findings, algorithm_name, algorithm_version),
                         output_folder=Path(output_folder), model_info=info, omit_empty_frames=False, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input(self.input_name_segmentations)

    def compute(self, op_input, op_output, context) -> None:
        for result in op_input.receive(self.input_name_segmentations):
            seg_path = self.write_study(result)
            positives = [f for f, m in zip(result.findings, result.masks) if m.any()]
            logger.info("study %s: wrote %s (%d segments; found: %s)", result.source.study_uid,
                        seg_path.relative_to(self.output_folder), len(result.findings), ", ".join(positives) or "none")

    @staticmethod
    def amend(seg_path: Path, source: Any) -> None:
        """Two fixes to the SDK writer's SEG of a projection radiograph, so that ``dciodvfy`` passes it and
        highdicom reads it back (the demo truth SEGs get the same, :func:`monai_medunic.data.demo.truth.radiograph_seg`):

        * General Image ``PatientOrientation`` (Type 2C: required without a plane orientation) from the source;
        * without a frame of reference the Pixel Measures functional group is optional; highdicom copies
          the source's ``PixelSpacing`` into it without ``SliceThickness`` (which its own reader refuses),
          and a real CR may state a spacing of 0 (pydicom's RG1), which the IOD forbids: the group is
          dropped; the spacing stays in the referenced image.
        """
        import pydicom

        seg = pydicom.dcmread(seg_path)
        seg.PatientOrientation = source.get("PatientOrientation", "") or ""
        shared = seg.SharedFunctionalGroupsSequence[0]
        if "FrameOfReferenceUID" not in source and "PixelMeasuresSequence" in shared:
            del shared.PixelMeasuresSequence
        tmp = seg_path.with_name(f".{seg_path.name}.tmp")
        seg.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, seg_path)

    def write_study(self, result: StudySegmentation) -> Path:
        """Write the SEG (and its JSON summary) of one study; returns the SEG's path."""
        study_dir = Path(self.output_folder) / result.source.study_uid
        before = set(study_dir.glob("*.dcm")) if study_dir.exists() else set()
        series = DICOMSeries(result.source.series_uid)
        series.add_sop_instance(result.source.dataset)  # the SDK wraps it in a DICOMSOPInstance
        pixels = np.moveaxis(np.asarray(result.masks, dtype=np.uint8), 0, -1)[np.newaxis]  # (1 frame, rows, columns, segments)
        self.create_dicom_seg(pixels, series, study_dir)
        written = sorted(set(study_dir.glob("*.dcm")) - before)
        if len(written) != 1:
            raise MedUniCError(f"{study_dir}: expected the SDK writer to add one SEG file, found {len(written)}")
        self.amend(written[0], result.source.dataset)
        result.seg_file = written[0].name
        summary = study_dir / SEG_JSON_NAME
        tmp = summary.with_name(f".{summary.name}.tmp")
        tmp.write_text(json.dumps(result.as_dict(), indent=2), encoding="utf-8")
        os.replace(tmp, summary)
        self.written.append(written[0])
        return written[0]
