"""DICOM writing of the demo studies: CR / DX images (storage variants), the report as a Comprehensive SR."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)

from monai_medunic.data.demo.cases import DemoCase

__all__ = ["CR_STORAGE", "DX_PRESENTATION_STORAGE", "DX_PROCESSING_STORAGE", "CT_STORAGE", "write_ct_series"]

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
DX_PROCESSING_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root; suffixes are hashes of the seed and study


@dataclass
class _Storage:
    sop_class: str
    modality: str
    photometric: str
    bits_stored: int
    window: str  # "single", "double", "none", "sigmoid", "linear_exact"
    intercept: int
    jpeg2000: bool
    presentation_intent: str = ""  # DX only: "FOR PRESENTATION" or "FOR PROCESSING"


def _sample_storage(rng: np.random.Generator, mono1_fraction: float, j2k_fraction: float) -> _Storage:
    dx = rng.random() < 0.5
    bits = int(rng.choice([8, 10, 12, 14, 16], p=[0.2, 0.2, 0.3, 0.15, 0.15]))
    window = str(rng.choice(["single", "double", "none", "sigmoid", "linear_exact"], p=[0.45, 0.2, 0.15, 0.1, 0.1]))
    intercept = 0 if dx or bits < 12 or rng.random() < 0.6 else -int(rng.choice([512, 1024]))
    # A DX image FOR PRESENTATION must carry a VOI transform (PS3.3 C.8.11.3.1.5); a DX image without
    # one is stored as what such images are in practice, FOR PROCESSING (its own SOP class), so the
    # loader's no-window fallback is still exercised on DX as on CR.
    for_processing = dx and window == "none"
    return _Storage(
        sop_class=(DX_PROCESSING_STORAGE if for_processing else DX_PRESENTATION_STORAGE) if dx else CR_STORAGE,
        modality="DX" if dx else "CR",
        photometric="MONOCHROME1" if rng.random() < mono1_fraction else "MONOCHROME2",
        bits_stored=bits,
        window=window,
        intercept=intercept,
        jpeg2000=bool(rng.random() < j2k_fraction),
        presentation_intent=("FOR PROCESSING" if for_processing else "FOR PRESENTATION") if dx else "",
    )


def _uid(seed: int, *parts: Any) -> str:
    return generate_uid(prefix=_UID_PREFIX, entropy_srcs=["monai-medunic-demo", str(seed), *map(str, parts)])


# Synthetic but realistic identities (English and Spanish names, hospital-style IDs, plausible birth dates):
# the demo data exercise the "no PHI in any output" rule with values that look like what a hospital sends.
_FAMILY_NAMES = ("Garcia", "Martinez", "Lopez", "Sanchez", "Romero", "Navarro", "Dominguez", "Castillo", "Ortega",
                 "Iglesias", "Whitfield", "Harrington", "Okafor", "Lindqvist", "Brennan", "Kowalski", "Thornbury",
                 "Abernathy", "Delacroix", "Fairweather", "Montoya", "Quintero", "Valderrama", "Ashcombe")
_GIVEN_NAMES = {"F": ("Lucia", "Carmen", "Ines", "Pilar", "Rosario", "Margaret", "Evelyn", "Harriet", "Imogen", "Beatriz"),
                "M": ("Javier", "Alvaro", "Ignacio", "Rodrigo", "Tomas", "Gareth", "Desmond", "Reginald", "Ambrose", "Esteban")}


def synthetic_identity(seed: int, index: int, sex: str, kind: str = "") -> tuple[str, str, str]:
    """``(PatientName, PatientID, PatientBirthDate)`` of demo study ``index``: realistic in form, drawn from the
    seed (no real person), distinct per study and per modality ``kind``."""
    rng = np.random.default_rng([seed, index, 7919, len(kind)])
    family, second = rng.choice(_FAMILY_NAMES, size=2, replace=False)
    given = str(rng.choice(_GIVEN_NAMES.get(sex, _GIVEN_NAMES["F"])))
    name = f"{family}-{second}^{given}" if rng.random() < 0.4 else f"{family}^{given}"
    patient_id = f"{'CT' if kind else 'RX'}{seed % 100:02d}{index + 1:05d}{int(rng.integers(10, 99))}"
    birth = f"{int(rng.integers(1931, 2004))}{int(rng.integers(1, 13)):02d}{int(rng.integers(1, 29)):02d}"
    return name, patient_id, birth


def _patient(ds: Dataset, seed: int, index: int, rng_sex: str, kind: str = "") -> None:
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = synthetic_identity(seed, index, rng_sex, kind)
    ds.PatientSex = rng_sex
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Synthetic phantom, no real patient (monai-medunic demo data)"


def _image_dataset(
    img: np.ndarray,
    storage: _Storage,
    *,
    seed: int,
    case: DemoCase,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    view: str,
    view_encoding: str,
    series_number: int,
    study_date: str,
    sex: str,
    pixel_spacing: float,
    rng: np.random.Generator,
) -> Dataset:
    maxval = 2**storage.bits_stored - 1
    display = np.clip(img, 0.0, 1.0)
    values = display if storage.photometric == "MONOCHROME2" else 1.0 - display
    offset = -storage.intercept  # stored = value + offset, so value = stored + intercept
    span = maxval - offset
    stored = np.rint(values * span + offset).astype(np.uint16 if storage.bits_stored > 8 else np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = storage.sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = storage.sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"DEMO{case.index + 1:05d}"
    ds.AccessionNumber = f"SYNACC{seed % 1000:03d}{case.index + 1:05d}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyDescription = "SYNTHETIC CHEST RADIOGRAPH (DEMO)"
    ds.ReferringPhysicianName = ""
    _patient(ds, seed, case.index, sex)
    ds.Modality = storage.modality
    ds.Manufacturer = "monai-medunic synthetic phantom"
    ds.InstitutionName = "SYNTHETIC DEMO HOSPITAL"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    # view attributes, in several encodings so that every rule of classify_view is exercised
    ds.ViewPosition = ""
    if view == "frontal":
        if view_encoding == "view_position":
            ds.ViewPosition = "PA" if storage.modality == "CR" or rng.random() < 0.5 else "AP"
            ds.SeriesDescription = "CHEST" if case.language == "en" else "TORAX"
            ds.PatientOrientation = ["L", "F"]
        elif view_encoding == "patient_orientation":
            ds.PatientOrientation = ["L", "F"]
        else:
            ds.SeriesDescription = "CHEST PA" if case.language == "en" else "TORAX PA"
            # CR: Type 2C (present, empty = unknown); DX: Type 1C, so DX images always state it
            ds.PatientOrientation = ["L", "F"] if storage.modality == "DX" else ""
    else:
        if view_encoding == "view_position":
            ds.ViewPosition = "LL"
            ds.SeriesDescription = "CHEST" if case.language == "en" else "TORAX"
            ds.PatientOrientation = ["A", "F"]
        elif view_encoding == "patient_orientation":
            ds.PatientOrientation = ["A", "F"]
        else:
            ds.SeriesDescription = "CHEST LAT" if case.language == "en" else "TORAX LATERAL"
            ds.PatientOrientation = ["A", "F"] if storage.modality == "DX" else ""
    if storage.modality == "DX":
        _dx_attributes(ds, storage, pixel_spacing)
    else:
        ds.PixelSpacing = [pixel_spacing, pixel_spacing]
    ds.Rows, ds.Columns = int(img.shape[0]), int(img.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = storage.photometric
    ds.BitsAllocated = 8 if storage.bits_stored == 8 else 16
    ds.BitsStored = storage.bits_stored
    ds.HighBit = storage.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    if storage.intercept != 0 or storage.modality == "DX":  # DX: Type 1, identity (PS3.3 C.8.11.3.1.6)
        ds.RescaleIntercept = storage.intercept
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
    # windows on the modality-LUT output; they cover the body's intensity range
    real = stored.astype(np.float64) + storage.intercept
    lo, hi = (float(v) for v in np.percentile(real, [1.0, 99.8]))
    width = max(hi - lo, 2.0) * float(rng.uniform(0.95, 1.12))
    center = 0.5 * (lo + hi) + float(rng.uniform(-0.03, 0.03)) * width
    if storage.window in ("single", "sigmoid", "linear_exact"):
        ds.WindowCenter = round(center, 1)
        ds.WindowWidth = round(width, 1)
        if storage.window == "sigmoid":
            ds.VOILUTFunction = "SIGMOID"
        elif storage.window == "linear_exact":
            ds.VOILUTFunction = "LINEAR_EXACT"
        ds.WindowCenterWidthExplanation = "DEMO"
    elif storage.window == "double":
        ds.WindowCenter = [round(center, 1), round(center + 0.15 * width, 1)]
        ds.WindowWidth = [round(width, 1), round(0.4 * width, 1)]
        ds.WindowCenterWidthExplanation = ["STANDARD", "BONE"]
    ds.LossyImageCompression = "00"
    ds.PixelData = stored.tobytes()
    if storage.jpeg2000:
        # lossless: the same instance, so keep the SOP Instance UID (pydicom would make a new one)
        ds.compress(JPEG2000Lossless, stored, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    return ds


_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})


def _element_bytes(tag: int, vr: str, value: bytes) -> bytes:
    """One data element in Explicit VR Little Endian (PS3.5 7.1.2), value padded to even length."""
    import struct

    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB") else b" "
    if vr in _LONG_VRS:
        return struct.pack("<HH2s2xI", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), len(value)) + value
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr.encode("ascii"), len(value)) + value


def _ds(value: float) -> str:
    """A Decimal String of at most 4 decimals, without trailing zeros."""
    text = f"{round(float(value), 4):.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


class _SeriesEncoder:
    """Encodes instances that share all but a few elements, in exactly the bytes ``save_as`` writes.

    The shared elements and the file meta are encoded once (by pydicom); per instance only the SOP
    Instance UID, a few short elements and the pixel data are encoded, then everything is joined in
    tag order (Explicit VR Little Endian needs no other context). This writes a 64-slice CT series
    several times faster than 64 ``save_as`` calls; a test compares the bytes with ``save_as``.
    """

    _META_UID = 0x00020003  # Media Storage SOP Instance UID
    _META_LENGTH = 0x00020000  # File Meta Information Group Length

    def __init__(self, shared: Dataset, sop_class: str) -> None:
        from pydicom.charset import convert_encodings
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_file_meta_info

        self.encodings = convert_encodings(shared.get("SpecificCharacterSet", "ISO_IR 6"))
        self.encoded = {int(elem.tag): self._encode(elem) for elem in shared}
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = "1.2"  # placeholder: replaced per instance
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        write_file_meta_info(DicomBytesIO(), meta, enforce_standard=True)  # completes the meta as save_as does
        self.meta = {int(e.tag): self._encode(e) for e in meta if int(e.tag) not in (self._META_UID, self._META_LENGTH)}

    def _encode(self, elem: Any) -> bytes:
        from pydicom.filebase import DicomBytesIO
        from pydicom.filewriter import write_data_element

        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_data_element(fp, elem, self.encodings)
        return fp.getvalue()

    def encode(self, sop_uid: str, varying: Sequence[tuple[int, str, bytes]]) -> bytes:
        """The file's bytes: ``varying`` holds ``(tag, VR, value bytes)`` of the per-instance elements."""
        import struct

        meta = dict(self.meta)
        meta[self._META_UID] = _element_bytes(self._META_UID, "UI", sop_uid.encode("ascii"))
        group = b"".join(meta[t] for t in sorted(meta))
        parts = dict(self.encoded)
        parts[0x00080018] = _element_bytes(0x00080018, "UI", sop_uid.encode("ascii"))  # SOP Instance UID
        for tag, vr, value in varying:
            parts[tag] = _element_bytes(tag, vr, value)
        return b"".join(
            [b"\0" * 128, b"DICM", _element_bytes(self._META_LENGTH, "UL", struct.pack("<I", len(group))), group]
            + [parts[t] for t in sorted(parts)]
        )


def _ct_shared_dataset(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    *,
    seed: int,
    index: int,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    study_date: str,
    sex: str,
    language: str,
) -> Dataset:
    dz, row_sp, col_sp = (float(v) for v in spacing)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CT_STORAGE
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.StudyID = f"DEMOCT{index + 1:05d}"
    ds.AccessionNumber = f"SYNCT{seed % 1000:03d}{index + 1:05d}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = "120000"
    ds.StudyDescription = "SYNTHETIC CHEST CT (DEMO)"
    ds.SeriesDescription = "CHEST AXIAL" if language == "en" else "TORAX AXIAL"
    ds.ReferringPhysicianName = ""
    _patient(ds, seed, index, sex, kind="CT")
    ds.Modality = "CT"
    ds.Manufacturer = "monai-medunic synthetic phantom"
    ds.InstitutionName = "SYNTHETIC DEMO HOSPITAL"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "HFS"
    ds.SeriesNumber = 2
    ds.AcquisitionNumber = 1
    ds.KVP = 120
    ds.SliceThickness = round(dz, 4)
    ds.SpacingBetweenSlices = round(dz, 4)
    ds.PixelSpacing = [round(row_sp, 6), round(col_sp, 6)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.Rows, ds.Columns = int(shape[1]), int(shape[2])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = [40, -600]
    ds.WindowWidth = [400, 1500]
    ds.WindowCenterWidthExplanation = ["MEDIASTINUM", "LUNG"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    return ds


def _ct_slice_elements(stored: np.ndarray, k: int, origin: Sequence[float], dz: float) -> list[tuple[int, str, bytes]]:
    """Instance Number, Image Position, Slice Location and Pixel Data of slice ``k``."""
    z_k = float(origin[2]) + k * dz
    position = "\\".join(_ds(v) for v in (origin[0], origin[1], z_k))
    return [
        (0x00200013, "IS", str(k + 1).encode("ascii")),  # Instance Number
        (0x00200032, "DS", position.encode("ascii")),  # Image Position (Patient)
        (0x00201041, "DS", _ds(z_k).encode("ascii")),  # Slice Location
        (0x7FE00010, "OW", stored[k].tobytes()),  # Pixel Data
    ]


def write_ct_series(
    folder: str,
    hu: np.ndarray,
    spacing: tuple[float, float, float],
    origin: tuple[float, float, float],
    *,
    seed: int,
    index: int,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    study_date: str,
    sex: str,
    language: str,
) -> list[str]:
    """Write a ``(slices, rows, columns)`` HU volume as a CT Image Storage series, one file per slice.

    Stored values are ``HU + 1024`` in 12 bits (Rescale Slope 1, Intercept -1024, Rescale Type HU), so
    the loader's Modality LUT gives back the HU up to rounding. Axial slices (Image Orientation
    ``1\\0\\0\\0\\1\\0``), Image Position of slice ``k`` at ``origin + k * spacing[0]`` along +z
    (inferior to superior) and Instance Number ``k + 1``, so sorting by position or by instance number
    gives the same order. Two windows (mediastinum, lung) are stated; the patient lies head first
    supine. Returns the written paths (``slice_0001.dcm`` ...).
    """
    import os

    stored = np.rint(np.clip(hu, -1024.0, 3071.0) + 1024.0).astype(np.uint16)
    shared = _ct_shared_dataset(
        stored.shape, spacing, seed=seed, index=index, study_uid=study_uid, series_uid=series_uid,
        frame_uid=frame_uid, study_date=study_date, sex=sex, language=language,
    )
    encoder = _SeriesEncoder(shared, CT_STORAGE)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for k in range(stored.shape[0]):
        path = os.path.join(folder, f"slice_{k + 1:04d}.dcm")
        with open(path, "wb") as fh:
            fh.write(encoder.encode(_uid(seed, index, "ct-image", k), _ct_slice_elements(stored, k, origin, float(spacing[0]))))
        paths.append(path)
    return paths


def _code_item(code: Any) -> Dataset:
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    return item


def _dx_attributes(ds: Dataset, storage: _Storage, pixel_spacing: float) -> None:
    """The DX Image, DX Anatomy Imaged, DX Positioning and Acquisition Context attributes (PS3.3 C.8.11).

    Pixel intensity relationship: the phantom's stored values are log-exposure-like (``LOG``); for
    MONOCHROME2 higher values mean less X-ray intensity (dense, sign -1), for MONOCHROME1 the reverse
    (+1). None of these changes the loaded pixels: the Modality LUT is the identity (slope 1,
    intercept 0), and the View Code Sequence is only written where ``ViewPosition`` already decides the
    view (:func:`monai_medunic.transforms.views.classify_view` trusts ``ViewPosition`` first). DX
    images always state their Patient Orientation (Type 1C there), so on DX the SeriesDescription
    view encoding is preceded by the orientation, which gives the same view.
    """
    from pydicom.sr.codedict import codes

    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImagerPixelSpacing = [pixel_spacing, pixel_spacing]
    ds.PresentationIntentType = storage.presentation_intent
    ds.PresentationLUTShape = "INVERSE" if storage.photometric == "MONOCHROME1" else "IDENTITY"
    ds.DetectorType = "SCINTILLATOR"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1 if storage.photometric == "MONOCHROME1" else -1
    ds.ImageLaterality = "U"  # the chest is an unpaired region
    ds.AnatomicRegionSequence = [_code_item(codes.SCT.Chest)]
    ds.PositionerType = "COLUMN"
    view_code = {"PA": codes.SCT.PosteroAnterior, "AP": codes.SCT.AnteroPosterior, "LL": codes.SCT.LeftLateral}.get(
        str(ds.get("ViewPosition", ""))
    )
    if view_code is not None:  # Type 3 in DX Positioning: one item, or absent
        ds.ViewCodeSequence = [_code_item(view_code)]
    ds.AcquisitionContextSequence = []


def _fixed_times(ds: Dataset, study_date: str) -> None:
    for kw, value in (
        ("InstanceCreationDate", study_date),
        ("InstanceCreationTime", "130000"),
        ("ContentDate", study_date),
        ("ContentTime", "130000"),
        ("SeriesDate", study_date),
        ("SeriesTime", "130000"),
    ):
        if kw in ds:
            setattr(ds, kw, value)
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = f"{study_date}130000"


class _QuietLoggers:
    """Raise the level of chatty third-party loggers (highdicom logs each copied module at INFO)."""

    def __init__(self, *names: str) -> None:
        self.loggers = [logging.getLogger(n) for n in names]
        self.levels = [lg.level for lg in self.loggers]

    def __enter__(self) -> None:
        for lg in self.loggers:
            lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))

    def __exit__(self, *exc: Any) -> None:
        for lg, level in zip(self.loggers, self.levels):
            lg.setLevel(level)


def _sr_dataset(
    image: Dataset, case: DemoCase, parts: tuple[str, str], language: str, *, sr_series: str, sr_uid: str, study_date: str
) -> Dataset:
    import highdicom as hd

    lang_code = hd.sr.CodedConcept(value=language, scheme_designator="RFC5646", meaning={"en": "English", "es": "Spanish"}[language])
    items: list[Any] = list(hd.sr.LanguageOfContentItemAndDescendants(language=lang_code))
    findings_text, impression_text = parts
    findings = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept("121070", "DCM", "Findings"), relationship_type="CONTAINS"
    )
    findings.ContentSequence = [
        hd.sr.TextContentItem(
            name=hd.sr.CodedConcept("121071", "DCM", "Finding"), value=findings_text, relationship_type="CONTAINS"
        )
    ]
    items.append(findings)
    if impression_text:
        impression = hd.sr.ContainerContentItem(
            name=hd.sr.CodedConcept("121072", "DCM", "Impressions"), relationship_type="CONTAINS"
        )
        impression.ContentSequence = [
            hd.sr.TextContentItem(
                name=hd.sr.CodedConcept("121073", "DCM", "Impression"), value=impression_text, relationship_type="CONTAINS"
            )
        ]
        items.append(impression)
    root = hd.sr.ContainerContentItem(name=hd.sr.CodedConcept("18748-4", "LN", "Diagnostic imaging report"))
    root.ContentSequence = items
    sr = hd.sr.ComprehensiveSR(
        evidence=[image],
        content=root,
        series_instance_uid=sr_series,
        series_number=99,
        sop_instance_uid=sr_uid,
        instance_number=1,
        manufacturer="monai-medunic synthetic phantom",
        is_complete=True,
        is_final=True,
        series_description="SYNTHETIC REPORT (DEMO)",
    )
    _fixed_times(sr, study_date)
    return sr

