"""Recall@K for image-text retrieval: hand-computed ranks, tie policy, duplicate texts, per-language split."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from monai_medunic.errors import MetricInputError
from monai_medunic.metrics.retrieval import paired_ranks, recall_at_k, retrieval_by_language, retrieval_recall

SIM = torch.tensor([[0.9, 0.1, 0.5], [0.8, 0.3, 0.2], [0.4, 0.4, 0.4]], dtype=torch.float64)


def test_paired_ranks_hand_computed_with_pessimistic_ties() -> None:
    # row 0: paired 0.9 is the best; row 1: 0.8 beats the paired 0.3; row 2: two ties count against it
    assert paired_ranks(SIM).tolist() == [1, 2, 3]
    # text->image: columns as queries
    assert paired_ranks(SIM.T.contiguous()).tolist() == [1, 2, 2]
    r = recall_at_k(paired_ranks(SIM), ks=(1, 2, 3))
    assert r == pytest.approx({"R@1": 1 / 3, "R@2": 2 / 3, "R@3": 1.0})


def test_groups_make_identical_texts_equally_correct() -> None:
    # pairs 0 and 2 have the same report: candidate 0 no longer counts against query 2
    assert paired_ranks(SIM, groups=["a", "b", "a"]).tolist() == [1, 2, 2]


def test_duplicate_identical_texts_end_to_end() -> None:
    img = F.normalize(torch.tensor([[1.0, 0.1], [0.0, 1.0], [1.0, -0.1]]), dim=-1)
    txt = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]), dim=-1)  # texts 0 and 2 identical
    strict = retrieval_recall(img, txt, ks=(1,))
    grouped = retrieval_recall(img, txt, ks=(1,), groups=["no finding.", "effusion.", "no finding."])
    # strictly, image 0 and image 2 tie between text 0 and text 2 -> both miss R@1
    assert strict["i2t"]["R@1"] == pytest.approx(1 / 3)
    assert grouped["i2t"]["R@1"] == pytest.approx(1.0)
    assert grouped["t2i"]["R@1"] == pytest.approx(1.0) and grouped["n"] == 3


def test_collapsed_embeddings_are_not_flattered() -> None:
    e = F.normalize(torch.ones(6, 4), dim=-1)
    out = retrieval_recall(e, e, ks=(1, 5, 6))
    assert out["i2t"] == {"R@1": 0.0, "R@5": 0.0, "R@6": 1.0}


def test_matches_brute_force_on_random_embeddings() -> None:
    rng = np.random.default_rng(3)
    img = F.normalize(torch.tensor(rng.normal(size=(40, 8))), dim=-1)
    txt = F.normalize(img + 0.8 * torch.tensor(rng.normal(size=(40, 8))), dim=-1)
    out = retrieval_recall(img, txt)
    sim = (img @ txt.T).numpy()
    for key, s in (("i2t", sim), ("t2i", sim.T)):
        order = np.argsort(-s, axis=1)
        ranks = np.array([int(np.where(order[i] == i)[0][0]) + 1 for i in range(40)])
        for k in (1, 5, 10):
            assert out[key][f"R@{k}"] == pytest.approx(float((ranks <= k).mean()))
    assert 0.0 < out["i2t"]["R@10"] <= 1.0


def test_per_language_uses_each_community_as_its_own_gallery() -> None:
    img = torch.eye(4, dtype=torch.float64)
    txt = torch.eye(4, dtype=torch.float64)[[0, 1, 3, 2]]  # the two Spanish pairs are swapped
    out = retrieval_by_language(img, txt, ["en", "en", "es", "es"], ks=(1, 2))
    assert out["en"]["i2t"]["R@1"] == 1.0 and out["en"]["n"] == 2
    assert out["es"]["i2t"]["R@1"] == 0.0 and out["es"]["i2t"]["R@2"] == 1.0
    assert out["all"]["t2i"]["R@1"] == 0.5 and out["all"]["n"] == 4


def test_bad_inputs_raise_typed_errors() -> None:
    with pytest.raises(MetricInputError, match="paired"):
        retrieval_recall(torch.zeros(3, 4), torch.zeros(2, 4))
    with pytest.raises(MetricInputError, match="NaN"):
        retrieval_recall(torch.full((2, 2), float("nan")), torch.zeros(2, 2))
    with pytest.raises(MetricInputError, match="languages"):
        retrieval_by_language(torch.eye(2), torch.eye(2), ["en"])
