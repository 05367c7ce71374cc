"""View classification (order of trust), the frontal-view filter, and SR report text."""

from __future__ import annotations

import highdicom as hd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from monai_medunic.errors import ReportTextError
from monai_medunic.transforms import (
    FrontalViewFilter,
    ReadReportFromSR,
    ReadReportFromSRd,
    classify_view,
    read_report_from_sr,
    view_evidence,
)


def _code(meaning: str) -> list[Dataset]:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "399348003", "SCT", meaning
    return [item]


VIEW_TABLE = [
    ({"ViewPosition": "PA"}, "frontal", "ViewPosition"),
    ({"ViewPosition": "AP"}, "frontal", "ViewPosition"),
    ({"ViewPosition": "LL"}, "lateral", "ViewPosition"),
    ({"ViewPosition": "RL"}, "lateral", "ViewPosition"),
    ({"ViewPosition": "LLD"}, "frontal", "ViewPosition"),
    # ViewPosition outranks every other source
    ({"ViewPosition": "PA", "SeriesDescription": "CHEST LAT", "PatientOrientation": ["A", "F"]}, "frontal", "ViewPosition"),
    # an oblique abstains, so the next source decides
    ({"ViewPosition": "RLO", "PatientOrientation": ["P", "F"]}, "lateral", "PatientOrientation"),
    ({"ViewPosition": "", "ViewCodeSequence": _code("left lateral")}, "lateral", "ViewCodeSequence"),
    ({"ViewCodeSequence": _code("postero-anterior"), "SeriesDescription": "LAT"}, "frontal", "ViewCodeSequence"),
    ({"PatientOrientation": ["L", "F"], "SeriesDescription": "TORAX LATERAL"}, "frontal", "PatientOrientation"),
    ({"PatientOrientation": ["A", "F"]}, "lateral", "PatientOrientation"),
    ({"SeriesDescription": "TORAX LATERAL"}, "lateral", "SeriesDescription"),
    ({"SeriesDescription": "Chest PA"}, "frontal", "SeriesDescription"),
    ({"SeriesDescription": "TORAX PA Y LAT"}, "unknown", None),  # names both: abstains
    ({"SeriesDescription": "CHEST", "ProtocolName": "Tórax lateral"}, "lateral", "ProtocolName"),
    ({"SeriesDescription": "Patella"}, "unknown", None),  # 'lat' only as a whole word
    ({}, "unknown", None),
]


@pytest.mark.parametrize("attrs, view, source", VIEW_TABLE)
def test_classify_view_order_of_trust(attrs, view, source) -> None:
    ds = Dataset()
    for k, v in attrs.items():
        setattr(ds, k, v)
    assert view_evidence(ds) == (view, source)
    assert classify_view(ds) == view


def test_classify_view_on_real_files() -> None:
    assert classify_view(get_testdata_file("RG1_UNCI.dcm")) == "frontal"  # ViewPosition PA
    assert classify_view(get_testdata_file("RG3_UNCI.dcm")) == "frontal"  # ViewPosition AP
    assert classify_view(get_testdata_file("CT_small.dcm")) == "unknown"


def test_frontal_view_filter_counts_what_it_drops(tmp_path, caplog) -> None:
    lateral = pydicom.dcmread(get_testdata_file("RG3_UNCR.dcm"), stop_before_pixels=True)
    lateral.ViewPosition = "LL"
    lat_path = str(tmp_path / "lat.dcm")
    lateral.save_as(lat_path, enforce_file_format=True)
    items = [get_testdata_file("RG1_UNCI.dcm"), lat_path, get_testdata_file("CT_small.dcm")]
    caplog.set_level("INFO")
    f = FrontalViewFilter()
    assert f(items) == [items[0], items[2]]
    assert f.counts == {"kept": 2, "lateral": 1}
    assert "dropped {'lateral': 1}" in caplog.text
    strict = FrontalViewFilter(keep_unknown=False)
    assert strict([{"image": p} for p in items]) == [{"image": items[0]}]
    assert strict.counts == {"kept": 1, "lateral": 1, "unknown": 1}
    # an explicit 'view' entry is trusted without reading the file
    assert FrontalViewFilter()([{"image": "not/read.dcm", "view": "lateral"}]) == []


def _report_sr(findings: str, impression: str | None, language: str = "es") -> hd.sr.ComprehensiveSR:
    image = pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm"), stop_before_pixels=True)
    lang = hd.sr.CodedConcept(value=language, scheme_designator="RFC5646", meaning=language)
    items = list(hd.sr.LanguageOfContentItemAndDescendants(language=lang))
    # IMPRESSION written first in the document: the reader still puts FINDINGS first
    if impression is not None:
        imp = hd.sr.ContainerContentItem(name=hd.sr.CodedConcept("121072", "DCM", "Impressions"), relationship_type="CONTAINS")
        imp.ContentSequence = [
            hd.sr.TextContentItem(name=hd.sr.CodedConcept("121073", "DCM", "Impression"), value=impression, relationship_type="CONTAINS")
        ]
        items.append(imp)
    fnd = hd.sr.ContainerContentItem(name=hd.sr.CodedConcept("121070", "DCM", "Findings"), relationship_type="CONTAINS")
    fnd.ContentSequence = [
        hd.sr.TextContentItem(name=hd.sr.CodedConcept("121071", "DCM", "Finding"), value=findings, relationship_type="CONTAINS")
    ]
    items.append(fnd)
    other = hd.sr.TextContentItem(name=hd.sr.CodedConcept("121106", "DCM", "Comment"), value="Comparado con estudio previo.", relationship_type="CONTAINS")
    items.append(other)
    root = hd.sr.ContainerContentItem(name=hd.sr.CodedConcept("18748-4", "LN", "Diagnostic imaging report"))
    root.ContentSequence = items
    return hd.sr.ComprehensiveSR(
        evidence=[image],
        content=root,
        series_instance_uid=hd.UID(),
        series_number=9,
        sop_instance_uid=hd.UID(),
        instance_number=1,
    )


def test_sr_findings_then_impression_and_language(tmp_path) -> None:
    sr = _report_sr("Derrame pleural izquierdo.", "Derrame pleural.")
    path = str(tmp_path / "sr.dcm")
    sr.save_as(path)
    report = read_report_from_sr(path)
    assert report.text == "Derrame pleural izquierdo. Derrame pleural."
    assert report.findings == ["Derrame pleural izquierdo."] and report.impression == ["Derrame pleural."]
    assert report.other == ["Comparado con estudio previo."]
    assert report.sections_used == "findings+impression" and report.language == "es"
    assert report.study_instance_uid == sr.StudyInstanceUID
    assert ReadReportFromSR()(path) == report.text
    d = ReadReportFromSRd(keys="report")({"report": path, "image": "x.dcm"})
    assert d["report"] == report.text and d["language"] == "es"
    d2 = ReadReportFromSRd(keys="sr", output_key="report", language_key=None)({"sr": sr})
    assert d2["report"] == report.text and "language" not in d2 and d2["sr"] is sr


def test_sr_fallback_to_all_text() -> None:
    path = get_testdata_file("test-SR.dcm")  # free-form TEXT items, no FINDINGS / IMPRESSION section
    report = read_report_from_sr(path)
    assert report.sections_used == "all_text"
    assert report.text.startswith("A mass of was detected.") and "Inferred Sample Text" in report.text
    with pytest.raises(ReportTextError, match="no FINDINGS or IMPRESSION") as err:
        read_report_from_sr(path, fallback_all_text=False)
    assert err.value.path == path
