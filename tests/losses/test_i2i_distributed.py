"""L_I2I under torch.distributed (2 gloo processes): the loss and gradients of the concatenated batch.

Each rank's loss is the mean over its own anchors against the gathered rows of every rank; so the
mean of the per-rank losses equals the 1-process loss on the concatenated batch, and with DDP's
gradient averaging (grad / world size) each rank's rows get the 1-process gradient.
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from monai_medunic.losses.simclr import I2ILoss

WORLD = 2
K_PER_RANK = (4, 4)
UNEQUAL = (5, 3)
D = 6

pytestmark = pytest.mark.distributed


def _losses() -> dict[str, torch.nn.Module]:
    return {"eq2": I2ILoss(temperature=0.2), "nt_xent": I2ILoss(temperature=0.2, intra_view_negatives=True)}


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    k = sum(K_PER_RANK)
    return torch.randn(k, D, generator=g, dtype=torch.float64), torch.randn(k, D, generator=g, dtype=torch.float64)


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        a, b = _data()
        results = {}
        for name, loss_fn in _losses().items():
            start = sum(K_PER_RANK[:rank])
            xa = a[start : start + K_PER_RANK[rank]].clone().requires_grad_(True)
            xb = b[start : start + K_PER_RANK[rank]].clone().requires_grad_(True)
            value = loss_fn(xa, xb)
            value.backward()
            results[name] = (value.detach(), xa.grad / WORLD, xb.grad / WORLD)
            start = sum(UNEQUAL[:rank])
            sl = slice(start, start + UNEQUAL[rank])
            results[f"{name}_unequal"] = loss_fn(a[sl], b[sl]).detach()
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD, join=True)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]


def _single(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    a, b = _data()
    a.requires_grad_(True)
    b.requires_grad_(True)
    value = _losses()[name](a, b)
    value.backward()
    return value.detach(), a.grad, b.grad


@pytest.mark.parametrize("name", ["eq2", "nt_xent"])
def test_i2i_value_and_gradients_equal_the_global_batch(rank_results: list[dict], name: str) -> None:
    ref, ga, gb = _single(name)
    values = torch.stack([r[name][0] for r in rank_results])
    assert torch.allclose(values.mean(), ref, atol=1e-8)
    assert torch.allclose(torch.cat([r[name][1] for r in rank_results]), ga, atol=1e-8)
    assert torch.allclose(torch.cat([r[name][2] for r in rank_results]), gb, atol=1e-8)
    # the negatives really come from both ranks
    a, b = _data()
    local_only = _losses()[name](a[: K_PER_RANK[0]], b[: K_PER_RANK[0]])
    assert not torch.allclose(values[0], local_only)


@pytest.mark.parametrize("name", ["eq2", "nt_xent"])
def test_i2i_unequal_local_batches(rank_results: list[dict], name: str) -> None:
    ref, _, _ = _single(name)
    values = torch.stack([r[f"{name}_unequal"] for r in rank_results])
    weights = torch.tensor(UNEQUAL, dtype=values.dtype) / sum(UNEQUAL)
    assert torch.allclose((values * weights).sum(), ref, atol=1e-8)
