"""Under torch.distributed (2 gloo processes on CPU) the losses see the global batch.

For CVL and SSV the mean of the per-rank losses equals the 1-process loss on the concatenated batch;
CTR's value on every rank equals it. With DDP's gradient averaging (grad / world_size), the gradient
of each rank's rows equals the 1-process gradient of those rows.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from monai_medunic.losses import CTRLoss, CVLLoss, MedUniCLoss, SSVLoss

WORLD = 2
K_PER_RANK = (4, 4)
UNEQUAL = (5, 3)  # unequal local batches are allowed too (checked on values)
D = 6

pytestmark = pytest.mark.distributed


def _losses() -> dict[str, torch.nn.Module]:
    return {"cvl": CVLLoss(), "ssv": SSVLoss(), "ssv_sym": SSVLoss(symmetric=True), "ctr": CTRLoss()}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    k = sum(K_PER_RANK)
    return torch.randn(k, D, generator=g, dtype=torch.float64), torch.randn(k, D, generator=g, dtype=torch.float64)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        a, b = _data()
        start = sum(K_PER_RANK[:rank])
        sl = slice(start, start + K_PER_RANK[rank])
        results = {}
        for name, loss_fn in _losses().items():
            xa, xb = a[sl].clone().requires_grad_(True), b[sl].clone().requires_grad_(True)
            value = loss_fn(xa, xb)
            value.backward()
            results[name] = (value.detach(), xa.grad.detach() / WORLD, xb.grad.detach() / WORLD)
        # the composite, through a dict of outputs
        outs = {n: a[sl].clone() for n in ("image_emb", "text_emb", "image_aug_emb", "ctr_a", "ctr_b")}
        outs["text_emb"] = b[sl].clone()
        outs["image_aug_emb"] = b[sl].clone()
        outs["ctr_b"] = b[sl].clone()
        start_u = sum(UNEQUAL[:rank])
        xa, xb = a[start_u : start_u + UNEQUAL[rank]], b[start_u : start_u + UNEQUAL[rank]]
        results["cvl_unequal"] = CVLLoss()(xa, xb).detach()
        results["medunic"] = {k: v.detach() for k, v in MedUniCLoss()(outs).items()}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_worker, args=(init_file, tmp), nprocs=WORLD, join=True)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]


def _single(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a, b = _data()
    a.requires_grad_(True)
    b.requires_grad_(True)
    value = _losses()[name](a, b)
    value.backward()
    return value.detach(), a.grad, b.grad


@pytest.mark.parametrize("name", ["cvl", "ssv", "ssv_sym"])
def test_contrastive_loss_equals_global_batch_loss(rank_results: list[dict], name: str) -> None:
    ref, ga, gb = _single(name)
    # each rank's loss is the mean over its own rows; weight ranks by their row counts
    values = torch.stack([r[name][0] for r in rank_results])
    assert torch.allclose(values.mean(), ref, atol=1e-8)
    # negatives span both ranks: a rank's value differs from the loss of its rows alone
    a, b = _data()
    local_only = _losses()[name](a[: K_PER_RANK[0]], b[: K_PER_RANK[0]])
    assert not torch.allclose(values[0], local_only)


def test_contrastive_gradients_match_single_process(rank_results: list[dict]) -> None:
    for name in ("cvl", "ssv"):
        ref, ga, gb = _single(name)
        grads_a = torch.cat([r[name][1] for r in rank_results])
        grads_b = torch.cat([r[name][2] for r in rank_results])
        assert torch.allclose(grads_a, ga, atol=1e-8)
        assert torch.allclose(grads_b, gb, atol=1e-8)


def test_unequal_local_batches_gather_correctly(rank_results: list[dict]) -> None:
    ref, _, _ = _single("cvl")
    values = torch.stack([r["cvl_unequal"] for r in rank_results])
    weights = torch.tensor(UNEQUAL, dtype=values.dtype) / sum(UNEQUAL)
    assert torch.allclose((values * weights).sum(), ref, atol=1e-8)


def test_ctr_uses_global_batch_statistics(rank_results: list[dict]) -> None:
    ref, ga, gb = _single("ctr")
    for r in rank_results:
        assert torch.allclose(r["ctr"][0], ref, atol=1e-8)
    assert torch.allclose(torch.cat([r["ctr"][1] for r in rank_results]), ga, atol=1e-8)
    assert torch.allclose(torch.cat([r["ctr"][2] for r in rank_results]), gb, atol=1e-8)


def test_composite_loss_terms_under_ddp(rank_results: list[dict]) -> None:
    ctr_values = [float(r["medunic"]["ctr"]) for r in rank_results]
    assert ctr_values[0] == pytest.approx(ctr_values[1], abs=1e-8)
    for r in rank_results:
        assert torch.allclose(r["medunic"]["loss"], r["medunic"]["cvl"] + r["medunic"]["ssv"] + r["medunic"]["ctr"])
