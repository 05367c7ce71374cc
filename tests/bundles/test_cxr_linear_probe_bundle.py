"""cxr_linear_probe bundle: pure JSON configs run with MONAI's bundle workflow on a few demo studies,
the frozen tiny pre-trained encoder of `tiny_bundle`, 1 / 10 / 100 % fractions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from monai_medunic.data.demo import generate_demo_dataset
from monai_medunic.errors import MetricInputError
from monai_medunic.metrics.probe import LinearProbeNetwork, load_image_encoder, probe_datalist, run_linear_probe

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "cxr_linear_probe"
FINDINGS = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Nodule", "Consolidation", "Edema"]


@pytest.fixture(scope="module")
def demo_manifest(tmp_path_factory) -> Path:
    info = generate_demo_dataset(tmp_path_factory.mktemp("probe_demo") / "demo", num_studies=30, seed=3, lateral_fraction=0.0)
    return Path(info.manifest_path)


def test_bundle_layout_and_metadata() -> None:
    for rel in ("configs/metadata.json", "configs/train.json", "configs/evaluate.json", "configs/logging.conf", "docs/README.md", "LICENSE"):
        assert (BUNDLE / rel).is_file(), rel
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                "task", "description", "authors", "copyright", "network_data_format"):
        assert key in meta, key
    assert meta["version"] in meta["changelog"]
    for name in ("train.json", "evaluate.json"):  # pure JSON, every _target_ is a MONAI name or a dotted path
        text = (BUNDLE / "configs" / name).read_text()
        cfg = json.loads(text)
        assert "import monai_medunic" not in text and cfg["task"] in ("multilabel", "multiclass")


def test_train_config_has_monai_train_properties(tiny_bundle, demo_manifest, tmp_path) -> None:
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "train.json"), meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=False, workflow_type="train", bundle_root=str(BUNDLE), pretrained_bundle=str(tiny_bundle),
        manifest=str(demo_manifest), output_dir=str(tmp_path), max_epochs=1,
    )
    wf.initialize()
    assert wf.check_properties() in (None, [])
    net = wf.parser.get_parsed_content("network_def")
    assert isinstance(net, LinearProbeNetwork) and net.head.out_features == 6
    ev = ConfigWorkflow(
        config_file=str(BUNDLE / "configs" / "evaluate.json"), meta_file=str(BUNDLE / "configs" / "metadata.json"),
        logging_file=False, workflow_type="infer", bundle_root=str(BUNDLE), pretrained_bundle=str(tiny_bundle),
        manifest=str(demo_manifest), output_dir=str(tmp_path),
    )
    ev.initialize()
    assert ev.check_properties() in (None, [])


def test_frozen_encoder_does_not_change_and_head_learns(tiny_bundle) -> None:
    enc = load_image_encoder(tiny_bundle)
    net = LinearProbeNetwork(enc, 3, freeze_encoder=True).train()
    assert not enc.training  # BatchNorm statistics stay frozen
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    head_before = net.head.weight.detach().clone()
    opt = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=0.5)
    x, y = torch.rand(4, 1, 64, 64), torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert not torch.equal(head_before, net.head.weight)
    finetune = LinearProbeNetwork(load_image_encoder(tiny_bundle), 3, freeze_encoder=False).train()
    assert finetune.encoder.training and all(p.requires_grad for p in finetune.encoder.parameters())


def test_datalist_fractions_and_bad_labels(demo_manifest, tmp_path) -> None:
    full = probe_datalist(demo_manifest, FINDINGS, split="train")
    one = probe_datalist(demo_manifest, FINDINGS, split="train", fraction=0.01)
    ten = probe_datalist(demo_manifest, FINDINGS, split="train", fraction=0.1)
    assert len(one) == 1 and len(ten) == max(1, round(0.1 * len(full))) and full[0]["label"].shape == (6,)
    assert {d["id"] for d in ten} <= {d["id"] for d in full}
    # a manifest whose records lack a label -> a clear error naming the manifest, field and finding
    lines = [json.loads(x) for x in demo_manifest.read_text().splitlines() if x.strip()]
    for rec in lines:
        rec["image"] = str(demo_manifest.parent / rec["image"])
        if rec.get("report_sr"):
            rec["report_sr"] = str(demo_manifest.parent / rec["report_sr"])
        rec["labels"].pop("Edema")
    bad = tmp_path / "no_edema.jsonl"
    bad.write_text("\n".join(json.dumps(r) for r in lines))
    with pytest.raises(MetricInputError, match=r"no_edema.jsonl.*labels.*Edema"):
        probe_datalist(bad, FINDINGS, split="train")
    with pytest.raises(MetricInputError, match="exactly one"):
        probe_datalist(demo_manifest, FINDINGS, split="train", task="multiclass")


@pytest.mark.slow
def test_probe_fractions_end_to_end(tiny_bundle, demo_manifest, tmp_path) -> None:
    out = run_linear_probe(
        BUNDLE, tiny_bundle, demo_manifest, tmp_path / "probe", fractions=(0.01, 0.1, 1.0),
        overrides={"max_epochs": 2, "batch_size": 8},
    )
    assert out["task"] == "multilabel" and out["metric"] == "macro_auc"
    assert set(out["fractions"]) == {"0.01", "0.1", "1"}
    for run in out["runs"]:
        assert run["value"] == run["metrics"]["test_metric"] and out["fractions"][f"{run['fraction']:g}"] == run["value"]
        assert 0.0 <= run["value"] <= 1.0 and run["n_test"] >= 2
        assert (tmp_path / "probe" / f"fraction_{run['fraction']:g}" / "model.pt").is_file()
    assert json.loads((tmp_path / "probe" / "linear_probe.json").read_text())["fractions"] == out["fractions"]
    # the saved head loads back with weights_only and differs between fractions (different training data)
    heads = [torch.load(tmp_path / "probe" / f"fraction_{f}" / "model.pt", weights_only=True)["head.weight"] for f in ("0.01", "1")]
    assert not torch.equal(heads[0], heads[1])
