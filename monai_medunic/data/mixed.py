"""Batches that carry 2D radiographs and 3D volumes together, for unified 2D + 3D pre-training (UniMedI).

UniMedI (``shared/papers/unimedi.txt``, Sec. 3.1 and 3.3) trains one vision encoder on 2D X-rays and
3D CT volumes, "inputting both '2D' and 3D images in one forward pass". Here every training batch holds
both: ``batch_sizes[0]`` radiograph records and ``batch_sizes[1]`` volume records, so that

* the CLIP loss contrasts every report against radiographs *and* volumes (the negatives of a 2D row
  include the volumes of the batch and the reverse), which is what pulls both into one space;
* every step uses both tokenizers and the slices of the volumes, so DDP runs without
  ``find_unused_parameters`` (alternating 2D and 3D batches would leave one tokenizer idle per step);
* the step's cost is steady (no slow 3D-only batches between fast 2D ones).

The pieces, all plain PyTorch data-loading parts that a bundle config wires into MONAI's
``DataLoader``:

* the dataset is ``torch.utils.data.ConcatDataset([dataset_2d, dataset_3d])`` (each with its own MONAI
  transform chain): indices ``[0, n2)`` are radiographs, ``[n2, n2 + n3)`` volumes;
* :class:`MixedDimensionBatchSampler` yields index lists of ``b2`` radiographs then ``b3`` volumes. An
  epoch is the larger of ``n2 // b2`` and ``n3 // b3`` batches (so each record of the bigger set is
  seen once); the smaller set is cycled, reshuffled at each pass, a pass's last incomplete group being
  dropped, so a batch never holds the same record twice (no duplicated positives in the contrastive
  loss). Shuffling is seeded by ``seed`` and the epoch; under ``torch.distributed`` each rank takes
  its own shard of both sets (DistributedSampler's padding: the shards are equal, every rank runs the
  same number of batches);
* :func:`collate_mixed_dimensions` collates the 2D items and the 3D items apart (MONAI's
  ``list_data_collate``) and merges them: ``image`` ``(b2, C, H, W)``, ``volume`` ``(b3, C, D, H, W)``,
  and the keys both have (``input_ids``, ``attention_mask``, ``id`` ...) concatenated, radiographs
  first: the row order of ``UniMedI.forward(images, volumes, input_ids)``.

A batch size of 0 trains one dimension only (that set may then be empty).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler

from monai_medunic.errors import ConfigurationError, DataError

__all__ = ["MixedDimensionBatchSampler", "collate_mixed_dimensions", "VOLUME_KEY", "IMAGE_KEY"]

IMAGE_KEY = "image"
VOLUME_KEY = "volume"


def _world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class MixedDimensionBatchSampler(Sampler[list[int]]):
    """Index batches of ``batch_sizes[0]`` radiographs and ``batch_sizes[1]`` volumes over a
    ``ConcatDataset([dataset_2d, dataset_3d])`` (module docstring).

    Args:
        sizes: ``(n2, n3)``, the lengths of the 2D and the 3D dataset.
        batch_sizes: ``(b2, b3)`` records of each per batch (per rank under DDP); one may be 0.
        shuffle: reshuffle each set at each pass (seeded by ``seed``, the epoch and the pass).
        seed: the shuffling seed (the same on every rank).
        num_replicas, rank: the DDP world (default: read from ``torch.distributed`` when the sampler is used).

    The epoch advances by one at each ``__iter__`` (or is set with :meth:`set_epoch`).

    Raises:
        ConfigurationError: negative sizes, both batch sizes 0.
        DataError: a dimension with a positive batch size has fewer records (per rank) than its batch size.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        batch_sizes: Sequence[int],
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        if len(sizes) != 2 or len(batch_sizes) != 2:
            raise ConfigurationError(f"sizes and batch_sizes must be (2D, 3D) pairs, got {sizes} and {batch_sizes}")
        self.sizes = tuple(int(s) for s in sizes)
        self.batch_sizes = tuple(int(b) for b in batch_sizes)
        if min(self.sizes) < 0 or min(self.batch_sizes) < 0:
            raise ConfigurationError(f"sizes and batch sizes must be >= 0, got {self.sizes} and {self.batch_sizes}")
        if not any(self.batch_sizes):
            raise ConfigurationError("at least one of the 2D / 3D batch sizes must be > 0")
        self.shuffle, self.seed = bool(shuffle), int(seed)
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0

    def _world(self) -> tuple[int, int]:
        rank, world = _world()
        return (self.rank if self.rank is not None else rank), (self.num_replicas if self.num_replicas is not None else world)

    def _per_rank(self, n: int, world: int) -> int:
        return math.ceil(n / world) if n else 0

    def __len__(self) -> int:
        _, world = self._world()
        counts = []
        for what, n, b in zip(("2D", "3D"), self.sizes, self.batch_sizes):
            if b == 0:
                continue
            per_rank = self._per_rank(n, world)
            if per_rank < b:
                raise DataError(f"{n} {what} records ({per_rank} per rank over {world} rank(s)) cannot fill a batch of {b}; "
                                f"lower the {what} batch size or add {what} records", field=f"batch_size_{what.lower()}")
            counts.append(per_rank // b)
        return max(counts)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _shard(self, n: int, offset: int, generator: torch.Generator, rank: int, world: int) -> list[int]:
        """One pass over a set: shuffled (or in order), padded to a multiple of ``world``, this rank's share."""
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else list(range(n))
        total = self._per_rank(n, world) * world
        order += order[: total - n]  # DistributedSampler's padding by repetition
        return [offset + i for i in order[rank:total:world]]

    def _stream(self, which: int, batches: int, rank: int, world: int) -> list[list[int]]:
        n, b = self.sizes[which], self.batch_sizes[which]
        if b == 0:
            return [[] for _ in range(batches)]
        offset = self.sizes[0] if which == 1 else 0
        groups: list[list[int]] = []
        npass = 0
        while len(groups) < batches:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch * 1_009 + npass * 2 + which)
            shard = self._shard(n, offset, g, rank, world)
            groups += [shard[i : i + b] for i in range(0, len(shard) - b + 1, b)]  # a pass's last partial group is dropped
            npass += 1
        return groups[:batches]

    def __iter__(self) -> Iterator[list[int]]:
        rank, world = self._world()
        batches = len(self)
        two, three = self._stream(0, batches, rank, world), self._stream(1, batches, rank, world)
        self.epoch += 1
        for a, b in zip(two, three):
            yield a + b


def _collate(items: list[Any]) -> dict:
    from monai.data import list_data_collate

    return dict(list_data_collate(items))


def collate_mixed_dimensions(items: Sequence[Mapping[str, Any]], volume_key: str = VOLUME_KEY) -> dict[str, Any]:
    """Collate a mixed batch: the items with ``volume_key`` (3D) apart from the others (2D), then merge.

    Keys of both groups are concatenated along the first axis (tensors) or joined (lists), 2D rows
    first; keys of one group only (``image``, ``volume``) keep that group's rows.

    Raises:
        DataError: a key common to both groups whose values cannot be concatenated (e.g. token ids
            padded to different lengths), naming the key.
    """
    items = list(items)
    flat: list[Mapping[str, Any]] = []
    for it in items:  # a transform that returns a list of samples (crops) gives a list per item
        flat.extend(it if isinstance(it, (list, tuple)) else [it])
    three = [it for it in flat if volume_key in it]
    two = [it for it in flat if volume_key not in it]
    groups = [_collate(g) for g in (two, three) if g]
    if len(groups) == 1:
        return groups[0]
    a, b = groups
    out: dict[str, Any] = {}
    for key in dict.fromkeys([*a, *b]):
        if key in a and key in b:
            va, vb = a[key], b[key]
            if isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor):
                if va.shape[1:] != vb.shape[1:]:
                    raise DataError(f"the 2D and 3D rows of a batch have '{key}' of shapes {tuple(va.shape[1:])} and "
                                    f"{tuple(vb.shape[1:])}; pad both to one length (e.g. the same max_length)", field=key)
                out[key] = torch.cat([va.as_subclass(torch.Tensor), vb.as_subclass(torch.Tensor)], dim=0)
            else:
                out[key] = list(va) + list(vb)
        else:
            out[key] = a[key] if key in a else b[key]
    return out
