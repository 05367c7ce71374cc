"""The SDK's DICOM study loader, screening files first so one bad file cannot stop a study."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import List

from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from monai_medunic.errors import DicomReadError
from monai_medunic.transforms.dicom_io import read_dicom

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
    """:class:`~monai.deploy.operators.DICOMDataLoaderOperator` that skips unreadable files with a warning.

    The SDK loader catches only ``InvalidDicomError``; a DICOM file whose header is truncated raises
    ``OSError`` / ``EOFError`` inside ``pydicom.dcmread`` and would end the whole run. Every file is
    therefore first screened by :func:`screen_dicom_file` (header-only); files that fail (not DICOM,
    empty, truncated header, missing UIDs, an unparseable position) are skipped,
    logged by file name and reason, and counted in :attr:`skipped`. The rest goes to the SDK loader
    unchanged (same inputs, outputs and study/series grouping).
    """

    REQUIRED_UIDS = REQUIRED_UIDS

    def __init__(self, *args, **kwargs) -> None:
        self.skipped: list[tuple[str, str]] = []
        super().__init__(*args, **kwargs)

    def _load_data(self, files: List[str]):
        logger.info("screening %d input file(s)", len(files))
        readable: List[str] = []
        for file in sorted(files):
            try:
                screen_dicom_file(file)
            except DicomReadError as err:
                self._skip(file, err.reason)
                continue
            readable.append(file)
        return super()._load_data(readable)

    def _skip(self, file: str, reason: str) -> None:
        self.skipped.append((file, reason))
        logger.warning("skipped input file %s: %s", Path(file).name, reason)
