"""DICOM Comprehensive 3D SR for zero-shot chest X-ray findings, built with highdicom.

The document follows the IHE Radiology "AI Results" (AIR) profile's recommendation for qualitative
AI findings: a Comprehensive 3D SR whose root is TID 1500 (Measurement Report). Every configured
finding is one TID 1501 measurement group holding

* the finding type (a coded concept: SNOMED CT where the DICOM code dictionary has a matching
  concept, otherwise a local ``99MEDUNIC`` code declared in the Coding Scheme Identification),
* a qualitative evaluation: the finding concept with value Present / Absent (the bundle's calibrated
  decision, ``s_pos - s_neg >= threshold`` of the finding and language; for an uncalibrated bundle the
  zero-shot decision ``s_pos > s_neg`` of Med-UniC, Sec. 4.2),
* a TID 300 measurement "Probability" (unit UCUM ``1``): the Platt-scaled probability of the bundle's
  calibration (:mod:`monai_medunic.metrics.calibration`); for an uncalibrated finding the score
  ``sigmoid((s_pos - s_neg) / tau)``, and the algorithm parameters then say it is not a probability,
* the algorithm identification (TID 4019: bundle name and version, prompt language) and a reference
  to the source image.

The content (code meanings, text) is written in the configured language (``en`` or ``es``), declared
by TID 1204 "Language of Content Item and Descendants", with ``SpecificCharacterSet = ISO_IR 192``
(UTF-8) so that Spanish accents survive. A TEXT comment at the root says the findings are research
output and not a diagnosis; the SR's Content Qualification is ``RESEARCH`` and it is unverified.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr.utils import find_content_items
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from monai_medunic.errors import ConfigurationError, DataError
from monai_medunic.text.prompts import translate_finding

from .results import StudyFindings

__all__ = [
    "build_findings_sr",
    "write_findings_sr",
    "finding_concept",
    "SR_LANGUAGES",
    "LOCAL_SCHEME",
    "SR_SERIES_NUMBER",
    "read_findings_sr",
]

LOCAL_SCHEME = "99MEDUNIC"
SR_SERIES_NUMBER = 9901
# SNOMED CT concepts of the DICOM code dictionary (pydicom.sr.codedict) for the findings that have one.
_SCT_ATTRIBUTE = {
    "Cardiomegaly": "Cardiomegaly",
    "Pleural Effusion": "PleuralEffusion",
    "Pneumothorax": "Pneumothorax",
    "Nodule": "Nodule",
    "Edema": "PulmonaryEdema",  # the chest X-ray finding "Edema" (CheXpert, PadChest) is pulmonary edema
    "Mass": "Mass",
    "Fibrosis": "Fibrosis",
    "Lesion": "Lesion",
    "Heart Insufficiency": "HeartFailure",
    "Normal": "Normal",
}

# The SR's own words, per language (finding names come from monai_medunic.text.prompts).
SR_LANGUAGES: dict[str, dict[str, str]] = {
    "en": {
        "language_code": "en-US",
        "language_meaning": "English (United States)",
        "title": "Imaging Measurement Report",
        "procedure": "Imaging procedure",
        "probability": "Probability",
        "no_units": "no units",
        "present": "Present",
        "absent": "Absent",
        "comment": "Comment",
        "disclaimer": (
            "Zero-shot chest X-ray finding scores computed by the research model {algorithm} {version} "
            "with {language} prompts. Not a diagnosis: research use only, to be reviewed by a radiologist."
        ),
        "series_description": "AI CXR zero-shot findings - research, not for diagnosis",
        "language_name": "English",
    },
    "es": {
        "language_code": "es",
        "language_meaning": "Español",
        "title": "Informe de mediciones de imagen",
        "procedure": "Procedimiento de imagen",
        "probability": "Probabilidad",
        "no_units": "sin unidades",
        "present": "Presente",
        "absent": "Ausente",
        "comment": "Comentario",
        "disclaimer": (
            "Puntuaciones zero-shot de hallazgos en radiografía de tórax calculadas por el modelo de "
            "investigación {algorithm} {version} con indicaciones en {language}. No es un diagnóstico: "
            "solo para investigación; debe revisarlo un radiólogo."
        ),
        "series_description": "IA hallazgos tórax zero-shot - investigación, no diagnóstico",
        "language_name": "español",
    },
}

# attributes the SR copies from its evidence (patient / study modules); type 2, so empty when missing
_EVIDENCE_KEYWORDS = (
    "SpecificCharacterSet",
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "SamplesPerPixel",
    "PixelRepresentation",
)


# Patient attributes the SR copies as empty values: the Patient Module requires them (type 2) but the
# study is identified without them (Study Instance UID, Patient ID and Name file the SR in the PACS);
# an output keeps no more patient identity than the standard requires.
_EMPTIED_IDENTIFIERS = ("PatientBirthDate",)


def _fit_lo(text: str, limit: int = 64) -> str:
    """``text`` cut to the LO limit of 64, counted in bytes of its UTF-8 encoding (what validators such
    as dciodvfy count), on a character boundary."""
    return text.encode("utf-8")[:limit].decode("utf-8", "ignore")


def _words(language: str) -> dict[str, str]:
    if language not in SR_LANGUAGES:
        raise ConfigurationError(f"SR language must be one of {sorted(SR_LANGUAGES)}, got '{language}'")
    return SR_LANGUAGES[language]


def _coded(code, meaning: str) -> hd.sr.CodedConcept:
    """``code`` (value and scheme) with its meaning in the document's language."""
    return hd.sr.CodedConcept(value=code.value, scheme_designator=code.scheme_designator, meaning=meaning)


def finding_concept(finding: str, language: str) -> hd.sr.CodedConcept:
    """The coded concept of ``finding`` with its meaning in ``language``.

    SNOMED CT when the DICOM code dictionary holds the concept, otherwise a local ``99MEDUNIC``
    code whose value is the English finding key without spaces (long values go to Long Code Value).
    """
    meaning = translate_finding(finding, language)
    attr = _SCT_ATTRIBUTE.get(finding)
    if attr is not None:
        return _coded(getattr(codes.SCT, attr), meaning)
    value = "".join(part for part in finding.title().split() if part.isalnum()) or finding.replace(" ", "")
    return hd.sr.CodedConcept(value=value, scheme_designator=LOCAL_SCHEME, meaning=meaning)


def _evidence(source: Dataset) -> Dataset:
    """The attributes of ``source`` that the SR needs, without pixel data; missing type-2 ones empty."""
    for required in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID"):
        if not source.get(required):
            raise DataError("the source image lacks an attribute the SR must reference", field=required)
    ev = Dataset()
    for kw in _EVIDENCE_KEYWORDS:
        if kw in _EMPTIED_IDENTIFIERS:
            setattr(ev, kw, "")
        elif kw in source:
            setattr(ev, kw, copy.deepcopy(source[kw].value))
        elif kw in _EVIDENCE_KEYWORDS[1:11] or kw == "Modality":
            setattr(ev, kw, "")
    return ev


def build_findings_sr(
    result: StudyFindings,
    manufacturer: str = "monai-medunic",
    software_version: str | None = None,
    series_instance_uid: str | None = None,
    sop_instance_uid: str | None = None,
) -> hd.sr.Comprehensive3DSR:
    """A Comprehensive 3D SR (TID 1500) holding one TID 1501 group per finding of ``result``.

    Args:
        result: the findings of one study (source instance, probabilities, decisions, language).
        manufacturer: the SR's Manufacturer.
        software_version: Software Versions of the SR (defaults to ``monai-medunic <version>``).
        series_instance_uid: of the new SR series (a new UID when ``None``).
        sop_instance_uid: of the SR (a new UID when ``None``).
    """
    from monai_medunic import __version__

    lang = result.language
    words = _words(lang)
    if not (len(result.findings) == len(result.probs) == len(result.positive)) or not result.findings:
        raise ConfigurationError(
            f"findings ({len(result.findings)}), probabilities ({len(result.probs)}) and decisions "
            f"({len(result.positive)}) must be non-empty and of equal length"
        )
    evidence = _evidence(result.source.dataset)
    algorithm = hd.sr.AlgorithmIdentification(
        name=result.algorithm_name,
        version=result.algorithm_version,
        parameters=_algorithm_parameters(result),
        family=codes.DCM.ArtificialIntelligence,
        manufacturer=manufacturer,
    )
    source_image = hd.sr.SourceImageForMeasurementGroup.from_source_image(evidence)
    probability = _coded(codes.DCM.Probability, words["probability"])
    unit = hd.sr.CodedConcept(value="1", scheme_designator="UCUM", meaning=words["no_units"])
    present = _coded(codes.SCT.Present, words["present"])
    absent = _coded(codes.SCT.Absent, words["absent"])
    groups = []
    for finding, prob, positive in zip(result.findings, result.probs, result.positive):
        concept = finding_concept(finding, lang)
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=concept.meaning),
                finding_type=concept,
                algorithm_id=algorithm,
                measurements=[hd.sr.Measurement(name=probability, value=round(float(prob), 6), unit=unit)],
                qualitative_evaluations=[
                    hd.sr.QualitativeEvaluation(name=concept, value=present if positive else absent)
                ],
                source_images=[source_image],
            )
        )
    device_name = f"{result.algorithm_name} {result.algorithm_version}"
    observation_context = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=generate_uid(entropy_srcs=["monai-medunic", result.algorithm_name, result.algorithm_version]),
                name=device_name[:64],
                manufacturer_name=manufacturer,
                model_name=result.algorithm_name[:64],
            ),
        )
    )
    report = hd.sr.MeasurementReport(
        observation_context=observation_context,
        procedure_reported=_coded(codes.SCT.ImagingProcedure, words["procedure"]),
        imaging_measurements=groups,
        title=_coded(codes.cid7021.ImagingMeasurementReport, words["title"]),
        language_of_content_item_and_descendants=hd.sr.LanguageOfContentItemAndDescendants(
            hd.sr.CodedConcept(
                value=words["language_code"], scheme_designator="RFC5646", meaning=words["language_meaning"]
            )
        ),
    )
    # TID 1500 is extensible: the disclaimer is a TEXT comment at the root of the document.
    disclaimer = words["disclaimer"].format(
        algorithm=result.algorithm_name, version=result.algorithm_version, language=words["language_name"]
    )
    report[0].ContentSequence.append(
        hd.sr.TextContentItem(
            name=_coded(codes.DCM.Comment, words["comment"]),
            value=disclaimer,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
    )
    sr = hd.sr.Comprehensive3DSR(
        evidence=[evidence],
        content=report[0],
        series_instance_uid=series_instance_uid or generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=sop_instance_uid or generate_uid(),
        instance_number=1,
        manufacturer=manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=_fit_lo(words["series_description"]),
        manufacturer_model_name="cxr_findings",
        software_versions=software_version or f"monai-medunic {__version__}",
        content_qualification="RESEARCH",
        specific_character_set="ISO_IR 192",
        coding_schemes=[
            CodingSchemeIdentificationItem(
                designator=LOCAL_SCHEME,
                name="monai-medunic chest X-ray finding keys",
                responsible_organization="monai-medunic developers",
            )
        ],
    )
    return sr


def write_findings_sr(sr: Dataset, path: str | os.PathLike) -> Path:
    """Save ``sr`` as a DICOM Part 10 file (written to a temporary name, then renamed).

    Raises:
        OutputWriteError: the disk is full or read-only; an earlier SR at ``path`` is left as it was.
    """
    from monai_medunic.text.io_utils import atomic_file

    path = Path(path)
    with atomic_file(path, "DICOM SR") as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return path


def read_findings_sr(sr: Dataset | str | os.PathLike) -> list[dict]:
    """The findings of an SR written by :func:`build_findings_sr`, parsed with highdicom.

    Returns one dict per TID 1501 group: ``code`` (value, scheme), ``meaning``, ``probability``,
    ``positive`` (the qualitative evaluation is Present) and ``algorithm`` (name, version).
    """
    ds = sr if isinstance(sr, Dataset) else hd.sr.srread(sr)
    doc = ds if isinstance(ds, hd.sr.Comprehensive3DSR) else hd.sr.Comprehensive3DSR.from_dataset(ds)
    out = []
    for group in doc.content.get_image_measurement_groups():
        concept = group.finding_type
        measurements = group.get_measurements(name=codes.DCM.Probability)
        evaluations = group.get_qualitative_evaluations(name=concept)
        names = find_content_items(group[0], name=codes.DCM.AlgorithmName, recursive=True)
        versions = find_content_items(group[0], name=codes.DCM.AlgorithmVersion, recursive=True)
        out.append(
            {
                "code": (concept.value, concept.scheme_designator),
                "meaning": concept.meaning,
                "probability": float(measurements[0].value) if measurements else None,
                "positive": bool(evaluations) and evaluations[0].value == codes.SCT.Present,
                "algorithm": (str(names[0].TextValue), str(versions[0].TextValue)) if names and versions else None,
            }
        )
    return out


def _algorithm_parameters(result) -> list[str]:
    """TID 4019 Algorithm Parameters: the prompt language, the decision rule and what the Probability is."""
    rule = str(result.extra.get("decision_rule") or "s_pos > s_neg (uncalibrated)")
    calibrated = list(result.extra.get("calibrated_findings") or [])
    if calibrated and len(calibrated) == len(result.findings):
        prob = "probability=Platt-scaled sigmoid(a*(s_pos-s_neg)+b), calibrated on validation data"
    elif calibrated:
        prob = (f"probability=Platt-scaled for {len(calibrated)} of {len(result.findings)} findings; "
                "elsewhere UNCALIBRATED score sigmoid((s_pos-s_neg)/tau), not a probability")
    else:
        prob = "probability=UNCALIBRATED score sigmoid((s_pos-s_neg)/tau), not a probability"
    return [f"prompt_language={result.language}", f"decision={rule}", prob]
