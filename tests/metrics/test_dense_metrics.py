"""Dense downstream data and metrics: the truth datalist with its bad-input table (typed errors, or counted
skips with nothing else lost), the encoder of a dense network from a trained bundle, and MONAI's COCO mAP."""

from __future__ import annotations

import copy
import json
import logging
import math
import os

import nibabel as nib
import numpy as np
import pytest
import torch

from monai_medunic.data.demo import generate_demo_dataset
from monai_medunic.errors import ConfigurationError, EncoderWeightsError, ManifestError
from monai_medunic.metrics.dense import DetectionMAP, dense_datalist, pretrained_image_encoder

FINDINGS = ["Nodule", "Pneumothorax", "Pleural Effusion", "Consolidation"]
SIZE = 64


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("dense_metrics") / "demo"
    prev = {"Cardiomegaly": 0.1, "Pleural Effusion": 0.5, "Pneumothorax": 0.4, "Nodule": 0.5, "Consolidation": 0.5, "Edema": 0.1}
    info = generate_demo_dataset(out, num_studies=12, seed=11, image_size=SIZE, prevalence=prev, lateral_fraction=0.2, num_ct_studies=0,
                                 split_fractions=(1.0, 0.0, 0.0))
    rows = [json.loads(x) for x in open(info.manifest_path, encoding="utf-8")]
    return {"root": str(out), "manifest": info.manifest_path, "rows": rows}


def _write(demo, rows, name) -> str:
    path = os.path.join(demo["root"], name)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return path


def test_segmentation_and_detection_items(demo) -> None:
    seg = dense_datalist(demo["manifest"], FINDINGS, split="train", task="segmentation")
    # at 64 px a small nodule may leave no pixel above half its density: the generator writes no mask for
    # it, and such a record is skipped (its label says present, its truth would say absent)
    frontal = [r for r in demo["rows"] if "masks" in r and all(f in r["masks"] for f in FINDINGS if r["labels"][f])]
    assert len(frontal) >= 8
    assert len(seg) == len(frontal) and all(set(d) == {"image", "masks", "id"} for d in seg)
    assert sum(len(d["masks"]) for d in seg) == sum(len(r["masks"]) for r in frontal)
    det = dense_datalist(demo["manifest"], ["Pleural Effusion", "Nodule"], split="train", task="detection")
    assert len(det) == len([r for r in demo["rows"] if "boxes" in r and all(f in r["boxes"] for f in ("Pleural Effusion", "Nodule") if r["labels"][f])])
    for d, r in zip(det, [r for r in demo["rows"] if "boxes" in r and all(f in r["boxes"] for f in ("Pleural Effusion", "Nodule") if r["labels"][f])]):
        boxes = {f: b for f, b in r["boxes"].items() if f in ("Pleural Effusion", "Nodule")}
        assert d["boxes"] == [b for bs in boxes.values() for b in bs]
        assert d["box_labels"] == [["Pleural Effusion", "Nodule"].index(f) for f, bs in boxes.items() for _ in bs]
    one = dense_datalist(demo["manifest"], FINDINGS, split="train", fraction=0.01, seed=3)
    half = dense_datalist(demo["manifest"], FINDINGS, split="train", fraction=0.5, seed=3)
    assert len(one) == 1 and len(half) == round(0.5 * len(seg)) and {d["id"] for d in half} <= {d["id"] for d in seg}
    with pytest.raises(ConfigurationError, match="empty label set"):
        dense_datalist(demo["manifest"], [], split="train")
    with pytest.raises(ConfigurationError, match="task"):
        dense_datalist(demo["manifest"], FINDINGS, task="classification")


def _small_mask(r, tmp):
    path = os.path.join(tmp, "small.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((SIZE // 2, SIZE // 2), np.uint8), np.eye(4)), path)
    r["masks"][next(iter(r["masks"]))] = path


def _other_image(r, d):  # the SEG now refers to an image this record does not hold
    other = next(x for x in d["rows"] if x.get("seg") and x["image"] != r["image"])
    r["image"] = other["image"]
    r.pop("masks"), r.pop("boxes")


def _positive_without_mask(r, d):
    finding = next(iter(r["masks"]))
    r["masks"].pop(finding)
    r["boxes"].pop(finding)
    r.pop("seg", None)


# (name, change(record, demo, tmp), task, field, reason)
BAD = [
    ("mask size differs from its image", lambda r, d, t: _small_mask(r, t), "segmentation", "masks", "mask_size_mismatch"),
    ("box outside the image", lambda r, d, t: r["boxes"].update(Nodule=[[SIZE - 4, 10, SIZE + 6, 20]]), "detection", "boxes", "box_outside_image"),
    ("empty label set", lambda r, d, t: r.update(labels={}), "segmentation", "labels", "missing_labels"),
    ("SEG references a missing image", lambda r, d, t: _other_image(r, d), "segmentation", "seg", "seg_reference_missing"),
    ("no truth for the task", lambda r, d, t: (r.pop("masks"), r.pop("seg", None)), "segmentation", "masks", "no_masks"),
    ("positive label without its mask", lambda r, d, t: _positive_without_mask(r, d), "detection", "boxes", "truth_missing_for_positive_label"),
]


@pytest.mark.parametrize("name, change, task, field, reason", BAD, ids=[b[0] for b in BAD])
def test_bad_truth_is_a_typed_error_or_a_counted_skip(demo, tmp_path, caplog, name, change, task, field, reason) -> None:
    rows = [copy.deepcopy(r) for r in demo["rows"]]
    for r in rows:  # absolute paths, so that the changed manifest may live anywhere
        r["image"] = os.path.join(demo["root"], r["image"])
        for k in ("seg", "report_sr"):
            if r.get(k):
                r[k] = os.path.join(demo["root"], r[k])
        r["masks"] = {f: os.path.join(demo["root"], p) for f, p in r.get("masks", {}).items()} if "masks" in r else None
        if r["masks"] is None:
            r.pop("masks")
    targets = [i for i, r in enumerate(rows) if r.get("seg") and len(r.get("masks", {})) >= 1]
    i = targets[0]
    change(rows[i], {"rows": rows}, str(tmp_path))
    path = _write(demo, rows, f"bad_{reason}.jsonl")
    good = dense_datalist(demo["manifest"], FINDINGS, task=task)
    try:
        with pytest.raises(ManifestError) as err:
            dense_datalist(path, FINDINGS, task=task, on_error="raise")
        e = err.value
        assert e.path == path and e.line == i + 1 and e.field == field, str(e)
        assert path in str(e) and f"line {i + 1}" in str(e) and f"field '{field}'" in str(e)
        caplog.set_level(logging.WARNING)
        kept = dense_datalist(path, FINDINGS, task=task)
        assert len(kept) == len(good) - 1  # only the bad record is dropped; every other record is kept
        assert reason in caplog.text and f"line {i + 1}" in caplog.text
        assert "SYNTHETIC" not in caplog.text  # no patient name in the logs
    finally:
        os.remove(path)


def test_encoder_of_a_dense_network_from_a_trained_bundle(tiny_bundle) -> None:
    from monai_medunic.pretrained import load_pretrained_bundle

    source = load_pretrained_bundle(tiny_bundle).model.image_encoder.state_dict()
    enc = pretrained_image_encoder(tiny_bundle, "resnet18", 96)
    assert all(torch.equal(enc.state_dict()[k], v) for k, v in source.items())
    rand = pretrained_image_encoder(None, "resnet18", 96, init="random")
    assert not torch.equal(rand.state_dict()["backbone.conv1.weight"], source["backbone.conv1.weight"])
    with pytest.raises(EncoderWeightsError) as err:
        pretrained_image_encoder(tiny_bundle, "resnet50", 96)
    assert str(tiny_bundle) in str(err.value) and err.value.missing and "'resnet18'" in str(err.value)
    with pytest.raises(ConfigurationError, match="init must be one of"):
        pretrained_image_encoder(tiny_bundle, "resnet18", 96, init="imagenet")


def _det(boxes, labels, scores=None):
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels, dtype=torch.long)}
    if scores is not None:
        out["labels_scores"] = torch.tensor(scores, dtype=torch.float32)
    return out


def test_detection_map_with_monai_coco_metric() -> None:
    gt = [_det([[10, 10, 30, 30]], [0]), _det([[5, 5, 15, 25], [40, 40, 50, 50]], [1, 0])]
    perfect = [_det([[10, 10, 30, 30]], [0], [0.9]), _det([[5, 5, 15, 25], [40, 40, 50, 50]], [1, 0], [0.8, 0.7])]
    m = DetectionMAP(["a", "b"], iou=0.5)
    m.update((perfect, gt))
    assert m.compute() == pytest.approx(1.0)
    assert m.last["a_AP_IoU_0.50_MaxDet_100"] == pytest.approx(1.0)
    m.reset()  # a box overlapping its truth at IoU 1/3 < 0.5 is a miss at 0.5
    m.update(([_det([[20, 10, 40, 30]], [0], [0.9]), _det([], [], [])], [gt[0], _det([], [])]))
    assert m.compute() == pytest.approx(0.0)
    loose = DetectionMAP(["a", "b"], iou=0.3)
    loose.update(([_det([[20, 10, 40, 30]], [0], [0.9])], [gt[0]]))
    assert loose.compute() == pytest.approx(1.0)
    rng = DetectionMAP(["a", "b"], iou=(0.4, 0.75, 0.05))
    rng.update((perfect, gt))
    assert rng.compute() == pytest.approx(1.0)
    # a class without ground truth is left out of the mean (MONAI's COCOMetric would average its -1 in)
    half = DetectionMAP(["a", "b"], iou=0.5)
    half.update(([_det([[20, 10, 40, 30]], [0], [0.9]), _det([[10, 10, 30, 30]], [0], [0.5])], [gt[0], gt[0]]))
    assert half.compute() == pytest.approx(half.last["a_AP_IoU_0.50_MaxDet_100"]) and 0 < half.compute() < 1
    assert half.last["b_AP_IoU_0.50_MaxDet_100"] == -1
    none = DetectionMAP(["a"])
    none.update(([_det([[1, 1, 5, 5]], [0], [0.5])], [_det([], [])]))
    assert math.isnan(none.compute())  # no ground truth: undefined, not 0
