"""CT volumes: a DICOM series sorted by position, NIfTI through nibabel, HU windows."""

from __future__ import annotations

import copy
import os

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import PydicomReader
from monai.transforms import LoadImage
from pydicom.data import get_testdata_file

from monai_medunic.errors import ConfigurationError, VolumeReadError
from monai_medunic.transforms import (
    HU_WINDOW_PRESETS,
    HUWindow,
    HUWindowd,
    LoadDicomSeriesVolume,
    LoadDicomSeriesVolumed,
    LoadNiftiVolume,
    LoadNiftiVolumed,
)

N_SLICES = 6
THICKNESS = 2.5


def _write_series(folder: str, series_uid: str | None = None, shuffle: bool = True) -> list[str]:
    """Six CT slices from CT_small.dcm, slice k holding HU ``-1000 + 100 k`` plus the original anatomy / 10."""
    os.makedirs(folder, exist_ok=True)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series_uid = series_uid or pydicom.uid.generate_uid()
    z0 = float(base.ImagePositionPatient[2])
    anatomy = base.pixel_array.astype(np.int32) // 10
    paths = []
    order = [3, 0, 5, 1, 4, 2] if shuffle else list(range(N_SLICES))
    for rank, k in enumerate(order):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = N_SLICES - k  # reversed on purpose: the position must win
        ds.ImagePositionPatient = [base.ImagePositionPatient[0], base.ImagePositionPatient[1], z0 + THICKNESS * k]
        hu = -1000 + 100 * k + anatomy
        ds.PixelData = (hu - int(base.RescaleIntercept)).astype(np.int16).tobytes()
        path = os.path.join(folder, f"file_{rank}.dcm")
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def test_dicom_series_sorted_by_position_in_hu(tmp_path) -> None:
    folder = str(tmp_path / "series")
    _write_series(folder)
    with open(os.path.join(folder, "README.txt"), "w") as fh:
        fh.write("not DICOM")
    vol = LoadDicomSeriesVolume()(folder)
    assert vol.shape == (1, 128, 128, N_SLICES)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    anatomy = (base.pixel_array.astype(np.int32) // 10).T  # (X=cols, Y=rows)
    for k in range(N_SLICES):
        np.testing.assert_array_equal(vol[0, :, :, k].numpy(), (-1000 + 100 * k + anatomy).astype(np.float32))
    assert vol.meta["unit"] == "HU" and vol.meta["sort_key"] == "ImagePositionPatient"
    assert vol.meta["num_slices"] == N_SLICES and vol.meta["skipped_files"] == {"not_dicom": 1}
    assert vol.meta["spacing"][2] == pytest.approx(THICKNESS)
    # RAS affine: LPS x/y are negated; the slice axis steps +2.5 mm in z
    aff = vol.affine.numpy()
    ps = [float(v) for v in base.PixelSpacing]
    iop = [float(v) for v in base.ImageOrientationPatient]
    np.testing.assert_allclose(aff[:3, 0], np.array([-1, -1, 1]) * np.array(iop[:3]) * ps[1], atol=1e-6)
    np.testing.assert_allclose(aff[:3, 2], [0, 0, THICKNESS], atol=1e-6)
    ipp = [float(v) for v in base.ImagePositionPatient]
    np.testing.assert_allclose(aff[:3, 3], [-ipp[0], -ipp[1], ipp[2]], atol=1e-6)


def test_dicom_series_matches_monai_pydicom_reader(tmp_path) -> None:
    folder = str(tmp_path / "series")
    _write_series(folder, shuffle=False)
    ours = LoadDicomSeriesVolume()(folder)
    theirs = LoadImage(reader=PydicomReader(), image_only=True, ensure_channel_first=True)(folder)
    assert tuple(theirs.shape) == tuple(ours.shape)
    # MONAI stacks the slices in the opposite order (descending z); the world geometry is the same
    np.testing.assert_allclose(theirs.numpy()[..., ::-1], ours.numpy(), atol=1e-4)
    a_ours, a_theirs = ours.affine.numpy(), theirs.affine.numpy()
    np.testing.assert_allclose(a_theirs[:3, :2], a_ours[:3, :2], atol=1e-4)
    np.testing.assert_allclose(a_theirs[:3, 2], -a_ours[:3, 2], atol=1e-4)
    last = np.array([0, 0, N_SLICES - 1, 1.0])
    np.testing.assert_allclose(a_theirs @ last, a_ours @ np.array([0, 0, 0, 1.0]), atol=1e-4)


def test_dicom_series_several_series_and_errors(tmp_path) -> None:
    folder = str(tmp_path / "two")
    _write_series(os.path.join(folder, "a"), series_uid="1.2.3.4.5.1")
    _write_series(os.path.join(folder, "b"), series_uid="1.2.3.4.5.2")
    with pytest.raises(VolumeReadError, match="2 series found"):
        LoadDicomSeriesVolume()(folder)
    out = LoadDicomSeriesVolumed(keys="ct", series_uid="1.2.3.4.5.2")({"ct": folder})
    assert out["ct"].meta["series_instance_uid"] == "1.2.3.4.5.2" and out["ct"].shape[-1] == N_SLICES
    with pytest.raises(VolumeReadError, match="does not exist"):
        LoadDicomSeriesVolume()(str(tmp_path / "missing"))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(VolumeReadError, match="no DICOM image slices") as err:
        LoadDicomSeriesVolume()(str(empty))
    assert err.value.path == str(empty)


def test_nifti_volume(tmp_path) -> None:
    rng = np.random.default_rng(0)
    data = rng.normal(-300, 400, size=(20, 18, 7)).astype(np.float32)
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    affine[:3, 3] = [-10, 5, 2]
    path = str(tmp_path / "ct.nii.gz")
    nib.save(nib.Nifti1Image(data, affine), path)
    vol = LoadNiftiVolume()(path)
    assert vol.shape == (1, 20, 18, 7)
    np.testing.assert_allclose(vol[0].numpy(), data, rtol=1e-6)
    np.testing.assert_allclose(vol.affine.numpy(), affine)
    assert vol.meta["spacing"] == pytest.approx((0.8, 0.8, 3.0))
    d = LoadNiftiVolumed(keys="ct")({"ct": path})
    assert torch.equal(d["ct"].as_tensor(), vol.as_tensor())
    with pytest.raises(VolumeReadError, match="does not exist"):
        LoadNiftiVolume()(str(tmp_path / "none.nii"))
    bad = tmp_path / "bad.nii"
    bad.write_bytes(b"this is not nifti" * 30)
    with pytest.raises(VolumeReadError) as err:
        LoadNiftiVolume()(str(bad))
    assert err.value.path == str(bad)
    raw = open(path, "rb").read()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(VolumeReadError, match="truncated or corrupt"):
        LoadNiftiVolume()(str(cut))


def test_hu_window_presets() -> None:
    level, width = HU_WINDOW_PRESETS["lung"]
    assert (level, width) == (-600.0, 1500.0)
    hu = torch.tensor([[[[-2000.0, level - width / 2, level, level + width / 2, 3000.0]]]])
    out = HUWindow("lung")(hu)
    np.testing.assert_allclose(out.flatten().numpy(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    two = HUWindow(["lung", "mediastinum"])(hu)
    assert two.shape[0] == 2
    np.testing.assert_allclose(two[1].flatten().numpy(), np.clip((hu.flatten().numpy() - (50 - 175)) / 350, 0, 1), atol=1e-6)
    custom = HUWindowd(keys="ct", windows=(40, 80))({"ct": hu})["ct"]
    assert float(custom.flatten()[2]) == 0.0  # -600 HU is far below a brain window
    with pytest.raises(ConfigurationError, match="unknown HU window preset"):
        HUWindow("liverish")
    with pytest.raises(ConfigurationError):
        HUWindow((0, -5))


def test_hu_window_on_loaded_series_records_meta(tmp_path) -> None:
    folder = str(tmp_path / "series")
    _write_series(folder)
    vol = HUWindow(["lung", "mediastinum"])(LoadDicomSeriesVolume()(folder))
    assert vol.shape == (2, 128, 128, N_SLICES) and vol.meta["hu_window"] == ["lung", "mediastinum"]
    assert 0.0 <= float(vol.min()) and float(vol.max()) <= 1.0
