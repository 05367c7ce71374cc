"""cxr_segmentation bundle: pure JSON configs run by MONAI's bundle workflow (`python -m monai.bundle run`) on a
few demo studies with a tiny pre-trained encoder (`tiny_bundle`, weights moved); the encoder-loading check
through the config; 1 / 10 / 100 % fractions; the trained bundle's inference config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monai_medunic.errors import EncoderWeightsError
from monai_medunic.networks.dense import EncoderSegmentationNetwork, ProgressiveUpsamplingDecoder, PyramidUNetDecoder
from monai_medunic.pretrained import load_pretrained_bundle

from dense_bundles import bundle_workflow, demo_manifest, encoder_weights_error, moved_pretrained_bundle, run_with_overrides

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "cxr_segmentation"
SIZE = 64
TINY = {"image_encoder": "resnet18", "image_size": SIZE}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return demo_manifest(tmp_path_factory.mktemp("seg_bundle"), num_studies=16, seed=7, image_size=SIZE)


@pytest.fixture(scope="module")
def pretrained(tiny_bundle, tmp_path_factory) -> Path:
    return moved_pretrained_bundle(tiny_bundle, tmp_path_factory.mktemp("seg_pretrained"), seed=1)


def _workflow(config: str, **overrides):
    return bundle_workflow(BUNDLE, config, **overrides)


def _run(config: str, overrides: dict):
    """``python -m monai.bundle run`` of ``configs/<config>`` with ``overrides`` (the override file beside ``output_dir``)."""
    return run_with_overrides(BUNDLE, config, overrides, Path(overrides["output_dir"]).parent / "overrides", ok=False)


def test_bundle_layout_metadata_and_pure_json() -> None:
    for rel in ("configs/metadata.json", "configs/train.json", "configs/evaluate.json", "configs/inference.json", "configs/logging.conf",
                "docs/README.md", "LICENSE"):
        assert (BUNDLE / rel).is_file(), rel
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version", "task",
                "description", "authors", "copyright", "network_data_format"):
        assert key in meta, key
    assert meta["version"] in meta["changelog"]
    configs = {n: json.loads((BUNDLE / "configs" / n).read_text()) for n in ("train.json", "evaluate.json", "inference.json")}
    for name, cfg in configs.items():
        assert "import monai_medunic" not in json.dumps(cfg), name
        assert cfg["findings"] == configs["train.json"]["findings"] and len(meta["network_data_format"]["outputs"]["pred"]["channel_def"]) == 4
    # the paper's loss: Dice + focal (UniMedI App. 7.2: focal weighted 10), MONAI's DiceFocalLoss as a term of the objective
    term = configs["train.json"]["loss"]["terms"]["dice_focal"]
    assert term["loss"]["_target_"] == "DiceFocalLoss" and term["inputs"] == ["pred", "label"] and configs["train.json"]["focal_weight"] == 10.0


def test_configs_have_the_monai_properties_and_the_encoder_loads_by_name(pretrained, manifest, tmp_path) -> None:
    wf = _workflow("train.json", pretrained_bundle=str(pretrained), manifest=str(manifest), output_dir=str(tmp_path), **TINY)
    assert wf.check_properties() in (None, [])
    net = wf.parser.get_parsed_content("network_def")
    assert isinstance(net, EncoderSegmentationNetwork) and isinstance(net.decoder, PyramidUNetDecoder) and net.freeze_encoder
    source = load_pretrained_bundle(pretrained).model.image_encoder.state_dict()
    assert all(torch.equal(net.encoder.state_dict()[k], v) for k, v in source.items())  # every pre-trained weight landed
    optimised = {id(p) for g in wf.parser.get_parsed_content("optimizer").param_groups for p in g["params"]}
    assert optimised == {id(p) for p in net.decoder.parameters()}  # the frozen encoder is not optimised
    rand = _workflow("train.json", pretrained_bundle=str(pretrained), manifest=str(manifest), output_dir=str(tmp_path),
                     encoder_init="random", **TINY).parser.get_parsed_content("network_def")
    assert not torch.equal(rand.encoder.state_dict()["backbone.conv1.weight"], source["backbone.conv1.weight"])
    for config in ("evaluate.json", "inference.json"):
        assert _workflow(config, manifest=str(manifest), output_dir=str(tmp_path), **TINY).check_properties() in (None, [])


def test_a_pretrained_bundle_of_another_architecture_is_refused(pretrained, manifest, tmp_path) -> None:
    wf = _workflow("train.json", pretrained_bundle=str(pretrained), manifest=str(manifest), output_dir=str(tmp_path),
                   image_encoder="resnet50", image_size=SIZE)
    with pytest.raises(Exception) as err:
        wf.parser.get_parsed_content("network_def")
    cause = encoder_weights_error(err.value)
    assert isinstance(cause, EncoderWeightsError), repr(err.value)
    assert cause.missing and "resnet50" in str(cause) and str(pretrained) in str(cause)


def test_vit_encoder_gets_the_setr_pup_decoder(tmp_path) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({"bundle_root": str(tmp_path), "image_encoder": "vit_tiny", "image_size": SIZE})
    net = parser.get_parsed_content("network_def")
    assert isinstance(net.decoder, ProgressiveUpsamplingDecoder) and net(torch.rand(1, 1, SIZE, SIZE)).shape == (1, 4, SIZE, SIZE)


@pytest.mark.slow
def test_train_and_evaluate_through_monai_bundle_run(pretrained, manifest, tmp_path) -> None:
    out = tmp_path / "run"
    common = {"manifest": manifest, "output_dir": out, **TINY}
    train = _run("train.json", {**common, "pretrained_bundle": pretrained, "num_iterations": 4, "batch_size": 4})
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    state = torch.load(out / "model.pt", weights_only=True)
    source = load_pretrained_bundle(pretrained).model.image_encoder.state_dict()
    # frozen: the encoder leaves training exactly as it was loaded, BatchNorm statistics included
    assert all(torch.equal(state[f"encoder.{k}"], v) for k, v in source.items())
    evaluate = _run("evaluate.json", common)
    assert evaluate.returncode == 0, evaluate.stdout[-3000:] + evaluate.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["task"] == "segmentation" and result["metric"] == "test_dice" and result["n_test"] >= 3
    assert result["value"] is None or 0.0 <= result["value"] <= 1.0
    assert len(result["metrics"]["test_dice_per_finding"]) == 4 and 0.0 <= result["metrics"]["test_dice_all_images"] <= 1.0


@pytest.mark.slow
def test_label_fractions_and_the_efficiency_table(pretrained, manifest, tmp_path) -> None:
    from monai_medunic.metrics.dense import run_label_efficiency

    summary = run_label_efficiency(BUNDLE, tmp_path / "eff", {"medunic_frozen": {}, "linear_probe": {"decoder": "linear"}},
                                   fractions=(0.01, 0.1, 1.0),
                                   overrides={"pretrained_bundle": str(pretrained), "manifest": str(manifest), "num_iterations": 2, **TINY})
    assert summary["metric"] == "test_dice" and list(summary["table"]) == ["medunic_frozen", "linear_probe"]
    assert [(r["variant"], r["fraction"]) for r in summary["runs"]] == [(v, f) for v in ("medunic_frozen", "linear_probe") for f in (0.01, 0.1, 1.0)]
    for run in summary["runs"]:
        assert (tmp_path / "eff" / run["variant"] / f"fraction_{run['fraction']:g}" / "model.pt").is_file()
        assert run["decoder"] == ("linear" if run["variant"] == "linear_probe" else "auto")
        assert summary["table"][run["variant"]][f"{run['fraction']:g}"] == run["value"]
    md = (tmp_path / "eff" / "label_efficiency.md").read_text()
    assert "| medunic_frozen |" in md and "1 % labels" in md and "100 % labels" in md
