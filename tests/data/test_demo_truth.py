"""Radiograph ground truth of the demo data: masks that match what is drawn, boxes, DICOM SEG (highdicom)
referencing the image, NIfTI masks that overlay the loaded image, and images unchanged by the truth."""

from __future__ import annotations

import filecmp
import json
import os

import highdicom as hd
import numpy as np
import pydicom
import pytest
from monai.transforms import EnsureChannelFirst, LoadImage

from monai_medunic.data.demo import DEMO_FINDINGS, DemoCase, generate_demo_dataset, render_chest_phantom, sample_case
from monai_medunic.data.demo.cxr import MASK_FINDINGS, render_chest_phantom_with_truth
from monai_medunic.data.demo.truth import SEG_PROPERTY_TYPES, box_of
from monai_medunic.transforms import LoadDicomImage

PREVALENCE = {"Cardiomegaly": 0.2, "Pleural Effusion": 0.5, "Pneumothorax": 0.5, "Nodule": 0.5, "Consolidation": 0.5, "Edema": 0.2}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("truth") / "demo"
    return generate_demo_dataset(
        out, num_studies=16, seed=13, image_size=128, prevalence=PREVALENCE, lateral_fraction=0.4, jpeg2000_fraction=0.4,
        num_ct_studies=0,
    )


def _rows(info) -> list[dict]:
    return [json.loads(line) for line in open(info.manifest_path, encoding="utf-8")]


@pytest.mark.parametrize("finding", MASK_FINDINGS)
def test_masks_match_what_the_finding_changes(finding) -> None:
    """The same study drawn with and without one finding: the mask is where the image visibly changed."""
    ious, inside = [], []
    for s in range(6):
        base = DemoCase(index=0, labels={f: 0 for f in DEMO_FINDINGS})
        case = sample_case(np.random.default_rng([1, s]), 0, prevalence={f: float(f == finding) for f in DEMO_FINDINGS})
        img0 = render_chest_phantom(base, np.random.default_rng([5, s]), 128)
        img1, lesions = render_chest_phantom_with_truth(case, np.random.default_rng([5, s]), 128)
        assert lesions and {les["finding"] for les in lesions} == {finding}
        mask = np.logical_or.reduce([les["mask"] for les in lesions])
        changed = np.abs(img1 - img0) > 0.1  # visibly: several noise sigmas
        ious.append((changed & mask).sum() / (changed | mask).sum())
        inside.append((changed & mask).sum() / mask.sum())
    # every masked pixel (nearly) is visibly changed; what changed is mostly masked (blur halos are not)
    assert min(inside) > 0.7 and np.mean(inside) > 0.85, (finding, inside)
    assert np.mean(ious) > 0.6, (finding, ious)


def test_truth_takes_no_random_draw() -> None:
    for s in range(5):
        case = sample_case(np.random.default_rng([2, s]), s, prevalence=PREVALENCE)
        a = render_chest_phantom(case, np.random.default_rng([3, s]), 96)
        b, _ = render_chest_phantom_with_truth(case, np.random.default_rng([3, s]), 96)
        assert np.array_equal(a, b)


def test_an_effusion_hides_what_lies_under_it() -> None:
    prev = {f: float(f in ("Pleural Effusion", "Consolidation", "Nodule")) for f in DEMO_FINDINGS}
    seen = 0
    for s in range(20):
        case = sample_case(np.random.default_rng([4, s]), s, prevalence=prev)
        _, lesions = render_chest_phantom_with_truth(case, np.random.default_rng([6, s]), 128)
        fluid = np.logical_or.reduce([les["mask"] for les in lesions if les["finding"] == "Pleural Effusion"])
        for les in lesions:
            if les["finding"] in ("Nodule", "Consolidation"):
                assert not (les["mask"] & fluid).any()
                seen += 1
    assert seen > 10


def test_manifest_truth_fields_boxes_and_nifti_masks(demo) -> None:
    load = LoadDicomImage()
    nifti = LoadImage(image_only=True)
    channel_first = EnsureChannelFirst()
    frontal = [r for r in _rows(demo) if "frontal" in r["image"]]
    lateral = [r for r in _rows(demo) if "lateral" in r["image"]]
    assert frontal and lateral and all(r["modality"] in ("CR", "DX") for r in frontal + lateral)
    assert all("masks" not in r and "boxes" not in r and "seg" not in r for r in lateral)  # no truth: unknown
    counted = {"masks": 0, "boxes": 0, "seg": 0}
    for r in frontal:
        img = load(os.path.join(demo.out_dir, r["image"]))
        h, w = img.shape[1:]
        present = [f for f in MASK_FINDINGS if f in r["masks"]]
        assert list(r["masks"]) == present and list(r["boxes"]) == present and (("seg" in r) == bool(present))
        for f in present:
            assert r["labels"][f] == 1  # a mask only for a finding the labels state
            m = channel_first(nifti(os.path.join(demo.out_dir, r["masks"][f])))
            assert tuple(m.shape) == (1, h, w)
            assert np.allclose(np.diag(m.affine.numpy())[:2], np.diag(img.affine.numpy())[:2])  # same pixel spacing
            mask = m[0].numpy() > 0
            boxes = r["boxes"][f]
            covered = np.zeros_like(mask)
            for x0, y0, x1, y1 in boxes:
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
                covered[y0:y1, x0:x1] = True
                # each box is tight around some lesion: its border rows / columns touch the mask
                sub = mask[y0:y1, x0:x1]
                assert sub[0].any() and sub[-1].any() and sub[:, 0].any() and sub[:, -1].any()
            assert not (mask & ~covered).any()  # every masked pixel lies in a box of its finding
            if f == "Nodule":  # a visible dense disc: brighter than the lung around it
                x0, y0, x1, y1 = boxes[0]
                ring = np.zeros_like(mask)
                ring[max(y0 - 4, 0) : y1 + 4, max(x0 - 4, 0) : x1 + 4] = True
                ring &= ~mask
                assert img[0].numpy()[mask].mean() > img[0].numpy()[ring].mean()
            counted["masks"] += 1
            counted["boxes"] += len(boxes)
        counted["seg"] += "seg" in r
    assert counted == {"masks": demo.num_masks, "boxes": demo.num_boxes, "seg": demo.num_seg}
    assert demo.num_seg >= 8 and demo.num_boxes > demo.num_masks - 1
    assert any(r["masks"] == {} and r["boxes"] == {} for r in frontal) or demo.num_seg == len(frontal)


def test_seg_references_the_image_and_holds_the_masks(demo) -> None:
    nifti = LoadImage(image_only=True)
    checked = 0
    for r in _rows(demo):
        if "seg" not in r:
            continue
        seg = hd.seg.segread(os.path.join(demo.out_dir, r["seg"]))
        image = pydicom.dcmread(os.path.join(demo.out_dir, r["image"]), stop_before_pixels=True)
        assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
        assert seg.StudyInstanceUID == image.StudyInstanceUID and seg.SeriesInstanceUID != image.SeriesInstanceUID
        assert seg.PatientID == image.PatientID  # the same study, kept in it
        ref = seg.ReferencedSeriesSequence[0]
        assert ref.SeriesInstanceUID == image.SeriesInstanceUID
        assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == image.SOPInstanceUID
        findings = list(r["masks"])
        assert seg.number_of_segments == len(findings)
        for number, f in enumerate(findings, start=1):
            desc = seg.get_segment_description(number)
            assert desc.segment_label == f
            assert desc.segmented_property_type == SEG_PROPERTY_TYPES[f] and desc.segmented_property_type.scheme_designator == "SCT"
            assert desc.segmented_property_category.value == "49755003"
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=[image.SOPInstanceUID], segment_numbers=list(range(1, len(findings) + 1))
        )[0]
        for number, f in enumerate(findings):
            mask = np.asarray(nifti(os.path.join(demo.out_dir, r["masks"][f]))) > 0
            assert np.array_equal(pixels[..., number] > 0, mask), f
        checked += 1
    assert checked == demo.num_seg


def test_truth_changes_no_image_and_is_optional(tmp_path, demo) -> None:
    plain = generate_demo_dataset(
        tmp_path / "plain", num_studies=16, seed=13, image_size=128, prevalence=PREVALENCE, lateral_fraction=0.4,
        jpeg2000_fraction=0.4, num_ct_studies=0, radiograph_truth=False,
    )
    cmp = filecmp.dircmp(os.path.join(demo.out_dir, "dicom"), os.path.join(plain.out_dir, "dicom"))
    assert not cmp.left_only and not cmp.right_only
    for sub in cmp.subdirs.values():
        assert not sub.diff_files and not sub.left_only and not sub.right_only
    assert not os.path.exists(os.path.join(plain.out_dir, "truth"))
    assert plain.num_seg == plain.num_masks == 0
    assert all("masks" not in r and "seg" not in r for r in _rows(plain))


def test_box_of_uses_pixel_edges() -> None:
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert box_of(m) == [3, 2, 9, 5]
    with pytest.raises(ValueError):
        box_of(np.zeros((4, 4), bool))
