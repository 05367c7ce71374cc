"""Helpers of the bundle tests: run ``python -m monai.bundle`` on a copy of a bundle, and the tiny demo
data and text model a test run trains on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def bundle_env() -> dict[str, str]:
    return dict(os.environ, **ENV)


def run_bundle_cli(bundle: Path, *configs: str, ok: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run`` with ``configs`` (later ones override) in ``bundle``; asserts success unless ``ok=False``."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "[" + ",".join(f"'{c}'" for c in configs) + "]",
           "--bundle_root", str(bundle), "--logging_file", str(bundle / "configs" / "logging.conf")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=bundle_env(), timeout=timeout, cwd=bundle)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def radiograph_demo_data(out: Path, studies: int = 40, seed: int = 3) -> Path:
    """Demo radiograph studies with their VQA pairs (no CT, no masks)."""
    from monai_medunic.data.demo import generate_demo_dataset

    generate_demo_dataset(out, num_studies=studies, seed=seed, num_ct_studies=0, radiograph_truth=False)
    return out


def tiny_text_model(out: Path, data: Path) -> Path:
    """A 2-layer BERT with a WordPiece vocabulary of the training reports of ``data``."""
    from monai_medunic.data.datalist import manifest_datalist
    from monai_medunic.text.vocab import build_base_model

    texts = [r["report"] for r in manifest_datalist(data / "manifest.jsonl", split="train")]
    return Path(build_base_model(out, texts, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2, max_position_embeddings=64))
