"""The SDK's DICOM study loader, screening files first so one bad file cannot stop a study."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List

from monai.deploy.operators.dicom_data_loader_operator import DICOMDataLoaderOperator

from monai_medunic.errors import DicomReadError
from monai_medunic.transforms.dicom import read_dicom

__all__ = ["ScreenedDICOMDataLoaderOperator"]

logger = logging.getLogger(__name__)


class ScreenedDICOMDataLoaderOperator(DICOMDataLoaderOperator):
    """:class:`~monai.deploy.operators.DICOMDataLoaderOperator` that skips unreadable files with a warning.

    The SDK loader catches only ``InvalidDicomError``; a DICOM file whose header is truncated raises
    ``OSError`` / ``EOFError`` inside ``pydicom.dcmread`` and would end the whole run. Every file is
    therefore first read header-only with :func:`monai_medunic.transforms.dicom.read_dicom`; files
    that fail (not DICOM, empty, truncated header) or lack the UIDs the loader groups by are skipped,
    logged by file name and reason, and counted in :attr:`skipped`. The rest goes to the SDK loader
    unchanged (same inputs, outputs and study/series grouping).
    """

    REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")

    def __init__(self, *args, **kwargs) -> None:
        self.skipped: list[tuple[str, str]] = []
        super().__init__(*args, **kwargs)

    def _load_data(self, files: List[str]):
        logger.info("screening %d input file(s)", len(files))
        readable: List[str] = []
        for file in sorted(files):
            try:
                header = read_dicom(file, header_only=True)
            except DicomReadError as err:
                self._skip(file, err.reason)
                continue
            missing = [kw for kw in self.REQUIRED_UIDS if not header.get(kw)]
            if missing:
                self._skip(file, f"missing {', '.join(missing)}")
                continue
            readable.append(file)
        return super()._load_data(readable)

    def _skip(self, file: str, reason: str) -> None:
        self.skipped.append((file, reason))
        logger.warning("skipped input file %s: %s", Path(file).name, reason)
