"""Bilingual zero-shot prompts (Med-UniC Sec. 4): templates, finding table, registry and errors."""

from __future__ import annotations

import json

import pytest

from monai_medunic.errors import ConfigurationError, TranslationMissingError
from monai_medunic.text import prompts
from monai_medunic.text.prompts import (
    CHEXPERT_14,
    FINDING_NAMES,
    PADCHEST_ZERO_SHOT,
    PromptTemplate,
    build_prompts,
    load_prompt_config,
    register_language,
    translate_finding,
)


@pytest.fixture(autouse=True)
def _restore_registry():
    names = {k: dict(v) for k, v in FINDING_NAMES.items()}
    templates = dict(prompts._TEMPLATES)
    yield
    FINDING_NAMES.clear()
    FINDING_NAMES.update(names)
    prompts._TEMPLATES.clear()
    prompts._TEMPLATES.update(templates)


def test_paper_templates():
    assert build_prompts(["Pleural Effusion"], "en") == [("Pleural Effusion", "No pleural effusion")]
    assert build_prompts(["Pleural Effusion"], "es") == [("Derrame pleural", "No hay derrame pleural")]
    assert prompts.get_template("es").negative == "No hay {hallazgo}"


def test_demo_findings_have_the_agreed_spanish_names():
    expected = {"Cardiomegaly": "Cardiomegalia", "Pleural Effusion": "Derrame pleural", "Pneumothorax": "Neumotórax",
                "Nodule": "Nódulo", "Consolidation": "Consolidación", "Edema": "Edema"}
    assert {k: FINDING_NAMES[k]["es"] for k in expected} == expected


def test_table_covers_chexpert_and_padchest_zero_shot_sets():
    assert len(CHEXPERT_14) == 14 and len(PADCHEST_ZERO_SHOT) == 12
    for f in (*CHEXPERT_14, *PADCHEST_ZERO_SHOT):
        assert translate_finding(f, "en") and translate_finding(f, "es")
    pairs = build_prompts(PADCHEST_ZERO_SHOT, "es")
    assert len(pairs) == 12 and all(neg.startswith("No hay ") for _, neg in pairs)


def test_lookup_is_case_and_language_insensitive():
    assert translate_finding("pleural_effusion", "es") == "Derrame pleural"
    assert translate_finding("Neumotórax", "en") == "Pneumothorax"
    assert PromptTemplate("en", "{finding}", "No {finding}").render("COPD exacerbation") == (
        "COPD exacerbation", "No COPD exacerbation")


def test_register_language_from_code_and_config(tmp_path):
    register_language("fr", positive="{finding}", negative="Pas de {finding}",
                      names={"Cardiomegaly": "Cardiomégalie"})
    assert build_prompts(["Cardiomegaly"], "fr") == [("Cardiomégalie", "Pas de cardiomégalie")]
    cfg = tmp_path / "prompts.json"
    cfg.write_text(json.dumps({
        "languages": {"pt": {"positive": "{achado}", "negative": "Sem {achado}", "names": {"Edema": "Edema"}}},
        "findings": {"Hiatal Hernia": {"en": "Hiatal Hernia", "es": "Hernia de hiato"}},
    }), encoding="utf-8")
    assert load_prompt_config(cfg) == ["pt"]
    assert build_prompts(["Edema"], "pt") == [("Edema", "Sem edema")]
    assert build_prompts(["hiatal hernia"], "es") == [("Hernia de hiato", "No hay hernia de hiato")]


def test_missing_translation_names_finding_and_language():
    register_language("fr", negative="Pas de {finding}", names={"Cardiomegaly": "Cardiomégalie"})
    with pytest.raises(TranslationMissingError, match="'Edema'.*'fr'"):
        build_prompts(["Cardiomegaly", "Edema"], "fr")
    with pytest.raises(TranslationMissingError, match="unknown finding 'Tetralogy'"):
        build_prompts(["Tetralogy"], "es")


def test_bad_configuration():
    with pytest.raises(ConfigurationError, match="no prompt template for language 'de'"):
        build_prompts(["Edema"], "de")
    with pytest.raises(ConfigurationError, match="one named placeholder"):
        register_language("it", negative="Nessun")
    with pytest.raises(ConfigurationError, match="already has"):
        register_language("es", negative="Sin {hallazgo}")
    with pytest.raises(ConfigurationError, match="unknown keys"):
        load_prompt_config({"langs": {}})
    with pytest.raises(ConfigurationError, match="list of finding names"):
        build_prompts("Edema", "en")
