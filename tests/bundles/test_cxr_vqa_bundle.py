"""The cxr_vqa bundle through `python -m monai.bundle`: fine-tuning a trained bundle's encoders with the
VQA head (encoders at a tenth of the head's learning rate), evaluation with open / closed / overall
accuracy, resume, and a VQA answer outside the answer list as a typed error naming the answer and file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from bundle_helpers import radiograph_demo_data, run_bundle_cli, tiny_text_model

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "cxr_vqa"
TINY = {"batch_size": 8, "val_batch_size": 16, "num_workers": 0, "max_epochs": 2, "precision": "fp32", "augment_translate_pixels": 2,
        "encoder_lr": 1e-4, "head_lr": 1e-3, "num_question_tokens": 4, "max_length": 16}


_run = run_bundle_cli


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    return radiograph_demo_data(tmp_path_factory.mktemp("demo") / "data")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, demo_data) -> Path:
    """A (briefly initialised, untrained) Uni-Mlip exported in the trained-bundle layout of cxr_unimlip_pretrain."""
    from transformers import AutoTokenizer

    from monai_medunic.networks import UniMlip
    from monai_medunic.pretrained import export_pretrained_bundle

    tmp = tmp_path_factory.mktemp("pretrained")
    text = tiny_text_model(tmp / "text", demo_data)
    root = tmp / "cxr_unimlip_pretrain"
    shutil.copytree(REPO / "bundles" / "cxr_unimlip_pretrain", root, ignore=shutil.ignore_patterns("models", "logs", "eval"))
    torch.manual_seed(0)
    model = UniMlip("resnet18", text_model_name_or_path=text, img_size=32, embed_dim=16, fusion_layers=1).eval()
    export_pretrained_bundle(model, AutoTokenizer.from_pretrained(text), root, findings=["Pleural Effusion"], max_length=32)
    return root


def _bundle_copy(tmp: Path, name: str, demo_data: Path, pretrained: Path, **extra) -> Path:
    dest = tmp / name
    shutil.copytree(BUNDLE, dest, ignore=shutil.ignore_patterns("models", "logs", "eval"))
    (dest / "configs" / "test_overrides.json").write_text(json.dumps(dict(TINY, dataset_dir=str(demo_data), pretrained_bundle=str(pretrained), **extra)))
    return dest


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_data, pretrained) -> Path:
    bundle = _bundle_copy(tmp_path_factory.mktemp("vqa"), "vqa", demo_data, pretrained)
    _run(bundle, "configs/train.json", "configs/test_overrides.json")
    return bundle


def test_metadata_and_properties(trained: Path) -> None:
    from monai.bundle import ConfigWorkflow

    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    for key in ("version", "changelog", "task", "description", "network_data_format", "intended_use", "references"):
        assert meta.get(key), key
    for f in ("train.json", "evaluate.json", "multi_gpu_train.json", "logging.conf"):
        assert (BUNDLE / "configs" / f).is_file()
    assert (BUNDLE / "docs" / "README.md").is_file() and (BUNDLE / "LICENSE").is_file() and not list(BUNDLE.rglob("*.py"))
    wf = ConfigWorkflow(config_file=[str(trained / "configs" / c) for c in ("train.json", "test_overrides.json")],
                        meta_file=str(trained / "configs" / "metadata.json"), logging_file=False, workflow_type="train",
                        bundle_root=str(trained))
    wf.initialize()
    assert wf.check_properties() == []
    assert all(d["answer_label"] >= 0 for d in wf.train_dataset_data)


def test_fine_tuning_trains_the_head_ten_times_faster_than_the_encoders(trained: Path) -> None:
    assert (trained / "models" / "model.pt").is_file()
    history = json.loads((trained / "logs" / "history.json").read_text())
    assert len(history["validation"]) == 2
    assert {"vqa_accuracy", "vqa_accuracy_open", "vqa_accuracy_closed"} <= set(history["validation"][-1])
    state = torch.load(sorted((trained / "models" / "checkpoints").glob("checkpoint_*.pt"))[-1], weights_only=True)
    groups = {g["name"]: g["lr"] for g in state["optimizer"]["param_groups"]}
    assert {"encoders", "head"} <= set(groups)
    assert groups["head"] == pytest.approx(10 * groups["encoders"])
    model = torch.load(trained / "models" / "model.pt", weights_only=True)
    assert model["head.question_tokens"].shape == (1, 4, 32)


def test_evaluation_reports_open_closed_and_overall_accuracy(trained: Path, demo_data: Path) -> None:
    from monai_medunic.data.vqa import vqa_datalist

    _run(trained, "configs/train.json", "configs/evaluate.json", "configs/test_overrides.json")
    report = json.loads((trained / "eval" / "vqa_report.json").read_text())
    test = vqa_datalist(demo_data / "vqa.jsonl", split="test")
    assert report["n"] == len(test)
    assert report["n_open"] == sum(q["answer_type"] == "open" for q in test) and report["n_closed"] + report["n_open"] == report["n"]
    for key in ("overall", "closed"):
        assert 0.0 <= report[key] <= 1.0
    weighted = (report["closed"] * report["n_closed"] + (report["open"] or 0.0) * report["n_open"]) / report["n"]
    assert report["overall"] == pytest.approx(weighted)
    assert set(report["by_language"]) <= {"en", "es"} and report["answers"][0] == "yes"


def test_resume_continues_fine_tuning(trained: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "resumed"
    shutil.copytree(trained, bundle)
    overrides = json.loads((bundle / "configs" / "test_overrides.json").read_text())
    overrides["max_epochs"] = 3
    (bundle / "configs" / "test_overrides.json").write_text(json.dumps(overrides))
    proc = _run(bundle, "configs/train.json", "configs/test_overrides.json")
    assert "resumed from checkpoint_" in proc.stdout + proc.stderr
    history = json.loads((bundle / "logs" / "history.json").read_text())
    assert max(r["epoch"] for r in history["iterations"]) == 3 and len(history["validation"]) == 3


def test_an_answer_outside_the_list_stops_the_bundle_naming_answer_and_file(trained: Path, demo_data: Path, tmp_path: Path) -> None:
    from monai.bundle import ConfigParser

    from monai_medunic.errors import UnknownAnswerError, medunic_error_in

    data = tmp_path / "data"
    shutil.copytree(demo_data, data)
    lines = (data / "vqa.jsonl").read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[5])
    rec["answer"] = "cardiomegalia severa"
    lines[5] = json.dumps(rec, ensure_ascii=False)
    (data / "vqa.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    parser = ConfigParser()
    parser.read_config([str(trained / "configs" / "train.json"), str(trained / "configs" / "test_overrides.json")])
    parser["bundle_root"], parser["dataset_dir"] = str(trained), str(data)
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("train#datalist")
    err = medunic_error_in(info.value)
    assert isinstance(err, UnknownAnswerError) and err.answer == "cardiomegalia severa"
    assert err.path == str(data / "vqa.jsonl") and err.line == 6
