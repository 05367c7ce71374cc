"""LoadDicomImage on real DICOM: pydicom's bundled test files and pydicom-data's chest CRs."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, LoadImage, LoadImaged, Resized
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut, apply_voi

from monai_medunic.errors import ConfigurationError, DicomReadError, NotAnImageError
from monai_medunic.transforms import (
    GrayscaleDicomReader,
    LoadDicomImage,
    LoadDicomImaged,
    dicom_to_array,
    dicom_to_metatensor,
    window_to_unit,
)


def _f(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, name
    return path


LOAD = LoadDicomImage()


def test_real_chest_cr_lossless_jpeg2000_equals_uncompressed() -> None:
    # RG1_UNCR is the uncompressed original, RG1_J2KR its JPEG 2000 reversible (lossless) version.
    a, b = LOAD(_f("RG1_UNCR.dcm")), LOAD(_f("RG1_J2KR.dcm"))
    assert isinstance(a, MetaTensor) and a.shape == (1, 1955, 1841) and a.dtype == torch.float32
    assert torch.equal(a.as_tensor(), b.as_tensor())
    assert b.meta["transfer_syntax_uid"] == pydicom.uid.JPEG2000Lossless


def test_real_chest_cr_unci_is_the_lossy_derivative() -> None:
    # RG1_UNCI carries LossyImageCompression=01: it is the decompressed 10:1 irreversible version
    # (RG1_J2KI), so it equals RG1_J2KI and only approximates the lossless RG1_J2KR.
    unci, j2ki, j2kr = LOAD(_f("RG1_UNCI.dcm")), LOAD(_f("RG1_J2KI.dcm")), LOAD(_f("RG1_J2KR.dcm"))
    assert pydicom.dcmread(_f("RG1_UNCI.dcm"), stop_before_pixels=True).LossyImageCompression == "01"
    assert torch.equal(unci.as_tensor(), j2ki.as_tensor())
    diff = (unci - j2kr).abs()
    assert 0 < float(diff.mean()) < 0.01 and float(diff.max()) < 0.05


def test_monochrome1_is_inverted_relative_to_stored_values() -> None:
    ds = pydicom.dcmread(_f("RG1_UNCR.dcm"))
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    out = LOAD(_f("RG1_UNCR.dcm"))
    expected = 1.0 - window_to_unit(ds.pixel_array, float(ds.WindowCenter), float(ds.WindowWidth))
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-6)
    assert out.meta["inverted"] is True and out.meta["voi"] == "window[0]"
    stored = ds.pixel_array.astype(np.float64).ravel()[::97]
    assert np.corrcoef(stored, out[0].numpy().ravel()[::97])[0, 1] < -0.99
    # the same image declared MONOCHROME2 is not inverted
    ds2 = copy.deepcopy(ds)
    ds2.PhotometricInterpretation = "MONOCHROME2"
    arr2, meta2 = dicom_to_array(ds2)
    np.testing.assert_allclose(arr2[0], 1.0 - out[0].numpy(), atol=1e-6)
    assert meta2["inverted"] is False


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_window_maps_the_window_to_unit_interval(function: str) -> None:
    c, w = 600.0, 1600.0
    x = np.array([c - w, c - w / 2 - 1, c, c + w / 2 + 1, c + w])
    y = window_to_unit(x, c, w, function)
    assert np.all(np.diff(y) >= 0) and y.min() >= 0 and y.max() <= 1
    assert abs(float(y[2]) - 0.5) < 1e-3
    if function == "SIGMOID":
        assert y[0] < 0.02 and y[-1] > 0.98  # 1 / (1 + exp(-4 (x - c) / w)) at c -/+ w
    else:
        assert y[1] == 0.0 and y[3] == 1.0


def test_window_on_real_mr_and_linear_formula() -> None:
    ds = pydicom.dcmread(_f("MR_small.dcm"))
    c, w = float(ds.WindowCenter), float(ds.WindowWidth)
    out = LOAD(_f("MR_small.dcm"))[0].numpy()
    x = ds.pixel_array.astype(np.float64)
    assert np.all(out[x <= c - 0.5 - (w - 1) / 2] == 0.0)
    assert np.all(out[x > c - 0.5 + (w - 1) / 2] == 1.0)
    inside = (x > c - 0.5 - (w - 1) / 2) & (x <= c - 0.5 + (w - 1) / 2)
    np.testing.assert_allclose(out[inside], ((x[inside] - (c - 0.5)) / (w - 1) + 0.5), atol=1e-5)


def test_window_index_selects_among_several_windows() -> None:
    ds = pydicom.dcmread(_f("MR_small.dcm"))
    ds.WindowCenter = [600, 300]
    ds.WindowWidth = [1600, 200]
    a0, m0 = dicom_to_array(ds, voi_index=0)
    a1, m1 = dicom_to_array(ds, voi_index=1)
    np.testing.assert_allclose(a1[0], window_to_unit(ds.pixel_array, 300, 200), atol=1e-6)
    assert m0["voi"] == "window[0]" and m1["voi"] == "window[1]" and m1["window_center"] == 300
    assert not np.allclose(a0, a1)
    a5, m5 = dicom_to_array(ds, voi_index=5)
    assert m5["voi"] == "window[0]" and "not present" in m5["voi_note"]
    np.testing.assert_array_equal(a5, a0)


def test_voi_lut_function_attribute_is_applied() -> None:
    ds = pydicom.dcmread(_f("MR_small.dcm"))
    ds.VOILUTFunction = "SIGMOID"
    arr, meta = dicom_to_array(ds)
    assert meta["voi_function"] == "SIGMOID" and 0.0 < arr.min() and arr.max() < 1.0
    np.testing.assert_allclose(arr[0], window_to_unit(ds.pixel_array, 600, 1600, "SIGMOID"), atol=1e-6)


def test_voi_lut_sequence() -> None:
    ds = pydicom.dcmread(_f("vlut_04.dcm"))
    out = LOAD(_f("vlut_04.dcm"))
    bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    expected = apply_voi(ds.pixel_array, ds).astype(np.float64) / (2**bits - 1)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-6)
    assert out.meta["voi"] == "voi_lut_sequence[0]"


def test_modality_lut_sequence_then_fallback_full_range() -> None:
    ds = pydicom.dcmread(_f("mlut_18.dcm"))
    out = LOAD(_f("mlut_18.dcm"))
    m = apply_modality_lut(ds.pixel_array, ds).astype(np.float64)
    np.testing.assert_allclose(out[0].numpy(), (m - m.min()) / (m.max() - m.min()), atol=1e-5)
    assert out.meta["modality_lut"] == "modality_lut_sequence" and out.meta["voi"] == "full_range"


def test_rescale_and_percentile_fallback_on_ct() -> None:
    full = LOAD(_f("CT_small.dcm"))
    pct = LoadDicomImage(voi_fallback="percentile", percentiles=(5, 95))(_f("CT_small.dcm"))
    assert full.meta["modality_lut"] == "rescale(slope=1, intercept=-1024)"
    assert float(full.min()) == 0.0 and float(full.max()) == 1.0
    assert pct.meta["voi"] == "percentile(5,95)"
    assert float((pct == 0).float().mean()) > 0.04 and float((pct == 1).float().mean()) > 0.04
    assert float((full == 1).float().mean()) < 0.01
    with pytest.raises(ConfigurationError):
        LoadDicomImage(voi_fallback="median")


@pytest.mark.parametrize(
    "reference, compressed",
    [
        ("MR_small.dcm", "MR_small_RLE.dcm"),
        ("MR_small.dcm", "MR_small_jpeg_ls_lossless.dcm"),
        ("MR_small.dcm", "MR_small_jp2klossless.dcm"),
        ("JPEG2000_UNC.dcm", "JPEG2000.dcm"),
        ("SC_rgb.dcm", "SC_rgb_jpeg_gdcm.dcm"),  # JPEG lossless (process 14, SV1), RGB
        ("emri_small.dcm", "emri_small_RLE.dcm"),  # multi-frame
        ("emri_small.dcm", "emri_small_jpeg_2k_lossless.dcm"),
        ("emri_small.dcm", "emri_small_jpeg_ls_lossless.dcm"),
    ],
)
def test_lossless_transfer_syntaxes_decode_like_uncompressed(reference: str, compressed: str) -> None:
    a, b = LOAD(_f(reference)), LOAD(_f(compressed))
    assert pydicom.dcmread(_f(compressed), stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed
    assert torch.equal(a.as_tensor(), b.as_tensor())


def test_jpeg_baseline_lossy_is_close_to_uncompressed() -> None:
    path = _f("SC_rgb_jpeg_dcmtk.dcm")
    assert pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID == pydicom.uid.JPEGBaseline8Bit
    a, b = LOAD(_f("SC_rgb.dcm")), LOAD(path)
    assert a.shape == b.shape == (1, 100, 100)
    assert float((a - b).abs().mean()) < 0.02


def test_jpeg_lossless_and_extended_decode() -> None:
    x = LOAD(_f("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    y = LOAD(_f("JPGExtended.dcm"))
    assert x.ndim == 3 and x.shape[0] == 1 and 0 <= float(x.min()) < float(x.max()) <= 1
    assert y.shape == (1, 1024, 256) and float(y.std()) > 0


def test_multiframe_frames_as_channels_or_one_frame() -> None:
    all_frames = LOAD(_f("emri_small.dcm"))
    assert all_frames.shape == (10, 64, 64) and all_frames.meta["frames"] == 10
    one = LoadDicomImage(frame=3)(_f("emri_small.dcm"))
    assert one.shape == (1, 64, 64) and one.meta["frame_index"] == 3
    # automatic VOI is computed over all frames jointly, so a single frame may not span [0, 1]
    ds = pydicom.dcmread(_f("emri_small.dcm"))
    px = ds.pixel_array.astype(np.float64)
    np.testing.assert_allclose(all_frames[3].numpy(), (px[3] - px.min()) / (px.max() - px.min()), atol=1e-6)
    with pytest.raises(ConfigurationError, match="frame 10"):
        LoadDicomImage(frame=10)(_f("emri_small.dcm"))


def test_rgb_to_gray_policies() -> None:
    ds = pydicom.dcmread(_f("SC_rgb.dcm"))
    rgb = ds.pixel_array.astype(np.float64) / 255.0
    lum = LOAD(_f("SC_rgb.dcm"))
    np.testing.assert_allclose(lum[0].numpy(), rgb @ np.array([0.299, 0.587, 0.114]), atol=1e-6)
    assert lum.meta["rgb_to_gray"] == "luminance(RGB)"
    mean = LoadDicomImage(rgb_policy="mean")(_f("SC_rgb.dcm"))
    np.testing.assert_allclose(mean[0].numpy(), rgb.mean(-1), atol=1e-6)
    with pytest.raises(DicomReadError, match="rgb_policy='error'") as err:
        LoadDicomImage(rgb_policy="error")(_f("SC_rgb.dcm"))
    assert err.value.field == "PhotometricInterpretation"
    ybr = LOAD(_f("examples_ybr_color.dcm"))  # YBR_FULL_422 multi-frame, converted to RGB then gray
    assert ybr.shape[0] == 30 and ybr.meta["rgb_to_gray"] == "luminance(YBR_FULL_422)"


def test_presentation_lut_shape_inverse() -> None:
    ds = pydicom.dcmread(_f("MR_small.dcm"))
    plain, _ = dicom_to_array(ds)
    ds.PresentationLUTShape = "INVERSE"
    inv, meta = dicom_to_array(ds)
    np.testing.assert_allclose(inv, 1.0 - plain, atol=1e-6)
    assert meta["inverted"] and meta["presentation_lut_shape"] == "INVERSE"
    # DX convention: MONOCHROME1 always comes with INVERSE; the inversion is applied once
    ds.PhotometricInterpretation = "MONOCHROME1"
    mono1_inverse, _ = dicom_to_array(ds)
    np.testing.assert_allclose(mono1_inverse, inv, atol=1e-6)


def test_meta_spacing_orientation_uids_and_no_patient_identifiers() -> None:
    ct = pydicom.dcmread(_f("CT_small.dcm"))
    out = LOAD(_f("CT_small.dcm"))
    assert out.meta["pixel_spacing"] == pytest.approx((0.661468, 0.661468))
    assert out.meta["spacing_source"] == "PixelSpacing"
    assert out.affine[0, 0] == pytest.approx(0.661468) and out.affine[1, 1] == pytest.approx(0.661468)
    assert out.meta["image_orientation_patient"] == pytest.approx([float(v) for v in ct.ImageOrientationPatient])
    assert out.meta["sop_instance_uid"] == ct.SOPInstanceUID
    assert out.meta["study_instance_uid"] == ct.StudyInstanceUID
    assert out.meta["series_instance_uid"] == ct.SeriesInstanceUID
    assert out.meta["photometric_interpretation"] == "MONOCHROME2"
    text = repr(dict(out.meta))
    for kw in ("PatientName", "PatientID", "PatientBirthDate"):
        value = str(ct.get(kw, ""))
        assert kw.lower() not in text.lower()
        if len(value) > 2:
            assert value not in text
    cr = LOAD(_f("RG1_UNCR.dcm"))
    assert cr.meta["pixel_spacing"] is None  # PixelSpacing is 0\0 in this file: not a spacing
    assert cr.meta["view"] == "frontal" and cr.meta["modality"] == "CR"


def test_dataset_input_dict_form_and_monai_pipeline() -> None:
    ds = pydicom.dcmread(_f("MR_small.dcm"))
    from_ds = dicom_to_metatensor(ds)
    from_path = LOAD(_f("MR_small.dcm"))
    assert torch.equal(from_ds.as_tensor(), from_path.as_tensor())
    assert from_ds.meta["filename_or_obj"] == _f("MR_small.dcm")
    assert torch.equal(LOAD(ds).as_tensor(), from_path.as_tensor())
    pipeline = Compose([LoadDicomImaged(keys="image"), Resized(keys="image", spatial_size=(32, 32), mode="area")])
    out = pipeline({"image": _f("MR_small.dcm"), "report": "No acute findings."})
    assert out["image"].shape == (1, 32, 32) and out["report"] == "No acute findings."
    assert out["image"].meta["voi"] == "window[0]"
    with pytest.raises(ConfigurationError):
        LOAD(42)  # type: ignore[arg-type]


def test_grayscale_reader_inside_monai_loadimage() -> None:
    """GrayscaleDicomReader is a MONAI ImageReader: LoadImage / LoadImaged give what LoadDicomImage gives,
    with image_only, meta_keys and ensure_channel_first as MONAI users expect, and our typed errors."""
    path = _f("RG1_UNCI.dcm")  # a real MONOCHROME1 chest CR
    ours = LOAD(path)
    img, meta = LoadImage(reader=GrayscaleDicomReader(), image_only=False, ensure_channel_first=True)(path)
    assert torch.equal(img.as_tensor(), ours.as_tensor()) and torch.equal(img.affine, ours.affine)
    assert meta["inverted"] and meta["photometric_interpretation"] == "MONOCHROME1" and meta["filename_or_obj"] == path
    d = LoadImaged("image", reader=GrayscaleDicomReader(voi_fallback="percentile"), image_only=False, meta_keys="image_info")(
        {"image": path})
    assert d["image"].shape == ours.shape and d["image_info"]["sop_instance_uid"] == ours.meta["sop_instance_uid"]
    assert GrayscaleDicomReader().verify_suffix(path) and GrayscaleDicomReader().verify_suffix("/pacs/export/IM0001")
    assert not GrayscaleDicomReader().verify_suffix("image.png")
    two = LoadImage(reader=GrayscaleDicomReader())([path, path])  # several files stack as channels
    assert two.shape == (2, *ours.shape[1:])
    with pytest.raises(NotAnImageError):  # an SR through LoadImage: still our typed error, naming the file
        LoadImage(reader=GrayscaleDicomReader())(_f("reportsi.dcm"))
