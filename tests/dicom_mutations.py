"""Malformed DICOM files made from real ones, for property-based fuzzing with ``hypothesis``.

Shared by the bounded fuzz test (``tests/transforms/test_dicom_fuzz.py``, part of ``make test``) and the
10,000-case run (``benchmarks/fuzz_dicom.py``).

A case is a real seed file (pydicom's test files, pydicom-data's RG1 chest CR, the demo generator's
CR / DX / CT) and a list of mutations drawn by :func:`mutations`:

* header: drop, duplicate (the element encoded twice), garble (random bytes under the element's own
  VR), set (extreme or wrong values: Rows x Columns of 65535 x 65535, Bits Stored above Bits Allocated,
  unknown Photometric Interpretation ...) or re-encode under an odd VR, for the attributes the
  grayscale pipeline reads (Photometric Interpretation, Bits Allocated / Stored, High Bit, Rows /
  Columns, Pixel Representation, Samples per Pixel, Number of Frames, Planar Configuration, the
  Modality LUT, VOI LUT and window attributes, the palette, spacing and orientation);
* transfer syntax: another (compressed <-> native, big endian, unknown, empty) than the data's encoding;
* pixel data: truncated, extended, replaced by random bytes of another length;
* bytes: the written file cut short or with flipped bytes.

The file is encoded element by element (``pydicom.filewriter.write_data_element``) in the seed's own
encoding, so the mutations reach the reader exactly as drawn (pydicom's ``save_as`` would refuse or
repair some of them).

:func:`check_outcome` is the property: a surface given the file returns a correct image, or raises one
of this package's typed errors (:class:`~monai_medunic.errors.MedUniCError`) that names the file and the
field and quotes no patient identifier, within a time and memory limit. Anything else is a crash.
"""

from __future__ import annotations

import io
import os
import resource
import signal
import struct
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info

PHI = {"PatientName": "Okonkwo^Adaeze^Ngozi", "PatientID": "HOSP-20931477", "PatientBirthDate": "19610417"}

# pydicom's test files (pydicom-data) used as seeds: small ones for make test, all for the long run.
SMALL_SEEDS: tuple[str, ...] = (
    "CT_small.dcm",  # CT, 16-bit signed, rescale
    "MR_small.dcm",
    "MR_small_RLE.dcm",
    "MR_small_bigendian.dcm",
    "MR_small_implicit.dcm",
    "MR_small_jp2klossless.dcm",
    "SC_rgb.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, YBR_FULL
    "SC_rgb_rle.dcm",
    "emri_small.dcm",  # 10 frames
    "rtdose.dcm",  # 32-bit, 15 frames
    "SC_rgb_small_odd.dcm",  # 3 x 3
)
LARGE_SEEDS: tuple[str, ...] = (
    "RG1_UNCI.dcm",  # the real chest CR of pydicom-data, MONOCHROME1, 1955 x 1841
    "RG1_J2KR.dcm",  # the same, JPEG 2000 lossless
    "mlut_18.dcm",  # Modality LUT Sequence
    "vlut_04.dcm",  # VOI LUT Sequence
    "OBXXXX1A.dcm",  # PALETTE COLOR
    "liver_1frame.dcm",  # 1-bit
    "JPGLosslessP14SV1_1s_1f_8b.dcm",
)

# the attributes the grayscale pipeline, the view classifier, the series reader and the screen read
TARGETS: tuple[str, ...] = (
    "PhotometricInterpretation", "BitsAllocated", "BitsStored", "HighBit", "Rows", "Columns",
    "PixelRepresentation", "SamplesPerPixel", "NumberOfFrames", "PlanarConfiguration",
    "RescaleSlope", "RescaleIntercept", "ModalityLUTSequence", "WindowCenter", "WindowWidth",
    "VOILUTFunction", "VOILUTSequence", "PresentationLUTShape", "PixelSpacing", "ImagerPixelSpacing",
    "ImageOrientationPatient", "ImagePositionPatient", "SliceThickness", "InstanceNumber",
    "RedPaletteColorLookupTableDescriptor", "RedPaletteColorLookupTableData",
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "Modality", "ViewPosition",
    "PatientOrientation", "ImageLaterality", "SpecificCharacterSet", "PixelData",
)

# values that are wrong for a reason (by the attribute's VR family)
_INT_VALUES = (0, 1, 2, 3, 7, 8, 9, 12, 15, 16, 17, 24, 31, 32, 33, 64, 255, 256, 4096, 32767, 65535)
_STRING_VALUES: dict[str, tuple[str, ...]] = {
    "PhotometricInterpretation": ("MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422",
                                  "YBR_RCT", "HSV", "ARGB", "", "monochrome2", "MONOCHROME3", "MONOCHROME2\\RGB"),
    "VOILUTFunction": ("LINEAR", "LINEAR_EXACT", "SIGMOID", "CUBIC", "", "sigmoid"),
    "PresentationLUTShape": ("IDENTITY", "INVERSE", "", "NEGATIVE"),
    "Modality": ("CR", "DX", "CT", "SR", "SEG", "", "XX"),
    "ViewPosition": ("PA", "AP", "LL", "RL", "", "LATERAL"),
    "SpecificCharacterSet": ("ISO_IR 192", "ISO_IR 100", "GB18030", "KLINGON", "", "ISO 2022 IR 87"),
}
_DS_VALUES = ("0", "-0", "1", "-1", "0.5", "1e308", "-1e308", "1e-308", "NaN", "inf", "-inf", "abc", "", " ",
              "40\\400", "1\\2\\3", "65535", "-65535", "4294967296")
_IS_VALUES = ("0", "1", "-1", "2147483647", "-2147483648", "99999999999", "abc", "", "1.5", "2\\3")
_UID_VALUES = ("", "1.2.3", "not.a.uid", "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.1", "0" * 64)
TRANSFER_SYNTAXES = (
    "1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.57", "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91", "1.2.840.10008.1.2.4.201",
    "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.100", "1.2.3.4", "", "1.2.840.10008.1.2.4.107",
)
ODD_VRS = ("UN", "OB", "OW", "LO", "SH", "UT", "FD", "FL", "SL", "UL", "SQ", "AT", "DS", "IS")


@dataclass(frozen=True)
class Mutation:
    """One change: ``kind`` (drop / dup / garble / set / vr / tsyntax / pixels_cut / pixels_extend /
    pixels_random / file_cut / flip), the attribute ``keyword`` (if any) and its ``arg``."""

    kind: str
    keyword: str = ""
    arg: Any = None

    def __str__(self) -> str:
        arg = self.arg if not isinstance(self.arg, bytes) else f"{len(self.arg)} bytes"
        return f"{self.kind}({self.keyword}{', ' if self.keyword else ''}{arg!r})"


@dataclass
class Case:
    """A drawn case: the seed's name and the mutations, in order."""

    seed: str
    mutations: list[Mutation] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.seed}: " + "; ".join(map(str, self.mutations))


def _value_strategy(keyword: str) -> st.SearchStrategy:
    vr = dictionary_VR(tag_for_keyword(keyword))
    if keyword in _STRING_VALUES:
        return st.sampled_from(_STRING_VALUES[keyword])
    if vr in ("US", "SS", "UL", "SL"):
        return st.sampled_from(_INT_VALUES)
    if vr == "US or SS" or vr == "US or OW" or vr == "US or SS or OW":
        return st.sampled_from(_INT_VALUES)
    if vr == "DS":
        return st.sampled_from(_DS_VALUES)
    if vr == "IS":
        return st.sampled_from(_IS_VALUES)
    if vr == "UI":
        return st.sampled_from(_UID_VALUES)
    return st.sampled_from(("", "X", "A\\F", "garbage " * 3))


def mutation_strategy() -> st.SearchStrategy[Mutation]:
    keyword = st.sampled_from(TARGETS)
    header = st.one_of(
        keyword.map(lambda k: Mutation("drop", k)),
        keyword.map(lambda k: Mutation("dup", k)),
        st.tuples(keyword, st.binary(min_size=0, max_size=12)).map(lambda t: Mutation("garble", t[0], t[1])),
        keyword.flatmap(lambda k: _value_strategy(k).map(lambda v: Mutation("set", k, v))),
        st.tuples(keyword, st.sampled_from(ODD_VRS)).map(lambda t: Mutation("vr", t[0], t[1])),
        # Rows x Columns (x frames) claiming far more pixels than any radiograph
        st.sampled_from(((65535, 65535), (65535, 1), (1, 65535), (40000, 40000))).map(lambda rc: Mutation("dims", "", rc)),
        st.sampled_from(("1", "100000", "2147483647", "0", "-3")).map(lambda n: Mutation("set", "NumberOfFrames", n)),
    )
    pixels = st.one_of(
        st.floats(0.0, 0.999).map(lambda f: Mutation("pixels_cut", "PixelData", round(f, 3))),
        st.integers(1, 4097).map(lambda n: Mutation("pixels_extend", "PixelData", n)),
        st.integers(0, 5000).map(lambda n: Mutation("pixels_random", "PixelData", n)),
    )
    other = st.one_of(
        st.sampled_from(TRANSFER_SYNTAXES).map(lambda u: Mutation("tsyntax", "TransferSyntaxUID", u)),
        st.floats(0.05, 0.999).map(lambda f: Mutation("file_cut", "", round(f, 3))),
        st.tuples(st.floats(0.0, 1.0), st.integers(0, 255)).map(lambda t: Mutation("flip", "", (round(t[0], 4), t[1]))),
    )
    return st.one_of(header, header, header, pixels, other)


def cases(seeds: Sequence[str], max_mutations: int = 4, weights: dict[str, int] | None = None) -> st.SearchStrategy[Case]:
    """Cases over ``seeds``; ``weights`` (seed -> integer weight, default 1) draws some seeds more often."""
    pool = [s for s in seeds for _ in range((weights or {}).get(s, 1))]
    return st.builds(Case, st.sampled_from(pool), st.lists(mutation_strategy(), min_size=1, max_size=max_mutations))


# ------------------------------------------------------------------------------------------ writing


def _encoding(ds: Dataset) -> tuple[bool, bool]:
    ts = pydicom.uid.UID(str(ds.file_meta.TransferSyntaxUID))
    return ts.is_implicit_VR, ts.is_little_endian


def _raw(tag: int, vr: str, value: bytes, implicit: bool, little: bool) -> RawDataElement:
    return RawDataElement(pydicom.tag.Tag(tag), None if implicit else vr, len(value), value, 0, implicit, little)


def _encode_value(keyword: str, value: Any, vr: str, little: bool) -> bytes:
    end = "<" if little else ">"
    if vr in ("US", "SS", "UL", "SL") or " or " in vr:
        v = int(value)
        fmt = {"US": "H", "SS": "h", "UL": "I", "SL": "i"}.get(vr, "H")
        lo, hi = {"H": (0, 65535), "h": (-32768, 32767), "I": (0, 2**32 - 1), "i": (-(2**31), 2**31 - 1)}[fmt]
        return struct.pack(end + fmt, min(max(v, lo), hi))
    data = str(value).encode("latin-1", "replace")
    return data + (b" " if len(data) % 2 else b"") if vr != "UI" else data + (b"\0" if len(data) % 2 else b"")


def apply_header(ds: Dataset, case: Case, rng: np.random.Generator) -> list[tuple[int, RawDataElement | Any]]:
    """The mutated dataset as an ordered element list (duplicates allowed); file-meta mutations applied to ``ds``."""
    implicit, little = _encoding(ds)
    elements: dict[int, list[Any]] = {int(t): [ds.get_item(t)] for t in ds.keys()}
    for m in case.mutations:
        if m.kind == "tsyntax":
            ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(m.arg)
            continue
        if m.kind in ("file_cut", "flip"):
            continue
        if m.kind == "dims":
            for kw, v in zip(("Rows", "Columns"), m.arg):
                elements[tag_for_keyword(kw)] = [_raw(tag_for_keyword(kw), "US", _encode_value(kw, v, "US", little), implicit, little)]
            continue
        tag = tag_for_keyword(m.keyword)
        vr = dictionary_VR(tag)
        vr = vr.split(" or ")[0] if " or " in vr else vr
        if m.kind == "drop":
            elements.pop(tag, None)
        elif m.kind == "dup" and tag in elements:
            elements[tag].append(elements[tag][0])
        elif m.kind == "garble":
            value = m.arg if m.keyword != "PixelData" else m.arg * 64
            elements[tag] = [_raw(tag, vr if vr != "SQ" else "UN", value, implicit, little)]
        elif m.kind == "set":
            if vr == "SQ":
                continue
            elements[tag] = [_raw(tag, vr, _encode_value(m.keyword, m.arg, vr, little), implicit, little)]
        elif m.kind == "vr" and tag in elements:
            current = elements[tag][0]
            value = _element_bytes(current, implicit, little)
            elements[tag] = [_raw(tag, m.arg, value, implicit, little)]
        elif m.kind.startswith("pixels_") and tag in elements:
            value = _element_bytes(elements[tag][0], implicit, little)
            if m.kind == "pixels_cut":
                value = value[: int(len(value) * m.arg)]
            elif m.kind == "pixels_extend":
                value = value + bytes(rng.integers(0, 256, m.arg, dtype=np.uint8))
            else:
                value = bytes(rng.integers(0, 256, m.arg, dtype=np.uint8))
            pix_vr = "OB" if ds._fuzz_compressed else "OW"  # type: ignore[attr-defined]  # the data's own encoding
            elements[tag] = [_raw(tag, pix_vr, value, implicit, little)]
    return sorted(((t, e) for t, es in elements.items() for e in es), key=lambda te: te[0])


def _element_bytes(elem: Any, implicit: bool, little: bool) -> bytes:
    if isinstance(elem, RawDataElement):
        return bytes(elem.value or b"")
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_data_element(fp, elem)
    data = fp.getvalue()
    header = 8 if implicit or elem.VR not in ("OB", "OW", "OF", "SQ", "UT", "UN", "OD", "OL", "OV", "UC", "UR") else 12
    return data[header:]


def encode(ds: Dataset, elements: list[tuple[int, Any]], case: Case) -> bytes:
    """Preamble, file meta and the element list in the seed's encoding, then the byte-level mutations."""
    implicit, little = ds._fuzz_encoding  # type: ignore[attr-defined]
    out = DicomBytesIO()
    out.write(b"\0" * 128 + b"DICM")
    meta = FileMetaDataset(ds.file_meta)
    write_file_meta_info(out, meta, enforce_standard=False)
    body = DicomBytesIO()
    body.is_implicit_VR, body.is_little_endian = implicit, little
    for _, elem in elements:
        try:
            write_data_element(body, elem, ds.get("SpecificCharacterSet", None) and ["iso8859"])
        except Exception:  # an element pydicom cannot encode under the drawn VR: written as raw bytes
            pass
    data = out.getvalue() + body.getvalue()
    rng = np.random.default_rng(len(data))
    for m in case.mutations:
        if m.kind == "file_cut":
            data = data[: max(1, int(len(data) * m.arg))]
        elif m.kind == "flip" and len(data) > 132:
            # flip a byte in the header region (the first 4 KiB after the preamble), where it hurts most
            pos = 132 + int(m.arg[0] * (min(len(data), 4096) - 133))
            data = data[:pos] + bytes([m.arg[1]]) + data[pos + 1 :]
    del rng
    return data


_SEED_CACHE: dict[str, bytes] = {}


def seed_bytes(path: str) -> bytes:
    if path not in _SEED_CACHE:
        with open(path, "rb") as fh:
            _SEED_CACHE[path] = fh.read()
    return _SEED_CACHE[path]


def materialise(case: Case, seed_paths: dict[str, str], out_path: str, overrides: dict[str, Any] | None = None) -> str:
    """Write the case's file to ``out_path`` (with the PHI values of :data:`PHI` in the header, and the
    ``overrides`` set before the mutations)."""
    ds = pydicom.dcmread(io.BytesIO(seed_bytes(seed_paths[case.seed])), force=True)
    for kw, v in (overrides or {}).items():
        setattr(ds, kw, v)
    if "TransferSyntaxUID" not in ds.file_meta:
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    ds._fuzz_encoding = _encoding(ds)  # type: ignore[attr-defined]
    ds._fuzz_compressed = pydicom.uid.UID(str(ds.file_meta.TransferSyntaxUID)).is_compressed  # type: ignore[attr-defined]
    for kw, v in PHI.items():
        setattr(ds, kw, v)
    rng = np.random.default_rng(abs(hash(str(case))) % 2**32)
    elements = apply_header(ds, case, rng)
    with open(out_path, "wb") as fh:
        fh.write(encode(ds, elements, case))
    return out_path


# ------------------------------------------------------------------------------------------ oracle


class CaseTimeout(Exception):
    pass


@dataclass
class Outcome:
    surface: str
    kind: str  # "image" | "typed_error" | "skip" | "crash"
    detail: str = ""
    seconds: float = 0.0


# Errors about the file as a whole (no element to name): the file is not DICOM, is empty, or ends inside an
# element before the pixel data. Every other typed error must name the field.
FILE_LEVEL_REASONS = ("not a DICOM file", "file is empty", "truncated or corrupt DICOM file", "does not exist")


def judge_error(err: BaseException, path: str, require_field: bool = True) -> tuple[str, str]:
    """``("typed_error", message)`` when ``err`` is acceptable, else ``("crash", why)``."""
    from monai_medunic.errors import DataError, MedUniCError

    text = f"{type(err).__name__}: {err}"
    if not isinstance(err, MedUniCError):
        return "crash", "bare library exception " + text + "\n" + "".join(traceback.format_tb(err.__traceback__)[-3:])
    for v in PHI.values():
        for part in [v, *v.split("^")]:
            if len(part) >= 4 and part in str(err):
                return "crash", f"PHI value in the error message: {text}"
    if isinstance(err, DataError):
        if err.path is None or os.path.basename(path) not in str(err):
            return "crash", f"typed error without the file name: {text}"
        if require_field and err.field is None and not any(r in err.reason for r in FILE_LEVEL_REASONS):
            return "crash", f"typed error without a field: {text}"
    else:
        if os.path.basename(path) not in str(err):
            return "crash", f"typed error without the file name: {text}"
    return "typed_error", text


def judge_image(img: Any, header: Dataset | None) -> tuple[str, str]:
    import torch
    from monai.data import MetaTensor

    if not isinstance(img, MetaTensor) or img.dtype != torch.float32 or img.ndim != 3:
        return "crash", f"not a (C, H, W) float32 MetaTensor: {type(img).__name__} {getattr(img, 'shape', None)}"
    arr = img.numpy()
    if not np.isfinite(arr).all() or arr.min() < 0.0 or arr.max() > 1.0:
        return "crash", f"values outside [0, 1] or non-finite: min {np.nanmin(arr)}, max {np.nanmax(arr)}"
    if header is not None and "Rows" in header and "Columns" in header:
        try:
            rows, cols = int(header.Rows), int(header.Columns)
        except Exception:
            rows = cols = None
        if rows is not None and tuple(arr.shape[1:]) != (rows, cols):
            return "crash", f"image shape {arr.shape} differs from Rows x Columns {(rows, cols)}"
    return "image", f"{tuple(arr.shape)}"


def _alarm(signum, frame):  # pragma: no cover - only on a hang
    raise CaseTimeout()


def run_guarded(fn: Callable[[], Any], timeout_s: float, memory_headroom: int) -> tuple[Any, BaseException | None, float]:
    """Call ``fn`` with a wall-clock alarm and an address-space limit ``memory_headroom`` bytes above the current size
    (so an allocation for 65535 x 65535 pixels fails with MemoryError instead of taking the machine)."""
    old_handler = signal.signal(signal.SIGALRM, _alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _vm_size() + memory_headroom
    if memory_headroom > 0:
        resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    t0 = time.perf_counter()
    try:
        return fn(), None, time.perf_counter() - t0
    except CaseTimeout as err:
        return None, err, time.perf_counter() - t0
    except BaseException as err:  # judged by the caller
        if isinstance(err, KeyboardInterrupt):
            raise
        return None, err, time.perf_counter() - t0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        if memory_headroom > 0:
            resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


# ----------------------------------------------------------------------------------------- surfaces

SURFACES = ("LoadDicomImage", "LoadImage(GrayscaleDicomReader)", "deploy_header_screen", "LoadDicomSeriesVolume")
SERIES_SEEDS = ("CT_small.dcm", "MR_small.dcm", "MR_small_bigendian.dcm", "MR_small_implicit.dcm", "demo_ct_slice.dcm")


class Surfaces:
    """The loaders under test, built once (the Deploy loader operator needs the SDK and a fragment)."""

    def __init__(self, with_deploy: bool = True) -> None:
        from monai.transforms import LoadImage

        from monai_medunic.transforms import GrayscaleDicomReader, LoadDicomImage, LoadDicomSeriesVolume

        self.load = LoadDicomImage()
        self.load_monai = LoadImage(reader=GrayscaleDicomReader(), image_only=True)
        self.volume = LoadDicomSeriesVolume()
        self.loader_op = None
        if with_deploy:
            from monai.deploy.core import Fragment

            from monai_medunic.deploy.loader import ScreenedDICOMDataLoaderOperator

            self.loader_op = ScreenedDICOMDataLoaderOperator(Fragment(), input_folder=".", name="fuzz_loader")

    def screen(self, path: str) -> Any:
        """The header screen, then the SDK loader on what it lets through: it must not stop on the file."""
        try:
            from monai_medunic.deploy.loader import screen_dicom_file
        except ImportError:  # an older tree (the fuzz script's --baseline run): the operator screens itself
            screen_dicom_file = None
        if screen_dicom_file is None:
            self.loader_op._load_data([path])
            return True
        header = screen_dicom_file(path)
        if self.loader_op is not None:
            self.loader_op._load_data([path])
        return header


def _header_or_none(path: str) -> Dataset | None:
    try:
        return pydicom.dcmread(path, stop_before_pixels=True)
    except Exception:
        return None


def series_neighbours(seed_path: str, folder: str, n: int = 5, middle: int = 2) -> dict[str, Any]:
    """Write the ``n - 1`` intact slices of a series around the mutated one (a copy of the seed moved along its
    normal by ``k`` x 2 mm, new SOP UIDs); returns the header overrides of the middle slice."""
    ds = pydicom.dcmread(seed_path)
    iop = [float(v) for v in ds.get("ImageOrientationPatient", [1, 0, 0, 0, 1, 0])]
    normal = np.cross(iop[:3], iop[3:])
    origin = np.asarray([float(v) for v in ds.get("ImagePositionPatient", [0, 0, 0])])
    series = pydicom.uid.generate_uid(entropy_srcs=[folder, "series"])
    overrides: dict[str, Any] = {}
    for k in range(n):
        pos = [f"{v:.4f}" for v in origin + normal * 2.0 * k]
        values = {"ImagePositionPatient": pos, "InstanceNumber": k + 1, "SeriesInstanceUID": series, "SliceThickness": "2",
                  "ImageOrientationPatient": [f"{v:g}" for v in iop]}
        if k == middle:
            overrides = values
            continue
        s = pydicom.dcmread(seed_path)
        for kw, v in values.items():
            setattr(s, kw, v)
        s.SOPInstanceUID = pydicom.uid.generate_uid(entropy_srcs=[folder, str(k)])
        s.file_meta.MediaStorageSOPInstanceUID = s.SOPInstanceUID
        s.save_as(os.path.join(folder, f"slice_{k}.dcm"), enforce_file_format=True)
    return overrides


def check_case(case: Case, seed_paths: dict[str, str], workdir: str, surfaces: Surfaces, timeout_s: float = 60.0,
               memory_headroom: int = 3 << 30) -> list[Outcome]:
    """Materialise ``case`` and feed it to every surface; one :class:`Outcome` per surface."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "case.dcm")
    materialise(case, seed_paths, path)
    header = _header_or_none(path)
    outcomes = []
    for name, fn, is_image in (
        ("LoadDicomImage", lambda: surfaces.load(path), True),
        ("LoadImage(GrayscaleDicomReader)", lambda: surfaces.load_monai(path), True),
        ("deploy_header_screen", lambda: surfaces.screen(path), False),
    ):
        result, err, secs = run_guarded(fn, timeout_s, memory_headroom)
        if isinstance(err, CaseTimeout):
            outcomes.append(Outcome(name, "crash", f"hang: no answer within {timeout_s:g} s", secs))
        elif err is not None:
            kind, detail = judge_error(err, path)
            outcomes.append(Outcome(name, kind, detail, secs))
        elif is_image:
            kind, detail = judge_image(result, header)
            outcomes.append(Outcome(name, kind, detail, secs))
        else:
            outcomes.append(Outcome(name, "image" if result is not None else "crash", "header accepted", secs))
    if case.seed in SERIES_SEEDS:
        folder = os.path.join(workdir, "series")
        os.makedirs(folder, exist_ok=True)
        for f in os.listdir(folder):
            os.remove(os.path.join(folder, f))
        overrides = series_neighbours(seed_paths[case.seed], folder)
        materialise(case, seed_paths, os.path.join(folder, "slice_2.dcm"), overrides)
        result, err, secs = run_guarded(lambda: surfaces.volume(folder), timeout_s, memory_headroom)
        if isinstance(err, CaseTimeout):
            outcomes.append(Outcome("LoadDicomSeriesVolume", "crash", f"hang: no answer within {timeout_s:g} s", secs))
        elif err is not None:
            kind, detail = judge_error(err, folder)
            if kind == "crash" and "without the file name" in detail and "slice_2.dcm" in str(err):
                kind = "typed_error"  # a slice's error names the slice's file, inside the folder
            outcomes.append(Outcome("LoadDicomSeriesVolume", kind, detail, secs))
        else:
            arr = result.numpy()
            ok = result.ndim == 4 and np.isfinite(arr).all()
            outcomes.append(Outcome("LoadDicomSeriesVolume", "image" if ok else "crash",
                                    f"{tuple(arr.shape)}" if ok else f"non-finite or bad shape {arr.shape}", secs))
    return outcomes


def seed_paths(demo_dir: str | None, large: bool = False) -> dict[str, str]:
    """Seed name -> file: pydicom's test files, plus the demo generator's CR, DX and a CT slice when
    ``demo_dir`` is given (generated there once)."""
    from pydicom.data import get_testdata_file

    paths = {name: get_testdata_file(name) for name in SMALL_SEEDS + (LARGE_SEEDS if large else ())}
    if demo_dir is not None:
        paths.update(demo_seeds(demo_dir))
    return paths


def demo_seeds(demo_dir: str) -> dict[str, str]:
    from monai_medunic.data.demo import generate_demo_dataset

    root = os.path.join(demo_dir, "demo")
    if not os.path.isdir(root):
        generate_demo_dataset(root, num_studies=6, seed=5, image_size=64, lateral_fraction=0.0, sr_fraction=0.0,
                              jpeg2000_fraction=0.0, num_ct_studies=1, ct_shape=(16, 48, 48), radiograph_truth=False)
    found: dict[str, str] = {}
    for d, _, fs in sorted(os.walk(root)):
        for f in sorted(fs):
            p = os.path.join(d, f)
            if not f.endswith(".dcm"):
                continue
            modality = str(pydicom.dcmread(p, stop_before_pixels=True).Modality)
            key = {"CR": "demo_cr.dcm", "DX": "demo_dx.dcm", "CT": "demo_ct_slice.dcm"}.get(modality)
            if key and key not in found:
                found[key] = p
    return found
