"""Report text from DICOM Structured Reports (SR).

Med-UniC (Sec. 4, "Dataset") uses the *findings* and *impression* sections of each radiology report,
concatenated in that order, as the text paired with an image. Hospitals often store reports as DICOM
SR documents (Basic Text, Enhanced or Comprehensive SR). :func:`read_report_from_sr` walks the SR
content tree (``ContentSequence``, recursively) and collects every ``TEXT`` content item. An item
belongs to a section by its own concept name or, failing that, by the nearest enclosing ``CONTAINER``:

* FINDINGS: concept names such as (121070, DCM, "Findings"), (121071, DCM, "Finding"),
  (59776-5, LN, "Procedure Findings") or any meaning containing "finding" / "hallazgo";
* IMPRESSION: (121073, DCM, "Impression"), (19005-8, LN, "Impression"), (121076, DCM, "Conclusion")
  or any meaning containing "impression" / "impresión" / "conclusion" / "conclusión".

The report text is FINDINGS then IMPRESSION, each in document order, joined by a space. An SR with
TEXT items but neither section (e.g. a free-form report) falls back to all its TEXT items in
document order when ``fallback_all_text`` is true; this is recorded in ``sections_used``. An SR
without any TEXT raises :class:`monai_medunic.errors.ReportTextError` naming the file.

The document language is read from a (121049, DCM, "Language of Content Item and Descendants")
concept modifier when present.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from pydicom.dataset import Dataset

from monai_medunic.errors import ConfigurationError, ReportTextError

__all__ = ["SRReportText", "read_report_from_sr", "ReadReportFromSR", "ReadReportFromSRd"]

logger = logging.getLogger(__name__)

_FINDINGS_CODES = {("121070", "DCM"), ("121071", "DCM"), ("59776-5", "LN"), ("18782-3", "LN")}
_IMPRESSION_CODES = {("121073", "DCM"), ("19005-8", "LN"), ("121076", "DCM"), ("121077", "DCM")}
_FINDINGS_WORDS = ("finding", "hallazgo")
_IMPRESSION_WORDS = ("impression", "impresión", "impresion", "conclusion", "conclusión")
_LANGUAGE_CODE = ("121049", "DCM")
_SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


@dataclass
class SRReportText:
    """The text of an SR report and where it came from (no patient identifiers)."""

    text: str
    findings: list[str] = field(default_factory=list)
    impression: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    sections_used: str = "findings+impression"
    language: str | None = None
    study_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    filename: str | None = None


def _concept(item: Dataset) -> tuple[str, str, str] | None:
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return None
    code = seq[0]
    return (str(code.get("CodeValue", "")), str(code.get("CodingSchemeDesignator", "")), str(code.get("CodeMeaning", "")))


def _section(concept: tuple[str, str, str] | None) -> str | None:
    if concept is None:
        return None
    value, scheme, meaning = concept
    low = meaning.lower()
    if (value, scheme) in _FINDINGS_CODES or any(w in low for w in _FINDINGS_WORDS):
        return "findings"
    if (value, scheme) in _IMPRESSION_CODES or any(w in low for w in _IMPRESSION_WORDS):
        return "impression"
    return None


def _walk(seq: Any, inherited: str | None, out: list[tuple[str | None, str]], lang: list[str]) -> None:
    for item in seq or []:
        vtype = str(item.get("ValueType", "")).upper()
        concept = _concept(item)
        section = _section(concept) or inherited
        if vtype == "TEXT":
            text = str(item.get("TextValue", "") or "").strip()
            if text:
                out.append((section, text))
        elif vtype == "CODE" and concept is not None and concept[:2] == _LANGUAGE_CODE:
            codes = item.get("ConceptCodeSequence")
            if codes:
                lang.append(str(codes[0].get("CodeValue", "")).strip().lower())
        if "ContentSequence" in item:
            _walk(item.ContentSequence, section, out, lang)


def read_report_from_sr(source: str | os.PathLike | Dataset, fallback_all_text: bool = True) -> SRReportText:
    """FINDINGS then IMPRESSION text of an SR document.

    Args:
        source: an SR file path or an already-read pydicom dataset.
        fallback_all_text: when the SR has TEXT items but no FINDINGS / IMPRESSION section, use all
            of them in document order (``sections_used="all_text"``); otherwise raise.

    Raises:
        DicomReadError: the file cannot be read.
        ReportTextError: not an SR, or an SR without usable text.
    """
    if isinstance(source, Dataset):
        ds = source
        path = os.fspath(ds.filename) if isinstance(getattr(ds, "filename", None), (str, os.PathLike)) else None
    else:
        from monai_medunic.transforms.dicom_io import read_dicom

        path = os.fspath(source)
        ds = read_dicom(path, header_only=False)
    sop_class = str(ds.get("SOPClassUID", ""))
    if not sop_class.startswith(_SR_PREFIX) and str(ds.get("Modality", "")).upper() != "SR":
        raise ReportTextError(
            f"not a structured report (Modality {ds.get('Modality', 'unknown')}); expected an SR document",
            path=path,
            field="SOPClassUID",
        )
    items: list[tuple[str | None, str]] = []
    lang: list[str] = []
    root_section = _section(_concept(ds))
    _walk(ds.get("ContentSequence"), root_section if root_section else None, items, lang)
    if not items:
        raise ReportTextError("the SR has no TEXT content item with a value", path=path, field="ContentSequence")
    findings = [t for s, t in items if s == "findings"]
    impression = [t for s, t in items if s == "impression"]
    other = [t for s, t in items if s not in ("findings", "impression")]
    if findings or impression:
        parts, used = findings + impression, "+".join(n for n, v in (("findings", findings), ("impression", impression)) if v)
    elif fallback_all_text:
        parts, used = other, "all_text"
    else:
        raise ReportTextError(
            "the SR has TEXT items but no FINDINGS or IMPRESSION section (fallback_all_text=False)",
            path=path,
            field="ContentSequence",
        )
    text = " ".join(p.strip() for p in parts if p.strip())
    return SRReportText(
        text=text,
        findings=findings,
        impression=impression,
        other=other,
        sections_used=used,
        language=lang[0] if lang else None,
        study_instance_uid=str(ds.get("StudyInstanceUID", "")) or None,
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")) or None,
        filename=path,
    )


class ReadReportFromSR(Transform):
    """SR path or dataset -> report text (FINDINGS then IMPRESSION; Med-UniC Sec. 4).

    Args:
        fallback_all_text: see :func:`read_report_from_sr`.
    """

    def __init__(self, fallback_all_text: bool = True) -> None:
        self.fallback_all_text = fallback_all_text

    def __call__(self, data: str | os.PathLike | Dataset) -> str:  # type: ignore[override]
        if not isinstance(data, (str, os.PathLike, Dataset)):
            raise ConfigurationError(f"ReadReportFromSR expects a path or a pydicom Dataset, got {type(data).__name__}")
        return read_report_from_sr(data, self.fallback_all_text).text


class ReadReportFromSRd(MapTransform):
    """Dictionary form of :class:`ReadReportFromSR`.

    Args:
        keys: keys holding SR paths or datasets; each is replaced by the text (or written to
            ``output_key`` when given, for a single key).
        output_key: where to put the text instead of replacing the key's value.
        language_key: if set and the SR states its language, store it under this key (unless the
            dict already has a value there).
        fallback_all_text: see :func:`read_report_from_sr`.
        allow_missing_keys: don't raise when a key is absent.
    """

    def __init__(
        self,
        keys: KeysCollection,
        output_key: str | None = None,
        language_key: str | None = "language",
        fallback_all_text: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if output_key is not None and len(self.keys) != 1:
            raise ConfigurationError("output_key needs exactly one key")
        self.output_key = output_key
        self.language_key = language_key
        self.fallback_all_text = fallback_all_text

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:  # type: ignore[override]
        d = dict(data)
        for key in self.key_iterator(d):
            report = read_report_from_sr(d[key], self.fallback_all_text)
            d[self.output_key or key] = report.text
            if self.language_key and report.language and not d.get(self.language_key):
                d[self.language_key] = report.language
        return d
