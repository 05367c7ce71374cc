"""Export and load of the trained-bundle layout (monai_medunic.pretrained)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from monai_medunic.errors import ModelLoadError
from monai_medunic.pretrained import MODEL_FILE, SETTINGS_FILE, load_pretrained_bundle


def test_load_roundtrip(tiny_bundle) -> None:
    b = load_pretrained_bundle(tiny_bundle)
    assert b.image_size == 64 and len(b.findings) == 6 and b.prompt_languages == ["en", "es"]
    assert not b.model.training
    state = torch.load(tiny_bundle / MODEL_FILE, weights_only=True)
    for k, v in b.model.state_dict().items():
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
    settings = json.loads((tiny_bundle / SETTINGS_FILE).read_text())
    settings["network"]["embed_dim"] = 48  # weights no longer fit the recorded architecture
    shutil.copy(tiny_bundle / MODEL_FILE, broken / MODEL_FILE)
    (broken / SETTINGS_FILE).write_text(json.dumps(settings))
    with pytest.raises(ModelLoadError, match="cannot load the weights"):
        load_pretrained_bundle(broken)
