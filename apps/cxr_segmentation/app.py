#!/usr/bin/env python
"""cxr_segmentation: a MONAI Deploy application that reads a chest X-ray DICOM study and writes the masks of
chest findings (nodule, pneumothorax, pleural effusion, consolidation) as a DICOM Segmentation in the same
study, plus a JSON summary.

Research use only: the output is not a diagnosis.

Run::

    python apps/cxr_segmentation/app.py -i INPUT_DIR -o OUTPUT_DIR -m MODEL_DIR

or with the SDK's environment variables ``HOLOSCAN_INPUT_PATH``, ``HOLOSCAN_OUTPUT_PATH`` and
``HOLOSCAN_MODEL_PATH`` (command-line options win). ``MODEL_DIR`` is a trained ``cxr_segmentation``
bundle (``configs/inference.json`` and ``models/model.pt``). Holoscan wants ``ulimit -s 32768``.

Pipeline (``compose``), sharing the study reading of ``apps/cxr_findings``::

    ScreenedDICOMDataLoaderOperator (the SDK's DICOMDataLoaderOperator, screening unreadable files)
      -> DICOMSeriesSelectorOperator (monai_medunic.deploy.app_support rules: CR/DX, frontal, ORIGINAL/PRIMARY first)
      -> CXRPreprocessOperator       (package DICOM transforms: modality/VOI LUT, MONOCHROME1; resize)
      -> SegmentationOperator        (trained bundle; masks resized back to the source pixels)
      -> StudySEGWriterOperator      (the SDK's DICOMSegmentationWriterOperator:
                                      <out>/<StudyInstanceUID>/<SEG SOPInstanceUID>.dcm + cxr_segmentation.json)

Exit codes: 0 when SEGs were written, and also (with a message, no SEG) when no series is eligible;
1 with a one-line error for bad input (empty input folder, no DICOM study, a model path that is not a
trained cxr_segmentation bundle).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Sequence

APP_NAME = "cxr_segmentation"
LOG_FILE_NAME = "cxr_segmentation.log"


def check_model_path(path: Path) -> None:
    """The layout of a trained cxr_segmentation bundle, without loading anything."""
    from monai_medunic.errors import ModelLoadError

    if not path.is_dir():
        raise ModelLoadError(f"{path}: model path is not a directory (expected a trained cxr_segmentation bundle)")
    for required in ("configs/inference.json", "models/model.pt"):
        if not (path / required).is_file():
            raise ModelLoadError(f"{path}: not a trained cxr_segmentation bundle: '{required}' is missing")


def build_app_class():
    """The Application class (imported lazily: importing the SDK takes seconds)."""
    from monai.deploy.core import Application

    from monai_medunic.deploy.app_support import add_cxr_study_reader, app_paths, check_input_folder
    from monai_medunic.deploy.segmentation import SegmentationOperator, StudySEGWriterOperator, load_segmentation_bundle

    class CXRSegmentationApp(Application):
        """DICOM chest X-ray study -> finding masks as a DICOM SEG in the same study + JSON."""

        def __init__(self, *args, **kwargs) -> None:
            self.loader_op = None
            self.writer_op = None
            self.output_path: Path | None = None
            super().__init__(*args, **kwargs)

        def compose(self) -> None:
            input_path, output_path, model_path = app_paths(self, LOG_FILE_NAME)
            check_input_folder(input_path)
            check_model_path(model_path)
            model = load_segmentation_bundle(model_path)
            logging.getLogger(APP_NAME).info("model %s %s: %d findings %s, input %d px", model.name, model.version,
                                             len(model.findings), model.findings, model.image_size)

            self.loader_op, preprocess_op = add_cxr_study_reader(self, input_path, model.image_size)
            segmentation_op = SegmentationOperator(self, model=model, name="segmentation_op")
            self.writer_op = StudySEGWriterOperator(self, output_folder=output_path, findings=model.findings,
                                                    algorithm_name=model.name, algorithm_version=model.version, name="seg_writer_op")

            self.add_flow(preprocess_op, segmentation_op, {("images", "images")})
            self.add_flow(segmentation_op, self.writer_op, {("segmentations", "segmentations")})

    return CXRSegmentationApp


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app; returns the process exit code (see the module docstring)."""
    argv = list(sys.argv if argv is None else argv)
    from monai_medunic.deploy.app_support import run_deploy_app

    sdk_argv = argv[1:]
    return run_deploy_app(lambda: build_app_class()([sys.executable, argv[0], *sdk_argv]), sdk_argv, APP_NAME, check_model_path, "SEG")


if __name__ == "__main__":
    sys.exit(main())
