"""Chest radiograph view classification (frontal vs lateral) and a frontal-view filter.

Med-UniC pre-trains on frontal chest radiographs only: lateral views are excluded from MIMIC-CXR
(Sec. 4, "Dataset", following the ConVIRT / GLoRIA / MGCA preprocessing). DICOM says which view an
image is in several places, of unequal reliability. :func:`classify_view` consults them in this
**order of trust** and the first that decides wins:

1. ``ViewPosition`` (0018,5101): a coded value written by the modality (``PA``, ``AP`` -> frontal;
   ``LL``, ``RL``, ``LATERAL`` -> lateral). Decubitus (``RLD``, ``LLD``) are frontal projections;
   obliques (``RLO``, ``LLO``) and anything else abstain.
2. ``ViewCodeSequence`` (0054,0220): the coded view (SNOMED CT meanings such as
   ``postero-anterior``, ``antero-posterior``, ``lateral``, ``left lateral``).
3. ``PatientOrientation`` (0020,0020): the patient direction of the rows and columns. A row direction
   of ``L``/``R`` with a column direction of ``F``/``H`` is a frontal projection; ``A``/``P`` with
   ``F``/``H`` is lateral.
4. ``SeriesDescription`` then ``ProtocolName``: free text written by sites (English or Spanish), so
   last: words such as ``PA``, ``AP``, ``frontal`` versus ``LAT``, ``lateral``. Text naming both
   abstains.

Nothing decides -> ``"unknown"``. :class:`FrontalViewFilter` keeps frontal images (and, if asked,
unknown ones) and counts what it dropped by reason.
"""

from __future__ import annotations

import logging
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from monai.transforms import Transform
from pydicom.dataset import Dataset

from monai_medunic.errors import ConfigurationError

__all__ = ["FRONTAL", "LATERAL", "UNKNOWN", "VIEW_SOURCES", "classify_view", "view_evidence", "FrontalViewFilter"]

logger = logging.getLogger(__name__)

FRONTAL, LATERAL, UNKNOWN = "frontal", "lateral", "unknown"
VIEW_SOURCES: tuple[str, ...] = (
    "ViewPosition",
    "ViewCodeSequence",
    "PatientOrientation",
    "SeriesDescription",
    "ProtocolName",
)

_VIEW_POSITION = {
    "PA": FRONTAL,
    "AP": FRONTAL,
    "AP/PA": FRONTAL,
    "PA/AP": FRONTAL,
    "RLD": FRONTAL,
    "LLD": FRONTAL,
    "LL": LATERAL,
    "RL": LATERAL,
    "LAT": LATERAL,
    "LATERAL": LATERAL,
    "LATERAL-LEFT": LATERAL,
    "LATERAL-RIGHT": LATERAL,
}
_TEXT_LATERAL = re.compile(r"\b(lat|lateral|ll|rl|lateral izquierda|lateral derecha)\b", re.IGNORECASE)
_TEXT_FRONTAL = re.compile(
    r"\b(pa|ap|p-a|a-p|frontal|posteroanterior|postero-anterior|anteroposterior|antero-posterior)\b", re.IGNORECASE
)


def _from_text(text: str) -> str:
    lat = bool(_TEXT_LATERAL.search(text))
    front = bool(_TEXT_FRONTAL.search(text))
    if lat and not front:
        return LATERAL
    if front and not lat:
        return FRONTAL
    return UNKNOWN


def _from_view_position(value: Any) -> str:
    key = str(value or "").strip().upper()
    return _VIEW_POSITION.get(key, UNKNOWN)


def _from_view_code(seq: Any) -> str:
    if not seq:
        return UNKNOWN
    meaning = str(seq[0].get("CodeMeaning", "")).strip().lower()
    if "lateral" in meaning and "medial" not in meaning:
        return LATERAL
    if any(w in meaning for w in ("postero-anterior", "antero-posterior", "posteroanterior", "anteroposterior")):
        return FRONTAL
    return UNKNOWN


def _from_patient_orientation(value: Any) -> str:
    if not value:
        return UNKNOWN
    parts = [str(v).strip().upper() for v in (value if isinstance(value, (list, tuple)) else list(value))]
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return UNKNOWN
    row, col = parts[0][0], parts[1][0]
    if col not in "FH":
        return UNKNOWN
    if row in "LR":
        return FRONTAL
    if row in "AP":
        return LATERAL
    return UNKNOWN


def view_evidence(ds: Dataset | Mapping[str, Any]) -> tuple[str, str | None]:
    """``(view, source)``: the view and the attribute that decided it (``None`` when unknown).

    ``ds`` may be a pydicom dataset (header only is enough) or a mapping of attribute keywords.
    """
    get = ds.get
    for source in VIEW_SOURCES:
        value = get(source)
        if value is None or value == "":
            continue
        if source == "ViewPosition":
            view = _from_view_position(value)
        elif source == "ViewCodeSequence":
            view = _from_view_code(value)
        elif source == "PatientOrientation":
            view = _from_patient_orientation(value)
        else:
            view = _from_text(str(value))
        if view != UNKNOWN:
            return view, source
    return UNKNOWN, None


def classify_view(ds: Dataset | Mapping[str, Any] | str | os.PathLike) -> str:
    """``"frontal"``, ``"lateral"`` or ``"unknown"`` by the order of trust of the module docstring.

    Args:
        ds: a dataset, a mapping of attribute keywords, or a DICOM file path (its header is read).
    """
    if isinstance(ds, (str, os.PathLike)):
        from monai_medunic.transforms.dicom_io import read_dicom

        ds = read_dicom(ds, header_only=True)
    return view_evidence(ds)[0]


class FrontalViewFilter(Transform):
    """Keep the frontal images of a list (Med-UniC Sec. 4: lateral views are excluded from pre-training).

    Items may be DICOM paths, pydicom datasets, or dicts whose ``key`` holds one of those (or whose
    ``"view"`` entry is already set). Dropped items are counted by reason (``"lateral"``,
    ``"unknown"``) in :attr:`counts` and logged; nothing is dropped silently.

    Args:
        keep_unknown: keep images whose view cannot be determined (default ``True``: many sites leave
            all view attributes empty, and dropping them would drop whole datasets).
        key: for dict items, the key holding the image (default ``"image"``).
    """

    def __init__(self, keep_unknown: bool = True, key: str = "image") -> None:
        self.keep_unknown = keep_unknown
        self.key = key
        self.counts: Counter[str] = Counter()

    def view_of(self, item: Any) -> str:
        if isinstance(item, Mapping):
            if item.get("view"):
                view = str(item["view"]).lower()
                if view not in (FRONTAL, LATERAL, UNKNOWN):
                    raise ConfigurationError(f"'view' must be frontal, lateral or unknown, got {item['view']!r}")
                return view
            image = item.get(self.key)
            if isinstance(image, (list, tuple)):
                image = image[0] if image else None
            if image is None:
                raise ConfigurationError(f"FrontalViewFilter: item has neither 'view' nor '{self.key}'")
            return classify_view(image)
        return classify_view(item)

    def __call__(self, data: Sequence[Any]) -> list[Any]:  # type: ignore[override]
        kept: list[Any] = []
        counts: Counter[str] = Counter()
        for item in data:
            view = self.view_of(item)
            if view == FRONTAL or (view == UNKNOWN and self.keep_unknown):
                kept.append(item)
                counts["kept"] += 1
            else:
                counts[view] += 1
        self.counts = counts
        dropped = {k: v for k, v in counts.items() if k != "kept"}
        logger.info("FrontalViewFilter: kept %d of %d images; dropped %s", counts["kept"], len(data), dropped or "none")
        return kept
