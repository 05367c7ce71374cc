"""The volume pipeline between a loaded CT and UnifiedViT's 3D tokenizer: axes (C, X, Y, Z) -> (C, Z, Y, X), the
HU window, the resize, the refusal of volumes thinner than k (naming the file), and LoadVolume's dispatch
between NIfTI files and DICOM series."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from monai_medunic.errors import DataError, VolumeReadError
from monai_medunic.transforms.pipelines import volume_input_transform, volume_input_transformd
from monai_medunic.transforms.slice_selection import RequireSlices, RequireSlicesd
from monai_medunic.transforms.volume import LoadVolume, LoadVolumed


def _marked(x: int = 40, y: int = 24, z: int = 16) -> MetaTensor:
    vol = torch.full((1, x, y, z), -1500.0)
    vol[0, 5, 7, 10] = 1000.0  # column 5, row 7, slice 10
    return MetaTensor(vol, meta={"filename_or_obj": "ct/study_7"})


def test_axes_window_and_size() -> None:
    out = volume_input_transform((16, 24, 40))(_marked())  # same size: only axes and window
    assert out.shape == (1, 16, 24, 40) and out.dtype == torch.float32 and not isinstance(out, MetaTensor)
    assert out[0, 10, 7, 5] == 1.0 and out.sum() == 1.0  # (slice, row, column); lung window [-1350, 150] HU -> [0, 1], clipped
    half = volume_input_transform((8, 12, 20))(_marked())
    assert half.shape == (1, 8, 12, 20)
    assert half[0, 5, 3, 2] == pytest.approx(1.0 / 8)  # slice 10 -> 5 of 8 (z * D / Z), area-averaged over 2x2x2
    d = volume_input_transformd("image", (8, 12, 20))({"image": _marked()})
    assert torch.equal(d["image"], half)


def test_thin_volumes_are_refused_naming_the_file() -> None:
    thin = MetaTensor(torch.zeros(1, 8, 8, 3), meta={"filename_or_obj": "ct/thin_series"})
    with pytest.raises(DataError, match="thin_series.*3 slice.*4 needed") as err:
        RequireSlices(4)(thin)
    assert err.value.path == "ct/thin_series" and err.value.field == "slices"
    single = MetaTensor(torch.zeros(1, 8, 8, 1), meta={"filename_or_obj": "cr/frontal.dcm"})
    with pytest.raises(DataError, match="frontal.dcm.*single 2D image"):
        RequireSlicesd("image", 2)({"image": single})
    with pytest.raises(DataError, match="2D image given as a volume"):
        RequireSlices(2)(MetaTensor(torch.zeros(1, 8, 8), meta={"filename_or_obj": "cr/frontal.dcm"}))
    # inside the pipeline (a MONAI Compose) the typed error is the cause of MONAI's RuntimeError
    with pytest.raises(RuntimeError) as wrapped:
        volume_input_transform((8, 8, 8), min_slices=4)(thin)
    assert isinstance(wrapped.value.__cause__, DataError) and "thin_series" in str(wrapped.value.__cause__)


def test_load_volume_reads_nifti_and_dicom_series(tmp_path) -> None:
    from monai_medunic.data.demo.dicom_io import write_ct_series

    hu = np.random.default_rng(0).normal(0.0, 100.0, (6, 16, 20)).astype(np.float32)  # (slices, rows, columns)
    folder = tmp_path / "series"
    write_ct_series(str(folder), hu, (2.5, 1.0, 1.0), (0.0, 0.0, 0.0), seed=0, index=0, study_uid="1.2.3.4",
                    series_uid="1.2.3.4.1", frame_uid="1.2.3.4.2", study_date="20240101", sex="F", language="en")
    series = LoadVolume()(str(folder))
    assert series.shape == (1, 20, 16, 6)  # (C, X = columns, Y = rows, Z = slices)
    assert torch.allclose(series[0].permute(2, 1, 0), torch.as_tensor(hu).round(), atol=1.0)
    nifti = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 16, 6), np.float32), np.eye(4)), str(nifti))
    d = LoadVolumed("image")({"image": str(nifti)})
    assert d["image"].shape == (1, 20, 16, 6) and d["image"].meta["filename_or_obj"] == str(nifti)
    with pytest.raises(VolumeReadError, match="does not exist"):
        LoadVolume()(str(tmp_path / "missing.nii.gz"))
