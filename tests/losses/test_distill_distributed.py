"""Under torch.distributed (2 gloo processes) the distillation centres follow the *global* batch mean.

Each rank holds different teacher logits (and unequal row counts); after one update every rank's
centre equals the 1-process centre computed on the concatenated batch, while each rank's loss value is
that of its own rows. A rank without masked tokens still joins the all-reduce (no deadlock).
"""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from monai_medunic.losses import DINOLoss, MaskedPatchDistillationLoss

WORLD = 2
ROWS = (5, 3)
PATCH_ROWS = (4, 0)
K = 6

pytestmark = pytest.mark.distributed


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(77)
    n = sum(ROWS)
    return torch.randn(n, K, generator=g, dtype=torch.float64), torch.randn(n, K, generator=g, dtype=torch.float64)


def _rows(rank: int, sizes: tuple[int, ...]) -> slice:
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        s, t = _data()
        cls_loss, patch_loss = DINOLoss(K).double(), MaskedPatchDistillationLoss(K).double()
        sl = _rows(rank, ROWS)
        value = cls_loss(s[sl], t[sl])
        ps = _rows(rank, PATCH_ROWS)
        index = torch.arange(PATCH_ROWS[rank]) // 2
        patch_value = patch_loss(s[ps], t[ps], index)
        torch.save({"cls": value.detach(), "cls_center": cls_loss.center.clone(), "patch": patch_value.detach(),
                    "patch_center": patch_loss.center.clone()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_results() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD, join=True)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]


def test_cls_centre_is_the_global_batch_mean(rank_results: list[dict]) -> None:
    s, t = _data()
    single = DINOLoss(K).double()
    single(s, t)
    for r in rank_results:
        assert torch.allclose(r["cls_center"], single.center, atol=1e-12)
    # ... and not the local mean of either rank
    local = DINOLoss(K).double()
    local(s[_rows(0, ROWS)], t[_rows(0, ROWS)])
    assert not torch.allclose(rank_results[0]["cls_center"], local.center)


def test_loss_values_are_local(rank_results: list[dict]) -> None:
    s, t = _data()
    for rank, r in enumerate(rank_results):
        sl = _rows(rank, ROWS)
        assert torch.allclose(r["cls"], DINOLoss(K).double()(s[sl], t[sl]), atol=1e-12)


def test_patch_centre_with_an_empty_rank(rank_results: list[dict]) -> None:
    s, t = _data()
    single = MaskedPatchDistillationLoss(K).double()
    single(s[: PATCH_ROWS[0]], t[: PATCH_ROWS[0]], torch.arange(PATCH_ROWS[0]) // 2)
    for r in rank_results:
        assert torch.allclose(r["patch_center"], single.center, atol=1e-12)
    assert rank_results[1]["patch"].item() == 0.0
