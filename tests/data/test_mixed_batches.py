"""Mixed 2D + 3D batches (UniMedI): every batch holds b2 radiographs then b3 volumes, no record twice in a
batch, the larger set seen once per epoch, the smaller one cycled and reshuffled, DDP shards of equal
length, and a collate that keeps the row order UniMedI.forward expects."""

from __future__ import annotations

import pytest
import torch
from monai.data import DataLoader, Dataset
from torch.utils.data import ConcatDataset

from monai_medunic.data.mixed import MixedDimensionBatchSampler, collate_mixed_dimensions
from monai_medunic.errors import ConfigurationError, DataError


def test_batches_hold_both_dimensions_without_repeats() -> None:
    sampler = MixedDimensionBatchSampler((10, 3), (4, 2), shuffle=True, seed=1)
    assert len(sampler) == 2  # max(10 // 4, 3 // 2)
    batches = list(sampler)
    assert len(batches) == 2
    for b in batches:
        two, three = b[:4], b[4:]
        assert all(0 <= i < 10 for i in two) and all(10 <= i < 13 for i in three)
        assert len(set(two)) == 4 and len(set(three)) == 2
    assert len({i for b in batches for i in b[:4]}) == 8  # an epoch's radiographs are distinct


def test_smaller_set_cycles_and_epochs_reshuffle() -> None:
    sampler = MixedDimensionBatchSampler((40, 5), (4, 2), seed=0)
    epoch0 = list(sampler)
    assert len(epoch0) == 10
    volumes = [tuple(b[4:]) for b in epoch0]
    assert all(len(set(v)) == 2 for v in volumes)  # a pass's last odd volume is dropped, never repeated in a batch
    counts = torch.bincount(torch.tensor([i - 40 for v in volumes for i in v]), minlength=5)
    assert counts.min() >= 2 and counts.max() <= 6  # cycled: every volume comes back within the epoch
    epoch1 = list(sampler)  # the epoch advanced: another order
    assert epoch1 != epoch0
    sampler.set_epoch(0)
    assert list(sampler) == epoch0  # seeded by (seed, epoch)
    fixed = MixedDimensionBatchSampler((8, 4), (4, 2), shuffle=False)
    assert list(fixed) == [[0, 1, 2, 3, 8, 9], [4, 5, 6, 7, 10, 11]]


def test_ddp_shards_have_equal_length_and_cover_the_data() -> None:
    ranks = [MixedDimensionBatchSampler((11, 6), (2, 1), seed=3, num_replicas=2, rank=r) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 3  # ceil(11 / 2) // 2
    seen = [list(s) for s in ranks]
    assert len(seen[0]) == len(seen[1]) == 3
    volumes = [set(i for b in s for i in b[2:]) for s in seen]
    assert volumes[0].isdisjoint(volumes[1])  # 6 volumes, 3 per rank: disjoint shards
    radiographs = [set(i for b in s for i in b[:2]) for s in seen]
    assert radiographs[0] | radiographs[1] == set(range(11))  # padded to 12 by repetition, as DistributedSampler does


def test_one_dimension_only_and_bad_sizes() -> None:
    only_2d = MixedDimensionBatchSampler((6, 0), (3, 0))
    assert [len(b) for b in only_2d] == [3, 3]
    with pytest.raises(ConfigurationError, match="at least one"):
        MixedDimensionBatchSampler((6, 2), (0, 0))
    with pytest.raises(DataError, match="3D records.*batch of 4"):
        len(MixedDimensionBatchSampler((6, 3), (2, 4)))


def _items(n2: int, n3: int, length: int = 6, length_3d: int | None = None) -> tuple[list[dict], list[dict]]:
    two = [{"image": torch.full((1, 4, 4), float(i)), "input_ids": torch.full((length,), i), "id": f"r{i}"} for i in range(n2)]
    three = [{"volume": torch.full((1, 2, 4, 4), 100.0 + i), "input_ids": torch.full((length_3d or length,), 100 + i), "id": f"v{i}"}
             for i in range(n3)]
    return two, three


def test_collate_through_a_dataloader_keeps_the_row_order() -> None:
    two, three = _items(6, 4)
    dataset = ConcatDataset([Dataset(two), Dataset(three)])
    loader = DataLoader(dataset, batch_sampler=MixedDimensionBatchSampler((6, 4), (3, 2), seed=0), collate_fn=collate_mixed_dimensions)
    batches = list(loader)
    assert len(batches) == 2
    b = batches[0]
    assert b["image"].shape == (3, 1, 4, 4) and b["volume"].shape == (2, 1, 2, 4, 4)
    assert b["input_ids"].shape == (5, 6)
    # rows: radiographs first, then volumes, each row's report next to its image
    assert b["input_ids"][:3, 0].tolist() == b["image"][:, 0, 0, 0].long().tolist()
    assert b["input_ids"][3:, 0].tolist() == b["volume"][:, 0, 0, 0, 0].long().tolist()
    assert b["id"][:3] == [f"r{int(v)}" for v in b["image"][:, 0, 0, 0]] and b["id"][3:][0].startswith("v")


def test_collate_names_the_key_that_does_not_concatenate() -> None:
    two, three = _items(2, 2, length=6, length_3d=8)
    with pytest.raises(DataError, match="input_ids"):
        collate_mixed_dimensions(two + three)
    only = collate_mixed_dimensions(_items(2, 0)[0])
    assert only["image"].shape == (2, 1, 4, 4) and "volume" not in only
