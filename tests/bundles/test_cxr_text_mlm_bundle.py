"""The cxr_text_mlm bundle: properties, a real run on a slice of IU + PadChest with a tiny BERT, resume, HF output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModel, AutoModelForMaskedLM, AutoTokenizer

from monai.bundle import ConfigWorkflow

from monai_medunic.data.corpora import IUXRayCorpus, PadChestCorpus
from monai_medunic.text.vocab import build_base_model, extend_vocabulary

BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / "cxr_text_mlm"
CONFIGS = BUNDLE / "configs"


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("mlm_base")
    build_base_model(d / "en", IUXRayCorpus(limit=800), vocab_size=1200, hidden_size=32, num_layers=2, num_heads=2,
                     max_position_embeddings=256)
    extend_vocabulary(d / "en", PadChestCorpus(limit=800), d / "en_es", num_tokens=150)
    return d / "en_es"


def _run(bundle_root: Path, base: Path, **overrides) -> subprocess.CompletedProcess:
    args = {"bundle_root": str(bundle_root), "base_model_dir": str(base), "corpus_limit": 120, "max_length": 64,
            "batch_size": 16, "learning_rate": 0.002, "precision": "fp32", "max_epochs": 3}
    args.update(overrides)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(CONFIGS / "train.json"),
           "--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf")]
    for k, v in args.items():
        cmd += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_bundle_layout_and_properties(tmp_path, base_model):
    for f in ("configs/metadata.json", "configs/train.json", "configs/multi_gpu_train.json", "configs/logging.conf",
              "docs/README.md", "LICENSE"):
        assert (BUNDLE / f).is_file(), f
    meta = json.loads((CONFIGS / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version",
                "required_packages_version", "task", "description", "authors", "copyright", "network_data_format",
                "intended_use", "references"):
        assert key in meta, key
    assert set(meta["network_data_format"]) == {"inputs", "outputs"}
    wf = ConfigWorkflow(config_file=str(CONFIGS / "train.json"), meta_file=str(CONFIGS / "metadata.json"),
                        logging_file=False, workflow_type="train", bundle_root=str(tmp_path),
                        base_model_dir=str(base_model), corpus_limit=20)
    wf.initialize()
    assert wf.check_properties() == []
    assert wf.max_epochs == 3 and len(wf.train_dataset_data) == 40
    # the multi-GPU overrides parse on top of train.json
    wf2 = ConfigWorkflow(config_file=[str(CONFIGS / "train.json"), str(CONFIGS / "multi_gpu_train.json")],
                         meta_file=str(CONFIGS / "metadata.json"), logging_file=False, workflow_type="train")
    assert wf2.parser["train#dataloader#shuffle"] is False
    assert wf2.parser["train#dataloader#sampler"] == "@train#sampler"
    assert wf2.parser["train#trainer#train_handlers#_target_"].endswith("distributed.handlers_for_rank")
    assert wf.parser["train#trainer#iteration_update#_target_"] == "monai_medunic.engines.step.TrainStep"
    assert wf.parser["train#handlers"][0]["_target_"].endswith("ResumeFromLatestCheckpoint")


def test_mlm_loss_falls_and_output_loads_then_resumes(tmp_path, base_model):
    root = tmp_path / "run"
    _run(root, base_model, max_epochs=3)
    log = json.loads((root / "logs" / "mlm_loss.json").read_text())
    losses = [e["mean_loss"] for e in log["epochs"]]
    assert [e["epoch"] for e in log["epochs"]] == [1, 2, 3]
    assert log["epochs"][0]["iterations"] == 15  # 240 mixed reports / batch 16
    assert losses[-1] < losses[0] - 0.3, losses
    out = root / "models" / "hf_model"
    tok = AutoTokenizer.from_pretrained(out)
    base_tok = AutoTokenizer.from_pretrained(base_model)
    assert len(tok) == len(base_tok)
    assert AutoModel.from_pretrained(out).config.vocab_size == len(tok)
    mlm = AutoModelForMaskedLM.from_pretrained(out)
    base = AutoModelForMaskedLM.from_pretrained(base_model)
    assert not mlm.get_input_embeddings().weight.equal(base.get_input_embeddings().weight)  # it was trained
    assert (out / "mlm_loss.json").is_file() and (out / "medunic_vocab_extension.json").is_file()
    assert any(p.name.endswith(".tfevents." + p.name.split(".tfevents.")[-1]) for p in (root / "logs").iterdir())
    ckpts = sorted(p.name for p in (root / "models" / "checkpoints").iterdir())
    assert "checkpoint_45.pt" in ckpts  # the shared atomic saver: named by iteration (3 epochs x 15)

    # resume: continue to epoch 4 from the epoch-3 checkpoint (trainer state, optimiser, schedule, weights)
    proc = _run(root, base_model, max_epochs=4, resume=True)
    assert "resumed from checkpoint_45.pt at epoch 3, iteration 45" in proc.stdout + proc.stderr
    log2 = json.loads((root / "logs" / "mlm_loss.json").read_text())
    assert [e["epoch"] for e in log2["epochs"]] == [1, 2, 3, 4]
    assert log2["epochs"][:3] == log["epochs"]
    assert log2["epochs"][3]["mean_loss"] < losses[0]  # did not restart from the random-embedding loss
    assert "checkpoint_60.pt" in os.listdir(root / "models" / "checkpoints")


@pytest.mark.distributed
def test_multi_gpu_config_runs_ddp_with_gloo_on_cpu(tmp_path, base_model):
    root = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
           "-m", "monai.bundle", "run",
           "--config_file", f"['{CONFIGS / 'train.json'}','{CONFIGS / 'multi_gpu_train.json'}']",
           "--meta_file", str(CONFIGS / "metadata.json"), "--logging_file", str(CONFIGS / "logging.conf"),
           "--bundle_root", str(root), "--base_model_dir", str(base_model), "--corpus_limit", "32",
           "--max_length", "32", "--batch_size", "8", "--max_epochs", "1", "--precision", "fp32"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = json.loads((root / "logs" / "mlm_loss.json").read_text())
    assert log["epochs"][0]["iterations"] == 4  # 64 reports, DistributedSampler over 2 ranks, batch 8
    assert proc.stdout.count("saved the HF model") + proc.stderr.count("saved the HF model") == 1  # rank 0 only
    assert AutoModelForMaskedLM.from_pretrained(root / "models" / "hf_model").config.vocab_size == len(
        AutoTokenizer.from_pretrained(base_model))
