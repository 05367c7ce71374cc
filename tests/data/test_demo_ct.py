"""Demo chest CT studies: HU through the rescale, consistent geometry, masks aligned with the series and
matching what is drawn, lesion slices, bilingual reports, determinism, CLI flags, the series encoder."""

from __future__ import annotations

import filecmp
import io
import json
import os
import re

import numpy as np
import pydicom
import pytest
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from monai_medunic.data.datalist import manifest_datalist
from monai_medunic.data.demo import SPANISH_NAMES, cli_main, generate_demo_dataset
from monai_medunic.data.demo.ct import CT_FINDINGS, CT_MASK_LABELS, render_chest_ct, sample_ct_case
from monai_medunic.data.demo.dicom_io import CT_STORAGE, _ct_shared_dataset, _ct_slice_elements, write_ct_series
from monai_medunic.data.demo.reports import compose_ct_report
from monai_medunic.errors import ConfigurationError
from monai_medunic.transforms.volume import LoadDicomSeriesVolume, LoadNiftiVolume

SHAPE = (40, 96, 96)
ALL = {f: 1.0 for f in CT_FINDINGS}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("ct") / "demo"
    return generate_demo_dataset(
        out, num_studies=3, seed=7, image_size=64, num_ct_studies=5, ct_shape=SHAPE, ct_prevalence={"Nodule": 0.7, "Consolidation": 0.6, "Pleural Effusion": 0.5}
    )


def _ct_rows(info) -> list[dict]:
    rows = [json.loads(line) for line in open(info.manifest_path, encoding="utf-8")]
    return [r for r in rows if r.get("modality") == "CT"]


def test_series_loads_in_hu_and_the_mask_is_aligned(demo) -> None:
    rows = _ct_rows(demo)
    assert len(rows) == demo.num_ct_studies == 5 and demo.num_ct_slices == 5 * SHAPE[0]
    present = {f: 0 for f in CT_FINDINGS}
    for r in rows:
        vol = LoadDicomSeriesVolume()(os.path.join(demo.out_dir, r["image"]))
        mask = LoadNiftiVolume()(os.path.join(demo.out_dir, r["mask"]))
        assert vol.shape == mask.shape == (1, SHAPE[2], SHAPE[1], SHAPE[0])  # (C, X, Y, Z)
        assert np.allclose(vol.affine.numpy(), mask.affine.numpy(), atol=1e-3)
        assert vol.meta["unit"] == "HU" and vol.meta["sort_key"] == "ImagePositionPatient"
        assert vol.meta["spacing"] == pytest.approx((360 / SHAPE[2], 360 / SHAPE[1], 320 / SHAPE[0]), abs=1e-4)
        v, m = vol[0].numpy(), mask[0].numpy().astype(int)
        assert -1030 < v.min() < -950 and 300 < v.max() <= 3071  # air, bone; HU through the rescale
        corner = v[:4, :4, :].mean()
        assert -1040 < corner < -960
        assert set(np.unique(m)) <= {0, *CT_MASK_LABELS.values()}
        assert r["mask_labels"] == CT_MASK_LABELS
        # the lesion slices are where the mask is, and the labels say which findings are there
        for f, value in CT_MASK_LABELS.items():
            ks = sorted(int(k) for k in np.flatnonzero((m == value).any(axis=(0, 1))))
            assert r["lesion_slices"].get(f, []) == ks, f
            assert r["labels"][f] == int(bool(ks)), f
            present[f] += bool(ks)
        # the masks match what is drawn: lesion densities, against the aerated lung around them
        lung = (v < -700) & (m == 0) & (v > -960)
        assert lung.sum() > 1000
        if (m == 1).any():  # small spheres at 3.75 mm pixels: the in-plane blur lowers the rim voxels
            assert -350 < v[m == 1].mean() < 90 and v[m == 1].max() > -60
        if (m == 2).any():  # medians: the rim voxels are mixed with lung by the blur
            assert -80 < np.median(v[m == 2]) < 80
        if (m == 3).any():
            assert -30 < np.median(v[m == 3]) < 45
        assert v[lung].mean() < -750
    assert all(present.values()), present  # every finding occurs in this small set


def test_geometry_is_consistent_across_slices(demo) -> None:
    folder = os.path.join(demo.out_dir, _ct_rows(demo)[0]["image"])
    files = sorted(os.listdir(folder))
    assert len(files) == SHAPE[0]
    headers = [pydicom.dcmread(os.path.join(folder, f), stop_before_pixels=True) for f in files]
    assert len({h.SeriesInstanceUID for h in headers}) == 1 and len({h.FrameOfReferenceUID for h in headers}) == 1
    z = [float(h.ImagePositionPatient[2]) for h in headers]
    assert [h.InstanceNumber for h in headers] == list(range(1, SHAPE[0] + 1))
    assert np.allclose(np.diff(z), 320 / SHAPE[0], atol=1e-3)  # ascending: instance order == position order
    for h in headers:
        assert list(map(float, h.ImageOrientationPatient)) == [1, 0, 0, 0, 1, 0]
        assert float(h.SliceThickness) == pytest.approx(320 / SHAPE[0], abs=1e-3)
        assert (h.RescaleSlope, h.RescaleIntercept, h.RescaleType) == (1, -1024, "HU")
        assert h.Modality == "CT" and h.SOPClassUID == CT_STORAGE and h.PatientPosition == "HFS"
        assert h.PatientID.startswith("CT") and "^" in str(h.PatientName)


def test_reports_state_what_the_volume_holds(demo) -> None:
    for r in _ct_rows(demo):
        texts = {r["language"]: r["report"], **r["translations"]}
        assert set(texts) == {"en", "es"}
        en, es = texts["en"].lower(), texts["es"].lower()
        for f in CT_FINDINGS:
            if r["labels"][f]:
                assert f.lower() in en and SPANISH_NAMES[f].lower() in es, (f, en, es)
    # sizes and sides come from the drawn geometry
    rng = np.random.default_rng(4)
    for i in range(20):
        case = sample_ct_case(rng, i, prevalence=ALL)
        phantom = render_chest_ct(case, rng, (32, 64, 64))
        report = compose_ct_report(phantom.lesions, rng)
        en, es = " ".join(report["en"]), " ".join(report["es"])
        for les in phantom.lesions:
            if les["finding"] == "Nodule":
                sizes = {int(x) for x in re.findall(r"(\d+) mm", en)}
                assert max(sizes) >= les["diameter_mm"] and set(re.findall(r"(\d+) mm", en)) == set(re.findall(r"(\d+) mm", es))
        assert ("right" in en) == ("derech" in es) and ("left" in en) == ("izquierd" in es)


def test_negated_findings_are_absent(demo) -> None:
    rng = np.random.default_rng(9)
    negated = 0
    for i in range(30):
        case = sample_ct_case(rng, i, prevalence={f: 0.3 for f in CT_FINDINGS})
        phantom = render_chest_ct(case, rng, (24, 64, 64))
        report = compose_ct_report(phantom.lesions, rng)
        en = " ".join(report["en"]).lower()
        for f in CT_FINDINGS:
            neg = re.search(rf"\b(no|no suspicious|there is no)( focal| pulmonary)? {f.lower()}", en)
            if neg:
                negated += 1
                assert not case.labels[f], (f, en)
    assert negated > 10


def test_ct_is_deterministic_and_independent_of_the_radiographs(tmp_path, demo) -> None:
    again = generate_demo_dataset(tmp_path / "again", num_studies=3, seed=7, image_size=64, num_ct_studies=5, ct_shape=SHAPE,
                                  ct_prevalence={"Nodule": 0.7, "Consolidation": 0.6, "Pleural Effusion": 0.5})
    for sub in ("ct", "truth"):
        cmp = filecmp.dircmp(os.path.join(demo.out_dir, sub), os.path.join(again.out_dir, sub))
        assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    a = os.path.join(demo.out_dir, "ct/study_00002")
    b = os.path.join(again.out_dir, "ct/study_00002")
    assert all(filecmp.cmp(os.path.join(a, f), os.path.join(b, f), shallow=False) for f in os.listdir(a))
    # fewer CT studies and more radiographs: the same CT study 1, and the radiographs do not change
    other = generate_demo_dataset(tmp_path / "other", num_studies=5, seed=7, image_size=64, num_ct_studies=1, ct_shape=SHAPE,
                                  ct_prevalence={"Nodule": 0.7, "Consolidation": 0.6, "Pleural Effusion": 0.5})
    c = os.path.join(other.out_dir, "ct/study_00001")
    assert all(filecmp.cmp(os.path.join(demo.out_dir, "ct/study_00001", f), os.path.join(c, f), shallow=False) for f in os.listdir(c))
    none = generate_demo_dataset(tmp_path / "none", num_studies=3, seed=7, image_size=64, num_ct_studies=0)
    cmp = filecmp.dircmp(os.path.join(demo.out_dir, "dicom"), os.path.join(none.out_dir, "dicom"))
    assert not cmp.left_only and not cmp.right_only
    assert not os.path.exists(os.path.join(none.out_dir, "ct")) and none.num_ct_studies == 0


def test_datalist_gives_3d_records_only_when_asked(demo) -> None:
    two = manifest_datalist(demo.manifest_path)
    assert two and all(isinstance(d["image"], str) and d["image"].endswith(".dcm") for d in two)
    assert all("mask" not in d and "spatial_dims" not in d for d in two)
    three = manifest_datalist(demo.manifest_path, dimensions=3, findings=list(CT_FINDINGS))
    assert len(three) == 5
    for d in three:
        assert os.path.isdir(d["image"]) and d["mask"].endswith("mask.nii.gz") and d["spatial_dims"] == 3
        assert d["modality"] == "CT" and len(d["labels"]) == 3 and set(d["lesion_slices"]) <= set(CT_FINDINGS)
    both = manifest_datalist(demo.manifest_path, dimensions=None)
    assert len(both) == len(two) + len(three)
    ct_only = manifest_datalist(demo.manifest_path, dimensions=None, modalities="CT")
    assert [d["id"] for d in ct_only] == [d["id"] for d in three]


def test_series_encoder_writes_what_save_as_writes(tmp_path) -> None:
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1024, 3000, (6, 48, 40)).astype(np.float32)
    origin = (-178.59375, -12.25, -157.5)
    kw = dict(seed=3, index=1, study_uid="1.2.3", series_uid="1.2.3.4", frame_uid="1.2.3.5", study_date="20240101", sex="F", language="es")
    paths = write_ct_series(str(tmp_path / "s"), hu, (5.0, 2.5, 2.5), origin, **kw)
    stored = np.rint(np.clip(hu, -1024, 3071) + 1024).astype(np.uint16)
    shared = _ct_shared_dataset(stored.shape, (5.0, 2.5, 2.5), **kw)
    for k, path in enumerate(paths):
        uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        ds = Dataset()
        ds.update(shared)
        ds.SOPInstanceUID = uid
        for tag, vr, value in _ct_slice_elements(stored, k, origin, 5.0):
            ds.add(DataElement(tag, vr, value if vr == "OW" else value.decode()))
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CT_STORAGE
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        assert buf.getvalue() == open(path, "rb").read(), k
        back = pydicom.dcmread(path)
        assert np.array_equal(back.pixel_array, stored[k])


def test_cli_flags_and_bad_arguments(tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    assert cli_main(["--out", str(out), "--studies", "2", "--image-size", "64", "--ct-studies", "1", "--ct-shape", "24", "64", "64"]) == 0
    text = capsys.readouterr().out
    assert "CT: 1 studies of 24x64x64 voxels (24 slices)" in text
    assert len(os.listdir(out / "ct" / "study_00001")) == 24
    assert cli_main(["--out", str(out), "--studies", "2", "--image-size", "64", "--no-ct", "--overwrite"]) == 0
    assert not (out / "ct").exists() and not (out / "truth" / "ct").exists() and "CT:" not in capsys.readouterr().out
    with pytest.raises(SystemExit):  # one or the other
        cli_main(["--out", str(out), "--no-ct", "--ct-studies", "3"])
    with pytest.raises(ConfigurationError, match="ct_shape"):
        generate_demo_dataset(tmp_path / "a", num_studies=1, ct_shape=(8, 64, 64))
    with pytest.raises(ConfigurationError, match="num_ct_studies"):
        generate_demo_dataset(tmp_path / "b", num_studies=1, num_ct_studies=-1)
    with pytest.raises(ConfigurationError, match="unknown findings in ct_prevalence"):
        generate_demo_dataset(tmp_path / "c", num_studies=1, ct_prevalence={"Edema": 0.5})
