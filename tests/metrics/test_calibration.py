"""Zero-shot calibration: Youden thresholds, Platt scaling, ECE, the bundle file, and the classifier using it
per prompt language (hand-computed cases)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from monai_medunic.errors import MetricInputError, ModelLoadError
from monai_medunic.metrics.calibration import (
    CALIBRATION_FILE,
    FindingCalibration,
    ZeroShotCalibration,
    expected_calibration_error,
    fit_calibration,
    fit_platt,
    load_calibration,
    save_calibration,
    youden_threshold,
)
from monai_medunic.metrics.zero_shot import ZeroShotClassifier, multilabel_f1

FINDINGS = ["Pleural Effusion", "Cardiomegaly"]


def test_youden_threshold_by_hand() -> None:
    # the best ROC point (TPR 1, FPR 0) is at margin 0.05; the next lower margin is -0.1: threshold half-way
    assert youden_threshold([-0.3, -0.1, 0.05, 0.2], [0, 0, 1, 1]) == pytest.approx(-0.025)
    # overlapping classes: J = 2/3 - 0 at margin 0.3 (TPR 2/3, FPR 0) beats 1 - 1/2 at 0.1
    t = youden_threshold([0.0, 0.1, 0.2, 0.3, 0.4, 0.15], [0, 1, 0, 1, 1, 0])
    assert 0.2 < t < 0.3
    with pytest.raises(MetricInputError):
        youden_threshold([0.1, 0.2], [1, 1])


def test_platt_recovers_a_logistic_model() -> None:
    rng = np.random.default_rng(0)
    m = rng.normal(0.05, 0.04, 4000)
    a, b = 60.0, -3.0
    y = (rng.random(m.size) < 1 / (1 + np.exp(-(a * m + b)))).astype(int)
    fa, fb = fit_platt(m, y)
    assert fa == pytest.approx(a, rel=0.15) and fb == pytest.approx(b, abs=0.4)


def test_expected_calibration_error_by_hand() -> None:
    # bin [0.2, 0.3): p 0.25 x2, y 0 and 1 -> |0.5 - 0.25| ; bin [0.9, 1]: p 0.95 x2, y 1, 1 -> |1 - 0.95|
    assert expected_calibration_error([0, 1, 1, 1], [0.25, 0.25, 0.95, 0.95]) == pytest.approx(0.5 * 0.25 + 0.5 * 0.05)
    assert expected_calibration_error([1, 0], [1.0, 0.0]) == 0.0
    with pytest.raises(MetricInputError):
        expected_calibration_error([1], [1.2])


def _shifted_margins(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Margins that separate the classes but all lie above 0: the paper's rule calls everything positive."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 2)) < np.array([0.3, 0.5])).astype(int)
    m = 0.08 + 0.05 * y + rng.normal(0, 0.015, y.shape)
    return m, y


def test_calibration_fixes_an_off_zero_operating_point() -> None:
    m, y = _shifted_margins()
    cal = fit_calibration({"en": m}, y, FINDINGS, fitted_on={"split": "val"})
    probs, pos, fitted = cal.apply(torch.tensor(m), "en", FINDINGS, temperature=0.07)
    assert fitted.all()
    paper = multilabel_f1(y, m > 0, FINDINGS)["macro"]
    calibrated = multilabel_f1(y, pos.numpy(), FINDINGS)["macro"]
    assert paper < 0.7 and calibrated > 0.9
    ece_paper = expected_calibration_error(y, 1 / (1 + np.exp(-m / 0.07)))
    assert expected_calibration_error(y, probs.numpy()) < ece_paper / 3
    assert cal.fitted_on == {"images": 300, "split": "val"}


def test_single_class_finding_is_left_uncalibrated_and_flagged(caplog) -> None:
    m, y = _shifted_margins()
    y[:, 1] = 0
    with caplog.at_level(logging.WARNING):
        cal = fit_calibration({"en": m}, y, FINDINGS)
    assert cal.finding("en", "Cardiomegaly").status == "not_fitted" and "Cardiomegaly" in caplog.text
    probs, pos, fitted = cal.apply(torch.tensor(m), "en", FINDINGS, temperature=0.07)
    assert fitted.tolist() == [True, False]
    assert torch.equal(pos[:, 1], torch.tensor(m[:, 1]) > 0)  # the paper's rule, flagged as such
    assert torch.allclose(probs[:, 1], torch.sigmoid(torch.tensor(m[:, 1]) / 0.07))


def test_file_round_trip_and_malformed_files(tmp_path, caplog) -> None:
    m, y = _shifted_margins()
    cal = fit_calibration({"en": m, "es": m - 0.02}, y, FINDINGS)
    path = save_calibration(tmp_path, cal)
    assert path == tmp_path / CALIBRATION_FILE
    back = load_calibration(tmp_path)
    assert back.finding("es", "Cardiomegaly") == cal.finding("es", "Cardiomegaly")
    assert back.finding("en", "Cardiomegaly").threshold != back.finding("es", "Cardiomegaly").threshold

    obj = json.loads(path.read_text())
    obj["languages"]["es"]["Cardiomegaly"]["threshold"] = "nan"
    path.write_text(json.dumps(obj))
    with pytest.raises(ModelLoadError, match=r"calibration.json.*languages\.es\.Cardiomegaly"):
        load_calibration(tmp_path)
    path.write_text("{not json")
    with pytest.raises(ModelLoadError, match="calibration.json"):
        load_calibration(tmp_path)
    path.unlink()
    with caplog.at_level(logging.WARNING):
        assert load_calibration(tmp_path) is None
    assert "UNCALIBRATED" in caplog.text


class _Unused(torch.nn.Module):
    def encode_text(self, ids, mask):  # pragma: no cover - prompts are set below, never encoded
        raise AssertionError("prompts must come from the cache in this test")


def _classifier(calibration) -> ZeroShotClassifier:
    clf = ZeroShotClassifier(_Unused(), lambda t: {}, FINDINGS, languages=["en", "es"], calibration=calibration)
    # prompt embeddings by hand: positive and negative prompt of each finding along two axes
    e = torch.eye(4)
    prompts = torch.stack([torch.stack([e[0], e[1]]), torch.stack([e[2], e[3]])])  # (F, 2, d)
    clf._cache = {"en": prompts, "es": prompts}
    return clf


def test_classifier_uses_the_thresholds_of_the_prompt_language() -> None:
    """Fails if the calibration is ignored, or if a threshold is read from the other language."""
    cal = ZeroShotCalibration({
        "en": {f: FindingCalibration(threshold=0.5, platt_a=10.0, platt_b=-5.0, status="fitted", n=10, positives=5) for f in FINDINGS},
        "es": {f: FindingCalibration(threshold=-0.5, platt_a=10.0, platt_b=5.0, status="fitted", n=10, positives=5) for f in FINDINGS},
    })
    emb = torch.nn.functional.normalize(torch.tensor([[0.6, 0.5, 0.6, 0.5]]), dim=-1)  # margins ~ +0.09 for both findings
    margin = float(emb[0, 0] - emb[0, 1])
    en, es = _classifier(cal).classify_embeddings(emb, "en"), _classifier(cal).classify_embeddings(emb, "es")
    raw = _classifier(None).classify_embeddings(emb, "en")
    assert raw.positive.all() and not bool(raw.calibrated.any()) and raw.decision_rule.endswith("(uncalibrated)")
    assert not en.positive.any() and es.positive.all()  # en threshold 0.5 > margin > -0.5 (es)
    assert en.probs[0, 0] == pytest.approx(torch.sigmoid(torch.tensor(10 * margin - 5)).item(), abs=1e-6)
    assert es.probs[0, 0] == pytest.approx(torch.sigmoid(torch.tensor(10 * margin + 5)).item(), abs=1e-6)
    assert en.calibrated.all() and "Youden" in en.decision_rule


def test_a_language_without_calibration_is_flagged(caplog) -> None:
    cal = ZeroShotCalibration({"en": {f: FindingCalibration(0.5, 10.0, -5.0, "fitted", 10, 5) for f in FINDINGS}})
    emb = torch.nn.functional.normalize(torch.tensor([[0.6, 0.5, 0.6, 0.5]]), dim=-1)
    with caplog.at_level(logging.WARNING):
        es = _classifier(cal).classify_embeddings(emb, "es")
    assert not bool(es.calibrated.any()) and es.positive.all() and "no prompt language 'es'" in caplog.text
