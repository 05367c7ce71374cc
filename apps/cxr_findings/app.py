#!/usr/bin/env python
"""cxr_findings: a MONAI Deploy application that reads a chest X-ray DICOM study and writes zero-shot
finding scores (Med-UniC, English or Spanish prompts) as a DICOM Comprehensive 3D SR plus a JSON file.

Research use only: the output is not a diagnosis.

Run::

    python apps/cxr_findings/app.py -i INPUT_DIR -o OUTPUT_DIR -m MODEL_DIR [-L es]

or with the SDK's environment variables ``HOLOSCAN_INPUT_PATH``, ``HOLOSCAN_OUTPUT_PATH`` and
``HOLOSCAN_MODEL_PATH`` (command-line options win). ``MODEL_DIR`` is a trained
``cxr_medunic_pretrain`` bundle. The report language is ``--language`` / ``-L`` or the
``CXR_FINDINGS_LANGUAGE`` (or ``MEDUNIC_LANGUAGE``) environment variable (``en`` by default).

Pipeline (``compose``)::

    ScreenedDICOMDataLoaderOperator (the SDK's DICOMDataLoaderOperator, screening unreadable files)
      -> DICOMSeriesSelectorOperator (monai_medunic.deploy.app_support rules: CR/DX, frontal, ORIGINAL/PRIMARY first)
      -> CXRPreprocessOperator       (package DICOM transforms: modality/VOI LUT, MONOCHROME1; resize)
      -> ZeroShotFindingsOperator    (trained bundle, cached prompt embeddings of the language)
      -> FindingsSRWriterOperator    (<out>/<StudyInstanceUID>/cxr_findings_sr.dcm + cxr_findings.json)

Exit codes: 0 when SRs were written, and also (with a message, no SR) when no series is eligible;
1 with a one-line error for bad input (empty input folder, no DICOM study, model path that is not
a trained bundle, bad language).

DICOMweb (a PACS such as Orthanc): ``--dicomweb URL --study StudyInstanceUID`` (instead of ``-i``)
reads the study over WADO-RS into a temporary input folder and stores each SR written back to the
same DICOMweb root over STOW-RS (``monai_medunic.deploy.dicomweb``); the SR and JSON are still
written under the output folder. A PACS that fails, does not answer (``--dicomweb-timeout``, 60 s)
or does not hold the study is a one-line error with exit code 1.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Sequence

APP_NAME = "cxr_findings"
APP_DIR = Path(__file__).resolve().parent
LANGUAGE_ENV = "CXR_FINDINGS_LANGUAGE"
LANGUAGE_ENV_ALIAS = "MEDUNIC_LANGUAGE"  # the project-wide name, accepted too
LOG_FILE_NAME = "cxr_findings.log"


def split_language(argv: Sequence[str]) -> tuple[str, list[str]]:
    """Take ``--language X`` / ``-L X`` / ``--language=X`` out of ``argv`` (the SDK's parser rejects unknown options)."""
    language = os.environ.get(LANGUAGE_ENV) or os.environ.get(LANGUAGE_ENV_ALIAS) or "en"
    rest: list[str] = []
    it = iter(argv)
    for arg in it:
        if arg in ("--language", "-L"):
            language = next(it, "")
        elif arg.startswith("--language="):
            language = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return language.strip().lower(), rest


def _check_model_path(path: Path) -> None:
    """The bundle layout checks of :func:`monai_medunic.pretrained.load_pretrained_bundle`, without loading anything."""
    from monai_medunic.errors import ModelLoadError
    from monai_medunic.pretrained import MODEL_FILE, TEXT_DIR, read_inference_settings

    if not path.is_dir():
        raise ModelLoadError(f"{path}: model path is not a directory (expected a trained MONAI bundle)")
    for required in ("configs/metadata.json", MODEL_FILE, TEXT_DIR):
        if not (path / required).exists():
            raise ModelLoadError(f"{path}: not a trained bundle: '{required}' is missing")
    read_inference_settings(path)


def build_app_class():
    """The Application class (imported lazily: importing the SDK takes seconds)."""
    from monai.deploy.core import Application

    from monai_medunic.deploy import FindingsSRWriterOperator, ZeroShotFindingsOperator
    from monai_medunic.deploy.app_support import add_cxr_study_reader, app_paths, check_input_folder
    from monai_medunic.deploy.sr import SR_LANGUAGES
    from monai_medunic.pretrained import load_pretrained_bundle

    class CXRFindingsApp(Application):
        """DICOM chest X-ray study -> zero-shot findings as DICOM Comprehensive 3D SR (en/es) + JSON."""

        def __init__(self, *args, language: str = "en", **kwargs) -> None:
            self.language = language
            self.loader_op = None
            self.preprocess_op = None
            self.writer_op = None
            self.output_path: Path | None = None
            super().__init__(*args, **kwargs)

        def compose(self) -> None:
            from monai_medunic.errors import ConfigurationError

            input_path, output_path, model_path = app_paths(self, LOG_FILE_NAME)
            if self.language not in SR_LANGUAGES:
                raise ConfigurationError(
                    f"report language (--language / {LANGUAGE_ENV}) must be one of {sorted(SR_LANGUAGES)}, "
                    f"got '{self.language}'"
                )
            check_input_folder(input_path)
            bundle = load_pretrained_bundle(model_path)
            logging.getLogger(APP_NAME).info(
                "model %s %s, %d findings, language %s",
                bundle.name,
                bundle.version,
                len(bundle.findings),
                self.language,
            )

            self.loader_op, self.preprocess_op = add_cxr_study_reader(self, input_path, bundle.image_size)
            findings_op = ZeroShotFindingsOperator(
                self, bundle=bundle, language=self.language, name="zero_shot_findings_op"
            )
            self.writer_op = FindingsSRWriterOperator(self, output_folder=output_path, name="findings_sr_writer_op")

            self.add_flow(self.preprocess_op, findings_op, {("images", "images")})
            self.add_flow(findings_op, self.writer_op, {("findings", "findings")})

    return CXRFindingsApp


DICOMWEB_OPTIONS = ("--dicomweb", "--study", "--dicomweb-timeout")


def main_dicomweb(argv0: str, language: str, sdk_argv: list[str]) -> int:
    """``--dicomweb URL --study UID``: WADO-RS the study into a temporary input folder, run the app, STOW-RS the SRs."""
    import argparse
    import tempfile
    import time

    from monai_medunic.deploy.dicomweb import retrieve_study, split_dicomweb_args, store_instances
    from monai_medunic.deploy.results import SR_FILE_NAME
    from monai_medunic.errors import MedUniCError

    try:
        target, sdk_argv = split_dicomweb_args(sdk_argv)
        parser = argparse.ArgumentParser(add_help=False)
        parser.add_argument("--input", "-i")
        parser.add_argument("--output", "-o")
        known, _ = parser.parse_known_args(sdk_argv)
        if known.input:
            raise MedUniCError("--dicomweb reads the study from the PACS: give no input folder (-i)")
        output = Path(known.output or os.environ.get("HOLOSCAN_OUTPUT_PATH") or "output").absolute()
        with tempfile.TemporaryDirectory(prefix="cxr_findings_dicomweb_") as tmp:
            retrieve_study(target, tmp)
            started = time.time()
            code = main([argv0, "--language", language, *sdk_argv, "-i", tmp])
        sr = output / target.study_uid / SR_FILE_NAME
        if code != 0 or not sr.is_file() or sr.stat().st_mtime < started:  # no SR from this run
            return code
        store_instances(target.url, [sr], target.timeout)
    except MedUniCError as err:
        print(f"{APP_NAME}: error: {err}", file=sys.stderr)
        return 1
    print(f"{APP_NAME}: stored the SR of study {target.study_uid} to {target.url} (STOW-RS)")
    return 0


APP_USAGE = """usage: python apps/cxr_findings/app.py -i INPUT_DIR -o OUTPUT_DIR -m MODEL_DIR [--language {en,es}]
       python apps/cxr_findings/app.py --dicomweb URL --study STUDY_UID [--dicomweb-timeout S] -o OUTPUT_DIR -m MODEL_DIR [--language {en,es}]

Zero-shot chest X-ray findings (Med-UniC) of each DICOM study in INPUT_DIR, written as a DICOM SR (TID 1500)
and a JSON file under OUTPUT_DIR/<StudyInstanceUID>/. Research use only: not a diagnosis.

cxr_findings options:
  -i, --input INPUT_DIR       folder of DICOM files (or HOLOSCAN_INPUT_PATH)
  -o, --output OUTPUT_DIR     output folder (or HOLOSCAN_OUTPUT_PATH)
  -m, --model MODEL_DIR       a trained cxr_medunic_pretrain bundle (or HOLOSCAN_MODEL_PATH); its
                              models/calibration.json gives the decision thresholds and probabilities
  -L, --language {en,es}      prompt and report language (or CXR_FINDINGS_LANGUAGE / MEDUNIC_LANGUAGE; default en)
  --dicomweb URL              read the study from a DICOMweb PACS (WADO-RS) and store the SR back (STOW-RS)
  --study STUDY_UID           the study to read with --dicomweb
  --dicomweb-timeout S        seconds to wait for the PACS (default 60)
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app; returns the process exit code (see the module docstring)."""
    argv = list(sys.argv if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv[1:]):
        print(APP_USAGE)
        print("The MONAI Deploy SDK's own options follow.\n", flush=True)
    language, sdk_argv = split_language(argv[1:])
    if any(arg.split("=", 1)[0] in DICOMWEB_OPTIONS for arg in sdk_argv):
        return main_dicomweb(argv[0], language, sdk_argv)

    from monai_medunic.deploy.app_support import run_deploy_app

    return run_deploy_app(lambda: build_app_class()([sys.executable, argv[0], *sdk_argv], language=language), sdk_argv,
                          APP_NAME, _check_model_path, "SR")


if __name__ == "__main__":
    sys.exit(main())
