"""From a MONAI Label image (a DICOM series folder fetched from the PACS, or one uploaded file) to the
original DICOM instance the network reads.

MONAI Label's DICOMweb datastore hands an infer task the folder of the series it downloaded (with
the NIfTI conversion off, see :mod:`monai_medunic.label.datastore`). :class:`SelectRadiographd`
picks the instance to score from it, with the rules of the Deploy app ``cxr_findings`` and of
training: CR/DX only; lateral views never (Med-UniC pre-trains on frontal views, Sec. 4); a frontal
view first; an instance whose view is unknown only when the series has no frontal one; among equals,
the lowest Instance Number. The chosen file then goes through ``LoadDicomImage`` untouched, so the
Modality LUT, the VOI LUT and MONOCHROME1 are applied as in training.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_medunic.errors import DataError, DicomReadError
from monai_medunic.transforms.dicom import read_dicom
from monai_medunic.transforms.views import FRONTAL, LATERAL, UNKNOWN, classify_view

__all__ = ["CXR_MODALITIES", "SOURCE_KEY", "is_dicom_uid", "select_radiograph", "SelectRadiographd"]

logger = logging.getLogger(__name__)

CXR_MODALITIES = ("CR", "DX")
SOURCE_KEY = "source_instance"
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def is_dicom_uid(value: Any) -> bool:
    """A syntactically valid DICOM UID (PS3.5 9.1: dot-separated numbers without leading zeros, <= 64 chars)."""
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(_UID.match(value))


def _instance_number(ds) -> int:
    try:
        return int(ds.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        return 0


def select_radiograph(path: str | os.PathLike) -> tuple[Path, dict[str, str], list[tuple[str, str]]]:
    """The instance to score in a DICOM series folder (or the file itself), by the rules of the module docstring.

    Returns:
        ``(file, source, skipped)``: the chosen file; its Study / Series / SOP Instance UIDs, modality
        and view (no patient identifiers); and ``(file name, reason)`` of every instance not used.

    Raises:
        DataError: no file, or no frontal (or unknown-view) CR/DX instance that reads; the message
            names the folder and why each instance was left out.
    """
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    if not files:
        raise DataError("the series holds no DICOM instance", path=root)
    frontal: list[tuple[int, str, Path, Any]] = []
    unknown: list[tuple[int, str, Path, Any]] = []
    skipped: list[tuple[str, str]] = []
    for file in files:
        try:
            header = read_dicom(file, header_only=True)
        except DicomReadError as err:
            skipped.append((file.name, err.reason))
            continue
        modality = str(header.get("Modality", "")).upper()
        if modality not in CXR_MODALITIES:
            skipped.append((file.name, f"modality {modality or 'missing'} is not CR/DX"))
            continue
        view = classify_view(header)
        if view == LATERAL:
            skipped.append((file.name, "lateral view"))
            continue
        entry = (_instance_number(header), str(header.get("SOPInstanceUID", "")), file, header)
        (frontal if view == FRONTAL else unknown).append(entry)
    candidates = sorted(frontal) or sorted(unknown)
    if not candidates:
        reasons = "; ".join(sorted({reason for _, reason in skipped}))
        raise DataError(f"no frontal CR/DX chest radiograph in the series ({reasons})", path=root)
    _, _, chosen, header = candidates[0]
    view = FRONTAL if frontal else UNKNOWN
    if view == UNKNOWN:
        logger.warning("instance %s: view unknown (no view attribute decides); used as frontal", header.get("SOPInstanceUID"))
    source = {
        "study_instance_uid": str(header.get("StudyInstanceUID", "")),
        "series_instance_uid": str(header.get("SeriesInstanceUID", "")),
        "sop_instance_uid": str(header.get("SOPInstanceUID", "")),
        "modality": str(header.get("Modality", "")),
        "view": view,
    }
    for name, reason in skipped:
        logger.info("instance file %s not used: %s", name, reason)
    return chosen, source, skipped


class SelectRadiographd(MapTransform):
    """Replace ``data[key]`` (a series folder or a DICOM file) by the file :func:`select_radiograph` picks.

    The chosen instance's UIDs, modality and view are stored under ``data[source_key]``.
    """

    def __init__(self, keys: KeysCollection, source_key: str = SOURCE_KEY, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.source_key = source_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            chosen, source, skipped = select_radiograph(d[key])
            d[key] = str(chosen)
            d[self.source_key] = dict(source, skipped_instances=len(skipped))
        return d
