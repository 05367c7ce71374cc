"""Grounding metrics (pointing game, mask IoU, centre baseline) on hand-made maps, and the bundle-level
report / ``medunic grounding`` on demo radiographs with lesion masks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from monai_medunic.errors import MetricInputError
from monai_medunic.metrics.grounding import (
    GROUNDING_METHODS,
    centre_map,
    evaluate_grounding,
    grounding_report,
    map_peak,
    mask_iou,
    pointing_game_hit,
    summarise_grounding,
)


def _mask(shape, rows, cols) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[rows, cols] = True
    return m


def test_pointing_game_by_hand():
    mask = _mask((10, 12), slice(2, 5), slice(3, 6))  # rows 2-4, columns 3-5
    s = np.zeros((10, 12))
    s[3, 4] = 1.0
    assert pointing_game_hit(s, mask)
    s = np.zeros((10, 12))
    s[8, 4] = 1.0  # 4 rows below the mask's last row
    assert not pointing_game_hit(s, mask)
    assert pointing_game_hit(s, mask, tolerance=4) and not pointing_game_hit(s, mask, tolerance=3.9)
    # tied maxima: their centroid (row 3, column 7.5 -> 8) is outside, although one of them is inside
    s = np.zeros((10, 12))
    s[3, 4] = s[3, 11] = 1.0
    assert map_peak(s) == (3.0, 7.5) and not pointing_game_hit(s, mask)
    # a flat map points nowhere
    assert map_peak(np.full((10, 12), 0.3)) is None and not pointing_game_hit(np.full((10, 12), 0.3), mask)


def test_mask_iou_by_hand():
    mask = _mask((8, 8), slice(2, 6), slice(0, 8))  # rows 2-5: 32 pixels
    s = np.zeros((8, 8))
    s[0:4] = 1.0  # rows 0-3 >= 0.5: 32 pixels, 16 of them in the mask
    assert mask_iou(s, mask) == pytest.approx(16 / 48)
    s[0:2] = 0.4  # min-max scaling keeps 0.4 below 0.5: rows 2-3 only
    assert mask_iou(s, mask) == pytest.approx(16 / 32)
    assert mask_iou(s, mask, threshold=0.3) == pytest.approx(16 / 48)  # 0.4 is >= 0.3
    # -s scaled: rows 4-7 -> 1, rows 0-1 -> 0.6, rows 2-3 -> 0: 48 pixels, rows 4-5 (16) in the mask; union 64
    assert mask_iou(-s, mask) == pytest.approx(16 / 64)
    assert mask_iou(np.ones((8, 8)), mask) == 0.0  # flat: no region
    with pytest.raises(MetricInputError, match="threshold"):
        mask_iou(s, mask, threshold=0.0)
    with pytest.raises(MetricInputError, match="same shape|one shape"):
        mask_iou(np.zeros((8, 9)), mask)
    with pytest.raises(MetricInputError, match="empty"):
        mask_iou(s, np.zeros((8, 8), bool))


def test_centre_baseline_is_a_central_ellipse():
    c = centre_map((200, 300))
    assert c.shape == (200, 300) and np.unravel_index(np.argmax(c), c.shape) in {(99, 149), (99, 150), (100, 149), (100, 150)}
    assert c.max() == pytest.approx(1.0, abs=0.01) and c.min() == pytest.approx(0.0, abs=0.01)
    assert (c >= 0.5).mean() == pytest.approx(math.pi / 8, rel=0.02)  # ellipse of half-axes / sqrt(2)
    assert pointing_game_hit(c, _mask((200, 300), slice(90, 110), slice(140, 160)))
    assert not pointing_game_hit(c, _mask((200, 300), slice(0, 20), slice(0, 20)))


def test_evaluate_and_summarise_with_oracle_and_opposite_maps():
    masks = {"Nodule": _mask((16, 16), slice(2, 5), slice(2, 5)), "Pleural Effusion": _mask((16, 16), slice(10, 16), slice(0, 16))}
    samples = [{"id": "a", "image": None, "masks": masks}, {"id": "b", "image": None, "masks": {"Nodule": masks["Nodule"]}}]
    methods = {
        "oracle": lambda image, finding, language: masks[finding].astype(float),
        "opposite": lambda image, finding, language: (~masks[finding]).astype(float),
        "flat": lambda image, finding, language: np.zeros((16, 16)),
    }
    cases = evaluate_grounding(samples, methods, ["en", "es"])
    assert len(cases) == 3 * 2 * 3  # (2 + 1 masks) x 2 languages x 3 methods
    summary = summarise_grounding(cases)
    assert summary["oracle"]["all"]["en"] == {"n": 3, "pointing": 1.0, "iou": 1.0, "flat": 0}
    assert summary["oracle"]["Nodule"]["es"]["n"] == 2
    assert summary["opposite"]["all"]["es"]["pointing"] == 0.0 and summary["opposite"]["all"]["es"]["iou"] == 0.0
    assert summary["flat"]["Pleural Effusion"]["en"] == {"n": 1, "pointing": 0.0, "iou": 0.0, "flat": 1}


@pytest.fixture(scope="module")
def demo_with_masks(tmp_path_factory):
    from monai_medunic.data.demo import generate_demo_dataset

    root = tmp_path_factory.mktemp("grounding_demo")
    generate_demo_dataset(root, num_studies=6, seed=5, image_size=96, num_ct_studies=0, lateral_fraction=0.0, sr_fraction=0.0,
                          prevalence={"Pleural Effusion": 0.8, "Nodule": 0.6, "Pneumothorax": 0.3, "Consolidation": 0.3})
    return root / "manifest.jsonl"


def test_grounding_report_and_command_on_demo_masks(tiny_bundle, demo_with_masks, tmp_path, capsys):
    from monai_medunic.cli import main
    from monai_medunic.data.datalist import manifest_datalist

    report = grounding_report(tiny_bundle, demo_with_masks, split="all", max_images=2, plot_dir=tmp_path / "plots", plot_images=1)
    records = manifest_datalist(demo_with_masks, truth=True)
    with_masks = [r for r in records if r.get("masks")][:2]
    n_masks = sum(len(r["masks"]) for r in with_masks)
    assert report["settings"]["images"] == 2 and n_masks >= 2
    assert len(report["cases"]) == n_masks * 2 * len(GROUNDING_METHODS)
    summary = report["summary"]
    assert set(summary) == set(GROUNDING_METHODS)
    for method in GROUNDING_METHODS:
        for language in ("en", "es"):
            cell = summary[method]["all"][language]
            assert cell["n"] == n_masks and 0.0 <= cell["pointing"] <= 1.0 and 0.0 <= cell["iou"] <= 1.0
    # the centre baseline does not depend on the language, the model or the prompt
    assert summary["centre"]["all"]["en"] == summary["centre"]["all"]["es"]
    assert "| all | en |" in report["table"] and "pointing gradcam" in report["table"]
    first = with_masks[0]
    assert len(report["plots"]) == len(first["masks"]) * 2  # one PNG per finding and language, every method in it
    assert (tmp_path / "plots" / report["plots"][0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the command prints the table and writes the JSON
    code = main(["grounding", "--bundle", str(tiny_bundle), "--manifest", str(demo_with_masks), "--split", "all",
                 "--max-images", "1", "--methods", "similarity_map", "centre", "--json", str(tmp_path / "g.json")])
    out = capsys.readouterr().out
    assert code == 0 and "pointing similarity_map" in out and "IoU centre" in out and "gradcam" not in out
    assert json.loads((tmp_path / "g.json").read_text())["settings"]["methods"] == ["similarity_map", "centre"]


def test_overlay_plot(tmp_path):
    from monai_medunic.metrics.plots import plot_similarity_overlay

    image = np.linspace(0, 1, 30 * 40).reshape(30, 40)
    mask = _mask((30, 40), slice(5, 10), slice(5, 12))
    out = plot_similarity_overlay(tmp_path / "one.png", image, centre_map((30, 40)), mask=mask, title="centre")
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    plot_similarity_overlay(tmp_path / "two.png", image, {"a": image, "flat": np.zeros((30, 40))})
    assert (tmp_path / "two.png").stat().st_size > (tmp_path / "one.png").stat().st_size / 2
    with pytest.raises(MetricInputError, match="must have the image's shape"):
        plot_similarity_overlay(tmp_path / "bad.png", image, np.zeros((30, 41)))


def test_grounding_report_refuses_unknown_methods_and_maskless_manifests(tiny_bundle, demo_with_masks):
    with pytest.raises(MetricInputError, match="unknown grounding methods"):
        grounding_report(tiny_bundle, demo_with_masks, methods=["saliency"])
    with pytest.raises(MetricInputError, match="no frontal radiograph"):
        grounding_report(tiny_bundle, demo_with_masks, split="all", languages=["en"], max_images=0)
