"""Image-text retrieval: Recall@K for image->text and text->image (Uni-Mlip, "Implementation Details of
Downstream Tasks"; the same protocol as PMC-CLIP / M3AE).

Given ``N`` paired, L2-normalised embeddings (image ``i`` belongs with text ``i``), the similarity is
the inner product. For image->text retrieval every image is a query over the ``N`` texts; it is a hit
at ``K`` when its paired text ranks within the top ``K``. Text->image is the same with the roles swapped.

Ties and duplicate texts
------------------------
Reports are often word-for-word identical ("No acute cardiopulmonary process."), and identical texts
get identical embeddings, so the similarity of a query to its paired item can tie with others. The
rank of the paired item is computed as::

    rank = 1 + #{ candidates j outside the paired item's group : s_j >= s_paired }

* ``groups=None`` (default): every pair is its own group, so **ties count against the query**
  (pessimistic). A collapsed model whose embeddings are all equal therefore gets rank ``N``, never a
  flattering R@1 of 1.
* ``groups`` given (e.g. the normalised report text, which is what ``medunic evaluate`` passes):
  candidates in the paired item's group, i.e. the *other copies of an identical text* (image->text) or
  the images *whose reports are identical* (text->image), are equally correct answers and are not
  counted against the query, whatever their score. Ties with items from other groups still count
  against it.

Recall is reported as a fraction in [0, 1].
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np
import torch

from monai_medunic.errors import MetricInputError

__all__ = ["paired_ranks", "recall_at_k", "retrieval_recall", "retrieval_by_language", "DEFAULT_KS"]

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)


def _as_matrix(name: str, x) -> torch.Tensor:
    t = x.detach().cpu().double() if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=torch.float64)
    if t.ndim != 2:
        raise MetricInputError(f"{name} must be (samples, dim) embeddings, got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise MetricInputError(f"{name} contains NaN or infinite values")
    return t


def _group_ids(groups: Sequence[Hashable] | None, n: int) -> torch.Tensor:
    if groups is None:
        return torch.arange(n)
    groups = list(groups)
    if len(groups) != n:
        raise MetricInputError(f"groups has {len(groups)} entries for {n} pairs")
    index: dict[Hashable, int] = {}
    return torch.tensor([index.setdefault(g, len(index)) for g in groups])


def paired_ranks(sim: torch.Tensor, groups: Sequence[Hashable] | None = None) -> torch.Tensor:
    """1-based rank of the paired candidate of every query (row ``i`` is paired with column ``i``).

    Args:
        sim: ``(N, N)`` query x candidate similarities.
        groups: optional group of every pair; candidates in the paired item's group do not count
            against the query (see the module docstring).
    """
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise MetricInputError(f"the similarity matrix must be square (paired items), got {tuple(sim.shape)}")
    n = sim.shape[0]
    gid = _group_ids(groups, n)
    paired = sim.diagonal().unsqueeze(1)
    same_group = gid.unsqueeze(0) == gid.unsqueeze(1)  # (query, candidate): candidate is in the query's group
    competitors = (sim >= paired) & ~same_group
    return 1 + competitors.sum(dim=1)


def recall_at_k(ranks: torch.Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """``{"R@K": fraction of ranks <= K}``."""
    if len(ranks) == 0:
        raise MetricInputError("retrieval needs at least one image-text pair")
    for k in ks:
        if int(k) < 1:
            raise MetricInputError(f"recall K must be >= 1, got {k}")
    return {f"R@{int(k)}": float((ranks <= int(k)).double().mean()) for k in ks}


def retrieval_recall(
    image_emb, text_emb, ks: Sequence[int] = DEFAULT_KS, groups: Sequence[Hashable] | None = None
) -> dict:
    """Recall@K for image->text (``"i2t"``) and text->image (``"t2i"``) over ``N`` paired embeddings.

    Args:
        image_emb: ``(N, d)`` L2-normalised image embeddings.
        text_emb: ``(N, d)`` L2-normalised text embeddings; row ``i`` is the report of image ``i``.
        ks: the K values.
        groups: optional group of every pair (e.g. the normalised report text); see the module docstring.

    Returns:
        ``{"i2t": {"R@1": ..}, "t2i": {..}, "n": N}``.
    """
    img, txt = _as_matrix("image_emb", image_emb), _as_matrix("text_emb", text_emb)
    if img.shape != txt.shape:
        raise MetricInputError(f"image_emb {tuple(img.shape)} and text_emb {tuple(txt.shape)} must be paired (same shape)")
    sim = img @ txt.T
    return {
        "i2t": recall_at_k(paired_ranks(sim, groups), ks),
        "t2i": recall_at_k(paired_ranks(sim.T.contiguous(), groups), ks),
        "n": int(img.shape[0]),
    }


def retrieval_by_language(
    image_emb,
    text_emb,
    languages: Sequence[str],
    ks: Sequence[int] = DEFAULT_KS,
    groups: Sequence[Hashable] | None = None,
) -> dict:
    """Recall@K per data-language community and over all pairs.

    For a language, the gallery is that community's pairs only (queries and candidates alike), so the
    numbers of two communities of different size are not directly comparable; ``"n"`` records the
    gallery size of each entry.

    Returns:
        ``{"<lang>": {"i2t": .., "t2i": .., "n": ..}, ..., "all": {...}}``.
    """
    langs = [str(x) for x in languages]
    img, txt = _as_matrix("image_emb", image_emb), _as_matrix("text_emb", text_emb)
    if len(langs) != img.shape[0]:
        raise MetricInputError(f"languages has {len(langs)} entries for {img.shape[0]} pairs")
    group_list = list(groups) if groups is not None else None
    out: dict[str, dict] = {}
    for lang in sorted(set(langs)):
        idx = [i for i, x in enumerate(langs) if x == lang]
        sub_groups = [group_list[i] for i in idx] if group_list is not None else None
        out[lang] = retrieval_recall(img[idx], txt[idx], ks, sub_groups)
    out["all"] = retrieval_recall(img, txt, ks, group_list)
    return out
