"""CT / MR volumes: a DICOM series or a NIfTI file -> a channel-first 3D MetaTensor in scanner units (HU for CT).

UniMedI (unified 2D/3D pre-training) consumes CT volumes next to radiographs. The loaders here return
``(1, X, Y, Z)`` float32 tensors in MONAI's convention: X runs along the image columns, Y along the
rows, Z along the slices, and the affine maps voxel indices to RAS millimetres (``meta["space"] =
"RAS"``), like ``monai.transforms.LoadImage`` with its default readers.

* :func:`read_dicom_series`: groups a folder (or list) of files by ``SeriesInstanceUID``, sorts the
  slices by their position along the slice normal (``ImagePositionPatient`` projected on the cross
  product of the ``ImageOrientationPatient`` direction cosines; ``InstanceNumber`` when positions are
  missing), applies each slice's Modality LUT (``RescaleSlope`` / ``RescaleIntercept`` -> HU for CT)
  and builds the affine from the geometry (DICOM LPS converted to RAS).
* :func:`read_nifti_volume`: nibabel, with its scaling (``scl_slope`` / ``scl_inter``) applied.
* :class:`HUWindow`: maps HU to [0, 1] with a window preset (``lung``: L -600 / W 1500,
  ``mediastinum``: L 50 / W 350, ...) or an explicit ``(level, width)``; several windows become
  several channels.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, Transform

from monai_medunic.errors import ConfigurationError, DataError, DicomReadError, VolumeReadError

__all__ = [
    "HU_WINDOW_PRESETS",
    "read_dicom_series",
    "read_nifti_volume",
    "LoadDicomSeriesVolume",
    "LoadDicomSeriesVolumed",
    "LoadNiftiVolume",
    "LoadNiftiVolumed",
    "HUWindow",
    "HUWindowd",
]

logger = logging.getLogger(__name__)

# name -> (level, width) in HU.
HU_WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "liver": (60.0, 150.0),
}

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _series_files(source: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[list[str], bool, str]:
    if isinstance(source, (str, os.PathLike)):
        root = os.fspath(source)
        if not os.path.exists(root):
            raise VolumeReadError("DICOM series path does not exist", path=root)
        if os.path.isdir(root):
            files = sorted(
                os.path.join(dirpath, f) for dirpath, _, names in os.walk(root) for f in names if not f.startswith(".")
            )
            if not files:
                raise VolumeReadError("folder holds no files", path=root)
            return files, True, root
        return [root], False, root
    files = [os.fspath(f) for f in source]
    if not files:
        raise VolumeReadError("empty list of DICOM files")
    return files, False, os.path.dirname(files[0]) or "."


def read_dicom_series(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    series_uid: str | None = None,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read one DICOM series as ``(X, Y, Z)`` float32 in scanner units (HU for CT), RAS affine, meta.

    Args:
        source: a folder (searched recursively; non-DICOM files are skipped and counted) or a list of
            files (each must be DICOM).
        series_uid: the series to read when the source holds several.

    Raises:
        VolumeReadError: no DICOM image, several series and no ``series_uid``, inconsistent slices.
        DicomReadError: a listed file is not DICOM or cannot be decoded.
    """
    from monai_medunic.transforms.dicom import _check_decoder, _modality_lut, _scrub, read_dicom

    files, is_folder, where = _series_files(source)
    skipped: Counter[str] = Counter()
    by_series: dict[str, list[tuple[str, Any]]] = defaultdict(list)
    for f in files:
        try:
            ds = read_dicom(f, header_only=True)
        except DicomReadError:
            if not is_folder:
                raise
            skipped["not_dicom"] += 1
            continue
        if "Rows" not in ds or "Columns" not in ds:
            if not is_folder:
                raise VolumeReadError("not an image slice (no Rows/Columns)", path=f, field="PixelData")
            skipped["not_an_image"] += 1
            continue
        by_series[str(ds.get("SeriesInstanceUID", ""))].append((f, ds))
    if skipped:
        logger.info("read_dicom_series %s: skipped %s", where, dict(skipped))
    if not by_series:
        raise VolumeReadError("no DICOM image slices found", path=where)
    if series_uid is not None:
        if series_uid not in by_series:
            raise VolumeReadError(f"series {series_uid} not found; present: {sorted(by_series)}", path=where)
        slices = by_series[series_uid]
    elif len(by_series) > 1:
        raise VolumeReadError(
            f"{len(by_series)} series found ({sorted(by_series)}); pass series_uid to choose one", path=where
        )
    else:
        slices = next(iter(by_series.values()))

    first = slices[0][1]
    iop = first.get("ImageOrientationPatient")
    if iop is not None and len(iop) == 6:
        row_dir = np.asarray([float(v) for v in iop[:3]])
        col_dir = np.asarray([float(v) for v in iop[3:]])
    else:
        row_dir, col_dir = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    normal = np.cross(row_dir, col_dir)

    def position(ds: Any) -> np.ndarray | None:
        ipp = ds.get("ImagePositionPatient")
        return np.asarray([float(v) for v in ipp]) if ipp is not None and len(ipp) == 3 else None

    have_pos = all(position(ds) is not None for _, ds in slices)
    if have_pos:
        slices.sort(key=lambda fd: float(np.dot(position(fd[1]), normal)))
        sort_key = "ImagePositionPatient"
    else:
        slices.sort(key=lambda fd: int(fd[1].get("InstanceNumber", 0) or 0))
        sort_key = "InstanceNumber"

    shape = (int(first.Rows), int(first.Columns))
    planes = []
    for f, _ in slices:
        ds = read_dicom(f)
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise VolumeReadError(f"slice size {(int(ds.Rows), int(ds.Columns))} differs from {shape}", path=f, field="Rows")
        _check_decoder(ds, f)
        try:
            stored = ds.pixel_array
        except Exception as err:
            raise DicomReadError(
                _scrub(f"cannot decode the pixel data ({type(err).__name__}: {err})", ds), path=f, field="PixelData"
            ) from None
        if stored.ndim != 2:
            raise VolumeReadError(f"expected one grayscale frame per file, got shape {stored.shape}", path=f)
        values, _ = _modality_lut(stored, ds)
        planes.append(values.astype(np.float32))
    vol = np.stack(planes, axis=0)  # (Z, rows, cols)
    vol = np.ascontiguousarray(np.transpose(vol, (2, 1, 0)))  # (X=cols, Y=rows, Z)

    ps = first.get("PixelSpacing")
    row_spacing, col_spacing = (float(ps[0]), float(ps[1])) if ps is not None and len(ps) == 2 else (1.0, 1.0)
    if have_pos and len(slices) > 1:
        p0, p1 = position(slices[0][1]), position(slices[-1][1])
        step = (p1 - p0) / (len(slices) - 1)
    else:
        thickness = float(first.get("SliceThickness", 1.0) or 1.0)
        step = normal * thickness
    origin = position(slices[0][1]) if have_pos else np.zeros(3)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * col_spacing
    affine_lps[:3, 1] = col_dir * row_spacing
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = origin
    affine = _LPS_TO_RAS @ affine_lps
    spacing = (col_spacing, row_spacing, float(np.linalg.norm(step)))
    modality = str(first.get("Modality", "")) or None
    meta = {
        "filename_or_obj": where,
        "space": "RAS",
        "spacing": spacing,
        "modality": modality,
        "unit": "HU" if modality == "CT" else "modality units",
        "num_slices": len(slices),
        "sort_key": sort_key,
        "series_instance_uid": str(first.get("SeriesInstanceUID", "")) or None,
        "study_instance_uid": str(first.get("StudyInstanceUID", "")) or None,
        "skipped_files": dict(skipped),
        "spatial_shape": vol.shape,
        "original_channel_dim": "no_channel",
    }
    return vol, affine, meta


def read_nifti_volume(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a NIfTI file (``.nii`` / ``.nii.gz``) as float32 ``(X, Y, Z[, T])`` with nibabel's RAS affine.

    Raises:
        VolumeReadError: missing, not NIfTI, or truncated.
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    p = os.fspath(path)
    if not os.path.isfile(p):
        raise VolumeReadError("NIfTI file does not exist", path=p)
    try:
        img = nib.load(p)
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except ImageFileError:
        raise VolumeReadError("not a NIfTI file nibabel can read", path=p) from None
    except Exception as err:  # truncated gzip / data shorter than the header says
        raise VolumeReadError(f"truncated or corrupt NIfTI file ({type(err).__name__})", path=p) from None
    if data.ndim not in (3, 4):
        raise VolumeReadError(f"expected a 3D or 4D volume, got {data.ndim}D", path=p)
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    meta = {
        "filename_or_obj": p,
        "space": "RAS",
        "spacing": zooms,
        "unit": "HU or scanner units (as stored)",
        "spatial_shape": data.shape[:3],
        "original_channel_dim": -1 if data.ndim == 4 else "no_channel",
    }
    return data, np.asarray(img.affine, dtype=np.float64), meta


def _to_metatensor(vol: np.ndarray, affine: np.ndarray, meta: dict[str, Any]) -> MetaTensor:
    arr = vol[np.newaxis] if vol.ndim == 3 else np.moveaxis(vol, -1, 0)
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), affine=torch.as_tensor(affine), meta=meta)


class LoadDicomSeriesVolume(Transform):
    """DICOM series folder (or file list) -> ``(1, X, Y, Z)`` MetaTensor in HU, RAS affine (UniMedI's 3D input).

    Args:
        series_uid: the series to read when a folder holds several.
    """

    def __init__(self, series_uid: str | None = None) -> None:
        self.series_uid = series_uid

    def __call__(self, data: str | os.PathLike | Sequence[str | os.PathLike]) -> MetaTensor:  # type: ignore[override]
        return _to_metatensor(*read_dicom_series(data, self.series_uid))


class LoadDicomSeriesVolumed(MapTransform):
    """Dictionary form of :class:`LoadDicomSeriesVolume`."""

    def __init__(self, keys: KeysCollection, series_uid: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadDicomSeriesVolume(series_uid)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # type: ignore[override]
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


class LoadNiftiVolume(Transform):
    """NIfTI file -> channel-first MetaTensor (``(1, X, Y, Z)``, or ``(T, X, Y, Z)`` for 4D) with nibabel's affine."""

    def __call__(self, data: str | os.PathLike) -> MetaTensor:  # type: ignore[override]
        return _to_metatensor(*read_nifti_volume(data))


class LoadNiftiVolumed(MapTransform):
    """Dictionary form of :class:`LoadNiftiVolume`."""

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadNiftiVolume()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # type: ignore[override]
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


def _resolve_windows(windows: str | tuple[float, float] | Sequence[Any]) -> list[tuple[str, float, float]]:
    if isinstance(windows, str) or (
        isinstance(windows, (tuple, list)) and len(windows) == 2 and all(isinstance(v, (int, float)) for v in windows)
    ):
        windows = [windows]
    out: list[tuple[str, float, float]] = []
    for w in windows:  # type: ignore[union-attr]
        if isinstance(w, str):
            if w not in HU_WINDOW_PRESETS:
                raise ConfigurationError(f"unknown HU window preset '{w}'; presets: {sorted(HU_WINDOW_PRESETS)}")
            level, width = HU_WINDOW_PRESETS[w]
            out.append((w, level, width))
        else:
            level, width = (float(w[0]), float(w[1]))
            if width <= 0:
                raise ConfigurationError(f"HU window width must be > 0, got {width}")
            out.append((f"L{level:g}/W{width:g}", level, width))
    if not out:
        raise ConfigurationError("HUWindow needs at least one window")
    return out


class HUWindow(Transform):
    """Map HU to [0, 1] through one or more windows: ``(x - (L - W/2)) / W``, clipped.

    Args:
        windows: a preset name (:data:`HU_WINDOW_PRESETS`: ``lung``, ``mediastinum``, ...), a
            ``(level, width)`` pair, or a list of these. Each window maps the input's single
            channel to one output channel, so ``["lung", "mediastinum"]`` gives two channels.

    Raises:
        ConfigurationError: an unknown preset or a non-positive width.
        DataError: the input has more than one channel while several windows are asked for.
    """

    def __init__(self, windows: str | tuple[float, float] | Sequence[Any] = "lung") -> None:
        self.windows = _resolve_windows(windows)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        if len(self.windows) > 1 and img.shape[0] != 1:
            raise DataError(f"HUWindow with {len(self.windows)} windows needs a 1-channel input, got {tuple(img.shape)}")
        chans = [((img - (level - width / 2.0)) / width).clamp(0.0, 1.0) for _, level, width in self.windows]
        out = torch.cat(chans, dim=0) if len(chans) > 1 else chans[0]
        if isinstance(out, MetaTensor):
            out.meta["hu_window"] = [name for name, _, _ in self.windows]
        return out


class HUWindowd(MapTransform):
    """Dictionary form of :class:`HUWindow`."""

    def __init__(
        self, keys: KeysCollection, windows: str | tuple[float, float] | Sequence[Any] = "lung", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.window = HUWindow(windows)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # type: ignore[override]
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window(d[key])
        return d
