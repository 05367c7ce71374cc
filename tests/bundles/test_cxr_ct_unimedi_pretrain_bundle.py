"""The cxr_ct_unimedi_pretrain bundle through `python -m monai.bundle`: properties, a tiny mixed 2D + 3D run
(every term logged, teacher and distillation centres in the checkpoint), resume (the teacher's schedule
continues), export + load + slice selection + verify_net_in_out (2D and 3D inputs) + ckpt_export, inference
and evaluate, and a 2-process gloo DDP run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from monai_medunic.pretrained import load_pretrained_bundle, select_slices_from_bundle

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "cxr_ct_unimedi_pretrain"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")

TINY = {
    "image_encoder": "vit_tiny",
    "image_size": 32,
    "volume_size": [16, 32, 32],
    "num_slices": 2,
    "embed_dim": 16,
    "distill_dim": 32,
    "distill_hidden_dim": 32,
    "distill_bottleneck_dim": 8,
    "max_length": 32,
    "batch_size_2d": 4,
    "batch_size_3d": 2,
    "val_batch_size": 16,
    "num_workers": 0,
    "max_epochs": 2,
    "learning_rate": 1e-3,
    "warmup_fraction": 0.5,
    "teacher_momentum": 0.9,
    "precision": "fp32",
}
TERMS = ("loss_clip", "loss_distill_cls", "loss_distill_patch")


def _configs(*names: str) -> str:
    return "[" + ",".join(f"'{n}'" for n in names) + "]"


def _run(bundle: Path, *configs: str, timeout: int = 600, cmd_prefix: list[str] | None = None) -> subprocess.CompletedProcess:
    cmd = (cmd_prefix or [sys.executable]) + [
        "-m", "monai.bundle", "run", "--config_file", _configs(*configs), "--bundle_root", str(bundle),
        "--logging_file", str(bundle / "configs" / "logging.conf"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout, cwd=bundle)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _monai_bundle(*args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", *args], capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    from monai_medunic.data.demo import generate_demo_dataset

    out = tmp_path_factory.mktemp("demo") / "data"
    generate_demo_dataset(out, num_studies=24, num_ct_studies=8, ct_shape=(32, 48, 48), seed=3)
    return out


@pytest.fixture(scope="module")
def text_model(tmp_path_factory, demo_data) -> Path:
    from monai_medunic.data.datalist import manifest_datalist
    from monai_medunic.text.vocab import build_base_model

    texts = [r["report"] for r in manifest_datalist(demo_data / "manifest.jsonl", split="train", dimensions=None)]
    out = tmp_path_factory.mktemp("text") / "base"
    build_base_model(out, texts, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, max_position_embeddings=64)
    return out


@pytest.fixture(scope="module")
def epoch_length(demo_data) -> int:
    """Batches per epoch: the larger of the 2D and 3D training records over their batch sizes."""
    from monai_medunic.data.datalist import manifest_datalist

    n2 = len(manifest_datalist(demo_data / "manifest.jsonl", split="train", dimensions=2))
    n3 = len(manifest_datalist(demo_data / "manifest.jsonl", split="train", dimensions=3))
    assert n2 >= 8 and n3 >= 2
    return max(n2 // TINY["batch_size_2d"], n3 // TINY["batch_size_3d"])


def _bundle_copy(tmp: Path, name: str, demo_data: Path, text_model: Path, **extra) -> Path:
    dest = tmp / name
    shutil.copytree(BUNDLE, dest, ignore=shutil.ignore_patterns("models", "logs", "eval"))
    (dest / "configs" / "test_overrides.json").write_text(json.dumps(dict(TINY, dataset_dir=str(demo_data), text_model_dir=str(text_model), **extra)))
    return dest


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_data, text_model) -> Path:
    bundle = _bundle_copy(tmp_path_factory.mktemp("train"), "single", demo_data, text_model)
    _run(bundle, "configs/train.json", "configs/test_overrides.json")
    return bundle


def test_metadata_and_layout() -> None:
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                "task", "description", "authors", "copyright", "network_data_format", "intended_use", "references"):
        assert meta.get(key), key
    assert meta["version"] in meta["changelog"] and "monai-medunic" in meta["required_packages_version"]
    inputs = meta["network_data_format"]["inputs"]
    assert inputs["image"]["spatial_shape"] == [224, 224] and inputs["volume"]["spatial_shape"] == [64, 128, 128]
    infer = json.loads((BUNDLE / "configs" / "inference.json").read_text())
    assert infer["network_def"]["model"]["volume_size"] == inputs["volume"]["spatial_shape"]  # metadata describes network_def
    for f in ("train.json", "multi_gpu_train.json", "evaluate.json", "inference.json", "logging.conf"):
        assert (BUNDLE / "configs" / f).is_file(), f
    assert (BUNDLE / "docs" / "README.md").is_file() and (BUNDLE / "LICENSE").is_file() and not list(BUNDLE.rglob("*.py"))


def test_check_properties(trained: Path) -> None:
    from monai.bundle import ConfigWorkflow

    for configs, kind in ((["train.json", "test_overrides.json"], "train"), (["inference.json", "test_overrides.json"], "infer"),
                          (["train.json", "multi_gpu_train.json", "test_overrides.json"], None)):
        wf = ConfigWorkflow(config_file=[str(trained / "configs" / c) for c in configs], meta_file=str(trained / "configs" / "metadata.json"),
                            logging_file=False, workflow_type=kind, bundle_root=str(trained))
        wf.initialize()
        if kind is None:
            assert wf.parser["train#trainer#train_handlers"]["_target_"].endswith("handlers_for_rank")
            continue
        assert wf.check_properties() == [], configs
        if kind == "infer":
            assert wf.network_def.model.embed_dim == 16 and list(wf.network_def.model.image_encoder.volume_size) == [16, 32, 32]


def test_training_logs_every_term_and_checkpoints_the_teacher(trained: Path, epoch_length: int) -> None:
    history = json.loads((trained / "logs" / "history.json").read_text())
    its = history["iterations"]
    assert len(its) == 2 * epoch_length
    for r in its:
        assert set(TERMS) | {"loss", "lr"} <= set(r)
        assert abs(r["loss"] - sum(r[t] for t in TERMS)) < 1e-4  # weights 1, 1, 1
    assert len(history["validation"]) == 2 and "zero_shot_auc" in history["validation"][-1]
    state = torch.load(max((trained / "models" / "checkpoints").glob("checkpoint_*.pt"), key=os.path.getmtime), weights_only=True)
    assert {"network", "teacher", "optimizer", "lr_scheduler", "trainer", "objective"} <= set(state)
    assert int(state["teacher"]["num_updates"]) == 2 * epoch_length
    assert state["objective"]["distill_cls.center"].abs().sum() > 0 and state["objective"]["distill_patch.center"].abs().sum() > 0
    student = state["network"]["image_encoder.patch_embedding_3d.patch_embeddings.weight"]
    teacher = state["teacher"]["teacher"]["image_encoder.patch_embedding_3d.patch_embeddings.weight"]
    assert student.shape == teacher.shape and not torch.equal(student, teacher)
    assert list((trained / "logs").glob("events.out.tfevents.*"))


def test_resume_continues_the_teacher_schedule(trained: Path, tmp_path: Path, epoch_length: int) -> None:
    bundle = tmp_path / "resumed"
    shutil.copytree(trained, bundle)
    overrides = json.loads((bundle / "configs" / "test_overrides.json").read_text())
    (bundle / "configs" / "test_overrides.json").write_text(json.dumps(dict(overrides, max_epochs=3)))
    proc = _run(bundle, "configs/train.json", "configs/test_overrides.json")
    assert "resumed from checkpoint_" in proc.stdout + proc.stderr
    history = json.loads((bundle / "logs" / "history.json").read_text())
    assert [r["iteration"] for r in history["iterations"]] == list(range(1, 3 * epoch_length + 1))
    state = torch.load(bundle / "models" / "checkpoints" / f"checkpoint_{3 * epoch_length}.pt", weights_only=True)
    assert int(state["teacher"]["num_updates"]) == 3 * epoch_length  # restored, then one more epoch of updates


def test_export_load_select_and_verify(trained: Path, demo_data: Path) -> None:
    b = load_pretrained_bundle(trained)
    assert b.method == "unimedi" and b.image_size == 32 and b.settings["unimedi"]["volume_size"] == [16, 32, 32]
    series = next((demo_data / "ct").iterdir())
    sel = select_slices_from_bundle(b, series)
    assert len(sel.indices) == 2 and sel.scores.shape == (32,) and all(0 <= z < 32 for z in sel.indices)
    meta, infer = str(trained / "configs" / "metadata.json"), str(trained / "configs" / "inference.json")
    # network_def's 2D input (metadata "image") on the command line ...
    proc = _monai_bundle("verify_net_in_out", "network_def", "--meta_file", meta, "--config_file", infer, "--bundle_root", str(trained))
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr
    # ... and its 3D input (metadata "volume") with MONAI's same function, the input shape overridden
    from monai.bundle import verify_net_in_out

    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=infer, bundle_root=str(trained),
                      **{"_meta_#network_data_format#inputs#image#spatial_shape": [16, 32, 32]})
    # TorchScript of network_def + models/model.pt by tracing, on the 2D input: the eager network's embeddings
    _monai_bundle("ckpt_export", "network_def", "--filepath", str(trained / "model.ts"), "--ckpt_file", str(trained / "models" / "model.pt"),
                  "--meta_file", meta, "--config_file", infer, "--bundle_root", str(trained), "--use_trace", "True", "--input_shape", "[1, 1, 32, 32]")
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(trained / "model.ts"))(x), b.network(x), atol=1e-5)
    meta_json = json.loads(Path(meta).read_text())
    assert meta_json["network_data_format"]["inputs"]["volume"]["spatial_shape"] == [16, 32, 32]
    assert meta_json["network_data_format"]["outputs"]["pred"]["num_channels"] == 16


def test_inference_and_evaluate(trained: Path) -> None:
    _run(trained, "configs/inference.json", "configs/test_overrides.json")
    preds = json.loads((trained / "eval" / "inference" / "predictions.json").read_text())
    assert preds and 0.0 <= preds[0]["Nodule"]["probability"] <= 1.0
    _run(trained, "configs/evaluate.json", "configs/test_overrides.json")
    report = json.loads((trained / "eval" / "report.json").read_text())
    assert {"attention", "report_guided", "middle", "random"} <= set(report["slice_selection"])
    assert report["k"] == 2 and report["slice_selection"]["slabs"] == 4
    assert set(report["zero_shot_2d"]) == {"en", "es"} and "image" in report["dimension_gap"]


@pytest.mark.distributed
def test_two_process_ddp(tmp_path: Path, demo_data: Path, text_model: Path) -> None:
    bundle = _bundle_copy(tmp_path, "ddp", demo_data, text_model, max_epochs=1)
    digest = {
        "train#digest": {"_target_": "monai_medunic.engines.handlers.RankWeightsDigest", "output_dir": str(tmp_path / "digests"),
                          "network": "@network_def"},
        "train#trainer#train_handlers": {"_target_": "monai_medunic.engines.distributed.handlers_for_rank",
                                          "handlers": "$@train#handlers + [@train#digest]"},
    }
    (bundle / "configs" / "test_ddp.json").write_text(json.dumps(digest))
    proc = _run(bundle, "configs/train.json", "configs/multi_gpu_train.json", "configs/test_overrides.json", "configs/test_ddp.json",
                cmd_prefix=[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29541"])
    assert "initialised (gloo)" in proc.stdout + proc.stderr
    assert (tmp_path / "digests" / "weights_rank0.sha256").read_text() == (tmp_path / "digests" / "weights_rank1.sha256").read_text()
    history = json.loads((bundle / "logs" / "history.json").read_text())
    assert history["iterations"] and all(set(TERMS) <= set(r) for r in history["iterations"])
    assert (bundle / "models" / "model.pt").is_file()
