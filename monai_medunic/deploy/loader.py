"""The SDK's DICOM study loader, screening files first so one bad file cannot stop a study."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, List

from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from monai_medunic.errors import ConfigurationError, DicomReadError
from monai_medunic.transforms.dicom_io import list_input_files, read_dicom

__all__ = ["ScreenedDICOMDataLoaderOperator", "screen_dicom_file", "REQUIRED_UIDS"]

logger = logging.getLogger(__name__)

#: The UIDs the SDK loader groups instances by: a file without one of them cannot join a study.
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def screen_dicom_file(file: str | os.PathLike) -> Dataset:
    """The header screen of the Deploy app: read ``file`` header-only and check what the SDK loader needs.

    The SDK's ``DICOMDataLoaderOperator`` reads every file in full and groups the instances by study,
    series and position; it stops on a file that ``pydicom.dcmread`` cannot parse, and it reads the
    UIDs (``.name``), ``ImagePositionPatient`` (as floats) and ``AcquisitionNumber`` (as an int) of
    every instance. A file passes the screen when its header reads (:func:`read_dicom`), the
    :data:`REQUIRED_UIDS` are present and are UIDs, and those two attributes (when present) convert.

    Returns:
        the header (no pixel data).

    Raises:
        DicomReadError: naming the file and the field; the loader logs it and skips the file.
    """
    header = read_dicom(file, header_only=True)
    path = os.fspath(file)
    for keyword in REQUIRED_UIDS:
        try:
            value = header.get(keyword)
        except Exception:  # a value pydicom cannot decode
            value = None
        if not value or not isinstance(value, str) or not str(value).strip():
            raise DicomReadError(f"missing or unreadable {keyword}", path=path, field=keyword)
    try:
        ipp = header.get("ImagePositionPatient")
        if ipp is not None:
            position = [float(v) for v in (ipp if isinstance(ipp, (list, tuple, MultiValue)) else [ipp])]
            if len(position) != 3 or not all(math.isfinite(v) for v in position):
                raise ValueError
    except Exception:
        raise DicomReadError("ImagePositionPatient is not three finite numbers", path=path,
                             field="ImagePositionPatient") from None
    try:
        int(header.get("AcquisitionNumber", -1))
    except Exception:
        raise DicomReadError("AcquisitionNumber is not an integer", path=path, field="AcquisitionNumber") from None
    return header


class ScreenedDICOMDataLoaderOperator(DICOMDataLoaderOperator):
    """:class:`~monai.deploy.operators.DICOMDataLoaderOperator` that skips unreadable files with a warning
    and emits the studies a few at a time.

    The SDK loader catches only ``InvalidDicomError``; a DICOM file whose header is truncated raises
    ``OSError`` / ``EOFError`` inside ``pydicom.dcmread`` and would end the whole run. Every file is
    therefore first screened by :func:`screen_dicom_file` (header-only); files that fail (not DICOM,
    empty, truncated header, missing UIDs, an unparseable position) are skipped,
    logged by file name and reason, and counted in :attr:`skipped`. The rest goes to the SDK loader
    unchanged (same inputs, outputs and study/series grouping).

    The SDK loader reads every file of the input (pixel data included) and emits all studies in one
    message, so the app's peak memory grows with the size of the input folder. This operator groups the
    screened files by ``StudyInstanceUID`` (from the header screen) and emits them in batches of at most
    ``studies_per_batch`` studies, one batch per ``compute``: a study is never split across batches, the
    downstream operators run once per batch, and a batch is released before the next one is read. It
    stops itself (a ``BooleanCondition``) after the last batch; an input without any study raises the
    SDK's ``ItemNotExistsError`` as before (``must_load``).

    Args:
        studies_per_batch: the most studies emitted in one message (default 8).
        args, kwargs: as for the SDK loader (``fragment``, conditions, ``input_folder``, ``name``, ...).
    """

    REQUIRED_UIDS = REQUIRED_UIDS

    def __init__(self, fragment: Any, *args, studies_per_batch: int = 8, **kwargs) -> None:
        if int(studies_per_batch) < 1:
            raise ConfigurationError(f"studies_per_batch must be at least 1, got {studies_per_batch}")
        from holoscan.conditions import BooleanCondition

        self.skipped: list[tuple[str, str]] = []
        self.studies_per_batch = int(studies_per_batch)
        self.batches_emitted = 0
        self.studies_emitted = 0
        self._pending: list[list[str]] | None = None
        name = kwargs.get("name", "study_loader")
        self._more = BooleanCondition(fragment, enable_tick=True, name=f"{name}_has_more_studies")
        super().__init__(fragment, self._more, *args, **kwargs)

    def compute(self, op_input, op_output, context) -> None:
        """Emit the next batch of studies (the first call lists and screens the input folder)."""
        from monai.deploy.exceptions import ItemNotExistsError

        if self._pending is None:
            self._pending = self._study_batches(self._input_folder(op_input))
        while self._pending:
            files = self._pending.pop(0)
            studies = super()._load_data(files)
            if studies:
                self.batches_emitted += 1
                self.studies_emitted += len(studies)
                logger.info("emitting %d stud%s (batch %d, %d batch(es) to go)", len(studies),
                            "y" if len(studies) == 1 else "ies", self.batches_emitted, len(self._pending))
                op_output.emit(studies, self.output_name)
                break
        if not self._pending:
            self._more.disable_tick()
            if self.studies_emitted == 0 and self._must_load:
                raise ItemNotExistsError(f"No study loaded from path {self.input_path}.")

    def _input_folder(self, op_input) -> Path:
        """The folder from the optional input port, else ``input_folder`` (as the SDK loader)."""
        received = None
        try:
            received = op_input.receive(self.input_name)
        except Exception:  # the port is optional and usually unconnected
            pass
        if received and Path(received).is_dir():
            return Path(received)
        if self.input_path and Path(self.input_path).is_dir():
            return Path(self.input_path)
        raise ConfigurationError(f"the input folder {self.input_path} is not a folder")

    def _study_batches(self, folder: Path) -> list[list[str]]:
        """The screened files of ``folder``, grouped by study, in batches of :attr:`studies_per_batch` studies."""
        by_study: dict[str, list[str]] = {}
        for file, header in self._screened([str(f) for f in list_input_files(folder)]):
            by_study.setdefault(str(header.StudyInstanceUID), []).append(file)
        studies = list(by_study.values())
        step = self.studies_per_batch
        return [[f for study in studies[i:i + step] for f in study] for i in range(0, len(studies), step)]

    def _load_data(self, files: List[str]):
        """Screen ``files`` and load the readable ones into studies (all at once, as the SDK loader)."""
        return super()._load_data([file for file, _ in self._screened(files)])

    def _screened(self, files: List[str]) -> Iterator[tuple[str, Dataset]]:
        """``(file, header)`` of each of ``files`` (sorted) that passes :func:`screen_dicom_file`; the others are skipped."""
        logger.info("screening %d input file(s)", len(files))
        for file in sorted(files):
            try:
                header = screen_dicom_file(file)
            except DicomReadError as err:
                self._skip(file, err.reason)
                continue
            yield file, header

    def _skip(self, file: str, reason: str) -> None:
        self.skipped.append((file, reason))
        logger.warning("skipped input file %s: %s", Path(file).name, reason)
