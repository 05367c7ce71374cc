"""Reading DICOM files safely: every failure becomes a typed error naming the file, never a PHI value.

The lowest layer of the DICOM transforms (:mod:`~monai_medunic.transforms.dicom`,
:mod:`~monai_medunic.transforms.views`, :mod:`~monai_medunic.transforms.sr`,
:mod:`~monai_medunic.transforms.volume` all read through it): :func:`read_dicom`, the decoder
pre-check that names the pip package a compressed transfer syntax needs, and the scrubbing of patient
identifiers from library messages.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from monai_medunic.errors import DicomReadError, MissingDecoderError

__all__ = [
    "read_dicom",
    "has_dicom_preamble",
    "list_input_files",
    "check_decoder",
    "scrub",
    "phi_values",
    "source_path",
    "PHI_KEYWORDS",
    "MAX_PIXELS",
    "PixelHeader",
    "header_value",
    "check_pixel_header",
    "decode_pixels",
]

#: The pixel budget: the most pixels (Rows x Columns x Number of Frames x Samples per Pixel) one object may
#: claim before anything is decoded. 2**28 (268 million) holds a 16384 x 16384 radiograph, a 64-frame
#: 2048 x 2048 tomosynthesis or a 1000-slice 512 x 512 CT, and bounds the decoded float32 copy to 1 GiB;
#: a header claiming 65535 x 65535 (4.3 billion, 8 GiB as 16-bit) is refused before allocation.
#: Pass ``max_pixels`` to the readers to change it.
MAX_PIXELS: int = 2**28

_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "YBR_PARTIAL_422")

# Attributes whose values are patient identifiers: never copied, never printed.
PHI_KEYWORDS: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "PatientMotherBirthName",
    "IssuerOfPatientID",
    "AccessionNumber",
)

# pip packages that provide pydicom's decoders, per transfer syntax family.
_OPENJPEG = "pylibjpeg-openjpeg (pip install 'pylibjpeg>=2' 'pylibjpeg-openjpeg>=2')"
_LIBJPEG = "pylibjpeg-libjpeg (pip install 'pylibjpeg>=2' 'pylibjpeg-libjpeg>=2')"
_DECODER_PACKAGES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": _LIBJPEG + " or pillow",
    "1.2.840.10008.1.2.4.51": _LIBJPEG + " or pillow",
    "1.2.840.10008.1.2.4.57": _LIBJPEG,
    "1.2.840.10008.1.2.4.70": _LIBJPEG,
    "1.2.840.10008.1.2.4.80": "pyjpegls (pip install pyjpegls) or " + _LIBJPEG,
    "1.2.840.10008.1.2.4.81": "pyjpegls (pip install pyjpegls) or " + _LIBJPEG,
    "1.2.840.10008.1.2.4.90": _OPENJPEG,
    "1.2.840.10008.1.2.4.91": _OPENJPEG,
    "1.2.840.10008.1.2.4.201": _OPENJPEG,
    "1.2.840.10008.1.2.4.202": _OPENJPEG,
    "1.2.840.10008.1.2.4.203": _OPENJPEG,
    "1.2.840.10008.1.2.5": "pylibjpeg-rle (pip install pylibjpeg-rle), or numpy for pydicom's own RLE decoder",
}

def phi_values(ds: Dataset | None) -> list[str]:
    values: list[str] = []
    if ds is None:
        return values
    for kw in PHI_KEYWORDS:
        try:
            v = ds.get(kw)
        except Exception:  # a malformed element must not stop the scrubbing
            continue
        if v is None:
            continue
        items = v if isinstance(v, (list, tuple, pydicom.multival.MultiValue)) else [v]
        for item in items:
            s = str(item).strip()
            if len(s) >= 2:
                values.append(s)
                values.extend(p for p in s.replace("^", " ").split() if len(p) >= 3)
    return sorted(set(values), key=len, reverse=True)


def scrub(message: str, ds: Dataset | None) -> str:
    """Remove any patient-identifier value of ``ds`` from ``message`` (library messages may quote values)."""
    for value in phi_values(ds):
        message = message.replace(value, "<removed>")
    return message


def source_path(source: Any) -> str | None:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, Dataset):
        name = getattr(source, "filename", None)
        return os.fspath(name) if isinstance(name, (str, os.PathLike)) else None
    return None


def has_dicom_preamble(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a readable file with the DICOM Part 10 ``DICM`` prefix after its 128-byte preamble
    (a quick test: PACS exports without a preamble need :func:`read_dicom` to tell)."""
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def read_dicom(path: str | os.PathLike, header_only: bool = False) -> Dataset:
    """Read a DICOM Part 10 file, turning every failure into a :class:`DicomReadError` naming the file.

    Args:
        path: the file.
        header_only: stop before the pixel data (fast; for view classification or series sorting).

    Raises:
        DicomReadError: the file is missing, is a directory, is not DICOM, or is truncated / corrupt.
    """
    p = os.fspath(path)
    if not os.path.exists(p):
        raise DicomReadError("file does not exist", path=p)
    if os.path.isdir(p):
        raise DicomReadError("is a directory, expected a DICOM file", path=p)
    if os.path.getsize(p) == 0:
        raise DicomReadError("file is empty", path=p)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(p, stop_before_pixels=header_only)
    except InvalidDicomError:
        raise DicomReadError(
            "not a DICOM file (no 'DICM' prefix after the 128-byte preamble); "
            "is it a PNG/JPEG or a raw dump?",
            path=p,
        ) from None
    except Exception as err:  # EOFError, struct.error, OSError, ValueError from truncated elements
        raise DicomReadError(f"truncated or corrupt DICOM file ({type(err).__name__})", path=p) from None
    for w in caught:
        text = str(w.message)
        if "End of file reached" in text or "truncated" in text.lower():
            # pydicom stops at the end of a truncated file with a warning and drops the element it was reading
            raise DicomReadError(
                "truncated file: the data ends before the last element (usually PixelData) is complete",
                path=p,
                field="PixelData",
            )
    return ds


def check_decoder(ds: Dataset, path: str | None) -> None:
    """Raise :class:`MissingDecoderError` naming the pip package when the transfer syntax's decoder is
    absent, and :class:`DicomReadError` when the file meta names no known transfer syntax."""
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is None:
        return
    tsyntax = UID(str(tsyntax))
    if not tsyntax.is_transfer_syntax:
        raise DicomReadError(f"TransferSyntaxUID '{str(tsyntax)[:64]}' is not a known transfer syntax", path=path,
                             field="TransferSyntaxUID")
    if not tsyntax.is_compressed:
        return
    try:
        from pydicom.pixels import get_decoder
    except ImportError:  # pydicom 2 (MONAI Label's environment): ds.pixel_array names a missing handler itself
        return

    name = tsyntax.name
    try:
        decoder = get_decoder(tsyntax)
    except NotImplementedError:
        raise MissingDecoderError(
            f"pydicom {pydicom.__version__} has no pixel decoder for the transfer syntax '{name}' ({tsyntax}) and no "
            "pip package adds one; transcode the file to an uncompressed or JPEG 2000 transfer syntax first "
            "(e.g. with dcmtk or gdcm)",
            path=path,
            field="TransferSyntaxUID",
        ) from None
    if not decoder.is_available:
        package = _DECODER_PACKAGES.get(str(tsyntax), ", ".join(decoder.missing_dependencies) or "a decoder plugin")
        raise MissingDecoderError(
            f"no installed decoder for the transfer syntax '{name}' ({tsyntax}): install {package}",
            path=path,
            field="TransferSyntaxUID",
        )


def header_value(ds: Dataset, keyword: str, path: str | None, kind: type = int, default: Any = None) -> Any:
    """One attribute as a single ``int`` / ``float`` / ``str``, or ``default`` when absent or empty.

    Raises:
        DicomReadError: the value cannot be decoded (wrong length for its VR, an odd VR, text where a number
            belongs, several values where one belongs); names the file and the attribute.
    """
    try:
        value = ds.get(keyword)
    except Exception as err:  # pydicom decodes lazily: a garbled element fails here
        raise DicomReadError(f"{keyword} cannot be decoded ({type(err).__name__})", path=path, field=keyword) from None
    if value is None or (isinstance(value, (str, bytes)) and not value.strip()):
        return default
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        if len(value) == 0:
            return default
        if len(value) != 1:
            raise DicomReadError(f"{keyword} holds {len(value)} values, one is expected", path=path, field=keyword)
        value = value[0]
    try:
        if kind is int:
            out = int(value) if not isinstance(value, float) or value.is_integer() else None
            if out is None or isinstance(value, bytes):
                raise ValueError
            return out
        if kind is float:
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
            return out
        return str(value).strip()
    except (TypeError, ValueError, OverflowError):
        shown = "" if keyword in PHI_KEYWORDS else f" {str(value)[:40]!r}"
        raise DicomReadError(f"{keyword}{shown} is not a valid {kind.__name__}", path=path, field=keyword) from None


@dataclass(frozen=True)
class PixelHeader:
    """The Image Pixel module (PS3.3 C.7.6.3) of one object, checked: what decoding will produce."""

    rows: int
    columns: int
    frames: int
    samples: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str

    @property
    def pixels(self) -> int:
        return self.rows * self.columns * self.frames * self.samples

    @property
    def native_bytes(self) -> int:
        """The Pixel Data length of a native (uncompressed) encoding, without the padding byte
        (YBR_FULL_422 stores two samples per pixel: PS3.3 C.7.6.3.1.2)."""
        samples = 2 if self.photometric == "YBR_FULL_422" and self.samples == 3 else self.samples
        return (self.rows * self.columns * self.frames * samples * self.bits_allocated + 7) // 8


def check_pixel_header(ds: Dataset, path: str | None, max_pixels: int | None = MAX_PIXELS) -> PixelHeader:
    """Check the attributes that decoding relies on, before anything is decoded or allocated.

    Rows and Columns (present, 1..65535), Number of Frames (>= 1), Samples per Pixel (1 or 3), Bits
    Allocated (1, 8, 16, 32 or 64), Bits Stored (1..Bits Allocated), Pixel Representation (0 or 1),
    Photometric Interpretation (a monochrome, palette or colour value that fits Samples per Pixel),
    the pixel budget (``max_pixels``, :data:`MAX_PIXELS` by default; ``None``: unbounded) and, for a
    native transfer syntax, a Pixel Data element long enough for the frames the header claims.

    Raises:
        DicomReadError: naming the file and the attribute at fault.
    """
    rows = header_value(ds, "Rows", path)
    cols = header_value(ds, "Columns", path)
    for kw, v in (("Rows", rows), ("Columns", cols)):
        if v is None:
            raise DicomReadError(f"{kw} is missing: the image size is unknown", path=path, field=kw)
        if not 1 <= v <= 65535:
            raise DicomReadError(f"{kw} is {v}, expected 1..65535", path=path, field=kw)
    frames = header_value(ds, "NumberOfFrames", path, default=1)
    if frames < 1:
        raise DicomReadError(f"NumberOfFrames is {frames}, expected >= 1", path=path, field="NumberOfFrames")
    samples = header_value(ds, "SamplesPerPixel", path, default=1)
    if samples not in (1, 3):
        raise DicomReadError(f"SamplesPerPixel is {samples}, expected 1 (grayscale) or 3 (colour)", path=path,
                             field="SamplesPerPixel")
    photometric = (header_value(ds, "PhotometricInterpretation", path, kind=str) or "").upper()
    allowed = _MONOCHROME + ("PALETTE COLOR",) if samples == 1 else _COLOUR
    if photometric not in allowed:
        what = f"'{photometric[:40]}'" if photometric else "missing"
        raise DicomReadError(f"PhotometricInterpretation is {what}; with SamplesPerPixel {samples} it must be one of "
                             f"{', '.join(allowed)}", path=path, field="PhotometricInterpretation")
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        bits_allocated = 32 if "FloatPixelData" in ds else 64
        bits_stored, representation = bits_allocated, 0
    else:
        bits_allocated = header_value(ds, "BitsAllocated", path)
        if bits_allocated not in (1, 8, 16, 32, 64):
            raise DicomReadError(f"BitsAllocated is {bits_allocated}, expected 1, 8, 16, 32 or 64", path=path,
                                 field="BitsAllocated")
        bits_stored = header_value(ds, "BitsStored", path, default=bits_allocated)
        if not 1 <= bits_stored <= bits_allocated:
            raise DicomReadError(f"BitsStored is {bits_stored}, expected 1..BitsAllocated ({bits_allocated})",
                                 path=path, field="BitsStored")
        representation = header_value(ds, "PixelRepresentation", path, default=0)
        if representation not in (0, 1):
            raise DicomReadError(f"PixelRepresentation is {representation}, expected 0 (unsigned) or 1 (signed)",
                                 path=path, field="PixelRepresentation")
    header = PixelHeader(rows, cols, frames, samples, bits_allocated, bits_stored, representation, photometric)
    if max_pixels is not None and header.pixels > max_pixels:
        raise DicomReadError(
            f"Rows x Columns x NumberOfFrames x SamplesPerPixel = {rows} x {cols} x {frames} x {samples} = "
            f"{header.pixels:,} pixels, above the pixel budget of {max_pixels:,} (monai_medunic.transforms.dicom_io."
            "MAX_PIXELS; pass max_pixels to read larger objects)",
            path=path, field="Rows" if frames == 1 else "NumberOfFrames",
        )
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is not None and UID(str(tsyntax)).is_transfer_syntax and not UID(str(tsyntax)).is_compressed \
            and "PixelData" in ds:
        try:
            length = len(ds["PixelData"].value or b"")
        except Exception:
            raise DicomReadError("PixelData cannot be read", path=path, field="PixelData") from None
        if length < header.native_bytes:
            raise DicomReadError(
                f"cannot decode the pixel data: PixelData holds {length:,} bytes, the header ({rows} x {cols} x {frames} "
                f"frame(s) x {samples} sample(s) x {bits_allocated} bits) needs {header.native_bytes:,} (a truncated "
                "transfer, or a wrong header)",
                path=path, field="PixelData",
            )
    return header


def decode_pixels(ds: Dataset, path: str | None, header: PixelHeader) -> np.ndarray:
    """``ds.pixel_array`` with typed errors, checked against ``header``.

    Returns ``(frames, rows, columns[, samples])``. Pixel data holding more frames than Number of
    Frames gives the header's frames (pydicom would return them all), with a log line.

    Raises:
        MissingDecoderError: the transfer syntax's decoder is not installed.
        DicomReadError: the data cannot be decoded or decodes to another shape than the header's.
    """
    check_decoder(ds, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            stored = ds.pixel_array
    except MissingDecoderError:
        raise
    except MemoryError:
        raise DicomReadError(f"not enough memory to decode {header.pixels:,} pixels", path=path, field="PixelData") from None
    except Exception as err:
        raise DicomReadError(
            scrub(f"cannot decode the pixel data ({type(err).__name__}: {str(err)[:300]})", ds), path=path, field="PixelData"
        ) from None
    stored = np.asarray(stored)
    if header.frames == 1 and stored.ndim == (2 if header.samples == 1 else 3):
        stored = stored[np.newaxis]
    want = (header.rows, header.columns) + ((header.samples,) if header.samples > 1 else ())
    if stored.ndim != len(want) + 1 or tuple(stored.shape[1:]) != want or stored.shape[0] < header.frames:
        raise DicomReadError(
            f"the pixel data decodes to shape {tuple(stored.shape)}, the header describes {header.frames} frame(s) of "
            f"{want}", path=path, field="PixelData",
        )
    if stored.shape[0] > header.frames:
        logging.getLogger(__name__).warning(
            "%s: the pixel data holds %d frames, NumberOfFrames says %d: the first %d are used",
            os.path.basename(path or "dataset"), stored.shape[0], header.frames, header.frames,
        )
        stored = stored[: header.frames]
    return stored


def list_input_files(path: str | os.PathLike) -> list[Path]:
    """The files under ``path``, following symbolic links to folders as the SDK's loader does (a folder of
    symlinked study folders is a usual way to feed an app), each real folder visited once."""
    files: list[Path] = []
    seen: set[str] = set()
    for root, dirs, names in os.walk(path, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        files.extend(Path(root, n) for n in names if os.path.isfile(os.path.join(root, n)))
    return files
