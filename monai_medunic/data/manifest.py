"""Dataset manifests: one validated record per image-report pair (JSONL or CSV).

A manifest lists the pairs a vision-language model is pre-trained or evaluated on. Each record holds

* ``image``: one path or a list of paths (DICOM, or any format a later loader reads); relative paths
  resolve against the manifest's folder;
* the report: inline ``report`` text, or ``report_sr``, the path of a DICOM SR document whose FINDINGS
  and IMPRESSION text is read on load (:func:`monai_medunic.transforms.sr.read_report_from_sr`);
* ``language`` (ISO 639 code with a spaCy tokenizer, e.g. ``en``, ``es``);
* optional ``labels`` ``{finding: 0 or 1}`` (for evaluation), ``split`` (``train`` / ``val`` /
  ``test``), ``study_uid``, ``view`` (``frontal`` / ``lateral`` / ``unknown``) and ``translations``
  ``{language: text}`` (the same report in other languages, for cross-lingual evaluations);
* optional ``modality`` (DICOM Modality: ``CR``, ``DX``, ``CT`` ...) and ``spatial_dims`` (``2`` for
  radiographs, ``3`` for volumes; default 3 for CT / MR / PT / NM records, else 2). A 3D record's
  ``image`` is a DICOM series folder or a NIfTI volume;
* truth for 2D records: ``masks`` ``{finding: mask file}`` (a 2D NIfTI / image of the image's size),
  ``boxes`` ``{finding: [[x0, y0, x1, y1], ...]}`` (pixels of the image, ``x`` along columns, ``x1`` /
  ``y1`` one past the last pixel) and ``seg`` (a DICOM SEG that references the image);
* truth for 3D records: ``mask`` (a NIfTI label map aligned with the volume), ``mask_labels``
  ``{finding: label value}`` and ``lesion_slices`` ``{finding: [slice index, ...]}`` (indices along the
  volume's Z axis as :mod:`monai_medunic.transforms.volume` loads it).

The truth fields are checked for form always (a box with ``x1 <= x0``, a negative slice index, a
mask label out of range: ``invalid_boxes``, ``invalid_lesion_slices``, ``invalid_mask_labels`` ...),
and, with ``check_truth=True`` (what consumers of the truth ask for; reads headers only), against
the files and the image: ``missing_mask_file``, ``missing_seg_file``, ``mask_size_mismatch`` (a mask
whose size differs from its image or volume), ``box_outside_image``, ``lesion_slice_outside_volume``,
``seg_reference_missing`` (the SEG does not reference the record's image: that image is missing),
``unreadable_seg``, ``unreadable_mask``. A consumer of images and reports only is not stopped by a
truth file it does not read. ``require_labels=True`` refuses records without labels or with an empty label set
(``missing_labels``).

JSONL: one JSON object per line with those keys (blank lines are ignored). CSV: columns ``image``
(several paths joined by ``|``), ``report``, ``report_sr``, ``language``, ``split``, ``study_uid``,
``view``, ``modality``, ``spatial_dims``, ``mask``, ``seg``, one ``label:<Finding>`` column per finding
(``0``, ``1`` or empty), ``translation:<lang>`` columns, and the structured fields (``mask_labels``,
``lesion_slices``, ``masks``, ``boxes``) as JSON text. The newer columns are written only when a record
uses them, so a radiograph-only CSV keeps its layout.

Validation on load. A bad record raises :class:`monai_medunic.errors.ManifestError` naming the file,
the line and the field (``on_error="raise"``), or is skipped with the reason logged and counted
(``on_error="skip"``). Records are then filtered, always with a counted reason:

* ``short_report``: fewer than ``min_report_tokens`` whitespace tokens (Med-UniC Sec. 4 drops reports
  of fewer than three tokens);
* ``lateral_view``: with ``frontal_only`` (Med-UniC Sec. 4 pre-trains on frontal views only); a record
  without a ``view`` is classified from its first image's DICOM header
  (:func:`monai_medunic.transforms.views.classify_view`);
* ``unknown_view``: with ``frontal_only`` and ``keep_unknown_views=False``;
* ``other_split``: when a ``split`` is requested;
* ``other_dimension``: the record's ``spatial_dims`` is not among ``dimensions`` (default: 2D only,
  so consumers of radiographs see exactly the radiograph records of a mixed 2D + 3D manifest);
* ``other_modality``: when ``modalities`` are requested and the record's modality is not one of them.

:class:`ManifestSummary` holds the counts and is logged; no record is dropped silently. Report text
is never logged.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monai_medunic.errors import ConfigurationError, DataError, ManifestError
from monai_medunic.text.quality import MAX_REPORT_CHARS, clean_report_text, report_text_problem

__all__ = [
    "SPLITS",
    "VOLUME_MODALITIES",
    "ManifestRecord",
    "ManifestSummary",
    "ManifestLoadResult",
    "load_manifest",
    "write_manifest",
    "records_to_data_dicts",
    "count_report_tokens",
]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
_VIEWS = ("frontal", "lateral", "unknown")
VOLUME_MODALITIES: tuple[str, ...] = ("CT", "MR", "PT", "NM")
_JSON_COLUMNS = ("mask_labels", "lesion_slices", "masks", "boxes")
_NON_DICOM_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".nii", ".nii.gz", ".npy", ".npz")


def count_report_tokens(text: str) -> int:
    """Whitespace tokens, as Med-UniC's three-token report filter counts them."""
    return len(text.split())


def _check_report_text(report: str, language: str) -> tuple[str, int]:
    """The report with stray control characters replaced (and how many), or an ``_Invalid``: binary data or a
    script that does not fit the language (:func:`~monai_medunic.text.quality.report_text_problem`)."""
    problem = report_text_problem(report, language)
    if problem is not None:
        raise _Invalid("language" if problem[0] == "script_mismatch" else "report", *problem)
    return clean_report_text(report)


@dataclass
class ManifestRecord:
    """One image-report pair.

    Attributes:
        image_paths: absolute image paths (relative ones were resolved against the manifest's folder).
        report: the report text (read from ``report_sr`` when the manifest gives no inline text).
        language: ISO 639 code of ``report``.
        labels: ``{finding: 0 or 1}``, or ``None`` when the record has no labels.
        split: ``"train"``, ``"val"``, ``"test"`` or ``None``.
        study_uid: the study's identifier (a DICOM Study Instance UID for DICOM data).
        view: ``"frontal"``, ``"lateral"``, ``"unknown"`` or ``None`` (not determined).
        report_sr: the SR document the report came from, if any.
        translations: the report in other languages, ``{language: text}``.
        line: the record's 1-based line in the manifest (CSV: counting the header as line 1).
        modality: the DICOM modality (``CR``, ``DX``, ``CT`` ...) if the manifest states it.
        spatial_dims: 2 (a radiograph) or 3 (a volume: a DICOM series folder or a NIfTI file).
        mask: 3D records: the absolute path of a NIfTI label map aligned with the volume.
        mask_labels: 3D records: ``{finding: label value in mask}``.
        lesion_slices: 3D records: ``{finding: sorted slice indices}`` (Z axis of the loaded volume).
        masks: 2D records: ``{finding: absolute path of a binary mask of the image's size}``.
        boxes: 2D records: ``{finding: [[x0, y0, x1, y1], ...]}`` in pixels of the (first) image.
        seg: 2D records: the absolute path of a DICOM SEG that references the image.
        control_characters_removed: how many control characters of the report were replaced by spaces.
    """

    image_paths: list[str]
    report: str
    language: str
    labels: dict[str, int] | None = None
    split: str | None = None
    study_uid: str | None = None
    view: str | None = None
    report_sr: str | None = None
    translations: dict[str, str] = field(default_factory=dict)
    line: int | None = None
    modality: str | None = None
    spatial_dims: int = 2
    mask: str | None = None
    mask_labels: dict[str, int] | None = None
    lesion_slices: dict[str, list[int]] | None = None
    masks: dict[str, str] | None = None
    boxes: dict[str, list[list[float]]] | None = None
    seg: str | None = None
    control_characters_removed: int = field(default=0, repr=False, compare=False)

    def to_json_dict(self, root: str | os.PathLike | None = None) -> dict[str, Any]:
        """The record as a JSONL object; paths below ``root`` are written relative to it."""

        def rel(p: str) -> str:
            if root is None:
                return p
            r = os.path.relpath(p, os.fspath(root))
            return p if r.startswith("..") else r.replace(os.sep, "/")

        images = [rel(p) for p in self.image_paths]
        out: dict[str, Any] = {"image": images[0] if len(images) == 1 else images}
        if self.report_sr is not None:
            out["report_sr"] = rel(self.report_sr)
        else:
            out["report"] = self.report
        out["language"] = self.language
        out["labels"] = self.labels
        out["split"] = self.split
        if self.study_uid is not None:
            out["study_uid"] = self.study_uid
        if self.view is not None:
            out["view"] = self.view
        if self.translations:
            out["translations"] = dict(self.translations)
        if self.modality is not None:
            out["modality"] = self.modality
        if self.spatial_dims != 2:
            out["spatial_dims"] = self.spatial_dims
        if self.mask is not None:
            out["mask"] = rel(self.mask)
        if self.mask_labels is not None:
            out["mask_labels"] = dict(self.mask_labels)
        if self.lesion_slices is not None:
            out["lesion_slices"] = {k: list(v) for k, v in self.lesion_slices.items()}
        if self.masks is not None:
            out["masks"] = {k: rel(v) for k, v in self.masks.items()}
        if self.boxes is not None:
            out["boxes"] = {k: [list(b) for b in v] for k, v in self.boxes.items()}
        if self.seg is not None:
            out["seg"] = rel(self.seg)
        return out


@dataclass
class ManifestSummary:
    """What :func:`load_manifest` read, kept and dropped (by reason)."""

    path: str
    total: int = 0
    kept: int = 0
    dropped: Counter = field(default_factory=Counter)
    kept_by_split: Counter = field(default_factory=Counter)
    kept_by_language: Counter = field(default_factory=Counter)
    reports_from_sr: int = 0
    cleaned: Counter = field(default_factory=Counter)

    @property
    def num_dropped(self) -> int:
        return int(sum(self.dropped.values()))

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "total": self.total,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "kept_by_split": dict(sorted(self.kept_by_split.items(), key=lambda kv: str(kv[0]))),
            "kept_by_language": dict(sorted(self.kept_by_language.items())),
            "reports_from_sr": self.reports_from_sr,
            "cleaned": dict(sorted(self.cleaned.items())),
        }

    def __str__(self) -> str:
        dropped = ", ".join(f"{k}={v}" for k, v in sorted(self.dropped.items())) or "none"
        cleaned = ", ".join(f"{k}={v}" for k, v in sorted(self.cleaned.items()))
        return (f"manifest {self.path}: kept {self.kept} of {self.total} records; dropped: {dropped}"
                + (f"; cleaned: {cleaned}" if cleaned else ""))


@dataclass
class ManifestLoadResult:
    """The kept records and the summary."""

    records: list[ManifestRecord]
    summary: ManifestSummary

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ManifestRecord]:
        return iter(self.records)


class _Invalid(Exception):
    def __init__(self, field_name: str | None, reason: str, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name
        self.reason = reason
        self.message = message


def _resolve(root: str, p: str) -> str:
    p = os.path.expanduser(p)
    return os.path.normpath(p if os.path.isabs(p) else os.path.join(root, p))


def _parse_labels(value: Any) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _Invalid("labels", "invalid_labels", f"labels must be an object {{finding: 0/1}}, got {type(value).__name__}")
    out: dict[str, int] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k.strip():
            raise _Invalid("labels", "invalid_labels", "label names must be non-empty strings")
        if isinstance(v, bool):
            iv = int(v)
        elif isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) and float(v) in (0.0, 1.0):
            iv = int(v)
        elif isinstance(v, str) and v.strip() in ("0", "1", "0.0", "1.0"):
            iv = int(float(v))
        else:
            raise _Invalid("labels", "invalid_labels", f"label '{k}' must be 0 or 1, got {v!r}")
        out[k] = iv
    return out


def _modality(raw: Mapping[str, Any]) -> str | None:
    value = raw.get("modality")
    if value in (None, ""):
        return None
    if not isinstance(value, str) or not value.strip().isalnum() or len(value.strip()) > 16:
        raise _Invalid("modality", "invalid_modality", f"'modality' must be a DICOM modality code such as CR, DX or CT, got {value!r}")
    return value.strip().upper()


def _spatial_dims(raw: Mapping[str, Any]) -> int:
    """2 or 3: the record's ``spatial_dims``, else 3 for a volume modality (:data:`VOLUME_MODALITIES`), else 2."""
    value = raw.get("spatial_dims")
    if value in (None, ""):
        return 3 if _modality(raw) in VOLUME_MODALITIES else 2
    if isinstance(value, bool) or not (
        (isinstance(value, int) and value in (2, 3)) or (isinstance(value, str) and value.strip() in ("2", "3"))
    ):
        raise _Invalid("spatial_dims", "invalid_spatial_dims", f"'spatial_dims' must be 2 or 3, got {value!r}")
    return int(value)


def _parse_mask_labels(value: Any) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise _Invalid("mask_labels", "invalid_mask_labels", "'mask_labels' must be a non-empty object {finding: label value}")
    out: dict[str, int] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not k.strip() or isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 255:
            raise _Invalid("mask_labels", "invalid_mask_labels", f"mask label of {k!r} must be an integer in 1..255, got {v!r}")
        out[k] = v
    if len(set(out.values())) != len(out):
        raise _Invalid("mask_labels", "invalid_mask_labels", f"two findings share a mask label value: {out}")
    return out


def _parse_lesion_slices(value: Any) -> dict[str, list[int]] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _Invalid("lesion_slices", "invalid_lesion_slices", "'lesion_slices' must be an object {finding: [slice index, ...]}")
    out: dict[str, list[int]] = {}
    for k, v in value.items():
        if (
            not isinstance(k, str)
            or not isinstance(v, list)
            or not v
            or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v)
        ):
            raise _Invalid(
                "lesion_slices", "invalid_lesion_slices", f"slices of {k!r} must be a non-empty list of slice indices >= 0"
            )
        out[k] = sorted(set(v))
    return out


def _parse_masks(value: Any, root: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and k.strip() and isinstance(v, str) and v.strip() for k, v in value.items()
    ):
        raise _Invalid("masks", "invalid_masks", "'masks' must be an object {finding: mask file}")
    return {k: _resolve(root, v.strip()) for k, v in value.items()}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _parse_boxes(value: Any) -> dict[str, list[list[float]]] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _Invalid("boxes", "invalid_boxes", "'boxes' must be an object {finding: [[x0, y0, x1, y1], ...]}")
    out: dict[str, list[list[float]]] = {}
    for k, boxes in value.items():
        if not isinstance(k, str) or not k.strip() or not isinstance(boxes, list) or not boxes:
            raise _Invalid("boxes", "invalid_boxes", f"boxes of {k!r} must be a non-empty list of [x0, y0, x1, y1]")
        for b in boxes:
            if not isinstance(b, list) or len(b) != 4 or not all(_is_number(c) for c in b):
                raise _Invalid("boxes", "invalid_boxes", f"a box of {k!r} must be [x0, y0, x1, y1] numbers, got {b!r}")
            if not (b[0] < b[2] and b[1] < b[3]):
                raise _Invalid("boxes", "invalid_boxes", f"a box of {k!r} must have x0 < x1 and y0 < y1, got {b!r}")
        out[k] = [[float(c) if isinstance(c, float) else int(c) for c in b] for b in boxes]
    return out


def _validate(
    raw: Mapping[str, Any], root: str, check_files: bool, read_sr: bool, line: int, dims: int = 2, check_truth: bool = False,
    require_report: bool = True,
) -> ManifestRecord:
    from monai_medunic.text.languages import validate_language_code

    image = raw.get("image")
    images = [image] if isinstance(image, str) else image
    if not isinstance(images, list) or not images or not all(isinstance(p, str) and p.strip() for p in images):
        raise _Invalid("image", "invalid_image", "'image' must be a non-empty path or a non-empty list of paths")
    paths = [_resolve(root, p.strip()) for p in images]
    if check_files:
        for p in paths:
            if dims == 3 and not os.path.exists(p):
                raise _Invalid("image", "missing_image_file", f"volume (DICOM series folder or NIfTI file) does not exist: {p}")
            if dims == 2 and not os.path.isfile(p):
                raise _Invalid("image", "missing_image_file", f"image file does not exist: {p}")
    mask = raw.get("mask")
    mask_path = None
    if mask not in (None, ""):
        if dims != 3:
            raise _Invalid("mask", "invalid_mask", "'mask' (a label map) belongs to 3D records; radiographs give 'masks' per finding")
        if not isinstance(mask, str):
            raise _Invalid("mask", "invalid_mask", "'mask' must be the path of a NIfTI label map")
        mask_path = _resolve(root, mask.strip())
        if check_truth and not os.path.isfile(mask_path):
            raise _Invalid("mask", "missing_mask_file", f"mask file does not exist: {mask_path}")
    mask_labels = _parse_mask_labels(raw.get("mask_labels"))
    lesion_slices = _parse_lesion_slices(raw.get("lesion_slices"))
    masks = _parse_masks(raw.get("masks"), root)
    boxes = _parse_boxes(raw.get("boxes"))
    seg = raw.get("seg")
    seg_path = None
    if seg not in (None, ""):
        if not isinstance(seg, str):
            raise _Invalid("seg", "invalid_seg", "'seg' must be the path of a DICOM SEG")
        seg_path = _resolve(root, seg.strip())
    if dims == 3:
        for name, value in (("masks", masks), ("boxes", boxes), ("seg", seg_path)):
            if value is not None:
                raise _Invalid(name, f"invalid_{name}", f"'{name}' belongs to 2D records; a volume gives 'mask' and 'lesion_slices'")
    elif mask_labels is not None or lesion_slices is not None:
        name = "mask_labels" if mask_labels is not None else "lesion_slices"
        raise _Invalid(name, f"invalid_{name}", f"'{name}' belongs to 3D records; a radiograph gives 'masks' and 'boxes'")
    if check_truth:  # the truth files matter to the consumers of the truth only
        for finding, path in (masks or {}).items():
            if not os.path.isfile(path):
                raise _Invalid("masks", "missing_mask_file", f"mask of {finding!r} does not exist: {path}")
        if seg_path is not None and not os.path.isfile(seg_path):
            raise _Invalid("seg", "missing_seg_file", f"SEG file does not exist: {seg_path}")
    report = raw.get("report")
    report_sr = raw.get("report_sr")
    sr_path = None
    if report_sr not in (None, ""):
        if not isinstance(report_sr, str):
            raise _Invalid("report_sr", "invalid_report_sr", "'report_sr' must be a path")
        sr_path = _resolve(root, report_sr)
    if report is not None and not isinstance(report, str):
        raise _Invalid("report", "invalid_report", f"'report' must be a string, got {type(report).__name__}")
    sr_language = None
    if not (report or "").strip():
        if sr_path is None and not require_report:  # inference: an image to score needs no report
            report = ""
        elif sr_path is None:
            raise _Invalid("report", "missing_report", "record has neither 'report' text nor 'report_sr'")
        elif not read_sr:
            report = ""
        else:
            from monai_medunic.transforms.sr import read_report_from_sr

            try:
                sr = read_report_from_sr(sr_path)
            except DataError as err:
                raise _Invalid("report_sr", "unreadable_report_sr", f"cannot read the report SR: {err}") from None
            report, sr_language = sr.text, sr.language
    language = raw.get("language") or sr_language
    if not language and not require_report and not (report or "").strip():
        language = "und"  # an image without a report has no report language (BCP 47 'undetermined')
    else:
        try:
            language = validate_language_code(language, what="language")
        except ConfigurationError as err:
            raise _Invalid("language", "invalid_language", str(err)) from None
    labels = _parse_labels(raw.get("labels"))
    split = raw.get("split")
    if split in (None, ""):
        split = None
    elif not isinstance(split, str) or split.strip().lower() not in _SPLIT_ALIASES:
        raise _Invalid("split", "invalid_split", f"split must be one of {SPLITS} or empty, got {split!r}")
    else:
        split = _SPLIT_ALIASES[split.strip().lower()]
    view = raw.get("view")
    if view in (None, ""):
        view = None
    elif not isinstance(view, str) or view.strip().lower() not in _VIEWS:
        raise _Invalid("view", "invalid_view", f"view must be one of {_VIEWS} or empty, got {view!r}")
    else:
        view = view.strip().lower()
    translations = raw.get("translations") or {}
    if not isinstance(translations, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in translations.items()
    ):
        raise _Invalid("translations", "invalid_translations", "'translations' must be an object {language: text}")
    study_uid = raw.get("study_uid")
    report, n_controls = _check_report_text(str(report), language)
    record = ManifestRecord(
        image_paths=paths,
        report=report.strip(),
        language=language,
        labels=labels,
        split=split,
        study_uid=str(study_uid) if study_uid not in (None, "") else None,
        view=view,
        report_sr=sr_path,
        translations=dict(translations),
        line=line,
        modality=_modality(raw),
        spatial_dims=dims,
        mask=mask_path,
        mask_labels=mask_labels,
        lesion_slices=lesion_slices,
        masks=masks,
        boxes=boxes,
        seg=seg_path,
        control_characters_removed=n_controls,
    )
    return record


_NIFTI_EXT = (".nii", ".nii.gz")
_PIL_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def _nifti_shape(path: str, field_name: str, reason: str) -> tuple[int, ...]:
    import nibabel as nib

    try:
        return tuple(int(v) for v in nib.load(path).shape)
    except Exception as err:  # not NIfTI, truncated header
        raise _Invalid(field_name, reason, f"not a NIfTI file nibabel can read ({type(err).__name__}): {path}") from None


def _picture_size(path: str, field_name: str, reason: str) -> tuple[int, int]:
    from monai.utils import optional_import

    image, has_pil = optional_import("PIL.Image")
    if not has_pil:
        raise _Invalid(field_name, reason, f"reading the size of a picture file needs pillow (pip install pillow): {path}")
    try:
        with image.open(path) as im:
            width, height = im.size
    except (OSError, ValueError) as err:  # PIL.UnidentifiedImageError is an OSError
        raise _Invalid(field_name, reason, f"not an image file PIL can read ({type(err).__name__}): {path}") from None
    return int(height), int(width)


def _dicom_header(path: str, field_name: str, reason: str) -> Any:
    from monai_medunic.transforms.dicom import read_dicom

    try:
        return read_dicom(path, header_only=True)
    except DataError as err:
        raise _Invalid(field_name, reason, f"cannot read the DICOM header: {err}") from None


def _image_size_2d(path: str) -> tuple[int, int]:
    """``(rows, columns)`` of a 2D image from its header (DICOM, NIfTI or a picture format)."""
    low = path.lower()
    if low.endswith(_NIFTI_EXT):
        shape = _nifti_shape(path, "image", "unreadable_image")
        return shape[0], shape[1]
    if low.endswith(_PIL_EXT):
        return _picture_size(path, "image", "unreadable_image")
    ds = _dicom_header(path, "image", "unreadable_image")
    if "Rows" not in ds or "Columns" not in ds:
        raise _Invalid("image", "unreadable_image", f"not an image (no Rows / Columns): {path}")
    return int(ds.Rows), int(ds.Columns)


def _mask_size_2d(path: str) -> tuple[int, ...]:
    low = path.lower()
    if low.endswith(_PIL_EXT):
        return _picture_size(path, "masks", "unreadable_mask")
    shape = _nifti_shape(path, "masks", "unreadable_mask")
    return shape[:2] if len(shape) == 2 or (len(shape) == 3 and shape[2] == 1) else shape


def _volume_shape(path: str) -> tuple[int, int, int]:
    """``(X, Y, Z)`` of a volume as :mod:`monai_medunic.transforms.volume` loads it, from headers only."""
    if os.path.isdir(path):
        from monai_medunic.errors import DicomReadError
        from monai_medunic.transforms.dicom import read_dicom

        per_series: Counter[str] = Counter()
        size: dict[str, tuple[int, int]] = {}
        for dirpath, _, names in os.walk(path):
            for name in names:
                if name.startswith("."):
                    continue
                try:
                    ds = read_dicom(os.path.join(dirpath, name), header_only=True)
                except DicomReadError:
                    continue  # not DICOM: the series loader skips it too
                if "Rows" in ds and "Columns" in ds:
                    uid = str(ds.get("SeriesInstanceUID", ""))
                    per_series[uid] += 1
                    size[uid] = (int(ds.Columns), int(ds.Rows))
        if len(per_series) != 1:
            raise _Invalid("image", "unreadable_volume", f"the folder holds {len(per_series)} image series, expected one: {path}")
        uid, count = next(iter(per_series.items()))
        return size[uid][0], size[uid][1], count
    if path.lower().endswith(_NIFTI_EXT):
        shape = _nifti_shape(path, "image", "unreadable_volume")
        if len(shape) < 3:
            raise _Invalid("image", "unreadable_volume", f"a {len(shape)}D NIfTI file is not a volume: {path}")
        return shape[0], shape[1], shape[2]
    raise _Invalid("image", "unreadable_volume", f"a 3D image must be a DICOM series folder or a NIfTI file: {path}")


def _check_truth(record: ManifestRecord) -> None:
    """Check the record's truth against its image (headers only); raise :class:`_Invalid` on a mismatch."""
    if record.spatial_dims == 3:
        if record.mask is None and record.lesion_slices is None:
            return
        x, y, z = _volume_shape(record.image_paths[0])
        if record.mask is not None:
            shape = _nifti_shape(record.mask, "mask", "unreadable_mask")
            if tuple(shape[:3]) != (x, y, z):
                raise _Invalid(
                    "mask", "mask_size_mismatch", f"mask is {tuple(shape[:3])} voxels (X, Y, Z), the volume {(x, y, z)}: {record.mask}"
                )
        for finding, ks in (record.lesion_slices or {}).items():
            if ks and ks[-1] >= z:
                raise _Invalid(
                    "lesion_slices", "lesion_slice_outside_volume", f"slice {ks[-1]} of {finding!r} is outside the volume's {z} slices"
                )
        return
    if record.masks or record.boxes:
        rows, cols = _image_size_2d(record.image_paths[0])
        for finding, path in (record.masks or {}).items():
            size = _mask_size_2d(path)
            if tuple(size) != (rows, cols):
                raise _Invalid(
                    "masks", "mask_size_mismatch",
                    f"mask of {finding!r} is {'x'.join(map(str, size))} (rows x columns), the image {rows}x{cols}: {path}",
                )
        for finding, boxes in (record.boxes or {}).items():
            for b in boxes:
                if b[0] < 0 or b[1] < 0 or b[2] > cols or b[3] > rows:
                    raise _Invalid(
                        "boxes", "box_outside_image",
                        f"box {b} of {finding!r} lies outside the image of {cols} columns x {rows} rows "
                        "(needs 0 <= x0 < x1 <= columns, 0 <= y0 < y1 <= rows)",
                    )
    if record.seg is not None:
        seg = _dicom_header(record.seg, "seg", "unreadable_seg")
        if str(seg.get("SOPClassUID", "")) != _SEG_STORAGE:
            raise _Invalid("seg", "unreadable_seg", f"not a DICOM Segmentation (SOP Class {seg.get('SOPClassUID', 'missing')}): {record.seg}")
        referenced = {
            str(inst.get("ReferencedSOPInstanceUID", ""))
            for series in seg.get("ReferencedSeriesSequence", [])
            for inst in series.get("ReferencedInstanceSequence", [])
        }
        images = {
            str(_dicom_header(p, "image", "unreadable_image").get("SOPInstanceUID", ""))
            for p in record.image_paths
            if not p.lower().endswith(_NIFTI_EXT + _PIL_EXT)
        }
        if not referenced & images:
            raise _Invalid(
                "seg", "seg_reference_missing",
                f"the SEG references {len(referenced)} image(s), none of them this record's image, which is therefore "
                f"missing from the record: {record.seg}",
            )


def _iter_jsonl(path: str) -> Iterator[tuple[int, Any, str | None]]:
    with open(path, encoding="utf-8") as fh:
        for lineno, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                yield lineno, json.loads(text), None
            except json.JSONDecodeError as err:
                yield lineno, None, f"invalid JSON ({err.msg} at column {err.colno})"


class _BadJSON(str):
    """A CSV cell of a JSON column that is not JSON (rejected by that field's validation)."""


def _csv_value(v: str | None) -> str | None:
    return None if v is None or v.strip() == "" else v.strip()


def _iter_csv(path: str) -> Iterator[tuple[int, Any, str | None]]:
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            return
        if "image" not in reader.fieldnames:
            raise ManifestError("CSV manifest has no 'image' column", path=path, field="image", line=1)
        for row in reader:
            lineno = reader.line_num
            if None in row:
                yield lineno, None, "more values than header columns"
                continue
            rec: dict[str, Any] = {}
            labels: dict[str, Any] = {}
            translations: dict[str, str] = {}
            for key, value in row.items():
                v = _csv_value(value)
                if key.startswith("label:"):
                    if v is not None:
                        labels[key[len("label:") :]] = v
                elif key.startswith("translation:"):
                    if v is not None:
                        translations[key[len("translation:") :]] = v
                elif key == "image":
                    rec["image"] = [p.strip() for p in v.split("|")] if v else None
                    if rec["image"] is not None and len(rec["image"]) == 1:
                        rec["image"] = rec["image"][0]
                elif key in _JSON_COLUMNS and v is not None:
                    try:
                        rec[key] = json.loads(v)
                    except json.JSONDecodeError:
                        rec[key] = _BadJSON(v)
                else:
                    rec[key] = v
            rec["labels"] = labels or None
            rec["translations"] = translations
            yield lineno, rec, None


def _manifest_format(path: str) -> str:
    low = path.lower()
    if low.endswith(".jsonl") or low.endswith(".ndjson"):
        return "jsonl"
    if low.endswith(".csv"):
        return "csv"
    raise ManifestError("unknown manifest format; use a .jsonl or .csv file", path=path)


def _view_of(record: ManifestRecord) -> str:
    if record.view is not None:
        return record.view
    first = record.image_paths[0]
    if first.lower().endswith(_NON_DICOM_EXT):
        return "unknown"
    from monai_medunic.transforms.views import classify_view

    return classify_view(first)


def load_manifest(
    path: str | os.PathLike,
    on_error: str = "raise",
    min_report_tokens: int = 3,
    frontal_only: bool = True,
    split: str | None = None,
    keep_unknown_views: bool = True,
    check_files: bool = True,
    read_sr: bool = True,
    dimensions: int | Sequence[int] | None = 2,
    modalities: str | Sequence[str] | None = None,
    check_truth: bool = False,
    require_labels: bool = False,
    max_report_chars: int | None = MAX_REPORT_CHARS,
    require_report: bool = True,
) -> ManifestLoadResult:
    """Read, validate and filter a JSONL or CSV manifest.

    Args:
        path: the manifest (``.jsonl`` or ``.csv``).
        on_error: ``"raise"`` (a :class:`ManifestError` naming the file, line and field) or ``"skip"``
            (log and count the reason, go on).
        min_report_tokens: drop reports with fewer whitespace tokens (Med-UniC Sec. 4 uses 3).
        frontal_only: drop lateral views (Med-UniC Sec. 4). A record without ``view`` is classified from
            its first image's DICOM header.
        split: keep only this split (``"train"``, ``"val"``, ``"test"``).
        keep_unknown_views: with ``frontal_only``, keep records whose view cannot be determined.
        check_files: check that every image file exists.
        read_sr: read the report text of records that give only ``report_sr``.
        dimensions: keep records of these ``spatial_dims`` (``2``: radiographs, the default; ``3``:
            volumes; ``(2, 3)`` or ``None``: both). Others are dropped as ``other_dimension`` before
            their other fields are validated.
        modalities: keep only records of these modalities (e.g. ``"CT"`` or ``("CR", "DX")``); records
            of another or of no stated modality are dropped as ``other_modality``. ``None``: any.
        check_truth: check the truth files and fields against the image (the mask and SEG files
            exist, mask sizes, boxes inside the image, lesion slices inside the volume, the SEG
            references the image); reads headers only.
        require_labels: refuse records without labels or with an empty label set (``missing_labels``).
        max_report_chars: drop reports longer than this as ``long_report`` (:data:`MAX_REPORT_CHARS`;
            ``None``: no limit).
        require_report: ``False`` for inference: a record without report text is kept with an empty
            report, and the ``short_report`` filter is off (report filters belong to training and
            evaluation; scoring unreported images is the point of inference).

    Report text is also checked on every record: NUL characters or many control characters (more than
    4 and over 10 % of the text) are ``binary_report`` (invalid); other control characters are replaced by a space and counted in
    ``summary.cleaned["control_characters"]``; a report whose letters are mostly of another script
    than its Latin-script language (:data:`LATIN_SCRIPT_LANGUAGES`) is ``script_mismatch`` (invalid).

    Returns:
        The kept records and a :class:`ManifestSummary` (also logged).

    Raises:
        ManifestError: the manifest does not exist, has no record, or (``on_error="raise"``) a record is invalid.
        ConfigurationError: an invalid argument.
    """
    if on_error not in ("raise", "skip"):
        raise ConfigurationError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    if split is not None and split not in SPLITS:
        raise ConfigurationError(f"split must be one of {SPLITS} or None, got {split!r}")
    if min_report_tokens < 0:
        raise ConfigurationError(f"min_report_tokens must be >= 0, got {min_report_tokens}")
    wanted_dims = _wanted_dimensions(dimensions)
    wanted_modalities = _wanted_modalities(modalities)
    p = os.fspath(path)
    if not os.path.exists(p):
        raise ManifestError("manifest file does not exist", path=p)
    if os.path.isdir(p):
        raise ManifestError("is a directory, expected a .jsonl or .csv manifest", path=p)
    fmt = _manifest_format(p)
    root = os.path.dirname(os.path.abspath(p))
    summary = ManifestSummary(path=p)
    records: list[ManifestRecord] = []
    rows = _iter_jsonl(p) if fmt == "jsonl" else _iter_csv(p)
    try:
        for lineno, raw, parse_error in rows:
            summary.total += 1
            try:
                if parse_error is not None:
                    raise _Invalid(None, "invalid_json" if fmt == "jsonl" else "invalid_csv_row", parse_error)
                if not isinstance(raw, Mapping):
                    raise _Invalid(None, "invalid_record", f"a record must be a JSON object, got {type(raw).__name__}")
                dims = _spatial_dims(raw)
                if wanted_dims is not None and dims not in wanted_dims:
                    summary.dropped["other_dimension"] += 1
                    continue
                if wanted_modalities is not None and _modality(raw) not in wanted_modalities:
                    summary.dropped["other_modality"] += 1
                    continue
                record = _validate(raw, root, check_files, read_sr, lineno, dims, check_truth, require_report)
                if require_labels and not record.labels:
                    raise _Invalid(
                        "labels", "missing_labels",
                        "labels are required and the record has " + ("an empty label set" if record.labels == {} else "none"),
                    )
                if check_truth:
                    _check_truth(record)
                if require_report and count_report_tokens(record.report) < min_report_tokens:
                    summary.dropped["short_report"] += 1
                    continue
                if max_report_chars is not None and len(record.report) > max_report_chars:
                    logger.warning("manifest %s: line %d: skipped (long_report): %d characters, the limit is %d",
                                   p, lineno, len(record.report), max_report_chars)
                    summary.dropped["long_report"] += 1
                    continue
                if frontal_only and record.spatial_dims == 2:
                    try:
                        view = _view_of(record)
                    except DataError as err:
                        raise _Invalid("image", "unreadable_image", f"cannot read the image header: {err}") from None
                    if record.view is None:
                        record.view = view
                    if view == "lateral":
                        summary.dropped["lateral_view"] += 1
                        continue
                    if view == "unknown" and not keep_unknown_views:
                        summary.dropped["unknown_view"] += 1
                        continue
                if split is not None and record.split != split:
                    summary.dropped["other_split"] += 1
                    continue
            except _Invalid as bad:
                if on_error == "raise":
                    raise ManifestError(bad.message, path=p, field=bad.field_name, line=lineno) from None
                where = f"line {lineno}" + (f", field '{bad.field_name}'" if bad.field_name else "")
                logger.warning("manifest %s: %s: skipped (%s): %s", p, where, bad.reason, bad.message)
                summary.dropped[bad.reason] += 1
                continue
            records.append(record)
            if record.control_characters_removed:
                summary.cleaned["control_characters"] += 1
            summary.kept += 1
            summary.kept_by_split[record.split or "none"] += 1
            summary.kept_by_language[record.language] += 1
            if record.report_sr is not None and not (raw.get("report") or "").strip():
                summary.reports_from_sr += 1
    except UnicodeDecodeError as err:
        raise ManifestError(f"not UTF-8 text ({err.reason} at byte {err.start})", path=p) from None
    if summary.total == 0:
        raise ManifestError("manifest has no records", path=p)
    logger.info("%s", summary)
    if summary.kept == 0:
        logger.warning("manifest %s: no record was kept", p)
    return ManifestLoadResult(records=records, summary=summary)


def _wanted_dimensions(dimensions: int | Sequence[int] | None) -> frozenset[int] | None:
    if dimensions is None:
        return None
    dims = [dimensions] if isinstance(dimensions, int) else list(dimensions)
    if not dims or any(isinstance(d, bool) or d not in (2, 3) for d in dims):
        raise ConfigurationError(f"dimensions must be 2, 3, a list of them, or None (all), got {dimensions!r}")
    return frozenset(int(d) for d in dims)


def _wanted_modalities(modalities: str | Sequence[str] | None) -> frozenset[str] | None:
    if modalities is None:
        return None
    mods = [modalities] if isinstance(modalities, str) else list(modalities)
    if not mods or not all(isinstance(m, str) and m.strip() for m in mods):
        raise ConfigurationError(f"modalities must be a modality code, a list of them, or None (any), got {modalities!r}")
    return frozenset(m.strip().upper() for m in mods)


def write_manifest(records: Sequence[ManifestRecord], path: str | os.PathLike) -> str:
    """Write records as JSONL or CSV (by the suffix); image paths below the manifest's folder become relative."""
    p = os.fspath(path)
    fmt = _manifest_format(p)
    root = os.path.dirname(os.path.abspath(p))
    os.makedirs(root, exist_ok=True)
    rows = [r.to_json_dict(root) for r in records]
    if fmt == "jsonl":
        with open(p, "w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        return p
    label_names: list[str] = []
    langs: list[str] = []
    for r in records:
        label_names += [k for k in (r.labels or {}) if k not in label_names]
        langs += [k for k in r.translations if k not in langs]
    columns = ["image", "report", "report_sr", "language", "split", "study_uid", "view"]
    # the newer columns only when a record uses them, so a radiograph-only CSV keeps its layout
    extra = [c for c in ("modality", "spatial_dims", "mask", "seg", *_JSON_COLUMNS) if any(c in row for row in rows)]
    columns += extra
    columns += [f"label:{n}" for n in label_names] + [f"translation:{lang}" for lang in langs]
    with open(p, "w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for r, row in zip(records, rows):
            image = row["image"]
            out = {
                "image": "|".join(image) if isinstance(image, list) else image,
                "report": row.get("report", ""),
                "report_sr": row.get("report_sr", ""),
                "language": r.language,
                "split": r.split or "",
                "study_uid": r.study_uid or "",
                "view": r.view or "",
            }
            for c in extra:
                value = row.get(c, "")
                out[c] = json.dumps(value, ensure_ascii=False) if c in _JSON_COLUMNS and value != "" else value
            for n in label_names:
                out[f"label:{n}"] = "" if r.labels is None or n not in r.labels else r.labels[n]
            for lang in langs:
                out[f"translation:{lang}"] = r.translations.get(lang, "")
            writer.writerow(out)
    return p


def records_to_data_dicts(
    records: Sequence[ManifestRecord], findings: Sequence[str] | None = None, truth: bool = False
) -> list[dict[str, Any]]:
    """Records -> MONAI-style dicts for :class:`monai.data.Dataset`.

    Each dict has ``"image"`` (a path, or a list for multi-image records), ``"report"``, ``"language"``,
    ``"split"``, ``"study_uid"``, ``"view"`` and, when ``findings`` is given or any record has labels,
    ``"labels"``: a list of floats in the order of ``findings`` (default: the label names in first-seen
    order), ``nan`` where a record has no label for a finding.

    3D records also have ``"spatial_dims"`` (3), and where the manifest gives them ``"modality"``,
    ``"mask"`` (the label map's path), ``"mask_labels"`` and ``"lesion_slices"``. The dicts of 2D
    records are unchanged by these fields unless ``truth``: then 2D records with truth also have
    ``"masks"`` ``{finding: path}``, ``"seg"``, and their boxes as MONAI detection takes them:
    ``"boxes"`` (a list of ``[x0, y0, x1, y1]``) and ``"box_labels"`` (the index of each box's finding
    in ``findings``, or its name without ``findings``).
    """
    if findings is None:
        names: list[str] = []
        for r in records:
            names += [k for k in (r.labels or {}) if k not in names]
        findings = names or None
    out: list[dict[str, Any]] = []
    for r in records:
        d: dict[str, Any] = {
            "image": r.image_paths[0] if len(r.image_paths) == 1 else list(r.image_paths),
            "report": r.report,
            "language": r.language,
            "split": r.split,
            "study_uid": r.study_uid,
            "view": r.view,
        }
        if findings:
            labels = r.labels or {}
            d["labels"] = [float(labels[f]) if f in labels else float("nan") for f in findings]
        if truth and r.spatial_dims == 2:
            if r.masks is not None:
                d["masks"] = dict(r.masks)
            if r.seg is not None:
                d["seg"] = r.seg
            if r.boxes is not None:
                order = {f: i for i, f in enumerate(findings or [])}
                d["boxes"] = [list(b) for f in r.boxes for b in r.boxes[f]]
                d["box_labels"] = [order.get(f, f) if findings else f for f in r.boxes for _ in r.boxes[f]]
        if r.spatial_dims == 3:
            d["spatial_dims"] = 3
            for key in ("modality", "mask", "mask_labels", "lesion_slices"):
                value = getattr(r, key)
                if value is not None:
                    d[key] = value
        out.append(d)
    return out
