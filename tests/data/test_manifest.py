"""Dataset manifests: validation, typed errors with file/line/field, counted skips, filters, MONAI dicts."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil

import pydicom
import pytest
import torch
from monai.data import Dataset
from monai.transforms import Compose, Resized
from pydicom.data import get_testdata_file

from monai_medunic.errors import ConfigurationError, ManifestError
from monai_medunic.data.manifest import (
    ManifestRecord,
    load_manifest,
    records_to_data_dicts,
    write_manifest,
)
from monai_medunic.transforms import LoadDicomImaged

REPORT = "Heart size is normal. No pleural effusion."


@pytest.fixture
def images(tmp_path) -> dict[str, str]:
    """A frontal CR (real, pydicom-data), a lateral copy of a real CR, and a CT (view unknown)."""
    img = tmp_path / "img"
    img.mkdir()
    frontal = str(img / "frontal.dcm")
    shutil.copy(get_testdata_file("RG3_UNCR.dcm"), frontal)  # ViewPosition AP
    lateral = pydicom.dcmread(get_testdata_file("RG3_UNCR.dcm"))
    lateral.ViewPosition = "LL"
    lateral.save_as(str(img / "lateral.dcm"), enforce_file_format=True)
    shutil.copy(get_testdata_file("CT_small.dcm"), img / "ct.dcm")
    return {"frontal": "img/frontal.dcm", "lateral": "img/lateral.dcm", "ct": "img/ct.dcm"}


def _jsonl(path, rows) -> str:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n")
    return str(path)


def test_jsonl_loads_resolves_paths_and_filters(tmp_path, images, caplog) -> None:
    rows = [
        {"image": images["frontal"], "report": REPORT, "language": "en", "labels": {"Edema": 0, "Nodule": 1}, "split": "train"},
        {"image": images["lateral"], "report": "Sin derrame pleural. Tamaño cardiaco normal.", "language": "es", "split": "train"},
        {"image": images["ct"], "report": "Sin derrame pleural. Tamaño cardiaco normal.", "language": "es", "split": "validation"},
        {"image": images["frontal"], "report": "Normal study.", "language": "en", "split": "test"},
        "",
        {"image": [images["frontal"], images["ct"]], "report": REPORT, "language": "EN", "split": "test", "view": "frontal"},
    ]
    caplog.set_level(logging.INFO)
    res = load_manifest(_jsonl(tmp_path / "m.jsonl", rows))
    assert [r.line for r in res.records] == [1, 3, 6]
    first = res.records[0]
    assert first.image_paths == [str(tmp_path / "img" / "frontal.dcm")]
    assert first.labels == {"Edema": 0, "Nodule": 1} and first.view == "frontal" and first.split == "train"
    assert res.records[1].view == "unknown" and res.records[1].split == "val"
    assert res.records[2].language == "en" and len(res.records[2].image_paths) == 2
    s = res.summary
    assert (s.total, s.kept) == (5, 3)
    assert dict(s.dropped) == {"lateral_view": 1, "short_report": 1}
    assert dict(s.kept_by_language) == {"en": 2, "es": 1}
    assert "kept 3 of 5 records" in caplog.text and "lateral_view=1" in caplog.text
    assert REPORT not in caplog.text  # report text is never logged
    # the filters are options
    everything = load_manifest(tmp_path / "m.jsonl", frontal_only=False, min_report_tokens=0)
    assert everything.summary.kept == 5 and len(everything) == 5
    strict = load_manifest(tmp_path / "m.jsonl", keep_unknown_views=False)
    assert strict.summary.dropped["unknown_view"] == 1
    test_only = load_manifest(tmp_path / "m.jsonl", split="test")
    assert [r.line for r in test_only] == [6] and test_only.summary.dropped["other_split"] == 2


BAD_LINES = [
    ("invalid JSON", '{"image": "img/frontal.dcm", "report": ', None, "invalid_json"),
    ("not an object", '["img/frontal.dcm"]', None, "invalid_record"),
    ("no image", {"report": REPORT, "language": "en"}, "image", "invalid_image"),
    ("missing image file", {"image": "img/absent.dcm", "report": REPORT, "language": "en"}, "image", "missing_image_file"),
    ("no report", {"image": "img/frontal.dcm", "language": "en"}, "report", "missing_report"),
    ("report not text", {"image": "img/frontal.dcm", "report": 3, "language": "en"}, "report", "invalid_report"),
    ("unknown language", {"image": "img/frontal.dcm", "report": REPORT, "language": "klingon"}, "language", "invalid_language"),
    ("no language", {"image": "img/frontal.dcm", "report": REPORT}, "language", "invalid_language"),
    ("label not 0/1", {"image": "img/frontal.dcm", "report": REPORT, "language": "en", "labels": {"Edema": 2}}, "labels", "invalid_labels"),
    ("labels not a dict", {"image": "img/frontal.dcm", "report": REPORT, "language": "en", "labels": [1, 0]}, "labels", "invalid_labels"),
    ("bad split", {"image": "img/frontal.dcm", "report": REPORT, "language": "en", "split": "holdout"}, "split", "invalid_split"),
    ("bad view", {"image": "img/frontal.dcm", "report": REPORT, "language": "en", "view": "oblique"}, "view", "invalid_view"),
    ("SR not readable", {"image": "img/frontal.dcm", "report_sr": "img/frontal.dcm", "language": "en"}, "report_sr", "unreadable_report_sr"),
    ("image not DICOM", {"image": "img/notes.dcm", "report": REPORT, "language": "en"}, "image", "unreadable_image"),
]


@pytest.mark.parametrize("name, line, field, reason", BAD_LINES, ids=[b[0] for b in BAD_LINES])
def test_bad_record_raises_or_is_skipped_and_counted(tmp_path, images, caplog, name, line, field, reason) -> None:
    (tmp_path / "img" / "notes.dcm").write_text("plain text, not DICOM")
    good = {"image": images["frontal"], "report": REPORT, "language": "en"}
    path = _jsonl(tmp_path / "m.jsonl", [good, line, good])
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert err.value.path == path and err.value.line == 2 and err.value.field == field
    assert path in str(err.value) and "line 2" in str(err.value)
    caplog.set_level(logging.WARNING)
    res = load_manifest(path, on_error="skip")
    assert res.summary.kept == 2 and dict(res.summary.dropped) == {reason: 1}
    assert f"line 2" in caplog.text and reason in caplog.text


def test_manifest_file_errors(tmp_path) -> None:
    with pytest.raises(ManifestError, match="does not exist") as err:
        load_manifest(tmp_path / "missing.jsonl")
    assert err.value.path == str(tmp_path / "missing.jsonl")
    (tmp_path / "m.txt").write_text("x")
    with pytest.raises(ManifestError, match="unknown manifest format"):
        load_manifest(tmp_path / "m.txt")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(ManifestError, match="no records"):
        load_manifest(tmp_path / "empty.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes('{"report": "Sin derrame pleural ni neumotórax"}\n'.encode("latin-1"))
    with pytest.raises(ManifestError, match="not UTF-8"):
        load_manifest(tmp_path / "latin1.jsonl")
    with pytest.raises(ManifestError, match="is a directory"):
        load_manifest(tmp_path)
    (tmp_path / "noimage.csv").write_text("report,language\nabc def ghi,en\n")
    with pytest.raises(ManifestError, match="no 'image' column"):
        load_manifest(tmp_path / "noimage.csv")
    with pytest.raises(ConfigurationError):
        load_manifest(tmp_path / "empty.jsonl", on_error="ignore")


def test_csv_and_jsonl_round_trip(tmp_path, images) -> None:
    root = str(tmp_path)
    records = [
        ManifestRecord(
            image_paths=[os.path.join(root, images["frontal"])],
            report="Cardiomegalia. Sin derrame pleural.",
            language="es",
            labels={"Cardiomegaly": 1, "Pleural Effusion": 0},
            split="train",
            study_uid="1.2.3",
            translations={"en": "Cardiomegaly. No pleural effusion."},
        ),
        ManifestRecord(
            image_paths=[os.path.join(root, images["frontal"]), os.path.join(root, images["ct"])],
            report=REPORT,
            language="en",
            labels=None,
            split="val",
            view="frontal",
        ),
    ]
    for name in ("m.csv", "m.jsonl"):
        path = write_manifest(records, tmp_path / name)
        text = open(path, encoding="utf-8").read()
        assert root not in text  # paths below the manifest's folder are written relative
        back = load_manifest(path).records
        assert [r.image_paths for r in back] == [r.image_paths for r in records]
        assert [r.labels for r in back] == [r.labels for r in records]
        assert [r.translations for r in back] == [r.translations for r in records]
        assert [(r.report, r.language, r.split) for r in back] == [(r.report, r.language, r.split) for r in records]
    header = open(tmp_path / "m.csv", encoding="utf-8").readline().strip().split(",")
    assert "label:Cardiomegaly" in header and "translation:en" in header


def test_csv_bad_label_names_line_and_field(tmp_path, images) -> None:
    path = tmp_path / "m.csv"
    path.write_text(
        "image,report,language,label:Edema\n"
        f"{images['frontal']},{REPORT},en,1\n"
        f"{images['frontal']},{REPORT},en,maybe\n",
        encoding="utf-8",
    )
    with pytest.raises(ManifestError) as err:
        load_manifest(path)
    assert err.value.line == 3 and err.value.field == "labels"
    res = load_manifest(path, on_error="skip")
    assert res.records[0].labels == {"Edema": 1} and res.summary.dropped["invalid_labels"] == 1


def test_records_to_monai_dataset(tmp_path, images) -> None:
    rows = [
        {"image": images["frontal"], "report": REPORT, "language": "en", "labels": {"Edema": 1, "Nodule": 0}, "split": "train"},
        {"image": images["frontal"], "report": "Sin derrame pleural. Cardiomegalia.", "language": "es", "labels": {"Nodule": 1}},
    ]
    res = load_manifest(_jsonl(tmp_path / "m.jsonl", rows))
    dicts = records_to_data_dicts(res.records)
    assert dicts[0]["labels"] == [1.0, 0.0] and dicts[0]["language"] == "en"
    assert math.isnan(dicts[1]["labels"][0]) and dicts[1]["labels"][1] == 1.0
    ordered = records_to_data_dicts(res.records, findings=["Nodule", "Edema", "Pneumothorax"])
    assert ordered[0]["labels"][:2] == [0.0, 1.0] and math.isnan(ordered[0]["labels"][2])
    ds = Dataset(dicts, transform=Compose([LoadDicomImaged("image"), Resized("image", (64, 64), mode="area")]))
    item = ds[1]
    assert item["image"].shape == (1, 64, 64) and item["report"].startswith("Sin derrame")
    assert torch.isfinite(item["image"]).all()
