"""Export and load of the trained-bundle layout (monai_medunic.pretrained)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from monai_medunic.errors import ModelLoadError
from monai_medunic.pretrained import INFERENCE_CONFIG, MODEL_FILE, load_pretrained_bundle


def test_load_roundtrip(tiny_bundle) -> None:
    b = load_pretrained_bundle(tiny_bundle)
    assert b.image_size == 64 and len(b.findings) == 6 and b.prompt_languages == ["en", "es"]
    assert not b.model.training and not b.network.training
    state = torch.load(tiny_bundle / MODEL_FILE, weights_only=True)
    for k, v in b.network.state_dict().items():
        assert torch.equal(v, state[k]), k
    tok = b.tokenize(["Sin derrame pleural", "No pleural effusion"])
    emb = b.model.encode_text(tok["input_ids"], tok["attention_mask"])
    assert emb.shape == (2, 32)
    assert b.name == "cxr_medunic_pretrain"


def test_not_a_bundle(tmp_path, tiny_bundle) -> None:
    with pytest.raises(ModelLoadError, match="not a directory"):
        load_pretrained_bundle(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="configs/metadata.json"):
        load_pretrained_bundle(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(tiny_bundle, broken)
    (broken / MODEL_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="model.pt"):
        load_pretrained_bundle(broken)
    config = json.loads((tiny_bundle / INFERENCE_CONFIG).read_text())
    config["network_def"]["model"]["embed_dim"] = 48  # weights no longer fit the recorded architecture
    shutil.copy(tiny_bundle / MODEL_FILE, broken / MODEL_FILE)
    (broken / INFERENCE_CONFIG).write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="cannot load the weights"):
        load_pretrained_bundle(broken)


def test_exported_network_def_is_what_monai_bundle_builds(tiny_bundle) -> None:
    """The trained network_def is in inference.json: ConfigParser builds it, model.pt fits it, and the
    network's output is the embedding network_data_format describes."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(tiny_bundle / INFERENCE_CONFIG))
    parser["bundle_root"] = str(tiny_bundle)
    net = parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(tiny_bundle / MODEL_FILE, weights_only=True))
    meta = json.loads((tiny_bundle / "configs" / "metadata.json").read_text())
    fmt = meta["network_data_format"]
    x = torch.rand(2, fmt["inputs"]["image"]["num_channels"], *fmt["inputs"]["image"]["spatial_shape"])
    with torch.no_grad():
        y = net.eval()(x)
    assert y.shape == (2, fmt["outputs"]["pred"]["num_channels"])
    assert torch.allclose(y.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert parser["pretrained"]["spatial_size"] == [64, 64] and parser["pretrained"]["method"] == "medunic"


def test_legacy_bundle_with_inference_settings_still_loads(tiny_bundle, tmp_path) -> None:
    """A bundle exported by 0.1.0 (models/inference_settings.json, unprefixed MedUniC state) loads with the same weights."""
    new = load_pretrained_bundle(tiny_bundle)
    old = tmp_path / "old"
    shutil.copytree(tiny_bundle, old)
    net_args = dict(json.loads((tiny_bundle / INFERENCE_CONFIG).read_text())["network_def"]["model"])
    for k in ("_target_", "text_model_name_or_path"):
        net_args.pop(k)
    (old / "models" / "inference_settings.json").write_text(json.dumps(
        {"network": net_args, "image_size": 64, "findings": new.findings, "prompt_languages": ["en", "es"], "max_length": 32}))
    torch.save(new.model.state_dict(), old / MODEL_FILE)
    config = json.loads((old / INFERENCE_CONFIG).read_text())
    config.pop("pretrained")
    (old / INFERENCE_CONFIG).write_text(json.dumps(config))
    b = load_pretrained_bundle(old)
    assert b.image_size == 64 and b.max_length == 32
    x = torch.rand(1, 1, 64, 64)
    assert torch.equal(b.network(x), new.network(x))
