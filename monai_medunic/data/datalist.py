"""Manifest -> MONAI data list, as the bundles' configs consume it."""

from __future__ import annotations

import logging
import math
import os
from collections import Counter
from typing import Any, Sequence

from monai_medunic.data.manifest import load_manifest, records_to_data_dicts
from monai_medunic.errors import ManifestError
from monai_medunic.transforms.dicom_io import has_dicom_preamble

__all__ = ["manifest_datalist", "inference_datalist"]

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
    truth: bool = False,
    require_report: bool = True,
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

    ``truth`` adds the radiographs' truth (``masks``, ``seg``, ``boxes`` and ``box_labels``, see
    :func:`~monai_medunic.data.manifest.records_to_data_dicts`) where a record has it. The truth of
    the records returned (with ``truth``, and always for 3D records) is checked against the images:
    a mask whose size differs from its image, a box outside the image, a lesion slice outside the
    volume or a SEG that does not reference the record's image is skipped with a counted reason (or
    raises with ``on_error="raise"``), naming the file, line and field.

    ``require_report=False`` keeps records without report text (inference scores images, not reports).

    Raises:
        ManifestError: the manifest is missing or empty, the split holds no usable record, or
            ``require_labels`` and a record has no labels, an empty label set, or lacks a label for
            one of ``findings`` (names the study, the line and the field).
    """
    wants_3d = dimensions is None or (dimensions == 3 if isinstance(dimensions, int) else 3 in list(dimensions))
    result = load_manifest(
        manifest,
        on_error=on_error,
        frontal_only=frontal_only,
        split=split,
        dimensions=dimensions,
        modalities=modalities,
        check_truth=truth or wants_3d,
        require_report=require_report,
    )
    data = records_to_data_dicts(result.records, findings, truth=truth)
    if not data:
        raise ManifestError(f"no usable record for split '{split}' ({result.summary})", path=manifest)
    for d, rec in zip(data, result.records):
        d["id"] = d.get("study_uid") or (d["image"] if isinstance(d["image"], str) else d["image"][0])
        if require_labels:
            labels = d.get("labels")
            if not rec.labels or labels is None or any(math.isnan(v) for v in labels):
                what = "an empty label set" if rec.labels == {} else ("no labels" if not rec.labels else "no label for some of")
                raise ManifestError(
                    f"record '{d['id']}' has {what}{' ' + str(list(findings or [])) if rec.labels else ''}: "
                    "evaluation needs every label",
                    path=manifest,
                    field="labels",
                    line=rec.line,
                )
        for key in ("study_uid", "view", "split"):  # None does not collate (a 3D record has no view)
            if d.get(key) is None:
                d.pop(key, None)
    logger.info("%s: %d records for split '%s'", manifest, len(data), split)
    return data


_IMAGE_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima", ".png", ".nii", ".nii.gz")


def _image_entry(path: str, skipped: Counter | None = None, frontal_only: bool = False) -> dict[str, Any] | None:
    """The entry of one image file; with ``skipped`` (a folder's files), ``None`` for a DICOM object that
    is not an image (SR, SEG, ...) or, with ``frontal_only``, a lateral view, counted by reason."""
    entry = {"image": path, "id": path, "image_path": path, "sop_instance_uid": ""}
    if has_dicom_preamble(path):
        import pydicom

        try:
            header = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as err:  # noqa: BLE001 - the loader gives the typed error for this file later
            logger.warning("cannot read the header of %s (%s): it is scored by path", os.path.basename(path), type(err).__name__)
            return entry
        entry["sop_instance_uid"] = str(header.get("SOPInstanceUID", ""))
        entry["id"] = str(header.get("StudyInstanceUID", "")) or path
        if skipped is not None:
            if "Rows" not in header or header.get("Modality") in _NOT_IMAGES:
                skipped["not_an_image"] += 1
                return None
            if frontal_only:
                from monai_medunic.transforms.views import classify_view

                if classify_view(header) == "lateral":
                    skipped["lateral_view"] += 1
                    return None
    return entry


_NOT_IMAGES = ("SR", "SEG", "KO", "PR", "RTSTRUCT", "REG", "DOC")


def inference_datalist(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    split: str | None = None,
    on_error: str = "skip",
    frontal_only: bool = True,
) -> list[dict[str, Any]]:
    """The images to score, from whatever a user has: a manifest (``.jsonl`` / ``.csv``: every record, with
    or without a report, of ``split`` when one is given), a folder (every DICOM, PNG or NIfTI file under
    it; DICOM objects that are not images, such as SRs and SEGs, and, with ``frontal_only``, lateral views
    are left out with a logged count), one image file, or a list of image files.

    Each entry has ``image``, ``id`` (the study UID when the manifest or DICOM header gives one, else
    the path), ``image_path`` and ``sop_instance_uid`` (``""`` for non-DICOM files), so that results can
    be traced to the instance that was scored.

    Raises:
        ManifestError: nothing to score (a missing path, an empty folder, a manifest without usable records).
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isfile(path) and path.lower().endswith((".jsonl", ".csv")):
            data = manifest_datalist(path, split=split, on_error=on_error, frontal_only=frontal_only, require_report=False)
            for d in data:
                first = d["image"] if isinstance(d["image"], str) else d["image"][0]
                d["image_path"] = first
                d["sop_instance_uid"] = _image_entry(first)["sop_instance_uid"]
            return data
        if os.path.isdir(path):
            files = sorted(os.path.join(r, f) for r, _, fs in os.walk(path) for f in fs)
            picked = [f for f in files if f.lower().endswith(_IMAGE_SUFFIXES) or has_dicom_preamble(f)]
            ignored = len(files) - len(picked)
            if ignored:
                logger.info("%s: %d file(s) that are not DICOM, PNG or NIfTI images were left out", path, ignored)
            if not picked:
                raise ManifestError("the folder holds no DICOM, PNG or NIfTI file to score", path=path)
            skipped: Counter = Counter()
            entries = [e for e in (_image_entry(f, skipped, frontal_only) for f in picked) if e is not None]
            if skipped:
                logger.info("%s: %d image file(s) to score; left out: %s", path, len(entries), dict(skipped))
            if not entries:
                raise ManifestError(f"the folder holds no image to score (left out: {dict(skipped)})", path=path)
            return entries
        if not os.path.exists(path):
            raise ManifestError("nothing to score: the path does not exist", path=path)
        return [_image_entry(path)]
    paths = [os.fspath(p) for p in source]
    missing = [p for p in paths if not os.path.isfile(p)]
    if not paths or missing:
        raise ManifestError(f"nothing to score: {len(missing)} of {len(paths)} listed file(s) do not exist "
                            f"(first: {missing[0] if missing else 'empty list'})", path=missing[0] if missing else "")
    return [_image_entry(p) for p in paths]
