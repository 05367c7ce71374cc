"""Frozen BatchNorm statistics under DDP (2 gloo processes): after the warm-up every rank holds rank 0's
statistics, bitwise unchanged over the following steps, while the (synchronised) affine weights train."""

from __future__ import annotations

import os
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ignite.engine import Engine, Events
from monai.networks.nets import ResNet
from torch import nn

from monai_medunic.engines.batchnorm import FreezeBatchNormStatistics, batchnorm_layers
from monai_medunic.losses.simclr import I2ILoss
from monai_medunic.networks import ProjectionHead

WORLD = 2
WARMUP = 2
ITERATIONS = 6
MODES = ("running", "batch")

pytestmark = pytest.mark.distributed


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = ResNet("basic", [1, 1, 1, 1], [8, 16, 32, 64], spatial_dims=2, n_input_channels=1, feed_forward=False)
        self.image_projection = ProjectionHead(64, 16, 32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.image_projection(self.image_encoder(x))


def _run(rank: int, mode: str) -> list[dict]:
    torch.manual_seed(0)  # same initial weights on both ranks (DDP broadcasts them anyway)
    net = nn.parallel.DistributedDataParallel(_Net())
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    loss_fn = I2ILoss()
    g = torch.Generator().manual_seed(100 + rank)  # each rank its own shard
    data = [torch.rand(4, 1, 32, 32, generator=g) for _ in range(ITERATIONS)]

    def step(engine: Engine, x: torch.Tensor) -> None:
        net.train()
        opt.zero_grad()
        emb = net(torch.cat([x.flip(-1) * 1.8, (x + 0.4).clamp(max=1.0)]))
        loss_fn(emb[: len(x)], emb[len(x) :]).backward()
        opt.step()

    engine = Engine(step)
    FreezeBatchNormStatistics(net, warmup_iterations=WARMUP, normalize_with=mode).attach(engine)
    history: list[dict] = []
    inner = net.module

    def snap(e: Engine) -> None:
        history.append({
            "stats": FreezeBatchNormStatistics.statistics(inner),
            "weights": {n: m.weight.detach().clone() for n, m in batchnorm_layers(inner) if m.weight is not None},
        })

    engine.add_event_handler(Events.ITERATION_COMPLETED, snap)
    engine.run(data, max_epochs=1)
    return history


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.save({mode: _run(rank, mode) for mode in MODES}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def rank_histories() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(os.path.join(tmp, "init"), tmp), nprocs=WORLD, join=True)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(WORLD)]


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("mode", MODES)
def test_ddp_statistics_frozen_to_rank0_and_weights_train(rank_histories: list[dict], mode: str) -> None:
    r0, r1 = rank_histories[0][mode], rank_histories[1][mode]
    assert len(r0) == len(r1) == ITERATIONS
    # during the warm-up each rank updates its statistics from its own shard
    assert not _equal(r0[0]["stats"], r1[0]["stats"])
    frozen = r0[WARMUP - 1]["stats"]  # rank 0's statistics when the warm-up ends
    for i in range(WARMUP, ITERATIONS):
        # DDP broadcasts rank 0's buffers at the first frozen forward; nothing changes them after
        assert _equal(r0[i]["stats"], frozen), f"rank 0, iteration {i + 1}"
        assert _equal(r1[i]["stats"], frozen), f"rank 1, iteration {i + 1}"
        # the affine weights train, identically on both ranks (DDP gradient averaging)
        assert _equal(r0[i]["weights"], r1[i]["weights"])
        assert all(not torch.equal(r0[i]["weights"][k], r0[i - 1]["weights"][k]) for k in r0[i]["weights"])
