"""A two-node launch on loopback: two real ``torchrun --nnodes=2 --nproc_per_node=1`` processes with c10d
rendezvous on 127.0.0.1 run the cxr_medunic_pretrain bundle's multi-GPU training (gloo on CPU).

Each "node" works in its own copy of the bundle, as separate machines would: rank 0 writes the trained
model into its copy, the other node writes nothing but its weights digest, and both end with the same
parameters (``RankWeightsDigest``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from tiny_bundles import MEDUNIC_TINY


REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "cxr_medunic_pretrain"
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}

TINY = dict(MEDUNIC_TINY, batch_size=4, max_epochs=1)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_bundle(root: Path, name: str, data: Path, text: Path, digests: Path) -> Path:
    dest = root / name
    shutil.copytree(BUNDLE, dest, ignore=shutil.ignore_patterns("models", "logs", "eval"))
    (dest / "configs" / "test_overrides.json").write_text(json.dumps(dict(TINY, dataset_dir=str(data), text_model_dir=str(text))))
    digest = {
        "train#digest": {"_target_": "monai_medunic.engines.handlers.RankWeightsDigest", "output_dir": str(digests),
                         "network": "@network_def"},
        "train#trainer#train_handlers": {"_target_": "monai_medunic.engines.distributed.handlers_for_rank",
                                         "handlers": "$@train#handlers + [@train#digest]"},
    }
    (dest / "configs" / "test_digest.json").write_text(json.dumps(digest))
    return dest


@pytest.mark.distributed
def test_two_nodes_c10d_rendezvous_on_loopback(tmp_path: Path) -> None:
    from monai_medunic.data.datalist import manifest_datalist
    from monai_medunic.data.demo import generate_demo_dataset
    from monai_medunic.text.vocab import build_base_model

    data = tmp_path / "data"
    generate_demo_dataset(data, num_studies=24, seed=3, num_ct_studies=0, radiograph_truth=False)
    reports = [r["report"] for r in manifest_datalist(data / "manifest.jsonl", split="train")]
    text = Path(build_base_model(tmp_path / "text", reports, vocab_size=300, hidden_size=32, num_layers=2, num_heads=2,
                                 max_position_embeddings=64))
    n_train = len(reports)
    assert n_train >= 2 * TINY["batch_size"], n_train  # at least one full batch on each rank
    digests = tmp_path / "digests"
    port, run_id = _free_port(), f"medunic-loopback-{uuid.uuid4().hex[:8]}"
    configs = "['configs/train.json','configs/multi_gpu_train.json','configs/test_overrides.json','configs/test_digest.json']"
    env = dict(os.environ, **ENV)
    nodes, procs = [], []
    try:
        for node_rank in (0, 1):
            bundle = _node_bundle(tmp_path, f"node{node_rank}", data, text, digests)
            log = open(tmp_path / f"node{node_rank}.log", "w")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", f"--node_rank={node_rank}",
                   "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id={run_id}",
                   "-m", "monai.bundle", "run", "--config_file", configs, "--bundle_root", str(bundle),
                   "--logging_file", str(bundle / "configs" / "logging.conf")]
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=bundle))
            nodes.append((bundle, log))
        deadline = time.monotonic() + 420
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for _, log in nodes:
            log.close()
    outputs = [(tmp_path / f"node{r}.log").read_text() for r in (0, 1)]
    for r, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"node {r} exited {p.returncode}:\n{out[-4000:]}"
    # each process saw a world of 2 gloo ranks; c10d hands out the ranks in the order the nodes join
    seen = [re.findall(r"rank (\d+)/(\d+) initialised \(gloo\)", out) for out in outputs]
    assert all(len(s) == 1 and s[0][1] == "2" for s in seen), seen
    ranks = [int(s[0][0]) for s in seen]
    assert sorted(ranks) == [0, 1]
    rank0_bundle, other_bundle = nodes[ranks.index(0)][0], nodes[ranks.index(1)][0]
    # rank 0 wrote the trained model and the history; the other node wrote neither
    assert (rank0_bundle / "models" / "model.pt").is_file()
    assert not (other_bundle / "models" / "model.pt").exists()
    assert not (other_bundle / "logs" / "history.json").exists()
    history = json.loads((rank0_bundle / "logs" / "history.json").read_text())
    # the DistributedSampler split the training set in two: each rank ran ceil(n/2) // batch iterations
    assert len(history["iterations"]) == ((n_train + 1) // 2) // TINY["batch_size"] >= 1
    # both ranks ended with identical parameters
    d0, d1 = ((digests / f"weights_rank{r}.sha256").read_text() for r in (0, 1))
    assert len(d0) == 64 and d0 == d1
