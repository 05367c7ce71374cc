"""Uni-Mlip's gathered losses under torch.distributed (2 gloo processes): ITC, the two perturbed ITC
terms (one shared, learnable tau) and I2I give the value and the gradients of the concatenated batch,
and the training step's all-reduce of the objective's parameters gives every rank the 1-process tau step.

The losses compute in float32 (autocast off), so the comparisons allow float32 rounding. The fused
MLM (Eq. 3) is not gathered: each rank averages the cross-entropy over its own masked tokens
(as BERT does), so it is left out here (weight 0)."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from monai_medunic.engines.step import TrainStep
from monai_medunic.losses import UniMlipLoss

WORLD = 2
K = (4, 4)
D = 6
KEYS = ("image_emb", "text_emb", "image_emb_perturbed", "text_emb_perturbed", "image_strong_a_emb", "image_strong_b_emb")
TERMS = ("itc", "itc_perturbed_image", "itc_perturbed_text", "i2i")

pytestmark = pytest.mark.distributed


def _objective() -> UniMlipLoss:
    return UniMlipLoss(lambda_fm=0.0, temperature=0.2).double()


def _data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {k: torch.randn(sum(K), D, generator=g, dtype=torch.float64) for k in KEYS}


def _step_tau(objective: UniMlipLoss, loss: torch.Tensor) -> float:
    opt = torch.optim.SGD(objective.parameters(), lr=1.0)
    opt.zero_grad()
    loss.backward()
    TrainStep({"x": "x"}, "fp32", grad_clip_norm=None)._optimizer_step(opt, objective)  # all-reduces under DDP
    return float(objective.itc.log_logit_scale.detach())


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        data = _data()
        start = sum(K[:rank])
        local = {k: v[start : start + K[rank]].clone().requires_grad_(True) for k, v in data.items()}
        objective = _objective()
        out = objective(local)
        values = {t: out[t].detach() for t in TERMS}
        values["loss"] = out["loss"].detach()
        tau_log = _step_tau(objective, out["loss"])
        grads = {k: local[k].grad / WORLD for k in KEYS}  # DDP averages the gradients of the network's outputs
        torch.save({"values": values, "grads": grads, "log_scale": tau_log}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD, join=True)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]


def _single() -> tuple[dict, dict, float]:
    data = {k: v.clone().requires_grad_(True) for k, v in _data().items()}
    objective = _objective()
    out = objective(data)
    values = {t: out[t].detach() for t in (*TERMS, "loss")}
    log_scale = _step_tau(objective, out["loss"])
    return values, {k: data[k].grad for k in KEYS}, log_scale


@pytest.mark.parametrize("term", [*TERMS, "loss"])
def test_each_gathered_term_equals_the_global_batch(rank_results: list[dict], term: str) -> None:
    ref, _, _ = _single()
    per_rank = torch.stack([r["values"][term] for r in rank_results])
    assert torch.allclose(per_rank.mean(), ref[term], atol=1e-6)
    assert not torch.allclose(per_rank[0], per_rank[1])  # each rank scores its own anchors


def test_gradients_of_every_embedding_equal_the_global_batch(rank_results: list[dict]) -> None:
    _, grads, _ = _single()
    for k in KEYS:
        assert torch.allclose(torch.cat([r["grads"][k] for r in rank_results]), grads[k], atol=1e-6), k


def test_the_shared_temperature_takes_the_one_process_step_on_every_rank(rank_results: list[dict]) -> None:
    _, _, log_scale = _single()
    assert rank_results[0]["log_scale"] == pytest.approx(log_scale, abs=1e-6)
    assert rank_results[1]["log_scale"] == pytest.approx(log_scale, abs=1e-6)
    assert log_scale != pytest.approx(float(torch.log(torch.tensor(1 / 0.2))))
