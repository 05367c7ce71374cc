"""cxr_detection bundle: MONAI's detection stack (RetinaNet, RetinaNetDetector, COCO metric) in pure JSON configs,
run by `python -m monai.bundle run` on a few demo studies with a tiny pre-trained encoder; the encoder-loading
check through the config; the ViT (ViTDet simple feature pyramid) variant; the training step is the package's TrainStep."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monai_medunic.engines.step import TrainStep
from monai_medunic.errors import EncoderWeightsError
from monai_medunic.networks.dense import EncoderRetinaNet, EncoderRetinaNetDetector, ResNetFeaturePyramid, ViTSimpleFeaturePyramid
from monai_medunic.pretrained import load_pretrained_bundle

from dense_bundles import bundle_workflow, demo_manifest, encoder_weights_error, moved_pretrained_bundle, run_with_overrides

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "cxr_detection"
SIZE = 64
TINY = {"image_encoder": "resnet18", "image_size": SIZE, "returned_layers": [1, 2], "anchor_shapes": [[6, 6], [8, 6], [6, 8]], "pyramid_channels": 32}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return demo_manifest(tmp_path_factory.mktemp("det_bundle"), num_studies=14, seed=9, image_size=SIZE)


@pytest.fixture(scope="module")
def pretrained(tiny_bundle, tmp_path_factory) -> Path:
    return moved_pretrained_bundle(tiny_bundle, tmp_path_factory.mktemp("det_pretrained"), seed=2)


def _workflow(config: str, **overrides):
    return bundle_workflow(BUNDLE, config, **overrides)


def _run(config: str, overrides: dict):
    """``python -m monai.bundle run`` of ``configs/<config>`` with ``overrides`` (the override file beside ``output_dir``)."""
    return run_with_overrides(BUNDLE, config, overrides, Path(overrides["output_dir"]).parent / "overrides", ok=False)


def test_bundle_layout_metadata_and_pure_json() -> None:
    for rel in ("configs/metadata.json", "configs/train.json", "configs/evaluate.json", "configs/logging.conf", "docs/README.md", "LICENSE"):
        assert (BUNDLE / rel).is_file(), rel
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    assert meta["version"] in meta["changelog"] and "network_data_format" in meta
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    evaluate = json.loads((BUNDLE / "configs" / "evaluate.json").read_text())
    assert "import monai_medunic" not in json.dumps(train) + json.dumps(evaluate)
    assert train["train"]["iteration"]["_target_"] == "monai_medunic.engines.step.TrainStep"
    assert evaluate["map_50"]["_target_"] == "monai_medunic.metrics.dense.DetectionMAP" and evaluate["map_50"]["iou"] == 0.5


def test_configs_have_the_monai_properties_and_the_frozen_encoder_loads_by_name(pretrained, manifest, tmp_path) -> None:
    wf = _workflow("train.json", pretrained_bundle=str(pretrained), manifest=str(manifest), output_dir=str(tmp_path), **TINY)
    assert wf.check_properties() in (None, [])
    det = wf.parser.get_parsed_content("network_def")
    assert isinstance(det, EncoderRetinaNetDetector) and isinstance(det.network, EncoderRetinaNet)
    assert isinstance(det.network.feature_extractor, ResNetFeaturePyramid)
    body = det.network.feature_extractor.body
    source = load_pretrained_bundle(pretrained).model.image_encoder.state_dict()
    assert all(torch.equal(body.state_dict()[k], v) for k, v in source.items())
    assert isinstance(wf.parser.get_parsed_content("train#iteration"), TrainStep)
    optimised = {id(p) for g in wf.parser.get_parsed_content("optimizer").param_groups for p in g["params"]}
    assert not optimised & {id(p) for p in body.parameters()} and optimised  # only the pyramid and the heads train
    assert _workflow("evaluate.json", manifest=str(manifest), output_dir=str(tmp_path), **TINY).check_properties() in (None, [])
    bad = _workflow("train.json", pretrained_bundle=str(pretrained), manifest=str(manifest), output_dir=str(tmp_path),
                    **dict(TINY, image_encoder="vit_tiny"))
    with pytest.raises(Exception) as err:
        bad.parser.get_parsed_content("network_def")
    cause = encoder_weights_error(err.value)
    assert isinstance(cause, EncoderWeightsError) and cause.missing and cause.unexpected


def test_vit_encoder_gets_the_vitdet_simple_feature_pyramid(tmp_path, manifest) -> None:
    wf = _workflow("evaluate.json", manifest=str(manifest), output_dir=str(tmp_path), **dict(TINY, image_encoder="vit_tiny"))
    det = wf.parser.get_parsed_content("network_def")
    assert isinstance(det.network.feature_extractor, ViTSimpleFeaturePyramid) and det.network.levels == 4
    det.eval()
    with torch.no_grad():
        out = det(torch.rand(1, 1, SIZE, SIZE))
    assert set(out[0]) == {"boxes", "labels", "labels_scores"}


@pytest.mark.slow
def test_train_and_evaluate_through_monai_bundle_run(pretrained, manifest, tmp_path) -> None:
    out = tmp_path / "run"
    common = {"manifest": manifest, "output_dir": out, **TINY}
    train = _run("train.json", {**common, "pretrained_bundle": pretrained, "num_iterations": 3, "batch_size": 4, "fraction": 0.5})
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    state = torch.load(out / "model.pt", weights_only=True)
    source = load_pretrained_bundle(pretrained).model.image_encoder.state_dict()
    assert all(torch.equal(state[f"network.feature_extractor.body.{k}"], v) for k, v in source.items())  # frozen, BN included
    evaluate = _run("evaluate.json", {**common, "fraction": 0.5})
    assert evaluate.returncode == 0, evaluate.stdout[-3000:] + evaluate.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["task"] == "detection" and result["metric"] == "test_map_50" and result["fraction"] == 0.5 and result["n_test"] >= 3
    assert result["value"] is None or 0.0 <= result["value"] <= 1.0
    assert "test_map_40_75" in result["metrics"] and any(k.startswith("Nodule_") for k in result["details"])
