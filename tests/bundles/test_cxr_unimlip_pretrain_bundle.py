"""The cxr_unimlip_pretrain bundle through `python -m monai.bundle`: properties, a tiny real run (every
Uni-Mlip term logged, I2I and frozen BatchNorm statistics after the warm-up), resume, export + load,
verify_net_in_out of the trained network_def, the Med-UniC + Uni-Mlip example config, and the typed
error for a term the network cannot feed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from monai_medunic.pretrained import load_pretrained_bundle

from bundle_helpers import bundle_env, radiograph_demo_data, run_bundle_cli, tiny_text_model

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "cxr_unimlip_pretrain"
UNIMLIP_TERMS = ("itc", "itc_perturbed_image", "itc_perturbed_text", "i2i", "fused_mlm")

TINY = {
    "image_encoder": "resnet18",
    "image_size": 32,
    "embed_dim": 16,
    "max_length": 32,
    "batch_size": 8,
    "val_batch_size": 16,
    "num_workers": 0,
    "max_epochs": 2,
    "bn_warmup_epochs": 1,
    "learning_rate": 1e-3,
    "warmup_fraction": 0.5,
    "augment_translate_pixels": 2,
    "fusion_layers": 2,
    "precision": "fp32",
    "channels_last": False,
    "text_pooling": "mean",
    "resume": True,
}


_run = run_bundle_cli


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory) -> Path:
    return radiograph_demo_data(tmp_path_factory.mktemp("demo") / "data")


@pytest.fixture(scope="module")
def text_model(tmp_path_factory, demo_data) -> Path:
    return tiny_text_model(tmp_path_factory.mktemp("text") / "base", demo_data)


@pytest.fixture(scope="module")
def n_train(demo_data) -> int:
    from monai_medunic.data.datalist import manifest_datalist

    return len(manifest_datalist(demo_data / "manifest.jsonl", split="train"))


def _bundle_copy(tmp: Path, name: str, demo_data: Path, text_model: Path, **extra) -> Path:
    dest = tmp / name
    shutil.copytree(BUNDLE, dest, ignore=shutil.ignore_patterns("models", "logs", "eval"))
    (dest / "configs" / "test_overrides.json").write_text(json.dumps(dict(TINY, dataset_dir=str(demo_data), text_model_dir=str(text_model), **extra)))
    return dest


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_data, text_model) -> tuple[Path, subprocess.CompletedProcess]:
    bundle = _bundle_copy(tmp_path_factory.mktemp("train"), "single", demo_data, text_model)
    return bundle, _run(bundle, "configs/train.json", "configs/test_overrides.json")


def test_metadata_and_files() -> None:
    meta = json.loads((BUNDLE / "configs" / "metadata.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version", "task",
                "description", "authors", "copyright", "network_data_format", "intended_use", "references"):
        assert meta.get(key), key
    assert meta["version"] in meta["changelog"] and "Uni-Mlip" in " ".join(meta["references"])
    for f in ("train.json", "multi_gpu_train.json", "evaluate.json", "inference.json", "logging.conf", "medunic_plus_unimlip.json"):
        assert (BUNDLE / "configs" / f).is_file(), f
    assert (BUNDLE / "docs" / "README.md").is_file() and (BUNDLE / "LICENSE").is_file()
    assert not list(BUNDLE.rglob("*.py"))
    train = json.loads((BUNDLE / "configs" / "train.json").read_text())
    assert train["network_def"]["_target_"] == "monai_medunic.networks.unimlip.UniMlip"
    assert set(train["objective_terms"]) == set(UNIMLIP_TERMS)
    assert (train["lambda_cm"], train["lambda_um"], train["lambda_fm"]) == pytest.approx((0.5 / 3, 0.5, 0.5))


def test_properties_resolve_for_every_config(trained, n_train: int) -> None:
    """MONAI's TrainProperties / InferProperties on train, multi-GPU, the Med-UniC mix, and inference."""
    from monai.bundle import ConfigWorkflow

    bundle, _ = trained
    for configs, kind in ((["train.json", "test_overrides.json"], "train"),
                          (["train.json", "medunic_plus_unimlip.json", "test_overrides.json"], "train"),
                          (["train.json", "multi_gpu_train.json", "test_overrides.json"], None),
                          (["inference.json", "test_overrides.json"], "infer")):
        wf = ConfigWorkflow(config_file=[str(bundle / "configs" / c) for c in configs], meta_file=str(bundle / "configs" / "metadata.json"),
                            logging_file=False, workflow_type=kind, bundle_root=str(bundle))
        wf.initialize()
        if kind is None:
            assert wf.parser["network#find_unused_parameters"] is True  # the warm-up leaves the I2I head unused
            continue
        assert wf.check_properties() == [], configs
        if kind == "train":
            assert len(wf.train_dataset_data) == n_train
        else:
            assert type(wf.network_def.model).__name__ == "UniMlip" and wf.network_def.model.embed_dim == 16


def test_tiny_run_logs_every_term_and_switches_i2i_on_with_the_bn_freeze(trained, n_train: int) -> None:
    bundle, proc = trained
    history = json.loads((bundle / "logs" / "history.json").read_text())
    its = history["iterations"]
    per_epoch = n_train // 8
    assert len(its) == 2 * per_epoch
    first, second = its[:per_epoch], its[per_epoch:]
    assert all("loss_i2i" not in r for r in first) and all("loss_i2i" in r for r in second)
    for r in second:
        assert {f"loss_{t}" for t in UNIMLIP_TERMS} <= set(r)
        total = sum(w * r[f"loss_{t}"] for t, w in zip(UNIMLIP_TERMS, (0.5 / 3, 0.5 / 3, 0.5 / 3, 0.5, 0.5)))
        assert r["loss"] == pytest.approx(total, rel=1e-4)
    log = proc.stdout + proc.stderr
    assert "switched on at iteration" in log and "froze the running statistics" in log and "of 'image_encoder'" in log
    state = torch.load(sorted((bundle / "models" / "checkpoints").glob("checkpoint_*.pt"))[-1], weights_only=True)
    assert "itc.log_logit_scale" in state["objective"]  # the learnable tau is checkpointed ...
    assert float(state["objective"]["itc.log_logit_scale"]) != pytest.approx(float(torch.log(torch.tensor(1 / 0.07))))  # ... and trained
    loaded = load_pretrained_bundle(bundle)
    assert loaded.method == "unimlip" and loaded.image_size == 32 and type(loaded.model).__name__ == "UniMlip"
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        emb = loaded.network(x)
    assert emb.shape == (2, 16) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


def test_resume_continues_from_the_checkpoint(trained, tmp_path: Path, n_train: int) -> None:
    src, _ = trained
    bundle = tmp_path / "resumed"
    shutil.copytree(src, bundle)
    overrides = json.loads((bundle / "configs" / "test_overrides.json").read_text())
    overrides["max_epochs"] = 3
    (bundle / "configs" / "test_overrides.json").write_text(json.dumps(overrides))
    proc = _run(bundle, "configs/train.json", "configs/test_overrides.json")
    log = proc.stdout + proc.stderr
    assert "resumed from checkpoint_" in log
    assert "switched on at iteration" in log and "froze the running statistics" in log  # the warm-up state follows the engine
    history = json.loads((bundle / "logs" / "history.json").read_text())
    epochs = [r["epoch"] for r in history["iterations"]]
    assert epochs.count(3) == n_train // 8 and max(epochs) == 3
    assert all("loss_i2i" in r for r in history["iterations"] if r["epoch"] == 3)


def test_verify_net_in_out_on_the_trained_network_def(trained) -> None:
    bundle, _ = trained
    verify = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file", str(bundle / "configs" / "metadata.json"),
         "--config_file", str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle)],
        capture_output=True, text=True, env=bundle_env(), timeout=300,
    )
    assert verify.returncode == 0, verify.stdout[-2000:] + verify.stderr[-2000:]
    assert "data shape of network is verified with no error" in verify.stdout + verify.stderr
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert inference["network_def"]["model"]["_target_"] == "monai_medunic.networks.unimlip.UniMlip"
    assert inference["pretrained"]["method"] == "unimlip"


def test_medunic_plus_unimlip_example_trains_every_term_together(tmp_path: Path, demo_data: Path, text_model: Path) -> None:
    bundle = _bundle_copy(tmp_path, "mix", demo_data, text_model, max_epochs=1, bn_warmup_epochs=0, ctr_dim=24)
    proc = _run(bundle, "configs/train.json", "configs/medunic_plus_unimlip.json", "configs/test_overrides.json")
    history = json.loads((bundle / "logs" / "history.json").read_text())
    for r in history["iterations"]:
        assert {"loss_cvl", "loss_ssv", "loss_ctr", "loss_itc_perturbed_image", "loss_itc_perturbed_text", "loss_i2i"} <= set(r)
        assert "loss_fused_mlm" not in r
    assert "froze the running statistics" in proc.stdout + proc.stderr


def test_a_term_the_network_cannot_feed_fails_before_training(tmp_path: Path, demo_data: Path, text_model: Path) -> None:
    bundle = _bundle_copy(tmp_path, "nofusion", demo_data, text_model, **{"network_def#fused_mlm": False})
    proc = _run(bundle, "configs/train.json", "configs/test_overrides.json", ok=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "objective term 'fused_mlm' reads 'mlm_logits'" in out and "fusion module" in out
    assert "Iter: 1/" not in out  # no step ran
