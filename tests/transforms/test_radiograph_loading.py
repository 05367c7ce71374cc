"""LoadRadiograph / LoadRadiographd: every input form to (1, H, W) display values in [0, 1], by hand."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.data import get_testdata_file

from monai_medunic.errors import DataError, ShapeMismatchError
from monai_medunic.transforms import LoadDicomImage
from monai_medunic.transforms.radiograph import LoadRadiograph, LoadRadiographd, array_to_display, image_format

CR = get_testdata_file("RG1_UNCI.dcm")


def test_png_scaled_by_its_bit_depth_and_rgb_to_luminance(tmp_path):
    g8 = (np.arange(6 * 7).reshape(6, 7) * 6).astype(np.uint8)
    Image.fromarray(g8).save(tmp_path / "g8.png")
    out = LoadRadiograph()(tmp_path / "g8.png")
    assert out.shape == (1, 6, 7) and out.dtype == torch.float32
    np.testing.assert_allclose(out[0].numpy(), g8 / 255.0, atol=1e-7)
    assert out.meta["source_format"] == "png" and out.meta["filename_or_obj"].endswith("g8.png")
    g16 = (np.arange(6 * 7).reshape(6, 7) * 1000).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    np.testing.assert_allclose(LoadRadiograph()(tmp_path / "g16.png")[0].numpy(), g16 / 65535.0, atol=1e-7)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 7
    Image.fromarray(rgba, "RGBA").save(tmp_path / "c.png")
    expected = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255.0  # BT.601 luminance, alpha dropped
    np.testing.assert_allclose(LoadRadiograph()(tmp_path / "c.png").numpy(), np.full((1, 4, 5), expected), atol=1e-6)


def test_nifti_min_max_and_volumes_refused(tmp_path):
    data = np.array([[10.0, 20.0, 30.0], [40.0, 50.0, 60.0]], np.float32)
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "a.nii.gz")
    np.testing.assert_allclose(LoadRadiograph()(tmp_path / "a.nii.gz")[0].numpy(), (data - 10) / 50, atol=1e-7)
    nib.save(nib.Nifti1Image(data[..., None], np.eye(4)), tmp_path / "b.nii")  # (H, W, 1) is a 2D image
    np.testing.assert_allclose(LoadRadiograph()(tmp_path / "b.nii")[0].numpy(), (data - 10) / 50, atol=1e-7)
    nib.save(nib.Nifti1Image(np.zeros((3, 4, 5), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    with pytest.raises(DataError, match=r"v.nii.gz: field 'shape': a 3D array of shape \(3, 4, 5\)"):
        LoadRadiograph()(tmp_path / "v.nii.gz")


def test_arrays_and_datasets():
    np.testing.assert_allclose(array_to_display(np.array([[0, 255]], np.uint8)), [[[0.0, 1.0]]])
    np.testing.assert_allclose(array_to_display(np.array([[True, False]])), [[[1.0, 0.0]]])
    np.testing.assert_allclose(array_to_display(torch.tensor([[[0.25, 0.5]]])), [[[0.25, 0.5]]])
    with pytest.raises(DataError, match="must not be negative"):
        array_to_display(np.array([[-1, 3]], np.int16))
    with pytest.raises(DataError, match="NaN"):
        array_to_display(np.array([[np.nan, 0.5]], np.float32))
    with pytest.raises(ShapeMismatchError, match=r"\(5,\)"):
        array_to_display(np.zeros(5, np.float32))
    ds = pydicom.dcmread(CR)
    assert torch.equal(LoadRadiograph()(ds), LoadDicomImage(frame=0)(CR))
    with pytest.raises(DataError, match="got dict"):
        LoadRadiograph()({"image": CR})


def test_formats_and_folders(tmp_path):
    assert image_format(CR) == "dicom" and image_format(tmp_path) == "dicom_folder"
    renamed = tmp_path / "scan.bin"
    renamed.write_bytes(open(CR, "rb").read())  # another suffix, but the DICM preamble
    assert image_format(renamed) == "dicom"
    (tmp_path / "x.jpg").write_bytes(b"\xff\xd8\xff")
    with pytest.raises(DataError, match=r"x.jpg: field 'format': unsupported image file '.jpg'"):
        image_format(tmp_path / "x.jpg")
    lateral = pydicom.dcmread(CR)
    lateral.ViewPosition = "LL"
    only_lateral = tmp_path / "lat"
    only_lateral.mkdir()
    lateral.save_as(only_lateral / "l.dcm")
    with pytest.raises(DataError, match="lat: no frontal CR/DX chest radiograph in the series \\(lateral view\\)"):
        LoadRadiograph()(only_lateral)
    d = LoadRadiographd("image")({"image": str(renamed), "other": 1})
    assert d["image"].shape[0] == 1 and d["other"] == 1 and d["image"].meta["source_format"] == "dicom"
