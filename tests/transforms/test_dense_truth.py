"""Truth of dense tasks as tensors, on the real demo truth files (NIfTI masks, DICOM SEG, boxes)."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import Compose, EnsureTyped

from monai_medunic.data.demo import generate_demo_dataset
from monai_medunic.errors import ConfigurationError, DataError
from monai_medunic.transforms import LoadDicomImaged
from monai_medunic.transforms.dense import (
    DetectionBoxes,
    DetectionBoxesd,
    DetectionCollate,
    FindingMasks,
    FindingMasksd,
    ResizeImageBoxd,
    read_mask,
    read_seg_masks,
)

FINDINGS = ["Nodule", "Pneumothorax", "Pleural Effusion", "Consolidation"]
SIZE = 64


@pytest.fixture(scope="module")
def records(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("dense_truth") / "demo"
    prev = {"Cardiomegaly": 0.1, "Pleural Effusion": 0.7, "Pneumothorax": 0.5, "Nodule": 0.7, "Consolidation": 0.6, "Edema": 0.1}
    info = generate_demo_dataset(out, num_studies=4, seed=5, image_size=SIZE, prevalence=prev, lateral_fraction=0.0, num_ct_studies=0)
    rows = [json.loads(x) for x in open(info.manifest_path, encoding="utf-8")]
    for r in rows:
        r["image"] = os.path.join(out, r["image"])
        r["masks"] = {k: os.path.join(out, v) for k, v in r.get("masks", {}).items()}
        if r.get("seg"):
            r["seg"] = os.path.join(out, r["seg"])
    with_truth = [r for r in rows if len(r["masks"]) >= 2]
    assert with_truth, "the demo generator drew no study with two masked findings"
    return with_truth


def test_masks_stack_per_finding_in_order_absent_empty(records) -> None:
    r = records[0]
    d = FindingMasksd("masks", FINDINGS)(LoadDicomImaged("image")({"image": r["image"], "masks": r["masks"]}))
    label = d["label"]
    assert label.shape == (4, SIZE, SIZE) and label.dtype == torch.float32 and label.meta["findings"] == FINDINGS
    assert torch.equal(label.affine, d["image"].affine)
    for i, f in enumerate(FINDINGS):
        expected = read_mask(r["masks"][f]) if f in r["masks"] else np.zeros((SIZE, SIZE), np.uint8)
        assert np.array_equal(label[i].numpy(), expected), f
    assert sum(int(label[i].sum() > 0) for i in range(4)) == len(r["masks"])


def test_mask_of_another_size_is_a_typed_error_naming_the_file(records, tmp_path) -> None:
    small = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((SIZE // 2, SIZE), np.uint8), np.eye(4)), str(small))
    with pytest.raises(DataError) as err:
        FindingMasks(FINDINGS)({"Nodule": str(small)}, (SIZE, SIZE))
    assert err.value.path == str(small) and err.value.field == "masks" and "(32, 64)" in str(err.value)
    broken = tmp_path / "broken.nii.gz"
    broken.write_text("not NIfTI")
    with pytest.raises(DataError, match="cannot read the mask"):
        FindingMasks(FINDINGS)({"Nodule": str(broken)}, (SIZE, SIZE))
    with pytest.raises(ConfigurationError, match="empty label set"):
        FindingMasks([])


def test_boxes_go_to_the_tensor_axis_order_and_are_checked() -> None:
    boxes, labels = DetectionBoxes(num_classes=4)([[10, 20, 30, 25], [0, 0, 64, 48]], [3, 0], (1, 48, 64))
    assert boxes.dtype == torch.float32 and labels.dtype == torch.int64
    assert boxes.tolist() == [[20, 10, 25, 30], [0, 0, 48, 64]] and labels.tolist() == [3, 0]
    empty, none = DetectionBoxes()([], [], (64, 64))
    assert empty.shape == (0, 4) and none.shape == (0,)
    cases = [([[60, 10, 70, 20]], [0], "outside the image"),  # x1 > columns
             ([[-1, 0, 5, 5]], [0], "outside the image"),
             ([[5, 5, 5, 9]], [0], "is empty"),
             ([[1, 1, 4, 4]], [7], "not a class index"),
             ([[1, 1, 4, 4]], [], "1 boxes but 0 box labels"),
             ([[1, 2, 3]], [0], "must be")]
    for boxes, labels, message in cases:
        with pytest.raises(DataError, match=message) as err:
            DetectionBoxes(num_classes=4)(boxes, labels, (1, 48, 64), path="x.dcm")
        assert err.value.field == "boxes" and err.value.path == "x.dcm"


def test_resize_scales_image_and_boxes_together_and_collate_keeps_box_lists(records) -> None:
    r = records[0]
    names = [f for f in FINDINGS if f in r["boxes"]]
    item = {"image": r["image"], "boxes": [b for f in names for b in r["boxes"][f]],
            "box_labels": [FINDINGS.index(f) for f in names for _ in r["boxes"][f]]}
    t = Compose([LoadDicomImaged("image"), DetectionBoxesd("boxes", num_classes=4), ResizeImageBoxd("boxes", spatial_size=(32, 48)),
                 EnsureTyped("image", track_meta=False)])  # as the bundle configs
    out = t(item)
    assert out["image"].shape == (1, 32, 48)
    raw = np.asarray(item["boxes"], dtype=np.float32)
    expected = raw[:, [1, 0, 3, 2]] * np.array([32 / SIZE, 48 / SIZE, 32 / SIZE, 48 / SIZE], dtype=np.float32)
    np.testing.assert_allclose(out["boxes"].numpy(), expected, rtol=1e-6)
    other = dict(out, boxes=torch.zeros(0, 4), box_labels=torch.zeros(0, dtype=torch.long))
    batch = DetectionCollate()([{k: out[k] for k in ("image", "boxes", "box_labels")}, {k: other[k] for k in ("image", "boxes", "box_labels")}])
    assert batch["image"].shape == (2, 1, 32, 48) and "boxes" not in batch
    assert [t["boxes"].shape[0] for t in batch["targets"]] == [len(item["boxes"]), 0]
    assert torch.equal(batch["targets"][0]["labels"], torch.as_tensor(item["box_labels"]))


def test_seg_masks_equal_the_nifti_truth_and_a_seg_of_another_image_is_refused(records) -> None:
    r = next(x for x in records if x.get("seg"))
    uid = pydicom.dcmread(r["image"], stop_before_pixels=True).SOPInstanceUID
    masks = read_seg_masks(r["seg"], uid)
    assert set(masks) == set(r["masks"])
    for f, m in masks.items():
        assert np.array_equal(m, read_mask(r["masks"][f])), f
    assert set(read_seg_masks(r["seg"], uid, findings=["Nodule"])) == ({"Nodule"} & set(r["masks"]))
    with pytest.raises(DataError) as err:
        read_seg_masks(r["seg"], "1.2.3.4")
    assert err.value.path == r["seg"] and err.value.field == "ReferencedSeriesSequence" and "missing" in str(err.value)
    with pytest.raises(DataError, match="not a readable DICOM Segmentation"):
        read_seg_masks(r["image"], uid)
