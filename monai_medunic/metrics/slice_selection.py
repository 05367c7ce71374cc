"""How well slice selection finds the slices a report talks about: precision@k against the true lesion slices.

UniMedI (``shared/papers/unimedi.txt``, Sec. 3.2 and Fig. 5) selects, by the CLS token's attention, the
``k`` slices of a CT volume most relevant to its report, and shows pictures of the lesion slices it
found. With the demo CT studies the lesion slices are known (``lesion_slices`` in the manifest), so the
selection can be scored:

* the network ranks *token slabs* (``patch_depth`` voxel slices of the resized volume each; UniMedI
  Eq. 2 averages over a slab's tokens), so the truth is mapped to slabs first
  (:func:`lesion_slabs`): a slab is a lesion slab when it covers any input slice that holds a lesion;
* **precision@k** of a volume is the fraction of its ``k`` selected slabs that are lesion slabs;
  volumes without any lesion are left out (nothing to find); the mean over volumes is reported;
* two baselines in the same units: the **middle** ``k`` slabs
  (:func:`~monai_medunic.transforms.slice_selection.middle_slices`) and **random** slabs, whose
  expected precision is exactly the volume's share of lesion slabs ``|T| / S`` (computed, not
  sampled, so it carries no sampling noise);
* **hit@k**: the fraction of volumes where at least one selected slab is a lesion slab.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from monai_medunic.errors import MetricInputError
from monai_medunic.transforms.slice_selection import middle_slices

__all__ = ["lesion_slabs", "precision_at_k", "slice_selection_scores"]


def lesion_slabs(
    lesion_slices: Mapping[str, Sequence[int]] | Sequence[int],
    input_depth: int,
    network_depth: int,
    patch_depth: int,
    findings: Sequence[str] | None = None,
) -> set[int]:
    """The token slabs that cover a lesion slice.

    An input slice ``z`` (of ``input_depth``) lands on the network slices ``j`` with
    ``[j, j + 1) * Z / D`` overlapping ``[z, z + 1)`` (the area resize of
    :func:`~monai_medunic.transforms.pipelines.volume_input_transform`), and slice ``j`` in slab ``j // patch_depth``.

    Args:
        lesion_slices: ``{finding: [slice, ...]}`` (the manifest's ``lesion_slices``) or a list of slices.
        input_depth: ``Z``, slices of the loaded volume. network_depth: ``D`` of the resized volume.
        patch_depth: voxel slices per token slab.
        findings: count only these findings (default: all).
    """
    if min(input_depth, network_depth, patch_depth) < 1:
        raise MetricInputError(f"depths must be >= 1, got input {input_depth}, network {network_depth}, patch {patch_depth}")
    if isinstance(lesion_slices, Mapping):
        zs = [z for f, v in lesion_slices.items() if findings is None or f in findings for z in v]
    else:
        zs = list(lesion_slices)
    out: set[int] = set()
    for z in zs:
        if not 0 <= int(z) < input_depth:
            raise MetricInputError(f"lesion slice {z} is outside a volume of {input_depth} slices")
        lo = int(z) * network_depth // input_depth
        hi = max(lo, -(-(int(z) + 1) * network_depth // input_depth) - 1)
        out.update(j // patch_depth for j in range(lo, hi + 1))
    return out


def precision_at_k(selected: torch.Tensor | Sequence[Sequence[int]], truth: Sequence[set[int]]) -> dict[str, float | int | None]:
    """Mean precision@k and hit@k of selected slabs against lesion slabs, over volumes with a lesion.

    Args:
        selected: ``(B, k)`` selected slab indices.
        truth: ``B`` sets of lesion slabs.

    Returns:
        ``{"precision", "hit_rate", "volumes"}`` (``None`` values when no volume has a lesion).
    """
    rows = [list(map(int, r)) for r in (selected.tolist() if isinstance(selected, torch.Tensor) else selected)]
    if len(rows) != len(truth):
        raise MetricInputError(f"{len(rows)} selections for {len(truth)} volumes")
    used = [(r, t) for r, t in zip(rows, truth) if t]
    if not used:
        return {"precision": None, "hit_rate": None, "volumes": 0}
    prec = [len(set(r) & t) / len(r) for r, t in used]
    hits = [bool(set(r) & t) for r, t in used]
    return {"precision": float(np.mean(prec)), "hit_rate": float(np.mean(hits)), "volumes": len(used)}


def slice_selection_scores(slab_scores: Mapping[str, torch.Tensor], truth: Sequence[set[int]], k: int) -> dict[str, dict]:
    """Precision@k of each ranking in ``slab_scores`` (``name -> (B, S)`` scores), of the middle ``k`` slabs
    and of random slabs (the expectation ``|T| / S``), over the volumes with a lesion.

    Returns:
        ``{name: {"precision", "hit_rate", "volumes"}, ..., "middle": {...}, "random": {"precision", "volumes"}}``.
    """
    if not slab_scores:
        raise MetricInputError("slice_selection_scores needs at least one ranking")
    shapes = {tuple(s.shape) for s in slab_scores.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise MetricInputError(f"every ranking must be (volumes, slabs) of one shape, got {sorted(shapes)}")
    b, slabs = next(iter(shapes))
    if not 1 <= k <= slabs:
        raise MetricInputError(f"k must be in [1, {slabs}], got {k}")
    out: dict[str, dict] = {}
    for name, scores in slab_scores.items():
        out[name] = precision_at_k(scores.float().topk(k, dim=1).indices, truth)
    out["middle"] = precision_at_k(middle_slices(b, slabs, k), truth)
    shares = [len(t) / slabs for t in truth if t]
    out["random"] = {"precision": float(np.mean(shares)) if shares else None,
                     "hit_rate": float(np.mean([1.0 - _miss_probability(slabs, len(t), k) for t in truth if t])) if shares else None,
                     "volumes": len(shares)}
    return out


def _miss_probability(slabs: int, positives: int, k: int) -> float:
    """P(k slabs drawn without replacement from ``slabs`` miss all ``positives``)."""
    from math import comb

    return comb(slabs - positives, k) / comb(slabs, k) if slabs - positives >= k else 0.0
