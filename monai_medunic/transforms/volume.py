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
  The series must be complete and consistent: duplicated or missing slice positions, mixed
  orientations and inconsistent pixel spacing raise :class:`~monai_medunic.errors.VolumeReadError`
  naming the folder and the attribute. :class:`DicomSeriesVolumeReader` offers it as a MONAI
  ``ImageReader`` (``LoadImage(reader=DicomSeriesVolumeReader())``).
* NIfTI files are read by MONAI's own ``NibabelReader`` (scaling applied, RAS affine); the loaders
  here add this package's typed errors.
* :func:`hu_window` / :func:`hu_windowd`: MONAI's ``ScaleIntensityRange(d)`` set to a window preset
  (``lung``: L -600 / W 1500, ``mediastinum``: L 50 / W 350, ...) or an explicit ``(level, width)``.
  Several windows as channels are MONAI's ``CopyItemsd`` + one :func:`hu_windowd` per copy +
  ``ConcatItemsd``.
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
from monai.data import ImageReader, MetaTensor, NibabelReader
from monai.transforms import MapTransform, ScaleIntensityRange, ScaleIntensityRanged, Transform
from pydicom.multival import MultiValue

from monai_medunic.errors import ConfigurationError, DicomReadError, VolumeReadError
from monai_medunic.transforms.dicom_io import MAX_PIXELS

__all__ = [
    "HU_WINDOW_PRESETS",
    "read_dicom_series",
    "DicomSeriesVolumeReader",
    "LoadDicomSeriesVolume",
    "LoadDicomSeriesVolumed",
    "LoadNiftiVolume",
    "LoadNiftiVolumed",
    "LoadVolume",
    "LoadVolumed",
    "hu_window",
    "hu_windowd",
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


def _numbers(f: str, ds: Any, keyword: str, count: int | None) -> tuple[float, ...] | None:
    """A numeric multi-valued attribute of a slice (``None`` when absent).

    Raises:
        VolumeReadError: unreadable, not finite, or not ``count`` values; names the file and the attribute.
    """
    try:
        value = ds.get(keyword)
        if value is None or value == "":
            return None
        values = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
        out = tuple(float(v) for v in values)
        if (count is not None and len(out) != count) or not all(np.isfinite(out)):
            raise ValueError
    except Exception:
        raise VolumeReadError(f"{keyword} is not {count or 'a list of'} finite number(s)", path=f, field=keyword) from None
    return out


def _int_value(f: str, ds: Any, keyword: str, default: int) -> int:
    from monai_medunic.transforms.dicom_io import header_value

    try:
        return header_value(ds, keyword, f, default=default)
    except DicomReadError as err:
        raise VolumeReadError(err.reason, path=f, field=keyword) from None


def slice_uid(ds: Any, keyword: str) -> str | None:
    try:
        return str(ds.get(keyword, "") or "").strip() or None
    except Exception:
        return None


def _check_series_geometry(slices: list[tuple[str, Any]], where: str, position: Any, normal: np.ndarray) -> None:
    """A volume needs one orientation, one pixel spacing, and evenly spaced, distinct slice positions."""
    orientations = {tuple(round(v, 4) for v in (_numbers(f, ds, "ImageOrientationPatient", 6) or ())) for f, ds in slices}
    if len(orientations) > 1:
        raise VolumeReadError(f"the series mixes {len(orientations)} slice orientations", path=where, field="ImageOrientationPatient")
    spacings = {tuple(round(v, 4) for v in (_numbers(f, ds, "PixelSpacing", 2) or ())) for f, ds in slices}
    if len(spacings) > 1:
        raise VolumeReadError(f"the slices have different pixel spacings {sorted(spacings)}", path=where, field="PixelSpacing")
    if position is None:
        numbers = [_int_value(f, ds, "InstanceNumber", 0) for f, ds in slices]
        if len(set(numbers)) < len(numbers):
            raise VolumeReadError("duplicated slices: the same InstanceNumber occurs twice", path=where, field="InstanceNumber")
        return
    z = np.asarray([float(np.dot(position(ds), normal)) for _, ds in slices])
    if len(z) < 2:
        return
    steps = np.diff(z)
    if (steps < 1e-3).any():
        i = int(np.argmax(steps < 1e-3))
        raise VolumeReadError(f"duplicated slices: {os.path.basename(slices[i][0])} and {os.path.basename(slices[i + 1][0])} "
                              f"share the position {z[i]:.3f} mm", path=where, field="ImagePositionPatient")
    median = float(np.median(steps))
    if (np.abs(steps - median) > 0.25 * median).any():
        i = int(np.argmax(np.abs(steps - median) > 0.25 * median))
        kind = "missing slices" if steps[i] > median else "inconsistent slice spacing"
        raise VolumeReadError(f"{kind}: the gap after {os.path.basename(slices[i][0])} is {steps[i]:.3f} mm, the series' "
                              f"spacing is {median:.3f} mm", path=where, field="ImagePositionPatient")


def read_dicom_series(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    series_uid: str | None = None,
    max_pixels: int | None = MAX_PIXELS,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read one DICOM series as ``(X, Y, Z)`` float32 in scanner units (HU for CT), RAS affine, meta.

    Args:
        source: a folder (searched recursively; non-DICOM files are skipped and counted) or a list of
            files (each must be DICOM).
        series_uid: the series to read when the source holds several.
        max_pixels: the voxel budget of the volume, checked on the headers before any slice is decoded
            (default :data:`~monai_medunic.transforms.dicom_io.MAX_PIXELS`; 2**28 holds 1000 slices of 512 x 512;
            ``None``: no limit).

    Raises:
        VolumeReadError: no DICOM image, several series and no ``series_uid``, inconsistent slices.
        DicomReadError: a listed file is not DICOM or cannot be decoded.
    """
    from monai_medunic.transforms.dicom import _modality_lut
    from monai_medunic.transforms.dicom_io import check_pixel_header, decode_pixels, read_dicom

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
        try:
            uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        except Exception:
            uid = ""
        if not uid:
            raise VolumeReadError("the slice has no readable SeriesInstanceUID, so its series is unknown", path=f,
                                  field="SeriesInstanceUID")
        by_series[uid].append((f, ds))
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
            f"{len(by_series)} series found ({sorted(by_series)}); pass series_uid to choose one", path=where,
            field="SeriesInstanceUID",
        )
    else:
        slices = next(iter(by_series.values()))

    first_file, first = slices[0]
    iop = _numbers(first_file, first, "ImageOrientationPatient", 6)
    if iop is not None:
        row_dir = np.asarray(iop[:3])
        col_dir = np.asarray(iop[3:])
    else:
        row_dir, col_dir = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    normal = np.cross(row_dir, col_dir)
    if not np.linalg.norm(normal) > 1e-3:
        raise VolumeReadError("ImageOrientationPatient's row and column directions are parallel or zero", path=first_file,
                              field="ImageOrientationPatient")
    positions = {f: _numbers(f, ds, "ImagePositionPatient", 3) for f, ds in slices}

    by_id = {id(ds): positions[f] for f, ds in slices}

    def position(ds: Any) -> np.ndarray | None:
        return np.asarray(by_id[id(ds)]) if by_id[id(ds)] is not None else None

    have_pos = all(p is not None for p in positions.values())
    if have_pos:
        slices.sort(key=lambda fd: float(np.dot(positions[fd[0]], normal)))
        sort_key = "ImagePositionPatient"
    else:
        slices.sort(key=lambda fd: _int_value(fd[0], fd[1], "InstanceNumber", 0))
        sort_key = "InstanceNumber"

    _check_series_geometry(slices, where, position if have_pos else None, normal)
    headers = [check_pixel_header(ds, f, None) for f, ds in slices]
    shape = (headers[0].rows, headers[0].columns)
    total = shape[0] * shape[1] * len(slices)
    if max_pixels is not None and total > max_pixels:
        raise VolumeReadError(f"{len(slices)} slices of {shape[0]} x {shape[1]} = {total:,} voxels, above the pixel budget of "
                              f"{max_pixels:,} (pass max_pixels to read larger volumes)", path=where, field="Rows")
    planes = []
    for (f, _), h in zip(slices, headers):
        if (h.rows, h.columns) != shape:
            raise VolumeReadError(f"slice size {(h.rows, h.columns)} differs from {shape}", path=f, field="Rows")
        if h.frames != 1 or h.samples != 1:
            raise VolumeReadError(f"expected one grayscale frame per file, the header has {h.frames} frame(s) of "
                                  f"{h.samples} sample(s)", path=f, field="NumberOfFrames" if h.frames != 1 else "SamplesPerPixel")
        ds = read_dicom(f)
        header = check_pixel_header(ds, f, None)
        if (header.rows, header.columns) != shape:
            raise VolumeReadError(f"slice size {(header.rows, header.columns)} differs from {shape}", path=f, field="Rows")
        stored = decode_pixels(ds, f, header)[0]
        values, _ = _modality_lut(stored, ds, f)
        planes.append(values.astype(np.float32))
    vol = np.stack(planes, axis=0)  # (Z, rows, cols)
    vol = np.ascontiguousarray(np.transpose(vol, (2, 1, 0)))  # (X=cols, Y=rows, Z)

    ps = _numbers(first_file, first, "PixelSpacing", 2)
    row_spacing, col_spacing = ps if ps is not None and min(ps) > 0 else (1.0, 1.0)
    if have_pos and len(slices) > 1:
        p0, p1 = position(slices[0][1]), position(slices[-1][1])
        step = (p1 - p0) / (len(slices) - 1)
    else:
        thickness = (_numbers(first_file, first, "SliceThickness", 1) or (1.0,))[0] or 1.0
        step = normal * thickness
    origin = position(slices[0][1]) if have_pos else np.zeros(3)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * col_spacing
    affine_lps[:3, 1] = col_dir * row_spacing
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = origin
    affine = _LPS_TO_RAS @ affine_lps
    spacing = (col_spacing, row_spacing, float(np.linalg.norm(step)))
    try:
        modality = str(first.get("Modality", "") or "").strip() or None
    except Exception:
        modality = None
    meta = {
        "filename_or_obj": where,
        "space": "RAS",
        "spacing": spacing,
        "modality": modality,
        "unit": "HU" if modality == "CT" else "modality units",
        "num_slices": len(slices),
        "sort_key": sort_key,
        "series_instance_uid": slice_uid(first, "SeriesInstanceUID"),
        "study_instance_uid": slice_uid(first, "StudyInstanceUID"),
        "skipped_files": dict(skipped),
        "spatial_shape": vol.shape,
        "original_channel_dim": "no_channel",
    }
    return vol, affine, meta


def _to_metatensor(vol: np.ndarray, affine: np.ndarray, meta: dict[str, Any]) -> MetaTensor:
    arr = vol[np.newaxis] if vol.ndim == 3 else np.moveaxis(vol, -1, 0)
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), affine=torch.as_tensor(affine), meta=meta)


class DicomSeriesVolumeReader(ImageReader):
    """:func:`read_dicom_series` as a MONAI :class:`~monai.data.ImageReader`: ``LoadImage(reader=DicomSeriesVolumeReader())``
    on a series folder (or a list of its files) gives ``(X, Y, Z)`` in HU with the RAS affine and
    ``original_channel_dim="no_channel"`` (``ensure_channel_first=True`` adds the channel).

    ``read`` only resolves the input; the series is read in ``get_data``, so its typed errors reach
    the caller (``LoadImage`` turns an exception of ``read`` into a generic ``RuntimeError``).

    Args:
        series_uid: the series to read when the source holds several.
    """

    def __init__(self, series_uid: str | None = None) -> None:
        super().__init__()
        self.series_uid = series_uid

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return len(names) == 1 and os.path.isdir(names[0])

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> Any:
        if isinstance(data, (str, os.PathLike)):
            return data
        data = list(data)
        return data[0] if len(data) == 1 else data

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        vol, affine, meta = read_dicom_series(img, self.series_uid)
        meta["affine"] = affine
        meta["original_affine"] = affine.copy()
        return vol, meta


def _to_metatensor(vol: np.ndarray, meta: dict[str, Any]) -> MetaTensor:
    arr = vol[np.newaxis] if vol.ndim == 3 else np.moveaxis(vol, -1, 0)  # (X, Y, Z) or (X, Y, Z, T)
    affine = torch.as_tensor(meta.pop("affine"))
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)), affine=affine, meta=meta)


class LoadDicomSeriesVolume(Transform):
    """DICOM series folder (or file list) -> ``(1, X, Y, Z)`` MetaTensor in HU with a RAS affine
    (:class:`DicomSeriesVolumeReader`, channel first)."""

    def __init__(self, series_uid: str | None = None) -> None:
        self.reader = DicomSeriesVolumeReader(series_uid)

    def __call__(self, data: str | os.PathLike | Sequence[str | os.PathLike]) -> MetaTensor:  # type: ignore[override]
        return _to_metatensor(*self.reader.get_data(self.reader.read(data)))


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
    """NIfTI file -> channel-first float32 MetaTensor (``(1, X, Y, Z)``, or ``(T, X, Y, Z)`` for 4D) through
    MONAI's ``NibabelReader`` (scaling applied, RAS affine), with a typed error naming a bad file.

    Raises:
        VolumeReadError: the file is missing, not NIfTI, truncated, or not 3D/4D.
    """

    def __init__(self) -> None:
        self.reader = NibabelReader()

    def __call__(self, data: str | os.PathLike) -> MetaTensor:  # type: ignore[override]
        p = os.fspath(data)
        if not os.path.isfile(p):
            raise VolumeReadError("NIfTI file does not exist", path=p)
        try:
            vol, meta = self.reader.get_data(self.reader.read(p))
        except Exception as err:  # nibabel: not NIfTI, truncated gzip, data shorter than the header says
            kind = "not a NIfTI file nibabel can read" if "ImageFileError" in type(err).__name__ else \
                f"truncated or corrupt NIfTI file ({type(err).__name__})"
            raise VolumeReadError(kind, path=p) from None
        if vol.ndim not in (3, 4):
            raise VolumeReadError(f"expected a 3D or 4D volume, got {vol.ndim}D", path=p)
        meta["filename_or_obj"] = p
        meta["spacing"] = tuple(float(v) for v in meta["pixdim"][1:4])  # as read_dicom_series records it
        return _to_metatensor(np.asarray(vol, dtype=np.float32), meta)


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


def _is_nifti(path: str) -> bool:
    return path.lower().endswith((".nii", ".nii.gz"))


class LoadVolume(Transform):
    """A volume record's ``image`` -> ``(C, X, Y, Z)`` MetaTensor in scanner units: a NIfTI file
    (``.nii`` / ``.nii.gz``, :class:`LoadNiftiVolume`), or a DICOM series given as a folder, a list of
    its files or one file (:class:`LoadDicomSeriesVolume`; one file gives a one-slice volume, which a
    volume pipeline then refuses as too thin, naming the file). A manifest's 3D records may mix both.

    Raises:
        VolumeReadError: the path does not exist, or the series / file cannot be read (names the path).
    """

    def __init__(self, series_uid: str | None = None) -> None:
        self.series = LoadDicomSeriesVolume(series_uid)
        self.nifti = LoadNiftiVolume()

    def __call__(self, data: str | os.PathLike | Sequence[str | os.PathLike]) -> MetaTensor:  # type: ignore[override]
        if isinstance(data, (str, os.PathLike)) and _is_nifti(os.fspath(data)):
            return self.nifti(data)
        return self.series(data)


class LoadVolumed(MapTransform):
    """Dictionary form of :class:`LoadVolume`."""

    def __init__(self, keys: KeysCollection, series_uid: str | None = None, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadVolume(series_uid)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # type: ignore[override]
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d


def _window(window: str | Sequence[float]) -> tuple[float, float]:
    if isinstance(window, str):
        if window not in HU_WINDOW_PRESETS:
            raise ConfigurationError(f"unknown HU window preset '{window}'; presets: {sorted(HU_WINDOW_PRESETS)}")
        return HU_WINDOW_PRESETS[window]
    level, width = (float(window[0]), float(window[1]))
    if width <= 0:
        raise ConfigurationError(f"HU window width must be > 0, got {width}")
    return level, width


def hu_window(window: str | Sequence[float] = "lung") -> ScaleIntensityRange:
    """MONAI's ``ScaleIntensityRange`` mapping the HU window ``[L - W/2, L + W/2]`` to [0, 1], clipped.

    Args:
        window: a preset name (:data:`HU_WINDOW_PRESETS`) or a ``(level, width)`` pair.

    Raises:
        ConfigurationError: an unknown preset or a non-positive width.
    """
    level, width = _window(window)
    return ScaleIntensityRange(a_min=level - width / 2.0, a_max=level + width / 2.0, b_min=0.0, b_max=1.0, clip=True)


def hu_windowd(keys: KeysCollection, window: str | Sequence[float] = "lung", allow_missing_keys: bool = False) -> ScaleIntensityRanged:
    """Dictionary form of :func:`hu_window` (MONAI's ``ScaleIntensityRanged``)."""
    level, width = _window(window)
    return ScaleIntensityRanged(keys, a_min=level - width / 2.0, a_max=level + width / 2.0, b_min=0.0, b_max=1.0, clip=True,
                                allow_missing_keys=allow_missing_keys)
