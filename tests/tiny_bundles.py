"""Tiny bundle settings and untrained bundles shared by several test modules (imported like ``orthanc`` and
``deploy_load``: the tests folder is on ``sys.path``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: ``cxr_medunic_pretrain`` overrides that train on a CPU in seconds (tests override batch and epochs as they need).
MEDUNIC_TINY: dict = {
    "image_encoder": "resnet18",
    "image_size": 32,
    "embed_dim": 16,
    "ctr_dim": 32,
    "freeze_layers": 1,
    "max_length": 32,
    "batch_size": 8,
    "val_batch_size": 16,
    "num_workers": 0,
    "max_epochs": 2,
    "learning_rate": 1e-3,
    "warmup_fraction": 0.5,
    "augment_translate_pixels": 2,
    "precision": "fp32",
    "channels_last": False,
}


def untrained_segmentation_bundle(parent: Path) -> Path:
    """``parent/cxr_segmentation``: the bundle in its trained layout (inference.json + models/model.pt),
    ResNet-18 at 64 px, untrained (seed 0): its logits sit near 0, so parts of each image fall on either
    side of the threshold and the masks hold real segments."""
    import torch
    from monai.bundle import ConfigParser

    root = parent / "cxr_segmentation"
    shutil.copytree(REPO / "bundles" / "cxr_segmentation", root, ignore=shutil.ignore_patterns("models", "data", "predictions"))
    config = json.loads((root / "configs" / "inference.json").read_text())
    config.update(image_encoder="resnet18", image_size=64)
    (root / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    parser = ConfigParser()
    parser.read_config(str(root / "configs" / "inference.json"))
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def")
    (root / "models").mkdir()
    torch.save(net.state_dict(), root / "models" / "model.pt")
    return root
