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
      -> DICOMSeriesSelectorOperator (series_selection_rules.json: CR/DX, frontal, ORIGINAL/PRIMARY first)
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
RULES_FILE = APP_DIR / "series_selection_rules.json"
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


def _check_input_folder(path: Path) -> None:
    from monai_medunic.errors import DataError

    if not path.exists():
        raise DataError("input folder does not exist", path=path)
    if not path.is_dir():
        raise DataError("input must be a folder of DICOM files", path=path)
    if not any(p.is_file() for p in path.rglob("*")):
        raise DataError("input folder is empty: no DICOM files to read", path=path)


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


def precheck_paths(sdk_argv: Sequence[str]) -> None:
    """Fail in a second, before the SDK and MONAI are imported, on an empty input folder or a non-bundle model path.

    Paths resolve as in the SDK (``monai.deploy.core.AppContext``): ``-i`` / ``-m`` options, else the
    ``HOLOSCAN_INPUT_PATH`` / ``HOLOSCAN_MODEL_PATH`` variables, else ``input`` / ``models``. The
    application repeats these checks in ``compose`` (where the SDK has resolved the paths itself).
    """
    import argparse

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--input", "-i")
    parser.add_argument("--model", "-m")
    known, _ = parser.parse_known_args(list(sdk_argv))
    input_path = known.input or os.environ.get("HOLOSCAN_INPUT_PATH") or "input"
    model_path = known.model or os.environ.get("HOLOSCAN_MODEL_PATH") or "models"
    _check_input_folder(Path(input_path).absolute())
    _check_model_path(Path(model_path).absolute())


def _add_log_file(output: Path) -> None:
    output.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output / LOG_FILE_NAME, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] (%(name)s) - %(message)s"))
    logging.getLogger().addHandler(handler)


def build_app_class():
    """The Application class (imported lazily: importing the SDK takes seconds)."""
    from monai.deploy.conditions import CountCondition
    from monai.deploy.core import Application
    from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator

    from monai_medunic.deploy import (
        CXRPreprocessOperator,
        FindingsSRWriterOperator,
        ScreenedDICOMDataLoaderOperator,
        ZeroShotFindingsOperator,
    )
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

            app_context = Application.init_app_context(self.argv)
            input_path = Path(app_context.input_path).absolute()
            output_path = Path(app_context.output_path).absolute()
            model_path = Path(app_context.model_path).absolute()
            self.output_path = output_path
            _add_log_file(output_path)
            if self.language not in SR_LANGUAGES:
                raise ConfigurationError(
                    f"report language (--language / {LANGUAGE_ENV}) must be one of {sorted(SR_LANGUAGES)}, "
                    f"got '{self.language}'"
                )
            _check_input_folder(input_path)
            bundle = load_pretrained_bundle(model_path)
            logging.getLogger(APP_NAME).info(
                "model %s %s, %d findings, language %s",
                bundle.name,
                bundle.version,
                len(bundle.findings),
                self.language,
            )

            self.loader_op = ScreenedDICOMDataLoaderOperator(
                self, CountCondition(self, 1), input_folder=input_path, name="study_loader_op"
            )
            selector_op = DICOMSeriesSelectorOperator(
                self, rules=RULES_FILE.read_text(encoding="utf-8"), all_matched=True, name="series_selector_op"
            )
            self.preprocess_op = CXRPreprocessOperator(self, image_size=bundle.image_size, name="cxr_preprocess_op")
            findings_op = ZeroShotFindingsOperator(
                self, bundle=bundle, language=self.language, name="zero_shot_findings_op"
            )
            self.writer_op = FindingsSRWriterOperator(self, output_folder=output_path, name="findings_sr_writer_op")

            self.add_flow(self.loader_op, selector_op, {("dicom_study_list", "dicom_study_list")})
            self.add_flow(
                selector_op, self.preprocess_op, {("study_selected_series_list", "study_selected_series_list")}
            )
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the app; returns the process exit code (see the module docstring)."""
    argv = list(sys.argv if argv is None else argv)
    language, sdk_argv = split_language(argv[1:])
    if any(arg.split("=", 1)[0] in DICOMWEB_OPTIONS for arg in sdk_argv):
        return main_dicomweb(argv[0], language, sdk_argv)

    from monai_medunic.errors import DataError, MedUniCError

    if "-h" not in sdk_argv and "--help" not in sdk_argv:
        try:
            precheck_paths(sdk_argv)
        except MedUniCError as err:
            print(f"{APP_NAME}: error: {err}", file=sys.stderr)
            return 1

    from monai.deploy.exceptions import ItemNotExistsError

    app_class = build_app_class()
    app = app_class([sys.executable, argv[0], *sdk_argv], language=language)
    try:
        app.run()
    except MedUniCError as err:
        print(f"{APP_NAME}: error: {err}", file=sys.stderr)
        return 1
    except ItemNotExistsError:
        loader_input = getattr(app.loader_op, "input_path", "the input folder")
        err = DataError("no DICOM study could be read (no readable DICOM file)", path=loader_input)
        print(f"{APP_NAME}: error: {err}", file=sys.stderr)
        return 1
    written = list(app.writer_op.written) if app.writer_op is not None else []
    skipped = len(app.loader_op.skipped) if app.loader_op is not None else 0
    if not written:
        print(
            f"{APP_NAME}: no eligible series (frontal CR/DX chest radiograph) in the input; no SR written"
            + (f" ({skipped} unreadable file(s) skipped)" if skipped else "")
        )
        return 0
    print(
        f"{APP_NAME}: wrote {len(written)} SR(s) under {app.output_path}"
        + (f"; {skipped} unreadable file(s) skipped" if skipped else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
