"""UniMedI attentive slice selection (Eq. 1-2) as pure tensor functions, and the SelectSlices transform pair."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from monai_medunic.errors import ConfigurationError, DataError, ShapeMismatchError
from monai_medunic.transforms import SelectSlices, SelectSlicesd
from monai_medunic.transforms.slice_selection import (
    choose_slices,
    cls_patch_attention,
    extract_slices,
    middle_slices,
    random_slices,
    slab_to_voxel_slices,
    slice_relevance,
    top_k_slices,
    voxel_slice_scores,
)


def _hand_attention() -> torch.Tensor:
    """(B=1, layers=2, heads=2, N=6): a 3x1x2 token grid (3 slabs of 2 tokens)."""
    layer0 = [[0.5, 0.1, 0.1, 0.1, 0.1, 0.1], [0.3, 0.3, 0.1, 0.1, 0.1, 0.1]]
    layer1 = [[0.0, 0.0, 0.1, 0.1, 0.4, 0.4], [0.1, 0.1, 0.0, 0.0, 0.2, 0.6]]
    return torch.tensor([[layer0, layer1]])


def test_eq1_averages_heads_and_last_layers_by_hand() -> None:
    a = _hand_attention()
    # all layers: mean of 4 rows
    expected_all = torch.tensor([[0.225, 0.125, 0.075, 0.075, 0.2, 0.3]])
    assert torch.allclose(cls_patch_attention(a), expected_all)
    # the last layer only: mean of its 2 heads
    assert torch.allclose(cls_patch_attention(a, last_layers=1), torch.tensor([[0.05, 0.05, 0.05, 0.05, 0.3, 0.5]]))
    assert torch.allclose(cls_patch_attention(a).sum(-1), torch.ones(1))
    with pytest.raises(ConfigurationError, match="last_layers"):
        cls_patch_attention(a, last_layers=3)
    with pytest.raises(ShapeMismatchError):
        cls_patch_attention(a[0])


def test_eq2_slice_relevance_and_top_k_by_hand() -> None:
    token = cls_patch_attention(_hand_attention())
    scores = slice_relevance(token, grid=(3, 1, 2))
    # slab means: (0.225+0.125)/2, (0.075+0.075)/2, (0.2+0.3)/2
    assert torch.allclose(scores, torch.tensor([[0.175, 0.075, 0.25]]))
    assert top_k_slices(scores, 2).tolist() == [[2, 0]]
    # the volume's tokens can sit after other tokens: the offset skips them
    shifted = torch.cat([torch.full((1, 4), 9.0), token], dim=1)
    assert torch.allclose(slice_relevance(shifted, (3, 1, 2), offset=4), scores)
    with pytest.raises(ShapeMismatchError, match="grid"):
        slice_relevance(token, (4, 1, 2))
    with pytest.raises(ConfigurationError):
        slice_relevance(token, (6, 1))


def test_thin_volume_error_names_the_volume() -> None:
    scores = torch.rand(1, 3)
    with pytest.raises(DataError, match=r"ct_0007\.nii\.gz.*3 slices.*k=4") as err:
        top_k_slices(scores, 4, names=["ct_0007.nii.gz"])
    assert err.value.path == "ct_0007.nii.gz" and err.value.field == "slices"
    with pytest.raises(DataError, match="2 slices"):
        middle_slices(1, 2, 3)
    with pytest.raises(ConfigurationError, match="k must be >= 1"):
        top_k_slices(scores, 0)


def test_baseline_selections() -> None:
    assert middle_slices(2, 10, 4).tolist() == [[3, 4, 5, 6]] * 2
    g = torch.Generator().manual_seed(3)
    r = random_slices(5, 8, 3, generator=g)
    assert r.shape == (5, 3)
    assert all(len(set(row)) == 3 and all(0 <= i < 8 for i in row) for row in r.tolist())
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.2]])
    assert choose_slices("attention", scores, 1, 4, 2).tolist() == [[1, 2]]
    assert choose_slices("middle", None, 1, 4, 2).tolist() == [[1, 2]]
    with pytest.raises(ConfigurationError, match="needs slice scores"):
        choose_slices("attention", None, 1, 4, 2)
    with pytest.raises(ConfigurationError, match="mode"):
        choose_slices("best", scores, 1, 4, 2)


def test_slab_to_voxel_mapping() -> None:
    assert slab_to_voxel_slices(torch.tensor([[0, 3]]), 4).tolist() == [[2, 14]]
    assert voxel_slice_scores(torch.tensor([[1.0, 2.0]]), 3).tolist() == [[1.0, 1.0, 1.0, 2.0, 2.0, 2.0]]


def test_extract_slices_center_mean_and_resize() -> None:
    vol = torch.arange(2 * 1 * 8 * 4 * 4, dtype=torch.float32).reshape(2, 1, 8, 4, 4)
    idx = torch.tensor([[1, 0], [0, 1]])
    out = extract_slices(vol, idx, patch_depth=4)
    assert out.shape == (2, 2, 1, 4, 4)
    assert torch.equal(out[0, 0, 0], vol[0, 0, 6]) and torch.equal(out[0, 1, 0], vol[0, 0, 2])
    assert torch.equal(out[1, 0, 0], vol[1, 0, 2]) and torch.equal(out[1, 1, 0], vol[1, 0, 6])
    mean = extract_slices(vol, idx, patch_depth=4, reduce="mean")
    assert torch.allclose(mean[0, 0, 0], vol[0, 0, 4:8].mean(0))
    big = extract_slices(vol, idx, patch_depth=4, size=8)
    assert big.shape == (2, 2, 1, 8, 8)
    ref = torch.nn.functional.interpolate(vol[0, :, 6][None], size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.allclose(big[0, 0], ref[0])
    with pytest.raises(ShapeMismatchError, match="out of range"):
        extract_slices(vol, torch.tensor([[2, 0], [0, 0]]), patch_depth=4)
    with pytest.raises(ShapeMismatchError):
        extract_slices(vol[0], idx)
    with pytest.raises(ConfigurationError, match="reduce"):
        extract_slices(vol, idx, 4, reduce="max")


def test_select_slices_transform_pair_records_meta() -> None:
    affine = torch.diag(torch.tensor([0.7, 0.7, 2.5, 1.0], dtype=torch.float64))
    vol = MetaTensor(torch.rand(1, 6, 5, 7), affine=affine, meta={"filename_or_obj": "/data/ct_0001.nii.gz"})  # (C, X, Y, Z)
    scores = torch.tensor([0.1, 0.7, 0.2, 0.9, 0.0, 0.3, 0.5])
    out = SelectSlices(k=3)(vol, scores)
    assert out.shape == (3, 1, 6, 5)
    assert out.meta["selected_slices"] == [3, 1, 6]
    assert torch.equal(out[0], vol.as_tensor()[..., 3])
    assert out.meta["filename_or_obj"] == "/data/ct_0001.nii.gz"
    assert not torch.equal(out.affine, vol.affine)  # the volume's 3D geometry does not describe a stack of slices
    d = SelectSlicesd("image", k=2, output_key="slices")({"image": vol, "slice_scores": scores})
    assert d["selected_slices"] == [3, 1] and d["slices"].shape == (2, 1, 6, 5) and d["image"] is vol
    mid = SelectSlices(k=2, mode="middle", slice_axis=0)(vol)
    assert mid.meta["selected_slices"] == [2, 3] and mid.shape == (2, 1, 5, 7)


def test_select_slices_transform_bad_input_names_the_file() -> None:
    vol = MetaTensor(torch.rand(1, 4, 4, 3), meta={"filename_or_obj": "/data/thin_ct.nii.gz"})
    with pytest.raises(DataError, match=r"thin_ct\.nii\.gz.*3 slices"):
        SelectSlices(k=4, mode="middle")(vol)
    with pytest.raises(DataError, match=r"thin_ct\.nii\.gz.*2 slice scores"):
        SelectSlices(k=2)(vol, [0.1, 0.2])
    with pytest.raises(DataError, match=r"thin_ct\.nii\.gz.*channel-first"):
        SelectSlices(k=1)(MetaTensor(torch.rand(4, 4, 3), meta={"filename_or_obj": "/data/thin_ct.nii.gz"}))
    with pytest.raises(ConfigurationError):
        SelectSlices(k=1, mode="top")
