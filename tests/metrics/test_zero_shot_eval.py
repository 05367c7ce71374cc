"""Zero-shot classification: hand-computed AUC/F1, the prompt x data-language table, sklearn cross-check,
the prompt cache, the Ignite metrics and missing translations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from sklearn.metrics import f1_score, roc_auc_score

from monai_medunic.errors import MetricInputError, TranslationMissingError
from monai_medunic.metrics.zero_shot import (
    ZeroShotAUC,
    ZeroShotClassifier,
    ZeroShotF1,
    evaluate_zero_shot,
    multilabel_auc,
    multilabel_f1,
    zero_shot_table,
)
from monai_medunic.pretrained import load_pretrained_bundle
from monai_medunic.text.prompts import FINDING_NAMES

LABELS = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
PROBS = np.array([[0.3, 0.2], [0.4, 0.9], [0.6, 0.1], [0.1, 0.3]])
DECISIONS = np.array([[0, 0], [1, 1], [1, 0], [0, 0]])


def test_table_hand_computed() -> None:
    findings = ["Cardiomegaly", "Edema"]
    table = zero_shot_table({"en": PROBS}, {"en": DECISIONS}, LABELS, ["en", "en", "es", "es"], findings)
    en, es, all_ = table["en"]["en"], table["en"]["es"], table["en"]["all"]
    # Cardiomegaly: en pos 0.3 < neg 0.4 -> 0; es pos 0.6 > neg 0.1 -> 1; all: 3 of 4 pairs ordered -> 0.75
    assert en["per_finding_auc"]["Cardiomegaly"] == 0.0
    assert es["per_finding_auc"]["Cardiomegaly"] == 1.0
    assert all_["per_finding_auc"]["Cardiomegaly"] == 0.75
    # Edema has no positive: AUC undefined, reported as None and kept out of the macro
    assert all_["per_finding_auc"]["Edema"] is None and all_["undefined_auc"] == ["Edema"]
    assert all_["macro_auc"] == 0.75
    # F1 (all): Cardiomegaly TP=1 FP=1 FN=1 -> 0.5; Edema TP=0 -> 0; macro 0.25
    assert all_["per_finding_f1"] == {"Cardiomegaly": 0.5, "Edema": 0.0}
    assert all_["macro_f1"] == 0.25 and all_["n"] == 4 and en["n"] == 2


def test_all_findings_single_class_gives_undefined_macro() -> None:
    out = multilabel_auc(np.zeros((3, 2)), np.random.default_rng(0).random((3, 2)), ["A", "B"])
    assert out["macro"] is None and out["per_finding"] == {"A": None, "B": None}


def test_auc_and_f1_match_sklearn_on_random_data() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, size=(60, 5))
    s = rng.random((60, 5))
    d = s > 0.5
    assert multilabel_auc(y, s)["macro"] == pytest.approx(roc_auc_score(y, s, average="macro"))
    assert multilabel_f1(y, d)["macro"] == pytest.approx(f1_score(y, d, average="macro", zero_division=0))
    per = multilabel_auc(y, s, list("abcde"))["per_finding"]
    assert per["c"] == pytest.approx(roc_auc_score(y[:, 2], s[:, 2]))


def test_label_shape_and_missing_values_are_rejected() -> None:
    with pytest.raises(MetricInputError, match="same shape"):
        multilabel_auc(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(MetricInputError, match="missing"):
        multilabel_auc(np.array([[1.0], [np.nan]]), np.zeros((2, 1)))
    with pytest.raises(MetricInputError, match="data_languages"):
        zero_shot_table({"en": PROBS}, {"en": DECISIONS}, LABELS, ["en"], ["A", "B"])


@pytest.fixture(scope="module")
def loaded(tiny_bundle):
    return load_pretrained_bundle(tiny_bundle)


def test_classifier_decisions_match_prompt_similarities(loaded) -> None:
    clf = ZeroShotClassifier(loaded.model, loaded.tokenizer, loaded.findings, ("en", "es"), max_length=loaded.max_length)
    images = torch.rand(4, 1, loaded.image_size, loaded.image_size)
    emb = clf.encode_images(images)
    for lang, word in (("en", "Pleural Effusion"), ("es", "Derrame pleural")):
        pred = clf.classify_embeddings(emb, lang)
        j = loaded.findings.index("Pleural Effusion")
        neg = "No pleural effusion" if lang == "en" else "No hay derrame pleural"
        tok = loaded.tokenize([word, neg])
        with torch.no_grad():
            t = loaded.model.encode_text(tok["input_ids"], tok["attention_mask"])
        margin = emb @ t[0] - emb @ t[1]
        assert torch.equal(pred.positive[:, j], margin > 0)
        assert torch.allclose(pred.probs[:, j], torch.sigmoid(margin / clf.temperature), atol=1e-5)


def test_prompts_are_encoded_once_per_language(loaded) -> None:
    clf = ZeroShotClassifier(loaded.model, loaded.tokenizer, loaded.findings, ("en", "es"), max_length=loaded.max_length)
    calls = []
    handle = loaded.model.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        emb = clf.encode_images(torch.rand(3, 1, loaded.image_size, loaded.image_size))
        labels = np.array([[1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1], [1, 1, 0, 0, 1, 1]])
        for _ in range(3):
            result = evaluate_zero_shot(clf, emb, labels, ["en", "es", "es"])
    finally:
        handle.remove()
    assert len(calls) == 2  # one text-encoder pass per prompt language, then the cache
    assert set(result.table) == {"en", "es"} and set(result.table["es"]) == {"en", "es", "all"}
    assert result.decisions["en"].shape == (3, 6)


def test_ignite_metrics_agree_with_direct_computation(loaded) -> None:
    clf = ZeroShotClassifier(loaded.model, loaded.tokenizer, loaded.findings, ("en", "es"), max_length=loaded.max_length)
    g = torch.Generator().manual_seed(1)
    emb = torch.nn.functional.normalize(torch.randn(12, loaded.model.embed_dim, generator=g), dim=-1)
    labels = torch.randint(0, 2, (12, 6), generator=g)
    labels[0], labels[1] = 1, 0  # every finding has both classes
    batches = [(emb[i : i + 4], labels[i : i + 4]) for i in range(0, 12, 4)]
    engine = Engine(lambda e, b: b)
    ZeroShotAUC(clf, "es").attach(engine, "auc_es")
    ZeroShotF1(clf, None).attach(engine, "f1_mean")
    state = engine.run(batches)
    direct = evaluate_zero_shot(clf, emb, labels.numpy(), ["en"] * 12)
    assert state.metrics["auc_es"] == pytest.approx(direct.table["es"]["all"]["macro_auc"])
    mean_f1 = (direct.table["en"]["all"]["macro_f1"] + direct.table["es"]["all"]["macro_f1"]) / 2
    assert state.metrics["f1_mean"] == pytest.approx(mean_f1)


def test_finding_without_translation_names_finding_and_language(loaded, monkeypatch) -> None:
    monkeypatch.setitem(FINDING_NAMES, "Test Only Finding", {"en": "Test only finding"})  # no Spanish name
    with pytest.raises(TranslationMissingError) as err:
        ZeroShotClassifier(loaded.model, loaded.tokenizer, ["Cardiomegaly", "Test Only Finding"], ("en", "es"))
    assert "Test Only Finding" in str(err.value) and "'es'" in str(err.value)
