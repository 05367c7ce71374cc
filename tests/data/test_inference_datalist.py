"""inference_datalist: images to score from a manifest without reports or splits, a folder, a file or a list."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from monai_medunic.data.datalist import inference_datalist, manifest_datalist
from monai_medunic.errors import ManifestError


@pytest.fixture()
def images(tmp_path):
    rg1 = get_testdata_file("RG1_J2KI.dcm") or get_testdata_file("MR_small.dcm")
    folder = tmp_path / "study"
    (folder / "series").mkdir(parents=True)
    shutil.copy(rg1, folder / "series" / "IM0001")  # a PACS export: no suffix
    Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 255).astype(np.uint8)).save(folder / "photo.png")
    (folder / "notes.txt").write_text("not an image")
    shutil.copy(get_testdata_file("test-SR.dcm"), folder / "series" / "SR0001")  # a report, not an image
    return folder


def test_manifest_records_without_report_or_split_are_scored(tmp_path, images) -> None:
    dcm = str(images / "series" / "IM0001")
    png = str(images / "photo.png")
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(r) for r in [
        {"image": dcm, "view": "frontal"},                                   # no report, no split
        {"image": png, "report": "ok", "language": "en", "view": "frontal"},     # a short report
        {"image": dcm, "report": "Small left pleural effusion.", "language": "en", "view": "frontal", "split": "test"},
    ]) + "\n")
    data = inference_datalist(manifest)
    assert len(data) == 3
    uid = str(pydicom.dcmread(dcm, stop_before_pixels=True).SOPInstanceUID)
    assert [d["sop_instance_uid"] for d in data] == [uid, "", uid]
    assert data[1]["image_path"] == png
    assert len(inference_datalist(manifest, split="test")) == 1
    # training keeps its report filters: the two unreported / short records are not training data
    assert len(manifest_datalist(manifest)) == 1


def test_folder_file_and_list(images) -> None:
    data = inference_datalist(images)
    assert [d["image_path"].split("/")[-1] for d in data] == ["photo.png", "IM0001"]  # notes.txt and the SR left out
    header = pydicom.dcmread(data[1]["image"], stop_before_pixels=True)
    assert data[1]["id"] == str(header.StudyInstanceUID) and data[1]["sop_instance_uid"] == str(header.SOPInstanceUID)
    assert inference_datalist(images / "photo.png")[0]["id"].endswith("photo.png")
    assert len(inference_datalist([images / "photo.png", images / "series" / "IM0001"])) == 2


def test_nothing_to_score_is_a_clear_error(tmp_path, images) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(ManifestError, match="no DICOM, PNG or NIfTI"):
        inference_datalist(tmp_path / "empty")
    with pytest.raises(ManifestError, match="does not exist"):
        inference_datalist(tmp_path / "nope")
    with pytest.raises(ManifestError, match="1 of 2 listed"):
        inference_datalist([images / "photo.png", tmp_path / "missing.dcm"])
