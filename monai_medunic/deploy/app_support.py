"""What every chest X-ray Deploy app of this package shares around its operators.

``cxr_findings`` (zero-shot findings as DICOM SR) and ``cxr_segmentation`` (finding masks as DICOM SEG)
read a DICOM study the same way: :class:`~monai_medunic.deploy.loader.ScreenedDICOMDataLoaderOperator`,
the SDK's ``DICOMSeriesSelectorOperator`` with :data:`CXR_SERIES_SELECTION_RULES`, and
:class:`~monai_medunic.deploy.preprocessing.CXRPreprocessOperator`. This module holds the rest of what
they share: the selection rules and the reading operators' wiring, the input-folder check, the paths the
SDK resolves, the log file, and how a run's errors and outputs become one line and an exit code.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from monai_medunic.errors import DataError, MedUniCError

__all__ = [
    "CXR_SERIES_SELECTION_RULES",
    "cxr_series_selection_rules",
    "check_input_folder",
    "sdk_paths",
    "precheck_paths",
    "add_log_file",
    "app_paths",
    "add_cxr_study_reader",
    "run_deploy_app",
]

#: Series selection of the chest X-ray apps (``DICOMSeriesSelectorOperator`` rules, in order of
#: preference): frontal CR/DX ORIGINAL/PRIMARY images first, then any frontal CR/DX, then any CR/DX
#: (whose view the preprocessing decides from other attributes; laterals are never used).
CXR_SERIES_SELECTION_RULES: dict[str, Any] = {
    "selections": [
        {
            "name": "CXR frontal ORIGINAL/PRIMARY",
            "conditions": {
                "Modality": "(?i)^(CR|DX)$",
                "ViewPosition": "(?i)^(PA|AP|AP/PA|PA/AP|RLD|LLD)$",
                "ImageType": ["ORIGINAL", "PRIMARY"],
            },
        },
        {
            "name": "CXR frontal",
            "conditions": {"Modality": "(?i)^(CR|DX)$", "ViewPosition": "(?i)^(PA|AP|AP/PA|PA/AP|RLD|LLD)$"},
        },
        {"name": "CXR view from other attributes", "conditions": {"Modality": "(?i)^(CR|DX)$"}},
    ]
}


def cxr_series_selection_rules() -> str:
    """:data:`CXR_SERIES_SELECTION_RULES` as the JSON text ``DICOMSeriesSelectorOperator(rules=...)`` takes."""
    return json.dumps(CXR_SERIES_SELECTION_RULES)


def check_input_folder(path: Path) -> None:
    """Raise :class:`~monai_medunic.errors.DataError` (naming the path) unless ``path`` is a folder holding at
    least one DICOM file (otherwise the SDK's loader ends in a GXF failure block before any error of ours)."""
    if not path.exists():
        raise DataError("input folder does not exist", path=path)
    if not path.is_dir():
        raise DataError("input must be a folder of DICOM files", path=path)
    from monai_medunic.transforms.dicom_io import list_input_files

    files = list_input_files(path)
    if not files:
        raise DataError("input folder is empty: no DICOM files to read", path=path)
    if not any(_looks_like_dicom(p) for p in files):
        raise DataError(f"no DICOM file in the input folder ({len(files)} file(s), none of them DICOM)", path=path)


def _looks_like_dicom(path: Path) -> bool:
    """A Part 10 preamble, or (PACS exports without one) a header pydicom can read with a SOP Class UID."""
    from monai_medunic.transforms.dicom_io import has_dicom_preamble

    if has_dicom_preamble(path):
        return True
    try:
        import pydicom

        return "SOPClassUID" in pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - anything unreadable is simply not DICOM here
        return False


def sdk_paths(sdk_argv: Sequence[str]) -> tuple[Path, Path, Path]:
    """``(input, output, model)`` as the SDK resolves them (``monai.deploy.core.AppContext``): the ``-i``,
    ``-o``, ``-m`` options, else ``HOLOSCAN_INPUT_PATH`` / ``HOLOSCAN_OUTPUT_PATH`` / ``HOLOSCAN_MODEL_PATH``,
    else ``input`` / ``output`` / ``models``; absolute."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--input", "-i")
    parser.add_argument("--output", "-o")
    parser.add_argument("--model", "-m")
    known, _ = parser.parse_known_args(list(sdk_argv))
    return (
        Path(known.input or os.environ.get("HOLOSCAN_INPUT_PATH") or "input").absolute(),
        Path(known.output or os.environ.get("HOLOSCAN_OUTPUT_PATH") or "output").absolute(),
        Path(known.model or os.environ.get("HOLOSCAN_MODEL_PATH") or "models").absolute(),
    )


def precheck_paths(sdk_argv: Sequence[str], check_model: Callable[[Path], None]) -> None:
    """Fail in a second, before the SDK and MONAI are imported, on an empty input folder or a model path
    that ``check_model`` refuses (it raises a :class:`~monai_medunic.errors.MedUniCError`). The apps repeat
    these checks in ``compose``, where the SDK has resolved the paths itself."""
    input_path, _, model_path = sdk_paths(sdk_argv)
    check_input_folder(input_path)
    check_model(model_path)


def add_log_file(output: Path, file_name: str) -> None:
    """Log every record of the run to ``<output>/<file_name>`` too (UTF-8; the apps log no patient data)."""
    output.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(output / file_name, mode="w", encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] (%(name)s) - %(message)s"))
    logging.getLogger().addHandler(handler)


def app_paths(app: Any, log_file_name: str) -> tuple[Path, Path, Path]:
    """In an app's ``compose``: the ``(input, output, model)`` folders the SDK resolved for ``app`` (absolute),
    ``app.output_path`` set, and the run logged to ``<output>/<log_file_name>`` (:func:`add_log_file`)."""
    from monai.deploy.core import Application

    context = Application.init_app_context(app.argv)
    paths = tuple(Path(p).absolute() for p in (context.input_path, context.output_path, context.model_path))
    app.output_path = paths[1]
    add_log_file(paths[1], log_file_name)
    return paths  # type: ignore[return-value]


def add_cxr_study_reader(app: Any, input_path: Path, image_size: int, studies_per_batch: int = 8) -> tuple[Any, Any]:
    """Add the chest X-ray apps' study reading to ``app`` (in its ``compose``): the screened study loader
    (emitting ``studies_per_batch`` studies at a time, so memory does not grow with the input), the SDK's series selector with :data:`CXR_SERIES_SELECTION_RULES`, and the preprocessing to
    ``image_size``, with their flows. Returns ``(loader_op, preprocess_op)``; the preprocessing emits
    ``images`` (one :class:`~monai_medunic.deploy.results.PreparedImage` per study with an eligible image)."""
    from monai.deploy.operators.dicom_series_selector_operator import DICOMSeriesSelectorOperator

    from .loader import ScreenedDICOMDataLoaderOperator
    from .preprocessing import CXRPreprocessOperator

    loader_op = ScreenedDICOMDataLoaderOperator(app, input_folder=input_path, studies_per_batch=studies_per_batch,
                                                name="study_loader_op")
    selector_op = DICOMSeriesSelectorOperator(app, rules=cxr_series_selection_rules(), all_matched=True, name="series_selector_op")
    preprocess_op = CXRPreprocessOperator(app, image_size=int(image_size), name="cxr_preprocess_op")
    app.add_flow(loader_op, selector_op, {("dicom_study_list", "dicom_study_list")})
    app.add_flow(selector_op, preprocess_op, {("study_selected_series_list", "study_selected_series_list")})
    return loader_op, preprocess_op


def run_deploy_app(make_app: Callable[[], Any], sdk_argv: Sequence[str], app_name: str, check_model: Callable[[Path], None],
                   output_kind: str) -> int:
    """Run a chest X-ray app from its ``main`` and return the process exit code.

    Before the SDK is imported, :func:`precheck_paths` (unless ``-h`` / ``--help``); then ``make_app()`` and
    its run. The package's typed errors, and an input without any readable DICOM study, become one line
    ``<app_name>: error: ...`` on stderr and exit code 1. Otherwise exit code 0 with a line saying how many
    ``output_kind`` files (``app.writer_op.written``) were written, or that no series was eligible, and how
    many unreadable files the loader (``app.loader_op.skipped``) skipped.
    """
    import sys

    def fail(err: Exception) -> int:
        print(f"{app_name}: error: {err}", file=sys.stderr)
        return 1

    if "-h" not in sdk_argv and "--help" not in sdk_argv:
        try:
            precheck_paths(sdk_argv, check_model)
        except MedUniCError as err:
            return fail(err)
    from monai.deploy.exceptions import ItemNotExistsError

    app = make_app()
    try:
        app.run()
    except MedUniCError as err:
        return fail(err)
    except ItemNotExistsError:
        loader_input = getattr(getattr(app, "loader_op", None), "input_path", "the input folder")
        return fail(DataError("no DICOM study could be read (no readable DICOM file)", path=loader_input))
    written = list(getattr(app.writer_op, "written", [])) if getattr(app, "writer_op", None) is not None else []
    skipped = len(app.loader_op.skipped) if getattr(app, "loader_op", None) is not None else 0
    if not written:
        print(f"{app_name}: no eligible series (frontal CR/DX chest radiograph) in the input; no {output_kind} written"
              + (f" ({skipped} unreadable file(s) skipped)" if skipped else ""))
        return 0
    print(f"{app_name}: wrote {len(written)} {output_kind}(s) under {app.output_path}"
          + (f"; {skipped} unreadable file(s) skipped" if skipped else ""))
    return 0
