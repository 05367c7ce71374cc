"""One loader for a radiograph given in any form a user has: a DICOM file, a DICOM series / study
folder, a PNG, a 2D NIfTI file, a pydicom dataset or an array.

Every form ends as what :class:`~monai_medunic.transforms.dicom.LoadDicomImage` gives for a DICOM
file: a ``(1, H, W)`` float32 :class:`~monai.data.MetaTensor` of display values in [0, 1] (rows before
columns; bright means dense), so that the model input transform of training
(:func:`~monai_medunic.transforms.pipelines.model_input_transform`) applies unchanged. The rules:

* **DICOM file** (suffix ``.dcm`` / ``.dicom`` / ``.dic`` / ``.ima``, or none, as PACS exports have):
  ``LoadDicomImage`` itself (Modality LUT, VOI LUT, MONOCHROME1 / INVERSE polarity).
* **DICOM folder**: the instance :func:`select_radiograph` picks (CR/DX only, never a lateral view, a
  frontal view first, then the lowest Instance Number), then ``LoadDicomImage``. The MONAI Label app
  and the Deploy app follow the same rule.
* **PNG** (through MONAI's ``PILReader``): integer pixels are divided by the largest value of their
  type (8-bit by 255, 16-bit by 65535: a PNG carries no window, so its stored values are its display
  values); RGB(A) becomes luminance (ITU-R BT.601, the DICOM colour policy of ``LoadDicomImage``;
  alpha is dropped).
* **NIfTI** (``.nii`` / ``.nii.gz``, through MONAI's ``NibabelReader``): a 2D image, array axes
  ``(rows, columns)`` as the demo truth masks are written, mapped from its min..max to [0, 1] (the
  ``full_range`` fallback of ``LoadDicomImage`` for an image without a VOI transform). A 3D volume is
  refused: volumes go to slice selection, not to a 2D encoder.
* **Array** (NumPy or torch): ``(H, W)``, ``(1, H, W)`` or ``(3, H, W)`` (luminance), taken as display
  values: floats must lie in [0, 1] (what ``LoadDicomImage`` gives), integers are divided by the
  largest value of their type, as for PNG.

Bad input raises a typed error naming the file: :class:`~monai_medunic.errors.DataError` (field
``format``) for a file of another kind, ``shape`` for a volume given as an image, ``values`` for an
array outside [0, 1]; :class:`~monai_medunic.errors.ShapeMismatchError` for an array of the wrong
dimensionality; DICOM problems as ``LoadDicomImage`` reports them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform
from pydicom.dataset import Dataset

from monai_medunic.errors import DataError, DicomReadError, ShapeMismatchError
from monai_medunic.transforms.dicom import LoadDicomImage
from monai_medunic.transforms.dicom_io import has_dicom_preamble, read_dicom
from monai_medunic.transforms.views import FRONTAL, LATERAL, UNKNOWN, classify_view

__all__ = [
    "CXR_MODALITIES",
    "DICOM_SUFFIXES",
    "LUMINANCE_WEIGHTS",
    "image_format",
    "select_radiograph",
    "array_to_display",
    "LoadRadiograph",
    "LoadRadiographd",
]

logger = logging.getLogger(__name__)

CXR_MODALITIES = ("CR", "DX")
DICOM_SUFFIXES = (".dcm", ".dicom", ".dic", ".ima")
LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601, as LoadDicomImage's rgb_policy="luminance"


def image_format(path: str | os.PathLike) -> str:
    """``"dicom_folder"``, ``"dicom"``, ``"png"`` or ``"nifti"`` for an image path.

    A file without a suffix is DICOM (PACS exports); a file of another suffix is DICOM only when it
    has the ``DICM`` prefix after the 128-byte preamble.

    Raises:
        DataError: the path does not exist, or names a file of another kind (field ``format``).
    """
    p = Path(path)
    if p.is_dir():
        return "dicom_folder"
    if not p.is_file():
        raise DataError("file does not exist", path=p)
    name = p.name.lower()
    if name.endswith(".png"):
        return "png"
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES) or "." not in name:
        return "dicom"
    if has_dicom_preamble(p):
        return "dicom"
    raise DataError(
        f"unsupported image file '{p.suffix}': expected DICOM (.dcm or no suffix), a DICOM folder, PNG or NIfTI (.nii, .nii.gz)",
        path=p,
        field="format",
    )


def _instance_number(ds: Dataset) -> int:
    try:
        return int(ds.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        return 0


def select_radiograph(path: str | os.PathLike) -> tuple[Path, dict[str, str], list[tuple[str, str]]]:
    """The instance to read in a DICOM series / study folder (or the file itself), by the rules of the module docstring.

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


def array_to_display(array: Any, name: str = "image array") -> np.ndarray:
    """An image array as ``(1, H, W)`` float32 display values in [0, 1], by the array rules of the module docstring.

    Args:
        array: ``(H, W)``, ``(1, H, W)`` or ``(3, H, W)`` (channel first), NumPy or torch.
        name: what to call the array (or its file) in an error.

    Raises:
        ShapeMismatchError: another dimensionality or channel count.
        DataError: float values outside [0, 1] or not finite (field ``values``).
    """
    arr = array.detach().cpu().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] not in (1, 3) or min(arr.shape[1:]) < 1:
        raise ShapeMismatchError(
            name, arr.shape, ("1|3", "H", "W"), "a 2D image is (H, W) or channel-first (1 or 3, H, W); a volume goes to select_slices"
        )
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0:
            raise DataError(f"integer pixel values must not be negative, got {arr.min()}", path=name, field="values")
        arr = arr.astype(np.float64) / float(np.iinfo(arr.dtype).max)
    elif np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
            raise DataError(
                f"float pixel values must be display values in [0, 1] (as LoadDicomImage gives), got "
                f"[{np.nanmin(arr):.4g}, {np.nanmax(arr):.4g}]{' with NaN/inf' if not np.isfinite(arr).all() else ''}",
                path=name,
                field="values",
            )
    else:
        raise DataError(f"pixel type {arr.dtype} is not an image type", path=name, field="values")
    if arr.shape[0] == 3:
        w = np.asarray(LUMINANCE_WEIGHTS, dtype=np.float64)[:, None, None]
        arr = (arr.astype(np.float64) * w).sum(0, keepdims=True)
    return np.ascontiguousarray(arr, dtype=np.float32)


def _read_png(path: Path) -> np.ndarray:
    from monai.data import PILReader

    reader = PILReader(reverse_indexing=False)
    try:
        arr, _ = reader.get_data(reader.read(os.fspath(path)))
    except Exception as err:  # PIL's UnidentifiedImageError, truncated files
        raise DataError(f"cannot read the PNG ({type(err).__name__}: {str(err)[:120]})", path=path, field="format") from None
    arr = np.asarray(arr)
    if arr.dtype == np.int32 and arr.size and 0 <= arr.min() and arr.max() <= 65535:  # PIL mode "I" of a 16-bit PNG
        arr = arr.astype(np.uint16)
    if arr.ndim == 3:  # (H, W, C): drop alpha, channel first
        arr = np.moveaxis(arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1], -1, 0)
    return array_to_display(arr, os.fspath(path))


def _read_nifti(path: Path) -> np.ndarray:
    from monai.data import NibabelReader

    reader = NibabelReader(squeeze_non_spatial_dims=True)
    try:
        arr, _ = reader.get_data(reader.read(os.fspath(path)))
    except Exception as err:  # nibabel's ImageFileError, truncated gzip
        raise DataError(f"cannot read the NIfTI file ({type(err).__name__}: {str(err)[:120]})", path=path, field="format") from None
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 3 and 1 in arr.shape:
        arr = arr.reshape([s for s in arr.shape if s != 1] or [1])
    if arr.ndim != 2:
        raise DataError(
            f"a {arr.ndim}D array of shape {tuple(arr.shape)} where a 2D image is expected (volumes go to select_slices)",
            path=path,
            field="shape",
        )
    if not np.isfinite(arr).all():
        raise DataError("the image holds NaN or infinite values", path=path, field="values")
    lo, hi = float(arr.min()), float(arr.max())
    return ((arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr))[None].astype(np.float32)


class LoadRadiograph(Transform):
    """Load a radiograph given as a DICOM file or folder, PNG, NIfTI, pydicom dataset or array (module docstring)
    to a ``(1, H, W)`` float32 :class:`~monai.data.MetaTensor` in [0, 1].

    The meta records ``filename_or_obj`` (the file read; ``None`` for an array), ``source_format``
    and, for a folder, ``source_instance`` (the UIDs, modality and view of the instance chosen).

    Args:
        dicom_options: keyword arguments of :class:`~monai_medunic.transforms.dicom.LoadDicomImage`;
            ``frame`` defaults to 0 (the first frame of a multi-frame object), so the output always has one channel.
    """

    def __init__(self, **dicom_options: Any) -> None:
        dicom_options.setdefault("frame", 0)
        self.dicom = LoadDicomImage(**dicom_options)

    def __call__(self, data: Any) -> MetaTensor:  # type: ignore[override]
        if isinstance(data, Dataset):
            return self._dicom(data, "dicom_dataset")
        if isinstance(data, (str, os.PathLike)):
            path = Path(data)
            kind = image_format(path)
            if kind == "dicom_folder":
                chosen, source, _ = select_radiograph(path)
                img = self._dicom(chosen, kind)
                img.meta["source_instance"] = source
                return img
            if kind == "dicom":
                return self._dicom(path, kind)
            arr = _read_png(path) if kind == "png" else _read_nifti(path)
            return MetaTensor(torch.from_numpy(arr), meta={"filename_or_obj": os.fspath(path), "source_format": kind})
        if isinstance(data, (np.ndarray, torch.Tensor)):
            arr = array_to_display(data)
            return MetaTensor(torch.from_numpy(arr), meta={"filename_or_obj": None, "source_format": "array"})
        raise DataError(
            f"an image must be a DICOM file or folder, a PNG or NIfTI path, a pydicom Dataset or an array, got {type(data).__name__}",
            field="image",
        )

    def _dicom(self, source: Any, kind: str) -> MetaTensor:
        img = self.dicom(source)
        if img.shape[0] != 1:  # frame=None was asked for: keep the first frame, as training does
            img = img[:1]
        img.meta["source_format"] = kind
        return img


class LoadRadiographd(MapTransform):
    """Dictionary form of :class:`LoadRadiograph`: replaces each key's image (path, dataset or array) by the loaded image."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **dicom_options: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadRadiograph(**dicom_options)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # type: ignore[override]
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
