"""From a MONAI Label image (a DICOM series folder fetched from the PACS, or one uploaded file) to the
original DICOM instance the network reads.

MONAI Label's DICOMweb datastore hands an infer task the folder of the series it downloaded (with
the NIfTI conversion off, see :mod:`monai_medunic.label.datastore`). :class:`SelectRadiographd`
picks the instance to score from it with
:func:`~monai_medunic.transforms.radiograph.select_radiograph`, the rule of the Deploy app
``cxr_findings``, of training and of the inference API: CR/DX only; lateral views never (Med-UniC
pre-trains on frontal views, Sec. 4); a frontal view first; an instance whose view is unknown only
when the series has no frontal one; among equals, the lowest Instance Number. The chosen file then goes through ``LoadDicomImage`` untouched, so the
Modality LUT, the VOI LUT and MONOCHROME1 are applied as in training.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform

from monai_medunic.transforms.radiograph import CXR_MODALITIES, select_radiograph

__all__ = ["CXR_MODALITIES", "SOURCE_KEY", "is_dicom_uid", "select_radiograph", "SelectRadiographd"]

SOURCE_KEY = "source_instance"
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def is_dicom_uid(value: Any) -> bool:
    """A syntactically valid DICOM UID (PS3.5 9.1: dot-separated numbers without leading zeros, <= 64 chars)."""
    return isinstance(value, str) and 0 < len(value) <= 64 and bool(_UID.match(value))


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
