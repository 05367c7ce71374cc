"""Language-gap numbers on embeddings where the answer is known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monai_medunic.errors import MetricInputError
from monai_medunic.metrics.language_gap import (
    centroid_gap,
    embedding_gap,
    language_gap_report,
    language_id_probe,
    prompt_agreement,
)


def test_probe_separable_languages_reach_accuracy_one() -> None:
    rng = np.random.default_rng(0)
    en = rng.normal(size=(10, 4)) + np.array([5, 0, 0, 0])
    es = rng.normal(size=(10, 4)) - np.array([5, 0, 0, 0])
    out = language_id_probe(np.vstack([en, es]), ["en"] * 10 + ["es"] * 10)
    assert out["probe_accuracy"] == 1.0
    assert out["majority_baseline"] == 0.5 and out["folds"] == 5 and out["counts"] == {"en": 10, "es": 10}


def test_probe_without_language_signal_is_exactly_chance() -> None:
    # identical embeddings: every test sample of a fold gets the same prediction, and every fold is balanced
    x = np.ones((8, 3))
    out = language_id_probe(x, ["en", "es"] * 4)
    assert out["probe_accuracy"] == 0.5 and out["folds"] == 4


def test_probe_reports_majority_baseline_and_limits_folds_by_smallest_class() -> None:
    rng = np.random.default_rng(1)
    out = language_id_probe(rng.normal(size=(9, 3)), ["en"] * 6 + ["es"] * 3)
    assert out["majority_baseline"] == pytest.approx(6 / 9)
    assert out["folds"] == 3 and 0.0 <= out["probe_accuracy"] <= 1.0


def test_probe_bad_input() -> None:
    with pytest.raises(MetricInputError, match="at least two languages"):
        language_id_probe(np.zeros((4, 2)), ["en"] * 4)
    with pytest.raises(MetricInputError, match="es"):
        language_id_probe(np.zeros((4, 2)), ["en", "en", "en", "es"])
    with pytest.raises(MetricInputError, match="language tags"):
        language_id_probe(np.zeros((4, 2)), ["en", "es"])


def test_centroid_gap_hand_computed() -> None:
    x = np.array([[0, 1], [0, -1], [4, 1], [4, -1]], dtype=float)
    assert centroid_gap(x, ["en", "en", "es", "es"]) == pytest.approx(4.0)
    # languages weigh equally whatever their size: es spread 1 around (4, 0), en spread 1 around (0, 0)
    x2 = np.array([[0, 1], [0, -1], [3, 0], [3, 0], [5, 0], [5, 0]], dtype=float)
    assert centroid_gap(x2, ["en", "en", "es", "es", "es", "es"]) == pytest.approx(4.0)
    # same centroid -> 0
    assert centroid_gap(np.array([[1.0, 0], [-1, 0], [0, 1], [0, -1]]), ["en", "en", "es", "es"]) == pytest.approx(0.0)


def test_centroid_gap_three_languages_uses_mean_pairwise_distance() -> None:
    x = np.array([[0, 1], [0, -1], [3, 1], [3, -1], [0, 5], [0, 3]], dtype=float)
    # centroids (0,0), (3,0), (0,4): distances 3, 4, 5 -> mean 4; spreads 1, 1, 1
    assert centroid_gap(x, ["en", "en", "es", "es", "fr", "fr"]) == pytest.approx(4.0)


def test_centroid_gap_undefined_when_collapsed() -> None:
    assert centroid_gap(np.ones((4, 2)), ["en", "en", "es", "es"]) is None


def test_prompt_agreement_hand_computed() -> None:
    a = torch.tensor([[True, False], [True, True]])
    b = torch.tensor([[True, True], [True, True]])
    assert prompt_agreement(a, b) == 0.75
    assert prompt_agreement(a, a) == 1.0
    with pytest.raises(MetricInputError, match="same shape"):
        prompt_agreement(a, b[:1])


def test_report_records_undefined_values_with_a_reason() -> None:
    out = embedding_gap(np.random.default_rng(0).normal(size=(4, 2)), ["en"] * 4, "image embeddings")
    assert out["probe_accuracy"] is None and out["centroid_gap"] is None
    assert "image embeddings" in out["note"] and "two languages" in out["note"]


def test_language_gap_report_structure() -> None:
    x = np.array([[0, 1], [0, -1], [4, 1], [4, -1]] * 2, dtype=float)
    langs = ["en", "en", "es", "es"] * 2
    dec = {"en": np.array([[1, 0], [0, 0]]), "es": np.array([[1, 1], [0, 0]])}
    out = language_gap_report(x, langs, x, langs, dec)
    assert out["text"]["centroid_gap"] == pytest.approx(4.0) and out["image"]["probe_accuracy"] == 1.0
    assert out["prompt_agreement"] == 0.75
    only_en = language_gap_report(x, langs, x, langs, {"en": dec["en"]})
    assert only_en["prompt_agreement"] is None and "es" in only_en["prompt_agreement_note"]
