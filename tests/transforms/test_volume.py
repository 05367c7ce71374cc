"""CT volumes: a DICOM series sorted by position (and refused when incomplete or inconsistent), NIfTI
through MONAI's NibabelReader, the series reader inside MONAI's LoadImage, HU windows as ScaleIntensityRange."""

from __future__ import annotations

import copy
import os

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.data import PydicomReader
from monai.transforms import ConcatItemsd, Compose, CopyItemsd, LoadImage, LoadImaged
from pydicom.data import get_testdata_file

from monai_medunic.errors import ConfigurationError, VolumeReadError
from monai_medunic.transforms import (
    HU_WINDOW_PRESETS,
    DicomSeriesVolumeReader,
    LoadDicomSeriesVolume,
    LoadDicomSeriesVolumed,
    LoadNiftiVolume,
    LoadNiftiVolumed,
    hu_window,
    hu_windowd,
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
    out = hu_window("lung")(hu)
    np.testing.assert_allclose(out.flatten().numpy(), [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    custom = hu_windowd(keys="ct", window=(40, 80))({"ct": hu})["ct"]
    assert float(custom.flatten()[2]) == 0.0  # -600 HU is far below a brain window
    with pytest.raises(ConfigurationError, match="unknown HU window preset"):
        hu_window("liverish")
    with pytest.raises(ConfigurationError):
        hu_window((0, -5))


def test_two_windows_as_channels_with_monai_transforms(tmp_path) -> None:
    """Several windows as channels: MONAI's CopyItemsd + one hu_windowd per copy + ConcatItemsd."""
    folder = str(tmp_path / "series")
    _write_series(folder)
    pipeline = Compose([
        LoadImaged("ct", reader=DicomSeriesVolumeReader(), ensure_channel_first=True, image_only=True),
        CopyItemsd("ct", names="ct_mediastinum"),
        hu_windowd("ct", "lung"),
        hu_windowd("ct_mediastinum", "mediastinum"),
        ConcatItemsd(["ct", "ct_mediastinum"], name="ct"),
    ])
    vol = pipeline({"ct": folder})["ct"]
    hu = LoadDicomSeriesVolume()(folder)
    assert vol.shape == (2, 128, 128, N_SLICES)
    np.testing.assert_allclose(vol[1].numpy(), np.clip((hu[0].numpy() - (50 - 175)) / 350, 0, 1), atol=1e-5)


def test_series_reader_in_monai_loadimage_matches_our_loader(tmp_path) -> None:
    folder = str(tmp_path / "series")
    _write_series(folder)
    ours = LoadDicomSeriesVolume()(folder)
    img, meta = LoadImage(reader=DicomSeriesVolumeReader(), ensure_channel_first=True, image_only=False)(folder)
    assert torch.equal(img.as_tensor(), ours.as_tensor()) and np.allclose(img.affine.numpy(), ours.affine.numpy())
    assert meta["unit"] == "HU" and meta["num_slices"] == N_SLICES
    # a bad series through LoadImage is still our typed error, not LoadImage's generic RuntimeError
    with pytest.raises(VolumeReadError, match="does not exist"):
        LoadImage(reader=DicomSeriesVolumeReader())(str(tmp_path / "missing"))


def _edit(paths: list[str], index: int, **attrs) -> None:
    ds = pydicom.dcmread(paths[index])
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.save_as(paths[index], enforce_file_format=True)


def _position(paths: list[str], k: int) -> list[float]:
    """The position of slice k (the files are shuffled: file_rank holds slice order[rank])."""
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        if int(ds.InstanceNumber) == N_SLICES - k:
            return [float(v) for v in ds.ImagePositionPatient]
    raise AssertionError(k)


@pytest.mark.parametrize("case,field,message", [
    ("missing", "ImagePositionPatient", "missing slices"),
    ("duplicated", "ImagePositionPatient", "duplicated slices"),
    ("uneven", "ImagePositionPatient", "inconsistent slice spacing"),
    ("orientation", "ImageOrientationPatient", "mixes 2 slice orientations"),
    ("spacing", "PixelSpacing", "different pixel spacings"),
])
def test_incomplete_or_inconsistent_series_is_refused(tmp_path, case, field, message) -> None:
    folder = str(tmp_path / case)
    paths = _write_series(folder, shuffle=False)  # file_k holds slice k
    if case == "missing":
        os.remove(paths[3])
    elif case == "duplicated":
        _edit(paths, 4, ImagePositionPatient=_position(paths, 3))
    elif case == "uneven":
        pos = _position(paths, 5)
        _edit(paths, 5, ImagePositionPatient=[pos[0], pos[1], pos[2] - 0.9 * THICKNESS])
    elif case == "orientation":
        _edit(paths, 2, ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    else:
        _edit(paths, 1, PixelSpacing=[0.5, 0.5])
    with pytest.raises(VolumeReadError, match=message) as err:
        LoadDicomSeriesVolume()(folder)
    assert err.value.path == folder and err.value.field == field
    assert "Patient" not in str(err.value).replace("ImagePositionPatient", "").replace("ImageOrientationPatient", "")
