"""Reading DICOM files safely: every failure becomes a typed error naming the file, never a PHI value.

The lowest layer of the DICOM transforms (:mod:`~monai_medunic.transforms.dicom`,
:mod:`~monai_medunic.transforms.views`, :mod:`~monai_medunic.transforms.sr`,
:mod:`~monai_medunic.transforms.volume` all read through it): :func:`read_dicom`, the decoder
pre-check that names the pip package a compressed transfer syntax needs, and the scrubbing of patient
identifiers from library messages.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from monai_medunic.errors import DicomReadError, MissingDecoderError

__all__ = ["read_dicom", "check_decoder", "scrub", "phi_values", "source_path", "PHI_KEYWORDS"]

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
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if tsyntax is None:
        return
    tsyntax = UID(str(tsyntax))
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
