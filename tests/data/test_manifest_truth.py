"""Manifest truth fields (masks, boxes, SEG, CT masks and lesion slices, modality / spatial_dims): the table of
bad inputs, each a typed error naming file, line and field, or a counted skip; the datalist's 2D / 3D / truth views."""

from __future__ import annotations

import copy
import glob
import json
import logging
import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from monai_medunic.data.datalist import manifest_datalist
from monai_medunic.data.demo import generate_demo_dataset
from monai_medunic.data.manifest import load_manifest, write_manifest
from monai_medunic.errors import ConfigurationError, ManifestError

SIZE = 64
CT_SHAPE = (20, 48, 48)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("mtruth") / "demo"
    prev = {"Cardiomegaly": 0.1, "Pleural Effusion": 0.6, "Pneumothorax": 0.6, "Nodule": 0.6, "Consolidation": 0.6, "Edema": 0.1}
    info = generate_demo_dataset(out, num_studies=6, seed=17, image_size=SIZE, prevalence=prev, lateral_fraction=0.0,
                                 sr_fraction=0.0, num_ct_studies=1, ct_shape=CT_SHAPE)
    rows = [json.loads(line) for line in open(info.manifest_path, encoding="utf-8")]
    with_seg = [r for r in rows if "seg" in r]
    ct = [r for r in rows if r.get("modality") == "CT"]
    assert len(with_seg) >= 2 and len(ct) == 1
    return {"root": str(out), "good2d": with_seg[0], "other2d": with_seg[1], "good3d": ct[0]}


def _nifti(path: str, shape: tuple[int, ...]) -> str:
    nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), np.eye(4)), path)
    return path


# (name, kind of the good record it starts from, change(record, demo, folder), load_manifest options, field, reason)
def _set(**kw):
    return lambda r, d, tmp: r.update(kw)


def _small_mask(r, d, tmp):
    r["masks"][next(iter(r["masks"]))] = _nifti(os.path.join(tmp, "small.nii.gz"), (SIZE // 2, SIZE // 2))


def _small_png_mask(r, d, tmp):
    from PIL import Image

    path = os.path.join(tmp, "small.png")
    Image.fromarray(np.zeros((SIZE, SIZE // 2), np.uint8)).save(path)
    r["masks"][next(iter(r["masks"]))] = path


def _small_volume_mask(r, d, tmp):
    r["mask"] = _nifti(os.path.join(tmp, "vol.nii.gz"), (10, 10, 10))


def _other_image(r, d, tmp):  # the record's SEG now refers to an image the record does not hold
    r["image"] = d["other2d"]["image"]
    r.pop("masks")
    r.pop("boxes")


def _not_nifti_mask(r, d, tmp):
    bad = os.path.join(tmp, "mask.nii.gz")
    with open(bad, "w") as fh:
        fh.write("not a NIfTI file")
    r["masks"][next(iter(r["masks"]))] = bad


def _two_series(r, d, tmp):
    folder = os.path.join(tmp, "series")
    shutil.copytree(os.path.join(d["root"], r["image"]), folder)
    first = os.path.join(folder, sorted(os.listdir(folder))[0])
    ds = pydicom.dcmread(first)
    ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(first)
    r["image"] = folder


def _box(box):
    return lambda r, d, tmp: r.update(boxes={"Nodule": [box]})


TRUTH = dict(check_truth=True, dimensions=None)
BAD_TRUTH = [
    ("mask size differs from its image", "2d", _small_mask, TRUTH, "masks", "mask_size_mismatch"),
    ("PNG mask size differs from its image", "2d", _small_png_mask, TRUTH, "masks", "mask_size_mismatch"),
    ("CT mask size differs from its volume", "3d", _small_volume_mask, TRUTH, "mask", "mask_size_mismatch"),
    ("box outside the image", "2d", _box([SIZE - 4, 10, SIZE + 6, 20]), TRUTH, "boxes", "box_outside_image"),
    ("box at negative coordinates", "2d", _box([-2, 0, 5, 5]), TRUTH, "boxes", "box_outside_image"),
    ("box with x1 <= x0", "2d", _box([10, 10, 10, 20]), {}, "boxes", "invalid_boxes"),
    ("box of three numbers", "2d", _box([1, 2, 3]), {}, "boxes", "invalid_boxes"),
    ("boxes not an object", "2d", _set(boxes=[[1, 2, 3, 4]]), {}, "boxes", "invalid_boxes"),
    ("empty label set, labels required", "2d", _set(labels={}), dict(require_labels=True), "labels", "missing_labels"),
    ("no labels, labels required", "3d", lambda r, d, t: r.pop("labels"), dict(require_labels=True, dimensions=None), "labels", "missing_labels"),
    ("SEG references an image that is missing", "2d", _other_image, TRUTH, "seg", "seg_reference_missing"),
    ("SEG file missing", "2d", _set(seg="truth/absent_seg.dcm"), TRUTH, "seg", "missing_seg_file"),
    ("SEG is not a segmentation", "2d", lambda r, d, t: r.update(seg=r["image"]), TRUTH, "seg", "unreadable_seg"),
    ("mask file missing", "2d", lambda r, d, t: r["masks"].update(Nodule="truth/absent.nii.gz"), TRUTH, "masks", "missing_mask_file"),
    ("mask not NIfTI", "2d", _not_nifti_mask, TRUTH, "masks", "unreadable_mask"),
    ("masks not an object", "2d", _set(masks=["a.nii.gz"]), {}, "masks", "invalid_masks"),
    ("lesion slice outside the volume", "3d", _set(lesion_slices={"Nodule": [2, CT_SHAPE[0]]}), TRUTH, "lesion_slices", "lesion_slice_outside_volume"),
    ("negative lesion slice", "3d", _set(lesion_slices={"Nodule": [-1]}), dict(dimensions=3), "lesion_slices", "invalid_lesion_slices"),
    ("mask label 0", "3d", _set(mask_labels={"Nodule": 0}), dict(dimensions=3), "mask_labels", "invalid_mask_labels"),
    ("two findings, one mask label", "3d", _set(mask_labels={"Nodule": 1, "Consolidation": 1}), dict(dimensions=3), "mask_labels", "invalid_mask_labels"),
    ("spatial_dims 4", "2d", _set(spatial_dims=4), {}, "spatial_dims", "invalid_spatial_dims"),
    ("modality not a code", "2d", _set(modality="C T!"), {}, "modality", "invalid_modality"),
    ("2D masks on a volume", "3d", _set(masks={"Nodule": "x.nii.gz"}), dict(dimensions=3), "masks", "invalid_masks"),
    ("lesion slices on a radiograph", "2d", _set(lesion_slices={"Nodule": [1]}), {}, "lesion_slices", "invalid_lesion_slices"),
    ("a label map on a radiograph", "2d", _set(mask="x.nii.gz"), {}, "mask", "invalid_mask"),
    ("CT mask file missing", "3d", _set(mask="truth/absent.nii.gz"), TRUTH, "mask", "missing_mask_file"),
    ("CT series folder missing", "3d", _set(image="ct/absent"), dict(dimensions=3), "image", "missing_image_file"),
    ("CT folder with two series", "3d", _two_series, TRUTH, "image", "unreadable_volume"),
]


@pytest.mark.parametrize("name, kind, change, options, field, reason", BAD_TRUTH, ids=[b[0] for b in BAD_TRUTH])
def test_bad_truth_raises_or_is_skipped_and_counted(tmp_path, demo, caplog, name, kind, change, options, field, reason) -> None:
    good = demo["good2d"] if kind == "2d" else demo["good3d"]
    bad = copy.deepcopy(good)
    change(bad, demo, str(tmp_path))
    path = os.path.join(demo["root"], f"bad_{abs(hash(name))}.jsonl")
    with open(path, "w", encoding="utf-8") as fh:
        for r in (good, bad, good):
            fh.write(json.dumps(r) + "\n")
    try:
        options = dict(options)
        options.setdefault("dimensions", 2 if kind == "2d" else 3)
        with pytest.raises(ManifestError) as err:
            load_manifest(path, **options)
        assert err.value.path == path and err.value.line == 2 and err.value.field == field, str(err.value)
        assert path in str(err.value) and "line 2" in str(err.value) and f"field '{field}'" in str(err.value)
        caplog.set_level(logging.WARNING)
        res = load_manifest(path, on_error="skip", **options)
        assert res.summary.kept == 2 and dict(res.summary.dropped) == {reason: 1}
        assert "line 2" in caplog.text and reason in caplog.text
        image = os.path.join(demo["root"], good["image"])  # a radiograph file or a CT series folder
        image = image if os.path.isfile(image) else sorted(glob.glob(os.path.join(image, "*.dcm")))[0]
        patient = pydicom.dcmread(image, stop_before_pixels=True)  # the demo's synthetic but realistic identity
        for value in (str(patient.PatientName), str(patient.PatientID), str(patient.PatientBirthDate)):
            assert value and value not in caplog.text  # no PHI
        assert good.get("report", "") not in caplog.text  # no report text
    finally:
        os.remove(path)


def test_good_truth_passes_every_check(demo) -> None:
    path = os.path.join(demo["root"], "manifest.jsonl")
    res = load_manifest(path, check_truth=True, dimensions=None, require_labels=True)
    assert res.summary.kept == res.summary.total - res.summary.dropped.get("short_report", 0)
    assert set(res.summary.dropped) <= {"short_report"}
    ct = [r for r in res.records if r.spatial_dims == 3]
    assert len(ct) == 1 and ct[0].modality == "CT" and ct[0].mask and ct[0].lesion_slices is not None
    assert all(r.modality in ("CR", "DX") for r in res.records if r.spatial_dims == 2)


def test_datalist_views_2d_default_truth_and_3d(demo, tmp_path) -> None:
    path = os.path.join(demo["root"], "manifest.jsonl")
    plain = manifest_datalist(path)
    keys = {"image", "report", "language", "split", "study_uid", "view", "labels", "id"}
    assert plain and all(set(d) <= keys for d in plain)  # the records Med-UniC gets: no new keys
    findings = ["Nodule", "Pneumothorax", "Pleural Effusion", "Consolidation"]
    with_truth = manifest_datalist(path, truth=True, findings=findings)
    assert [d["id"] for d in with_truth] == [d["id"] for d in plain]
    boxed = [d for d in with_truth if d.get("boxes")]
    assert boxed
    for d in boxed:
        assert len(d["boxes"]) == len(d["box_labels"]) and all(0 <= i < len(findings) for i in d["box_labels"])
        assert {findings[i] for i in d["box_labels"]} == set(d["masks"]) and os.path.isfile(d["seg"])
    three = manifest_datalist(path, dimensions=3, findings=["Nodule", "Consolidation", "Pleural Effusion"])
    assert len(three) == 1 and three[0]["spatial_dims"] == 3 and os.path.isfile(three[0]["mask"])
    # a bad mask is not seen by the 2D consumer that does not ask for truth, and is skipped (counted) by one that does
    bad = copy.deepcopy(demo["good2d"])
    bad["masks"][next(iter(bad["masks"]))] = _nifti(str(tmp_path / "small.nii.gz"), (8, 8))
    bad_path = os.path.join(demo["root"], "bad_datalist.jsonl")
    with open(bad_path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(bad) + "\n" + json.dumps(demo["other2d"]) + "\n")
    try:
        assert len(manifest_datalist(bad_path)) == 2
        # nor a missing truth file: a copy of a manifest that moved only its images keeps its records
        moved = copy.deepcopy(demo["other2d"])
        moved["seg"] = "elsewhere/seg.dcm"
        moved["masks"] = {f: "elsewhere/m.nii.gz" for f in moved["masks"]}
        with open(bad_path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(moved) + "\n")
        assert len(manifest_datalist(bad_path)) == 1
        assert load_manifest(bad_path, check_truth=True, on_error="skip").summary.dropped == {"missing_mask_file": 1}
        with open(bad_path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(bad) + "\n" + json.dumps(demo["other2d"]) + "\n")
        assert len(manifest_datalist(bad_path, truth=True)) == 1
        with pytest.raises(ManifestError, match="mask_size|rows x columns") as err:
            manifest_datalist(bad_path, truth=True, on_error="raise")
        assert err.value.line == 1 and err.value.field == "masks"
        # an empty label set where the evaluation needs labels
        empty = copy.deepcopy(demo["other2d"])
        empty["labels"] = {}
        with open(bad_path, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(demo["good2d"]) + "\n" + json.dumps(empty) + "\n")
        with pytest.raises(ManifestError, match="empty label set") as err:
            manifest_datalist(bad_path, findings=findings, require_labels=True)
        assert err.value.line == 2 and err.value.field == "labels"
    finally:
        os.remove(bad_path)
    with pytest.raises(ConfigurationError):
        load_manifest(path, dimensions=4)
    with pytest.raises(ConfigurationError):
        load_manifest(path, modalities=[""])


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_truth_fields_round_trip(demo, tmp_path, suffix) -> None:
    res = load_manifest(os.path.join(demo["root"], "manifest.jsonl"), dimensions=None, check_truth=True)
    out = write_manifest(res.records, os.path.join(demo["root"], f"round.{suffix}"))
    try:
        back = load_manifest(out, dimensions=None, check_truth=True).records
        for a, b in zip(res.records, back):
            for key in ("image_paths", "modality", "spatial_dims", "masks", "boxes", "seg", "mask", "mask_labels", "lesion_slices", "labels"):
                assert getattr(a, key) == getattr(b, key), key
    finally:
        os.remove(out)


def test_radiograph_only_csv_keeps_its_columns(tmp_path) -> None:
    from monai_medunic.data.manifest import ManifestRecord

    rec = ManifestRecord(image_paths=[str(tmp_path / "a.dcm")], report="No pleural effusion seen.", language="en", labels={"Edema": 0})
    out = write_manifest([rec], tmp_path / "m.csv")
    header = open(out, encoding="utf-8").readline().strip().split(",")
    assert header == ["image", "report", "report_sr", "language", "split", "study_uid", "view", "label:Edema"]
