"""The cxr_medunic_pretrain bundle: properties, training (single process and 2-process gloo DDP),
resume after a kill, inference, evaluate and verify_net_in_out, all through `python -m monai.bundle`."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from monai_medunic.pretrained import load_pretrained_bundle
from tiny_bundles import MEDUNIC_TINY

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "cxr_medunic_pretrain"
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")

TINY = MEDUNIC_TINY


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


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    from monai_medunic.data.demo import generate_demo_dataset

    out = tmp_path_factory.mktemp("demo") / "data"
    generate_demo_dataset(out, num_studies=40, seed=3)
    return out


@pytest.fixture(scope="module")
def text_model(tmp_path_factory, demo_data) -> Path:
    from monai_medunic.data.datalist import manifest_datalist
    from monai_medunic.text.vocab import build_base_model

    texts = [r["report"] for r in manifest_datalist(demo_data / "manifest.jsonl", split="train")]
    out = tmp_path_factory.mktemp("text") / "base"
    build_base_model(out, texts, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, max_position_embeddings=64)
    return out


@pytest.fixture(scope="module")
def n_train(demo_data) -> int:
    """Usable training records (frontal, report of at least 3 tokens), as the bundle's datalist sees them."""
    from monai_medunic.data.datalist import manifest_datalist

    return len(manifest_datalist(demo_data / "manifest.jsonl", split="train"))


def _bundle_copy(tmp: Path, name: str, demo_data: Path, text_model: Path, **extra) -> Path:
    dest = tmp / name
    shutil.copytree(BUNDLE, dest, ignore=shutil.ignore_patterns("models", "logs", "eval"))
    settings = dict(TINY, dataset_dir=str(demo_data), text_model_dir=str(text_model), **extra)
    (dest / "configs" / "test_overrides.json").write_text(json.dumps(settings))
    return dest


def test_metadata_has_mandatory_keys() -> None:
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                "task", "description", "authors", "copyright", "network_data_format", "intended_use", "references"):
        assert meta.get(key), key
    assert "monai-medunic" in meta["required_packages_version"]
    assert meta["version"] in meta["changelog"]
    assert {"inputs", "outputs"} <= set(meta["network_data_format"])
    for f in ("train.json", "multi_gpu_train.json", "evaluate.json", "inference.json", "logging.conf"):
        assert (BUNDLE / "configs" / f).is_file(), f
    assert (BUNDLE / "docs" / "README.md").is_file() and (BUNDLE / "LICENSE").is_file()
    # configs hold no Python code files
    assert not list(BUNDLE.rglob("*.py"))


def test_check_properties_train_and_infer(trained: Path, n_train: int) -> None:
    """MONAI's TrainProperties / InferProperties resolve on the configs (with the test data and sizes)."""
    from monai.bundle import ConfigWorkflow

    cases = (
        (["train.json", "test_overrides.json"], "train"),
        (["train.json", "multi_gpu_train.json", "test_overrides.json"], None),
        (["inference.json", "test_overrides.json"], "infer"),
    )
    for configs, kind in cases:
        wf = ConfigWorkflow(
            config_file=[str(trained / "configs" / c) for c in configs],
            meta_file=str(trained / "configs" / "metadata.json"),
            logging_file=False,
            workflow_type=kind,
            bundle_root=str(trained),
        )
        wf.initialize()
        if kind is None:  # the multi-GPU overrides parse on top of train.json
            assert wf.parser["train#dataloader#sampler"].replace("::", "#") == "@train#sampler"
            assert wf.parser["train#trainer#train_handlers"]["_target_"].endswith("handlers_for_rank")
            continue
        assert wf.check_properties() == [], f"{configs}: missing or misnamed properties"
        if kind == "train":
            assert wf.max_epochs == 2 and len(wf.train_dataset_data) == n_train
        else:
            assert wf.network_def.model.embed_dim == 16  # the exported network_def is the trained architecture


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_data, text_model) -> Path:
    bundle = _bundle_copy(tmp_path_factory.mktemp("train"), "single", demo_data, text_model)
    _run(bundle, "configs/train.json", "configs/test_overrides.json")
    return bundle


def test_training_writes_terms_checkpoints_and_export(trained: Path, n_train: int) -> None:
    history = json.loads((trained / "logs" / "history.json").read_text())
    its = history["iterations"]
    assert n_train >= 16
    assert len(its) == 2 * (n_train // 8)  # 2 epochs x full batches of the train split (drop_last)
    for term in ("loss", "loss_cvl", "loss_ssv", "loss_ctr", "lr"):
        assert all(term in r for r in its), term
    assert all(abs(r["loss"] - (r["loss_cvl"] + r["loss_ssv"] + r["loss_ctr"])) < 1e-4 for r in its)
    lrs = [r["lr"] for r in its]
    peak = lrs.index(max(lrs))
    assert peak > 0 and lrs[:peak + 1] == sorted(lrs[:peak + 1])  # linear warm-up ...
    assert lrs[peak:] == sorted(lrs[peak:], reverse=True)  # ... then cosine annealing
    assert len(history["validation"]) == 2
    assert {"zero_shot_auc", "zero_shot_auc_en", "zero_shot_auc_es"} <= set(history["validation"][-1])
    ckpts = sorted((trained / "models" / "checkpoints").glob("checkpoint_*.pt"))
    assert ckpts
    state = torch.load(ckpts[-1], weights_only=True)
    assert {"network", "optimizer", "lr_scheduler", "trainer"} <= set(state)
    assert state["trainer"]["iteration"] == len(its)  # the trainer's position, for resume
    bundle = load_pretrained_bundle(trained)
    assert bundle.image_size == 32 and bundle.findings[0] == "Cardiomegaly"
    # the zero-shot calibration is fitted on the validation split at the end of training, per prompt language
    cal = json.loads((trained / "models" / "calibration.json").read_text())
    assert set(cal["languages"]) == {"en", "es"} and cal["fitted_on"]["split"] == "val" and cal["fitted_on"]["images"] > 0
    assert bundle.calibration is not None and set(cal["languages"]["es"]) == set(bundle.findings)
    assert list((trained / "logs").glob("events.out.tfevents.*")), "TensorBoard events"


def test_resume_continues_from_checkpoint(trained: Path, tmp_path: Path, n_train: int) -> None:
    bundle = tmp_path / "resumed"
    shutil.copytree(trained, bundle)
    overrides = json.loads((bundle / "configs" / "test_overrides.json").read_text())
    overrides["max_epochs"] = 3
    (bundle / "configs" / "test_overrides.json").write_text(json.dumps(overrides))
    proc = _run(bundle, "configs/train.json", "configs/test_overrides.json")
    assert "resumed from checkpoint_" in proc.stdout + proc.stderr
    history = json.loads((bundle / "logs" / "history.json").read_text())
    epochs = [r["epoch"] for r in history["iterations"]]
    assert epochs.count(3) == n_train // 8 and max(epochs) == 3  # only the third epoch was trained again
    assert [r["iteration"] for r in history["iterations"]] == list(range(1, len(epochs) + 1))


def test_kill_mid_epoch_then_resume(tmp_path: Path, demo_data: Path, text_model: Path) -> None:
    bundle = _bundle_copy(tmp_path, "killed", demo_data, text_model, checkpoint_every_n_iterations=2, max_epochs=3)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
           _configs("configs/train.json", "configs/test_overrides.json"), "--bundle_root", str(bundle)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=bundle)
    ckpt_dir = bundle / "models" / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not list(ckpt_dir.glob("checkpoint_4.pt")):
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = sorted(ckpt_dir.glob("checkpoint_*.pt"))
    assert saved, "no checkpoint before the kill"
    for p in saved:
        torch.load(p, weights_only=True)  # every visible checkpoint is complete (atomic rename)
    out = _run(bundle, "configs/train.json", "configs/test_overrides.json")
    assert "resumed from checkpoint_" in out.stdout + out.stderr
    last = max(ckpt_dir.glob("checkpoint_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    state = torch.load(last, weights_only=True)
    assert state["trainer"]["iteration"] == 3 * state["trainer"]["epoch_length"]  # all three epochs done


def test_inference_verify_and_evaluate(trained: Path) -> None:
    _run(trained, "configs/inference.json", "configs/test_overrides.json")
    preds = json.loads((trained / "eval" / "inference" / "predictions.json").read_text())
    assert len(preds) >= 4 and set(preds[0]) >= {"id", "Cardiomegaly", "Edema", "decision_rule"}
    assert 0.0 <= preds[0]["Nodule"]["probability"] <= 1.0
    fitted = {f for f, c in json.loads((trained / "models" / "calibration.json").read_text())["languages"]["en"].items()
              if c["status"] == "fitted"}
    assert {f for f in load_pretrained_bundle(trained).findings if preds[0][f]["calibrated"]} == fitted
    verify = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def",
         "--meta_file", str(trained / "configs" / "metadata.json"), "--config_file", str(trained / "configs" / "inference.json"),
         "--bundle_root", str(trained)],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
    assert "data shape of network is verified with no error" in verify.stdout + verify.stderr
    # ckpt_export of network_def + models/model.pt: TorchScript by tracing (scripting fails inside HF's BERT code,
    # which the image path does not use); the exported module gives the eager network's embeddings
    export = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(trained / "model.ts"),
         "--ckpt_file", str(trained / "models" / "model.pt"), "--meta_file", str(trained / "configs" / "metadata.json"),
         "--config_file", str(trained / "configs" / "inference.json"), "--bundle_root", str(trained),
         "--use_trace", "True", "--input_shape", "[1, 1, 32, 32]"],
        capture_output=True, text=True, env=ENV, timeout=300,
    )
    assert export.returncode == 0, export.stdout[-2000:] + export.stderr[-2000:]
    scripted = torch.jit.load(str(trained / "model.ts"))
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(scripted(x), load_pretrained_bundle(trained).network(x), atol=1e-5)
    meta = json.loads((trained / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 16  # the export describes the trained net
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32]
    _run(trained, "configs/evaluate.json", "configs/test_overrides.json")
    report = json.loads((trained / "eval" / "report.json").read_text())
    assert set(report["zero_shot"]) >= {"en", "es"}
    assert report["calibration"]["status"] == "calibrated"
    assert {"macro_f1_uncalibrated", "macro_f1_calibrated", "ece_uncalibrated", "ece_calibrated"} <= set(report["calibration"]["languages"]["es"])


def test_inference_reads_each_languages_thresholds(trained: Path, tmp_path: Path) -> None:
    """Fails if inference ignored the calibration or read one language's thresholds for the other."""
    bundle = tmp_path / "extreme"
    shutil.copytree(trained, bundle, ignore=shutil.ignore_patterns("eval", "checkpoints"))
    path = bundle / "models" / "calibration.json"
    cal = json.loads(path.read_text())
    for lang, threshold in (("en", -10.0), ("es", 10.0)):  # en: everything positive; es: nothing
        for c in cal["languages"][lang].values():
            c.update(status="fitted", threshold=threshold, platt_a=1.0, platt_b=0.0)
    path.write_text(json.dumps(cal))
    found = {}
    for lang in ("en", "es"):
        overrides = json.loads((bundle / "configs" / "test_overrides.json").read_text())
        (bundle / "configs" / "lang.json").write_text(json.dumps({**overrides, "language": lang, "output_dir": f"$@bundle_root + '/out_{lang}'"}))
        _run(bundle, "configs/inference.json", "configs/lang.json")
        preds = json.loads((bundle / f"out_{lang}" / "predictions.json").read_text())
        found[lang] = {p[f]["positive"] for p in preds for f in load_pretrained_bundle(bundle).findings}
        assert all(p["decision_rule"].startswith("margin >= per-finding threshold") for p in preds)
    assert found == {"en": {True}, "es": {False}}
    path.unlink()  # an uncalibrated bundle still works, and says so
    _run(bundle, "configs/inference.json", "configs/lang.json")
    preds = json.loads((bundle / "out_es" / "predictions.json").read_text())
    assert all(p["decision_rule"] == "s_pos > s_neg (uncalibrated)" and not p["Edema"]["calibrated"] for p in preds)


@pytest.mark.distributed
def test_two_process_ddp_on_cpu_trains_identical_weights(tmp_path: Path, demo_data: Path, text_model: Path, n_train: int) -> None:
    bundle = _bundle_copy(tmp_path, "ddp", demo_data, text_model, max_epochs=1)
    digest = {
        "train#digest": {"_target_": "monai_medunic.engines.handlers.RankWeightsDigest",
                          "output_dir": str(tmp_path / "digests"), "network": "@network_def"},
        "train#trainer#train_handlers": {"_target_": "monai_medunic.engines.distributed.handlers_for_rank",
                                          "handlers": "$@train#handlers + [@train#digest]"},
    }
    (bundle / "configs" / "test_ddp.json").write_text(json.dumps(digest))
    proc = _run(
        bundle, "configs/train.json", "configs/multi_gpu_train.json", "configs/test_overrides.json", "configs/test_ddp.json",
        cmd_prefix=[sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"],
    )
    d0 = (tmp_path / "digests" / "weights_rank0.sha256").read_text()
    d1 = (tmp_path / "digests" / "weights_rank1.sha256").read_text()
    assert d0 == d1
    history = json.loads((bundle / "logs" / "history.json").read_text())
    # each rank sees half of the training split per epoch
    assert len(history["iterations"]) == ((n_train + 1) // 2) // 8  # even_divisible pads to a multiple of 2
    assert (bundle / "models" / "model.pt").is_file()
    assert "initialised (gloo)" in proc.stdout + proc.stderr


def test_too_little_data_for_one_batch_is_a_clear_last_line(tmp_path: Path, demo_data: Path, text_model: Path, n_train: int) -> None:
    """A training split smaller than the batch (drop_last) must not 'succeed' without training: the run
    fails, and our one-line error (what, and the fix) is the last thing printed, after MONAI's traceback."""
    bundle = _bundle_copy(tmp_path, "small", demo_data, text_model, batch_size=n_train + 1)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", _configs("configs/train.json", "configs/test_overrides.json"),
           "--bundle_root", str(bundle), "--logging_file", str(bundle / "configs" / "logging.conf")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300, cwd=bundle)
    assert proc.returncode != 0 and not (bundle / "models" / "model.pt").exists()
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("monai-medunic: ConfigurationError: the training data loader yields no batch"), last
    assert f"{n_train} training records, batch_size {n_train + 1}, drop_last true" in last and "lower the batch size" in last
