"""DICOM-aware 2D image loading: stored values -> display values in [0, 1], as a radiologist sees them.

Med-UniC (Sec. 4, "Dataset") pre-trains on MIMIC-CXR and PadChest radiographs, which hospitals store
as DICOM. Loading a radiograph correctly means applying the DICOM grayscale pipeline (PS3.3 C.11 and
PS3.4 N.2) in the standard order:

1. **Modality LUT** (PS3.3 C.11.1): *Rescale Slope* / *Rescale Intercept*, or a *Modality LUT
   Sequence* (also read from the shared functional groups of enhanced multi-frame objects).
2. **VOI LUT** (PS3.3 C.11.2): a *VOI LUT Sequence* item, or *Window Center* / *Window Width* (one of
   several values, chosen by ``voi_index``) with *VOI LUT Function* ``LINEAR`` / ``LINEAR_EXACT`` /
   ``SIGMOID`` (PS3.3 C.11.2.1.2-3). The window is mapped to [0, 1] directly. When the object has no
   VOI transform, ``voi_fallback`` says what to do: ``"full_range"`` (the data's min..max) or
   ``"percentile"`` (clip to the ``percentiles`` of the data, robust to burned-in markers).
3. **Polarity**: *Photometric Interpretation* ``MONOCHROME1`` (low values bright) is inverted, and so
   is an image whose *Presentation LUT Shape* is ``INVERSE``. The DX IOD requires ``INVERSE`` on every
   ``MONOCHROME1`` image (PS3.3 C.8.11.6.1.2), so there it restates the same inversion and is applied
   once, not twice. After loading, bright always means dense (bone, heart), whatever was stored.

Colour images (``RGB``, ``YBR_*``, ``PALETTE COLOR``) have no grayscale pipeline; they are scaled by
their bit depth and reduced to one channel by ``rgb_policy``: ``"luminance"`` (ITU-R BT.601 weights
0.299 R + 0.587 G + 0.114 B, the default), ``"mean"``, or ``"error"`` (raise).

Multi-frame objects: with ``frame=None`` every frame becomes one channel, ``(F, H, W)``; with
``frame=k`` only frame ``k`` is returned, ``(1, H, W)``. Single-frame images are ``(1, H, W)``.
Automatic VOI fallbacks are computed over all frames jointly, so frames stay comparable.

Compressed transfer syntaxes (JPEG baseline / extended / lossless, JPEG-LS, JPEG 2000, HTJ2K, RLE)
decode through pydicom's pixel data handlers. When the decoder's package is missing the loader raises
:class:`~monai_medunic.errors.MissingDecoderError` naming the pip package to install.

The output is a :class:`monai.data.MetaTensor`, float32, whose meta holds the pixel spacing, the
orientation, the photometric interpretation, what was applied (``"modality_lut"``, ``"voi"``,
``"inverted"``), the view (:func:`monai_medunic.transforms.views.classify_view`) and the SOP / Study /
Series instance UIDs. Patient identifiers (name, ID, birth date) are never copied into the meta and
never appear in an error message.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.data import ImageReader, MetaTensor
from monai.data.utils import is_supported_format
from monai.transforms import MapTransform, Transform
from pydicom.dataset import Dataset
from pydicom.uid import UID

from monai_medunic.errors import ConfigurationError, DicomReadError, NotAnImageError
from monai_medunic.transforms.dicom_io import (
    MAX_PIXELS,
    check_pixel_header,
    decode_pixels,
    header_value,
    read_dicom,
    source_path,
)

__all__ = [
    "VOI_FALLBACKS",
    "RGB_POLICIES",
    "read_dicom",
    "dicom_to_array",
    "dicom_to_metatensor",
    "window_to_unit",
    "GrayscaleDicomReader",
    "LoadDicomImage",
    "LoadDicomImaged",
]

logger = logging.getLogger(__name__)

_STORAGE_PREFIX_SR = "1.2.840.10008.5.1.4.1.1.88."

VOI_FALLBACKS: tuple[str, ...] = ("full_range", "percentile")
RGB_POLICIES: tuple[str, ...] = ("luminance", "mean", "error")

def _functional_item(ds: Dataset, sequence: str) -> Dataset | None:
    """First item of ``sequence`` inside the shared functional groups (enhanced multi-frame objects)."""
    shared = ds.get("SharedFunctionalGroupsSequence")
    if not shared:
        return None
    seq = shared[0].get(sequence)
    return seq[0] if seq else None


def _attr(ds: Dataset, keyword: str, fg_sequence: str | None = None, path: str | None = None) -> Any:
    """``keyword`` of ``ds`` or of the shared functional groups' ``fg_sequence`` item.

    Raises:
        DicomReadError: the element (or the functional group sequence) cannot be decoded; names the attribute.
    """
    try:
        if keyword in ds:
            return ds.get(keyword)
        if fg_sequence is not None:
            item = _functional_item(ds, fg_sequence)
            if item is not None and keyword in item:
                return item.get(keyword)
    except Exception as err:  # pydicom decodes elements on access: a garbled one fails here
        raise DicomReadError(f"{keyword} cannot be decoded ({type(err).__name__})", path=path, field=keyword) from None
    return None


def _as_list(value: Any) -> list[float]:
    """Numbers of a DS / IS / US value (one or several); ``ValueError`` on text or non-finite values."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    values = list(value) if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
    if any(isinstance(v, (bytes, bytearray)) for v in values):
        raise ValueError("bytes where numbers are expected")
    out = [float(v) for v in values]
    if not all(np.isfinite(out)):
        raise ValueError("non-finite value")
    return out


def _optional_numbers(ds: Dataset, keyword: str, fg_sequence: str | None, path: str | None, notes: list[str]) -> list[float]:
    """An optional numeric attribute that only describes the image (spacing, orientation, a window):
    unreadable -> ignored with a note (recorded in the meta and logged), never a wrong number."""
    try:
        return _as_list(_attr(ds, keyword, fg_sequence, path))
    except (DicomReadError, TypeError, ValueError, OverflowError):
        notes.append(f"{keyword} ignored: not a list of finite numbers")
        return []


def window_to_unit(arr: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """Map a window (PS3.3 C.11.2.1.2 and C.11.2.1.3) to [0, 1].

    ``LINEAR``: ``x <= c - 0.5 - (w - 1) / 2`` -> 0, ``x > c - 0.5 + (w - 1) / 2`` -> 1, otherwise
    ``((x - (c - 0.5)) / (w - 1) + 0.5)`` (needs ``w >= 1``). ``LINEAR_EXACT``: ``x <= c - w / 2`` -> 0,
    ``x > c + w / 2`` -> 1, otherwise ``(x - c) / w + 0.5``. ``SIGMOID``: ``1 / (1 + exp(-4 (x - c) / w))``.

    Args:
        arr: values after the modality LUT.
        center: *Window Center*.
        width: *Window Width* (> 0; >= 1 for ``LINEAR``).
        function: *VOI LUT Function*.

    Raises:
        ConfigurationError: an unknown function, or a width the function does not allow.
    """
    function = (function or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        raise ConfigurationError(f"unknown VOI LUT Function '{function}'; allowed: LINEAR, LINEAR_EXACT, SIGMOID")
    if (function == "LINEAR" and not width >= 1) or not width > 0:
        raise ConfigurationError(f"{function} window needs width {'>= 1' if function == 'LINEAR' else '> 0'}, got {width}")
    out = np.array(arr, dtype=np.float32, copy=True)
    if function == "SIGMOID":
        out -= np.float32(center)
        out *= np.float32(-4.0 / width)
        np.clip(out, -80.0, 80.0, out=out)
        np.exp(out, out=out)
        out += np.float32(1.0)
        return np.reciprocal(out, out=out)
    if function == "LINEAR" and width == 1:
        return (out > center - 0.5).astype(np.float32)
    if function == "LINEAR":
        out -= np.float32(center - 0.5)
        out *= np.float32(1.0 / (width - 1))
    else:
        out -= np.float32(center)
        out *= np.float32(1.0 / width)
    out += np.float32(0.5)
    np.minimum(out, np.float32(1.0), out=out)
    np.maximum(out, np.float32(0.0), out=out)
    return out


def _lut_values(item: Dataset, ds: Dataset, sequence: str = "VOILUTSequence", path: str | None = None) -> tuple[np.ndarray, int, int]:
    """LUT Descriptor (entries, first mapped value, bits) and LUT Data of a Modality / VOI LUT item.

    Raises:
        DicomReadError: a descriptor that is not three numbers (entries, first value, 1..16 bits), or
            LUT Data that is missing, unreadable or empty; names the sequence.
    """
    try:
        desc = [int(v) for v in item.LUTDescriptor]
        if len(desc) != 3 or not 1 <= desc[2] <= 16:
            raise ValueError
        n_entries = desc[0] or 2**16
        first = desc[1]
        bits = desc[2]
        elem = item["LUTData"]
        if elem.VR == "OW" or isinstance(elem.value, (bytes, bytearray)):
            little = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", UID("1.2.840.10008.1.2.1"))
            endian = ">" if UID(str(little)) == pydicom.uid.ExplicitVRBigEndian else "<"
            raw = bytes(elem.value)
            data = np.frombuffer(raw[: len(raw) // 2 * 2], dtype=f"{endian}u2")
        else:
            data = np.asarray(_as_list(elem.value) if not isinstance(elem.value, int) else [elem.value], dtype=np.float64)
        data = np.asarray(data, dtype=np.float64)[:n_entries]
        if data.size == 0:
            raise ValueError
    except Exception:
        raise DicomReadError("the LUT item has no usable LUT Descriptor (entries, first value, bits) and LUT Data",
                             path=path, field=sequence) from None
    return data, first, bits


def _apply_lut(x: np.ndarray, lut: np.ndarray, first: int) -> np.ndarray:
    idx = np.clip(np.rint(x).astype(np.int64) - first, 0, len(lut) - 1)
    return lut[idx]


def _rescale_value(ds: Dataset, keyword: str, path: str | None) -> float | None:
    value = _attr(ds, keyword, "PixelValueTransformationSequence", path)
    try:
        numbers = _as_list(value)
        if len(numbers) > 1:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise DicomReadError(f"{keyword} is not one finite number", path=path, field=keyword) from None
    return numbers[0] if numbers else None


def _modality_lut(arr: np.ndarray, ds: Dataset, path: str | None = None) -> tuple[np.ndarray, str]:
    """Apply the Modality LUT (PS3.3 C.11.1): the Modality LUT Sequence, or Rescale Slope / Intercept.

    Raises:
        DicomReadError: a LUT item or a rescale value that cannot be read, or a slope of 0 (it would
            erase the image); names the attribute.
    """
    try:
        seq = ds.get("ModalityLUTSequence")
    except Exception:
        raise DicomReadError("ModalityLUTSequence cannot be decoded", path=path, field="ModalityLUTSequence") from None
    if seq:
        lut, first, _ = _lut_values(seq[0], ds, "ModalityLUTSequence", path)
        return _apply_lut(arr, lut, first), "modality_lut_sequence"
    slope = _rescale_value(ds, "RescaleSlope", path)
    intercept = _rescale_value(ds, "RescaleIntercept", path)
    if slope is None and intercept is None:
        return arr.astype(np.float32, copy=False), "none"
    if slope == 0:
        raise DicomReadError("RescaleSlope is 0: every pixel would map to the intercept", path=path, field="RescaleSlope")
    s = slope if slope is not None else 1.0
    b = intercept if intercept is not None else 0.0
    out = arr.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        if s != 1.0:
            out *= np.float32(s)
        if b != 0.0:
            out += np.float32(b)
    if not np.isfinite(out).all():
        raise DicomReadError(f"RescaleSlope {s:g} / RescaleIntercept {b:g} map the stored values beyond float32",
                             path=path, field="RescaleSlope" if abs(s) > 1 else "RescaleIntercept")
    return out, f"rescale(slope={s:g}, intercept={b:g})"


def _voi(
    x: np.ndarray,
    ds: Dataset,
    voi_index: int,
    fallback: str,
    percentiles: tuple[float, float],
    prefer_voi_lut: bool,
    path: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    info: dict[str, Any] = {}
    notes: list[str] = []
    try:
        voi_seq = ds.get("VOILUTSequence")
    except Exception:
        raise DicomReadError("VOILUTSequence cannot be decoded", path=path, field="VOILUTSequence") from None
    centers = _optional_numbers(ds, "WindowCenter", "FrameVOILUTSequence", path, notes)
    widths = _optional_numbers(ds, "WindowWidth", "FrameVOILUTSequence", path, notes)
    if notes:  # an unreadable window is a display hint lost, not a wrong image: the fallback applies
        info["voi_note"] = "; ".join(notes)
        centers, widths = [], []
    n_windows = min(len(centers), len(widths))
    have_window = n_windows > 0
    if voi_seq and (prefer_voi_lut or not have_window):
        idx = voi_index if voi_index < len(voi_seq) else 0
        lut, first, bits = _lut_values(voi_seq[idx], ds, "VOILUTSequence", path)
        out = _apply_lut(x, lut, first) / float(2**bits - 1)
        info["voi"] = f"voi_lut_sequence[{idx}]"
        if idx != voi_index:
            info["voi_note"] = f"voi_index {voi_index} not present ({len(voi_seq)} VOI LUT items); used item 0"
        return np.clip(out, 0.0, 1.0), info
    if have_window:
        idx = voi_index if voi_index < n_windows else 0
        c, w = centers[idx], widths[idx]
        try:
            function = str(_attr(ds, "VOILUTFunction", "FrameVOILUTSequence", path) or "LINEAR").strip().upper() or "LINEAR"
        except DicomReadError:
            function = "<unreadable>"
        if idx != voi_index:
            info["voi_note"] = f"voi_index {voi_index} not present ({n_windows} windows); used window 0"
        try:
            out = window_to_unit(x, c, w, function)
        except ConfigurationError as err:
            info["voi_note"] = f"window[{idx}] ignored: {err}"
        else:
            info.update(voi=f"window[{idx}]", window_center=c, window_width=w, voi_function=function)
            return out, info
    lo_hi: tuple[float, float]
    if fallback == "percentile":
        lo_hi = (float(np.percentile(x, percentiles[0])), float(np.percentile(x, percentiles[1])))
        info["voi"] = f"percentile({percentiles[0]:g},{percentiles[1]:g})"
    else:
        lo_hi = (float(np.min(x)), float(np.max(x)))
        info["voi"] = "full_range"
    lo, hi = lo_hi
    if hi <= lo:
        return np.zeros_like(x, dtype=np.float32), info
    out = (x.astype(np.float32) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    np.minimum(out, np.float32(1.0), out=out)
    np.maximum(out, np.float32(0.0), out=out)
    return out, info


def _to_gray(arr: np.ndarray, ds: Dataset, policy: str, path: str | None, bits_stored: int = 8) -> tuple[np.ndarray, str]:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip().upper()
    if policy == "error":
        raise DicomReadError(
            f"colour image ({photometric}) and rgb_policy='error'", path=path, field="PhotometricInterpretation"
        )
    if photometric == "PALETTE COLOR":
        try:
            from pydicom.pixels import apply_color_lut
        except ImportError:  # pydicom 2 (MONAI Label's environment)
            from pydicom.pixel_data_handlers.util import apply_color_lut

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                arr = apply_color_lut(arr, ds)
        except Exception as err:
            raise DicomReadError(f"the palette cannot be applied ({type(err).__name__})", path=path,
                                 field="RedPaletteColorLookupTableDescriptor") from None
        scale = float(np.iinfo(arr.dtype).max) if np.issubdtype(arr.dtype, np.integer) else 1.0
    else:
        scale = float(2**bits_stored - 1)
    if policy == "error":
        raise DicomReadError(
            f"colour image ({photometric}) and rgb_policy='error'", path=path, field="PhotometricInterpretation"
        )
    rgb = arr.astype(np.float64) / scale
    if policy == "mean":
        gray = rgb.mean(axis=-1)
    else:
        gray = rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114
    return np.clip(gray, 0.0, 1.0), f"{policy}({photometric})"


def _spacing(ds: Dataset, path: str | None = None, notes: list[str] | None = None) -> tuple[tuple[float, float] | None, str | None]:
    notes = [] if notes is None else notes
    for kw, fg in (
        ("PixelSpacing", "PixelMeasuresSequence"),
        ("ImagerPixelSpacing", None),
        ("NominalScannedPixelSpacing", None),
    ):
        vals = _optional_numbers(ds, kw, fg, path, notes)
        if len(vals) == 2 and all(np.isfinite(vals)) and min(vals) > 0:
            return (vals[0], vals[1]), kw
    return None, None


def _check_options(voi_fallback: str, rgb_policy: str, percentiles: Sequence[float]) -> None:
    if voi_fallback not in VOI_FALLBACKS:
        raise ConfigurationError(f"voi_fallback must be one of {VOI_FALLBACKS}, got {voi_fallback!r}")
    if rgb_policy not in RGB_POLICIES:
        raise ConfigurationError(f"rgb_policy must be one of {RGB_POLICIES}, got {rgb_policy!r}")
    if len(percentiles) != 2 or not 0 <= percentiles[0] < percentiles[1] <= 100:
        raise ConfigurationError(f"percentiles must be (low, high) with 0 <= low < high <= 100, got {percentiles!r}")


def dicom_to_array(
    ds: Dataset,
    filename: str | os.PathLike | None = None,
    frame: int | None = None,
    voi_index: int = 0,
    voi_fallback: str = "full_range",
    percentiles: Sequence[float] = (0.5, 99.5),
    rgb_policy: str = "luminance",
    prefer_voi_lut: bool = True,
    max_pixels: int | None = MAX_PIXELS,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply the grayscale pipeline to an already-read dataset.

    Args:
        ds: a pydicom dataset with pixel data (e.g. from a MONAI Deploy loader).
        filename: the file it came from, for the meta and error messages (default: ``ds.filename``).
        frame: ``None`` for all frames as channels, or the 0-based frame to return.
        voi_index: which *Window Center/Width* value or *VOI LUT Sequence* item to apply.
        voi_fallback: ``"full_range"`` or ``"percentile"`` when the object has no VOI transform.
        percentiles: (low, high) percentiles for ``voi_fallback="percentile"``.
        rgb_policy: ``"luminance"``, ``"mean"`` or ``"error"`` for colour images.
        prefer_voi_lut: when both a VOI LUT Sequence and a window are present, apply the sequence
            (pydicom's default); otherwise the window.
        max_pixels: the pixel budget (:data:`~monai_medunic.transforms.dicom_io.MAX_PIXELS`, 2**28): an object
            whose header claims more pixels is refused before anything is allocated (``None``: no limit).

    Returns:
        ``(array, meta)``: float32 ``(C, H, W)`` in [0, 1] and a meta dict free of patient identifiers.

    Raises:
        NotAnImageError: no pixel data, or a non-image SOP class (e.g. an SR).
        MissingDecoderError: the transfer syntax's decoder is not installed (names the package).
        DicomReadError: the pixel data cannot be decoded (truncated, inconsistent attributes, ...).
    """
    _check_options(voi_fallback, rgb_policy, percentiles)
    path = os.fspath(filename) if filename is not None else source_path(ds)
    try:
        sop_class = UID(header_value(ds, "SOPClassUID", path, kind=str) or "") or None
    except DicomReadError:
        sop_class = None
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        try:
            modality = header_value(ds, "Modality", path, kind=str) or "unknown"
        except DicomReadError:
            modality = "unknown"
        what = f"{sop_class.name} object" if sop_class is not None else f"{modality} object"
        if sop_class is not None and str(sop_class).startswith(_STORAGE_PREFIX_SR):
            raise NotAnImageError(f"a {what} is not an image; expected an image", path=path, field="SOPClassUID")
        raise NotAnImageError(f"{what} without pixel data; expected an image", path=path, field="PixelData")
    header = check_pixel_header(ds, path, max_pixels)
    stored = decode_pixels(ds, path, header)  # (F, H, W[, 3])
    n_frames, photometric = header.frames, header.photometric
    color = header.samples > 1 or photometric == "PALETTE COLOR"
    if frame is not None:
        if not -n_frames <= frame < n_frames:
            raise ConfigurationError(f"{path}: frame {frame} requested, the object has {n_frames} frame(s)")
        stored = stored[frame : frame + 1] if frame >= 0 else stored[frame:][:1]
    meta: dict[str, Any] = {
        "photometric_interpretation": photometric,
        "frames": n_frames,
        "frame_index": frame,
        "bits_stored": header.bits_stored,
    }
    notes: list[str] = []
    if color:
        img, how = _to_gray(stored, ds, rgb_policy, path, header.bits_stored)
        meta.update(modality_lut="none", voi="none", inverted=False, rgb_to_gray=how)
    else:
        x, how = _modality_lut(stored, ds, path)
        meta["modality_lut"] = how
        img, voi_info = _voi(
            x, ds, voi_index, voi_fallback, (float(percentiles[0]), float(percentiles[1])), prefer_voi_lut, path
        )
        meta.update(voi_info)
        if "ignored" in voi_info.get("voi_note", ""):
            notes.append(voi_info["voi_note"])
        try:
            shape = (header_value(ds, "PresentationLUTShape", path, kind=str) or "").upper()
        except DicomReadError:
            shape = ""
            notes.append("PresentationLUTShape ignored: unreadable")
        invert = photometric == "MONOCHROME1" or shape == "INVERSE"
        if invert:
            img = np.subtract(np.float32(1.0), img, out=img) if img.dtype == np.float32 else 1.0 - img  # VOI output is a fresh array
        meta["inverted"] = invert
        meta["presentation_lut_shape"] = shape or None
    spacing, spacing_src = _spacing(ds, path, notes)
    orientation = _optional_numbers(ds, "ImageOrientationPatient", "PlaneOrientationSequence", path, notes)
    try:
        patient_orientation = ds.get("PatientOrientation")
        patient_orientation = [str(v) for v in patient_orientation] if patient_orientation else None
    except Exception:
        patient_orientation = None
        notes.append("PatientOrientation ignored: unreadable")
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    from monai_medunic.transforms.views import classify_view

    try:
        view = classify_view(ds)
    except Exception:  # a garbled view attribute: the view is unknown, not an error of the image
        view = "unknown"
        notes.append("view attributes unreadable: view 'unknown'")
    if notes:
        meta["header_notes"] = notes
        logger.warning("%s: %s", os.path.basename(path or "dataset"), "; ".join(notes))

    def text(keyword: str) -> str | None:
        try:
            return header_value(ds, keyword, path, kind=str) or None
        except DicomReadError:
            return None

    meta.update(
        {
            "filename_or_obj": path,
            "pixel_spacing": spacing,
            "spacing_source": spacing_src,
            "image_orientation_patient": orientation if len(orientation) == 6 else None,
            "patient_orientation": patient_orientation,
            "modality": text("Modality"),
            "view": view,
            "sop_class_uid": str(sop_class) if sop_class else None,
            "sop_instance_uid": text("SOPInstanceUID"),
            "study_instance_uid": text("StudyInstanceUID"),
            "series_instance_uid": text("SeriesInstanceUID"),
            "transfer_syntax_uid": str(tsyntax) if tsyntax else None,
            "spatial_shape": tuple(int(s) for s in img.shape[1:3]),
            "original_channel_dim": 0,
        }
    )
    return np.ascontiguousarray(img, dtype=np.float32), meta


def _affine(spacing: tuple[float, float] | None) -> torch.Tensor:
    affine = torch.eye(4, dtype=torch.float64)
    if spacing is not None:
        affine[0, 0], affine[1, 1] = float(spacing[0]), float(spacing[1])
    return affine


def dicom_to_metatensor(ds: Dataset, filename: str | os.PathLike | None = None, **options: Any) -> MetaTensor:
    """:func:`dicom_to_array` as a :class:`MetaTensor` whose affine carries the pixel spacing (row, column)."""
    arr, meta = dicom_to_array(ds, filename=filename, **options)
    return MetaTensor(torch.from_numpy(arr), affine=_affine(meta["pixel_spacing"]), meta=meta)


class GrayscaleDicomReader(ImageReader):
    """A MONAI :class:`~monai.data.ImageReader` for radiographs: the DICOM grayscale pipeline of the
    module docstring (Modality LUT, VOI LUT, MONOCHROME1 / INVERSE polarity) to float32 in [0, 1].

    Use it as MONAI users expect: ``LoadImage(reader=GrayscaleDicomReader())`` or
    ``LoadImaged(keys, reader=GrayscaleDicomReader(voi_fallback="percentile"))``, with
    ``image_only``, ``meta_keys`` and ``ensure_channel_first`` as usual. The array is ``(C, H, W)``
    (rows before columns, as the image is displayed; MONAI's ``PydicomReader`` transposes to
    ``(W, H)``), with ``original_channel_dim=0``; the affine carries the pixel spacing.

    ``read`` only resolves the file names; reading and decoding happen in ``get_data``, so that bad
    input reaches the caller as this package's typed errors (``LoadImage`` would turn an exception of
    ``read`` into a generic ``RuntimeError``). Several files are stacked as channels.

    Args:
        options: the keyword arguments of :func:`dicom_to_array` (``frame``, ``voi_index``,
            ``voi_fallback``, ``percentiles``, ``rgb_policy``, ``prefer_voi_lut``).
    """

    SUFFIXES = ("dcm", "dicom", "dic", "ima")

    def __init__(self, **options: Any) -> None:
        super().__init__()
        _check_options(options.get("voi_fallback", "full_range"), options.get("rgb_policy", "luminance"),
                       options.get("percentiles", (0.5, 99.5)))
        self.options = options

    def verify_suffix(self, filename: Sequence[os.PathLike | str] | os.PathLike | str) -> bool:
        """DICOM suffixes, or none at all (PACS exports and DICOMDIR trees often have no extension)."""
        names = [filename] if isinstance(filename, (str, os.PathLike)) else list(filename)
        return all(not os.path.isdir(n) and (is_supported_format(n, self.SUFFIXES) or "." not in os.path.basename(os.fspath(n)))
                   for n in names)

    def read(self, data: Sequence[os.PathLike | str] | os.PathLike | str | Dataset, **kwargs: Any) -> list[Any]:
        if isinstance(data, (str, os.PathLike, Dataset)):
            return [data]
        return list(data)

    def get_data(self, img: Any) -> tuple[np.ndarray, dict]:
        items = img if isinstance(img, list) else [img]
        arrays, metas = [], []
        for item in items:
            if isinstance(item, Dataset):
                arr, meta = dicom_to_array(item, **self.options)
            elif isinstance(item, (str, os.PathLike)):
                arr, meta = dicom_to_array(read_dicom(item), filename=item, **self.options)
            else:
                raise ConfigurationError(f"a DICOM file path or a pydicom Dataset is expected, got {type(item).__name__}")
            arrays.append(arr)
            metas.append(meta)
        shapes = {a.shape[1:] for a in arrays}
        if len(shapes) > 1:
            raise DicomReadError(f"the files have different sizes {sorted(shapes)} and cannot be stacked as channels",
                                 path=metas[0]["filename_or_obj"], field="Rows")
        meta = dict(metas[0])
        meta["affine"] = _affine(meta["pixel_spacing"]).numpy()
        meta["original_affine"] = meta["affine"].copy()
        return (arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)), meta


class LoadDicomImage(Transform):
    """Load a DICOM radiograph (path or pydicom dataset) to a ``(C, H, W)`` float32 MetaTensor in [0, 1].

    A convenience over :class:`GrayscaleDicomReader` that gives what ``LoadImage(reader=GrayscaleDicomReader(...),
    image_only=True)`` gives (without registering MONAI's other readers) and also takes an
    already-read pydicom dataset, as the MONAI Deploy loader gives. Applies the Modality LUT, the VOI
    LUT and the MONOCHROME1 / INVERSE polarity in the standard order (module docstring). Used for the
    chest radiographs of Med-UniC's pre-training (Sec. 4).

    Args:
        frame: ``None`` stacks all frames as channels; an int selects one frame.
        voi_index: which window / VOI LUT item to apply.
        voi_fallback: ``"full_range"`` or ``"percentile"`` when no VOI transform is present.
        percentiles: the percentiles of the ``"percentile"`` fallback.
        rgb_policy: ``"luminance"`` / ``"mean"`` / ``"error"`` for colour images.
        prefer_voi_lut: apply a VOI LUT Sequence rather than a window when both are present.
        max_pixels: the pixel budget (2**28 by default): larger objects are refused before decoding.

    Raises:
        DicomReadError, MissingDecoderError, NotAnImageError: bad input, naming the file.
    """

    def __init__(
        self,
        frame: int | None = None,
        voi_index: int = 0,
        voi_fallback: str = "full_range",
        percentiles: Sequence[float] = (0.5, 99.5),
        rgb_policy: str = "luminance",
        prefer_voi_lut: bool = True,
        max_pixels: int | None = MAX_PIXELS,
    ) -> None:
        self.reader = GrayscaleDicomReader(frame=frame, voi_index=voi_index, voi_fallback=voi_fallback,
                                           percentiles=tuple(percentiles), rgb_policy=rgb_policy, prefer_voi_lut=prefer_voi_lut,
                                           max_pixels=max_pixels)

    def __call__(self, data: str | os.PathLike | Dataset) -> MetaTensor:  # type: ignore[override]
        if not isinstance(data, (str, os.PathLike, Dataset)):
            raise ConfigurationError(f"LoadDicomImage expects a file path or a pydicom Dataset, got {type(data).__name__}")
        arr, meta = self.reader.get_data(self.reader.read(data))
        if not isinstance(data, Dataset):
            meta["filename_or_obj"] = os.fspath(data)
        return MetaTensor(torch.from_numpy(arr), affine=torch.as_tensor(meta.pop("affine")), meta=meta)


class LoadDicomImaged(MapTransform):
    """Dictionary form of :class:`LoadDicomImage`: replaces each key's path (or dataset) with the image.

    Args:
        keys: keys holding DICOM paths or datasets.
        allow_missing_keys: don't raise when a key is absent.
        options: the keyword arguments of :class:`LoadDicomImage`.
    """

    def __init__(self, keys: KeysCollection, allow_missing_keys: bool = False, **options: Any) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadDicomImage(**options)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # type: ignore[override]
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.loader(d[key])
        return d
