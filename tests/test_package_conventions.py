"""Package-wide conventions: configs instantiate our classes by dotted path; no MONAI name collisions."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import warnings

import torch

import monai_medunic


def test_config_parser_instantiates_losses_and_networks(tiny_bert_config) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser(
        {
            "ctr": {"_target_": "monai_medunic.losses.CTRLoss", "lambd": 0.0051},
            "loss": {"_target_": "monai_medunic.losses.MedUniCLoss", "ctr_weight": 0.5, "ssv_symmetric": True},
            "cvl": {"_target_": "monai_medunic.losses.CVLLoss", "temperature": 0.1, "learnable_temperature": True},
            "image": {"_target_": "monai_medunic.networks.CXRImageEncoder", "name": "vit_tiny", "img_size": 32},
            "network": {
                "_target_": "monai_medunic.networks.MedUniC",
                "image_encoder": "resnet18",
                "text_config": tiny_bert_config,
                "embed_dim": 16,
                "ctr_dim": 32,
                "freeze_layers": 1,
            },
        }
    )
    ctr = parser.get_parsed_content("ctr")
    assert ctr.tf.lambd == 0.0051
    loss = parser.get_parsed_content("loss")
    assert loss.weights["ctr"] == 0.5 and loss.ssv.symmetric
    assert abs(parser.get_parsed_content("cvl").temperature - 0.1) < 1e-6
    assert parser.get_parsed_content("image").out_dim == 192
    net = parser.get_parsed_content("network")
    assert net.embed_dim == 16 and net.text_encoder.freeze_layers == 1
    z = torch.randn(4, 32)
    assert torch.isfinite(ctr(z, z + 0.1 * torch.randn(4, 32)))


def _public_classes(package) -> dict[str, str]:
    found: dict[str, str] = {}
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        if info.name.split(".")[-1].startswith("_") or ".deploy" in info.name or ".label" in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and not name.startswith("_") and obj.__module__.startswith(package.__name__):
                found[name] = obj.__module__
    return found


def _monai_class_names() -> set[str]:
    import monai

    names: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for info in pkgutil.walk_packages(monai.__path__, "monai."):
            try:
                module = importlib.import_module(info.name)
            except Exception:  # optional dependencies of MONAI (e.g. itk) that are not installed
                continue
            names.update(n for n, o in vars(module).items() if inspect.isclass(o))
    return names


def test_no_public_class_name_collides_with_monai() -> None:
    ours = _public_classes(monai_medunic)
    assert "MedUniC" in ours and "CTRLoss" in ours  # the walk really sees our classes
    monai_names = _monai_class_names()
    assert "BarlowTwinsLoss" in monai_names and "ViT" in monai_names
    clashes = {n: m for n, m in ours.items() if n in monai_names}
    assert clashes == {}, f"rename these classes, MONAI already has them: {clashes}"
    assert not [n for n in ours if n.lower().startswith("monai")]
