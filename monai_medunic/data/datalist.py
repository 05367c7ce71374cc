"""Manifest -> MONAI data list, as the bundles' configs consume it."""

from __future__ import annotations

import logging
import math
import os
from typing import Any, Sequence

from monai_medunic.data.manifest import load_manifest, records_to_data_dicts
from monai_medunic.errors import ManifestError

__all__ = ["manifest_datalist"]

logger = logging.getLogger(__name__)


def manifest_datalist(
    manifest: str | os.PathLike,
    split: str | None = None,
    findings: Sequence[str] | None = None,
    require_labels: bool = False,
    on_error: str = "skip",
    frontal_only: bool = True,
    dimensions: int | Sequence[int] | None = 2,
    modalities: str | Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Load, validate and filter a manifest (:func:`~monai_medunic.data.manifest.load_manifest`) and
    return MONAI-style dicts with ``image``, ``report``, ``language``, ``labels`` (in ``findings``
    order, when given) and ``id`` (the study UID, else the image path).

    Bad records are skipped with a logged, counted reason by default (``on_error="skip"``); lateral
    views are excluded (Med-UniC Sec. 4.1).

    ``dimensions`` chooses the kind of record: ``2`` (the default) gives the radiograph records only,
    exactly as for a radiograph-only manifest; ``3`` gives the volume records (``image`` a DICOM series
    folder or a NIfTI file, plus ``mask``, ``mask_labels`` and ``lesion_slices`` where the manifest has
    them); ``(2, 3)`` or ``None`` both. ``modalities`` narrows further (e.g. ``"CT"``).

    Raises:
        ManifestError: the manifest is missing or empty, the split holds no usable record, or
            ``require_labels`` and a record lacks a label for one of ``findings`` (names the study).
    """
    result = load_manifest(
        manifest, on_error=on_error, frontal_only=frontal_only, split=split, dimensions=dimensions, modalities=modalities
    )
    data = records_to_data_dicts(result.records, findings)
    if not data:
        raise ManifestError(f"no usable record for split '{split}' ({result.summary})", path=manifest)
    for d, rec in zip(data, result.records):
        d["id"] = d.get("study_uid") or (d["image"] if isinstance(d["image"], str) else d["image"][0])
        if require_labels:
            labels = d.get("labels")
            if labels is None or any(math.isnan(v) for v in labels):
                raise ManifestError(
                    f"record '{d['id']}' has no label for some of {list(findings or [])}: evaluation needs every label",
                    path=manifest,
                    field="labels",
                    line=rec.line,
                )
        for key in ("study_uid", "view", "split"):  # None does not collate (a 3D record has no view)
            if d.get(key) is None:
                d.pop(key, None)
    logger.info("%s: %d records for split '%s'", manifest, len(data), split)
    return data
