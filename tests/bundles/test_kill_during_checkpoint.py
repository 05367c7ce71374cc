"""SIGKILL while a training bundle writes a checkpoint: the previous checkpoint stays loadable and a rerun
resumes from it and finishes, for every training bundle that checkpoints (``AtomicCheckpointSaver``).

The kill is aimed at the write itself: the test watches the checkpoint folder with inotify and sends
SIGKILL the moment the saver creates its temporary file (ignite's atomic ``DiskSaver`` writes
``tmp*`` and renames it to ``checkpoint_<iteration>.pt``), once a complete checkpoint exists. A leftover
temporary file proves the process died mid-write; the rerun removes it.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
_CKPT = re.compile(r"^checkpoint_(\d+)\.pt$")
IN_CREATE = 0x00000100


def _tracked_checkpointing_bundles() -> set[str]:
    """Committed bundles whose train.json uses the package's checkpoint saver."""
    files = subprocess.run(["git", "ls-files", "bundles/*/configs/train.json"], cwd=REPO, capture_output=True,
                           text=True).stdout.split()
    return {Path(f).parts[1] for f in files if "AtomicCheckpointSaver" in (REPO / f).read_text()}


class CheckpointWriteWatcher:
    """inotify on a checkpoint folder: waits until the saver creates a temporary file while at least one
    complete checkpoint exists, then SIGKILLs ``pid`` at once."""

    def __init__(self, folder: Path) -> None:
        self.libc = ctypes.CDLL("libc.so.6", use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        assert self.fd >= 0, "inotify_init1 failed"
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        wd = self.libc.inotify_add_watch(self.fd, str(folder).encode(), IN_CREATE)
        assert wd >= 0, "inotify_add_watch failed"

    def kill_during_write(self, proc: subprocess.Popen, timeout: float) -> str | None:
        """The name of the temporary file being written when the kill was sent (``None``: the run ended first)."""
        deadline = time.time() + timeout
        try:
            while time.time() < deadline and proc.poll() is None:
                ready, _, _ = select.select([self.fd], [], [], 0.5)
                if not ready:
                    continue
                data = os.read(self.fd, 65536)
                offset = 0
                while offset < len(data):
                    _, mask, _, length = struct.unpack_from("iIII", data, offset)
                    name = data[offset + 16: offset + 16 + length].rstrip(b"\0").decode()
                    offset += 16 + length
                    if mask & IN_CREATE and not _CKPT.match(name) and any(_CKPT.match(p.name) for p in self.folder.iterdir()):
                        proc.send_signal(signal.SIGKILL)
                        return name
            return None
        finally:
            os.close(self.fd)


# ------------------------------------------------------------------------------------ per-bundle settings


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    from monai_medunic.data.demo import generate_demo_dataset

    out = tmp_path_factory.mktemp("kill_demo") / "data"  # radiographs (with VQA pairs) and CT, as the bundles' own tests
    generate_demo_dataset(out, num_studies=24, seed=3, num_ct_studies=8, ct_shape=(32, 48, 48), radiograph_truth=False)
    return out


@pytest.fixture(scope="module")
def text_model(tmp_path_factory, demo_data) -> Path:
    from monai_medunic.data.datalist import manifest_datalist
    from monai_medunic.text.vocab import build_base_model

    texts = [r["report"] for r in manifest_datalist(demo_data / "manifest.jsonl", split="train")]
    out = tmp_path_factory.mktemp("kill_text") / "base"
    build_base_model(out, texts, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, max_position_embeddings=64)
    return out


def _medunic_pretrain(dest: Path, demo_data: Path, text_model: Path) -> tuple[list[str], list[str], Path]:
    settings = {"image_encoder": "resnet18", "image_size": 32, "embed_dim": 16, "ctr_dim": 32, "freeze_layers": 1,
                "max_length": 32, "batch_size": 4, "val_batch_size": 16, "num_workers": 0, "max_epochs": 2,
                "learning_rate": 1e-3, "warmup_fraction": 0.5, "precision": "fp32", "channels_last": False,
                "checkpoint_every_n_iterations": 1, "dataset_dir": str(demo_data), "text_model_dir": str(text_model)}
    (dest / "configs" / "test_overrides.json").write_text(json.dumps(settings))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
           "['configs/train.json','configs/test_overrides.json']", "--bundle_root", str(dest),
           "--logging_file", str(dest / "configs" / "logging.conf")]
    return cmd, cmd, dest / "models" / "checkpoints"  # the bundle resumes by default


def _text_mlm(dest: Path, demo_data: Path, text_model: Path) -> tuple[list[str], list[str], Path]:
    args = {"bundle_root": str(dest), "base_model_dir": str(text_model), "corpus_limit": 40, "max_length": 32,
            "batch_size": 8, "learning_rate": 0.002, "precision": "fp32", "max_epochs": 3}
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(dest / "configs" / "train.json"),
           "--meta_file", str(dest / "configs" / "metadata.json"), "--logging_file", str(dest / "configs" / "logging.conf")]
    for k, v in args.items():
        cmd += [f"--{k}", json.dumps(v) if not isinstance(v, str) else v]
    return cmd, cmd + ["--resume", "true"], dest / "models" / "checkpoints"  # resuming is opt-in here


def _with_overrides(dest: Path, settings: dict) -> tuple[list[str], list[str], Path]:
    """The bundle's own test settings in ``configs/test_overrides.json``; the bundle resumes by default."""
    (dest / "configs" / "test_overrides.json").write_text(json.dumps(settings))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file",
           "['configs/train.json','configs/test_overrides.json']", "--bundle_root", str(dest),
           "--logging_file", str(dest / "configs" / "logging.conf")]
    return cmd, cmd, dest / "models" / "checkpoints"


def _unimlip_pretrain(dest: Path, demo_data: Path, text_model: Path) -> tuple[list[str], list[str], Path]:
    from test_cxr_unimlip_pretrain_bundle import TINY

    return _with_overrides(dest, dict(TINY, dataset_dir=str(demo_data), text_model_dir=str(text_model)))


def _ct_unimedi_pretrain(dest: Path, demo_data: Path, text_model: Path) -> tuple[list[str], list[str], Path]:
    from test_cxr_ct_unimedi_pretrain_bundle import TINY

    return _with_overrides(dest, dict(TINY, dataset_dir=str(demo_data), text_model_dir=str(text_model)))


def _vqa(dest: Path, demo_data: Path, text_model: Path) -> tuple[list[str], list[str], Path]:
    """Fine-tuning on an (untrained) Uni-Mlip exported in the trained-bundle layout, as the bundle's own test does."""
    from test_cxr_vqa_bundle import TINY
    from transformers import AutoTokenizer

    from monai_medunic.networks import UniMlip
    from monai_medunic.pretrained import export_pretrained_bundle

    pretrained = dest.parent / "cxr_unimlip_pretrain"
    shutil.copytree(REPO / "bundles" / "cxr_unimlip_pretrain", pretrained, ignore=shutil.ignore_patterns("models", "logs", "eval"))
    torch.manual_seed(0)
    model = UniMlip("resnet18", text_model_name_or_path=str(text_model), img_size=32, embed_dim=16, fusion_layers=1).eval()
    export_pretrained_bundle(model, AutoTokenizer.from_pretrained(str(text_model)), pretrained, findings=["Pleural Effusion"],
                             max_length=32)
    return _with_overrides(dest, dict(TINY, dataset_dir=str(demo_data), pretrained_bundle=str(pretrained)))


# bundle -> how to run it small (a new checkpointing bundle gets an entry here; the guard below enforces it)
BUNDLES = {"cxr_medunic_pretrain": _medunic_pretrain, "cxr_text_mlm": _text_mlm, "cxr_unimlip_pretrain": _unimlip_pretrain,
           "cxr_ct_unimedi_pretrain": _ct_unimedi_pretrain, "cxr_vqa": _vqa}


# training bundles that save only the final model with MONAI's CheckpointSaver (ignite writes it atomically): no
# periodic checkpoint, no resume, so nothing a kill could leave half-written for a rerun to read
FINAL_MODEL_ONLY = {"cxr_linear_probe", "cxr_segmentation", "cxr_detection"}


def _tracked_training_bundles() -> dict[str, str]:
    """Committed bundles with a configs/train.json -> its text."""
    files = subprocess.run(["git", "ls-files", "bundles/*/configs/train.json"], cwd=REPO, capture_output=True,
                           text=True).stdout.split()
    return {Path(f).parts[1]: (REPO / f).read_text() for f in files}


def test_every_checkpointing_bundle_is_covered() -> None:
    missing = _tracked_checkpointing_bundles() - set(BUNDLES)
    assert not missing, f"training bundles without a kill-during-checkpoint case: {sorted(missing)}; add them to BUNDLES"
    for name, config in _tracked_training_bundles().items():
        if name in BUNDLES:
            continue
        if "CheckpointSaver" in config:  # MONAI's saver: allowed only as a final-model save
            assert name in FINAL_MODEL_ONLY, f"{name} checkpoints with MONAI's CheckpointSaver: add a kill case or list it"
            assert '"save_final": true' in config and "save_interval" not in config and "Resume" not in config, (
                f"{name} now saves periodic checkpoints or resumes: it needs a kill-during-checkpoint case in BUNDLES")


def _checkpoints(folder: Path) -> dict[int, Path]:
    return {int(m.group(1)): p for p in folder.iterdir() if (m := _CKPT.match(p.name))}


@pytest.mark.slow
@pytest.mark.parametrize("bundle", sorted(BUNDLES))
def test_sigkill_during_checkpoint_write_then_resume(bundle, tmp_path, demo_data, text_model) -> None:
    dest = tmp_path / bundle
    shutil.copytree(REPO / "bundles" / bundle, dest, ignore=shutil.ignore_patterns("models", "logs", "eval"))
    cmd, rerun_cmd, ckpt_dir = BUNDLES[bundle](dest, demo_data, text_model)
    watcher = CheckpointWriteWatcher(ckpt_dir)
    log = open(tmp_path / "killed.log", "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV, cwd=dest)
    try:
        temp_name = watcher.kill_during_write(proc, timeout=600)
    finally:
        proc.wait(timeout=120)
        log.close()
    assert temp_name is not None, "the run ended before a second checkpoint write:\n" + (tmp_path / "killed.log").read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    left = _checkpoints(ckpt_dir)
    assert left, "no complete checkpoint survived the kill"
    assert (ckpt_dir / temp_name).exists(), "the write had finished before the kill landed"
    for it, path in left.items():
        state = torch.load(path, map_location="cpu", weights_only=True)  # complete and loadable
        assert state["trainer"]["iteration"] == it
    previous = max(left)

    rerun = subprocess.run(rerun_cmd, capture_output=True, text=True, env=ENV, cwd=dest, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    out = rerun.stdout + rerun.stderr
    assert f"resumed from checkpoint_{previous}.pt" in out, out[-3000:]
    assert not (ckpt_dir / temp_name).exists(), "the dead write's temporary file was left behind"
    final = torch.load(_checkpoints(ckpt_dir)[max(_checkpoints(ckpt_dir))], map_location="cpu", weights_only=True)
    trainer = final["trainer"]
    assert trainer["iteration"] == trainer["max_epochs"] * trainer["epoch_length"] > previous  # training finished
