"""A table of malformed inputs: each gives a typed error naming the file, never PHI, never a bare library traceback."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate

from monai_medunic.errors import (
    DicomReadError,
    MissingDecoderError,
    NotAnImageError,
    ReportTextError,
)
from monai_medunic.transforms import LoadDicomImage, read_report_from_sr

PHI_NAME = "Sanchez^Maria^Dolores"
PHI_ID = "MRN-48151623"
PHI_BIRTH = "19471103"


def _with_phi(ds: pydicom.Dataset) -> pydicom.Dataset:
    ds.PatientName = PHI_NAME
    ds.PatientID = PHI_ID
    ds.PatientBirthDate = PHI_BIRTH
    return ds


def _save(ds: pydicom.Dataset, path: str) -> str:
    ds.save_as(path, enforce_file_format=True)
    return path


def _missing(tmp: str) -> str:
    return os.path.join(tmp, "nope.dcm")


def _empty(tmp: str) -> str:
    path = os.path.join(tmp, "empty.dcm")
    open(path, "wb").close()
    return path


def _png(tmp: str) -> str:
    path = os.path.join(tmp, "image.dcm")
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n" + b"\x00" * 300)
    return path


def _truncated_header(tmp: str) -> str:
    src = open(get_testdata_file("CT_small.dcm"), "rb").read()
    path = os.path.join(tmp, "truncated_header.dcm")
    with open(path, "wb") as fh:
        fh.write(src[:700])
    return path


def _truncated_pixels(tmp: str) -> str:
    ds = _with_phi(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    path = _save(ds, os.path.join(tmp, "full.dcm"))
    data = open(path, "rb").read()
    cut = os.path.join(tmp, "truncated_pixels.dcm")
    with open(cut, "wb") as fh:
        fh.write(data[: len(data) - 9000])
    return cut


def _truncated_j2k(tmp: str) -> str:
    # a real file from pydicom-data whose JPEG 2000 codestream is cut short
    return get_testdata_file("emri_small_jpeg_2k_lossless_too_short.dcm")


def _no_pixel_data(tmp: str) -> str:
    ds = _with_phi(pydicom.dcmread(get_testdata_file("CT_small.dcm")))
    del ds.PixelData
    return _save(ds, os.path.join(tmp, "no_pixels.dcm"))


def _structured_report(tmp: str) -> str:
    ds = _with_phi(pydicom.dcmread(get_testdata_file("test-SR.dcm")))
    return _save(ds, os.path.join(tmp, "report.dcm"))


def _rt_plan(tmp: str) -> str:
    return get_testdata_file("rtplan.dcm")


def _no_decoder_exists(tmp: str) -> str:
    # HEVC/H.265: pydicom has no decoder for it at all
    ds = _with_phi(pydicom.dcmread(get_testdata_file("MR_small.dcm")))
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID("1.2.840.10008.1.2.4.107")  # HEVC/H.265 Main Profile
    ds.PixelData = encapsulate([b"\x00\x00\x00\x01" + b"\x40" * 64])
    ds["PixelData"].VR = "OB"
    return _save(ds, os.path.join(tmp, "hevc.dcm"))


def _undecodable_jpeg(tmp: str) -> str:
    # 12-bit JPEG Extended whose codestream neither pylibjpeg nor pillow decodes
    return get_testdata_file("JPEG-lossy.dcm")


CASES: list[tuple[str, Callable[[str], str], type[Exception], str | None, str]] = [
    ("missing file", _missing, DicomReadError, None, "does not exist"),
    ("empty file", _empty, DicomReadError, None, "empty"),
    ("non-DICOM file", _png, DicomReadError, None, "not a DICOM file"),
    ("truncated header", _truncated_header, DicomReadError, None, "truncated"),
    ("truncated pixel data", _truncated_pixels, DicomReadError, "PixelData", "pixel data"),
    ("truncated JPEG 2000", _truncated_j2k, DicomReadError, "PixelData", "truncated"),
    ("no PixelData", _no_pixel_data, NotAnImageError, "PixelData", "without pixel data"),
    ("SR where an image is expected", _structured_report, NotAnImageError, "SOPClassUID", "Comprehensive SR"),
    ("RT plan where an image is expected", _rt_plan, NotAnImageError, "PixelData", "RT Plan"),
    ("transfer syntax without any decoder", _no_decoder_exists, MissingDecoderError, "TransferSyntaxUID", "HEVC"),
    ("undecodable JPEG", _undecodable_jpeg, DicomReadError, "PixelData", "cannot decode"),
]


@pytest.mark.parametrize("name, make, error, field, message", CASES, ids=[c[0] for c in CASES])
def test_malformed_image_inputs(tmp_path, caplog, name, make, error, field, message) -> None:
    path = make(str(tmp_path))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(error) as info:
        LoadDicomImage()(path)
    err = info.value
    assert type(err) is error or (error is DicomReadError and isinstance(err, DicomReadError))
    assert err.path == path and path in str(err)
    assert message.lower() in str(err).lower()
    if field is not None:
        assert err.field == field
    everything = str(err) + "\n" + caplog.text
    for phi in (PHI_NAME, PHI_ID, PHI_BIRTH, "Sanchez", "Dolores"):
        assert phi not in everything


def test_missing_decoder_message_names_the_package(tmp_path) -> None:
    """Decoders really absent: a fresh interpreter in which pylibjpeg and its plugins cannot be imported.

    JPEG Lossless (process 14) is decoded only by pylibjpeg-libjpeg, so it must fail with a message naming
    that package; JPEG 2000 still decodes through Pillow's OpenJPEG codec (pydicom's fallback plugin).
    """
    script = f"""
import sys
for name in ('pylibjpeg', 'openjpeg', 'libjpeg', 'rle', 'jpeg_ls'):
    sys.modules[name] = None  # as if the package were not installed
from monai_medunic.errors import MissingDecoderError
from monai_medunic.transforms import LoadDicomImage
load = LoadDicomImage()
try:
    load({get_testdata_file('SC_rgb_jpeg_gdcm.dcm')!r})
except MissingDecoderError as err:
    print('ERR', err.field, '|', err)
print('J2K', tuple(load({get_testdata_file('RG1_J2KR.dcm')!r}).shape))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    err = [ln for ln in lines if ln.startswith("ERR")]
    assert err, out.stdout + out.stderr[-2000:]
    assert "TransferSyntaxUID" in err[0] and "pylibjpeg-libjpeg" in err[0] and "SC_rgb_jpeg_gdcm.dcm" in err[0]
    assert "JPEG Lossless" in err[0]
    assert "J2K (1, 1955, 1841)" in lines


def test_sr_without_text_and_non_sr(tmp_path) -> None:
    ds = _with_phi(pydicom.dcmread(get_testdata_file("test-SR.dcm")))

    def drop_text(seq) -> None:
        keep = []
        for item in seq:
            if item.get("ValueType") == "TEXT":
                continue
            if "ContentSequence" in item:
                drop_text(item.ContentSequence)
            keep.append(item)
        seq[:] = keep

    drop_text(ds.ContentSequence)
    path = _save(ds, str(tmp_path / "no_text_sr.dcm"))
    with pytest.raises(ReportTextError) as info:
        read_report_from_sr(path)
    assert info.value.path == path and info.value.field == "ContentSequence"
    assert PHI_NAME not in str(info.value) and PHI_ID not in str(info.value)
    with pytest.raises(ReportTextError, match="not a structured report"):
        read_report_from_sr(get_testdata_file("CT_small.dcm"))
    with pytest.raises(DicomReadError, match="not a DICOM file"):
        read_report_from_sr(_png(str(tmp_path)))
