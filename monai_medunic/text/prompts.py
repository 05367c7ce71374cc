"""Bilingual zero-shot prompts: finding names per language and positive / negative templates.

Med-UniC (Sec. 4, "Medical Image Zero-shot Classification") avoids prompt engineering: the English
positive prompt is ``'{disease}'`` and the negative ``'No {disease}'``; the Spanish prompts, prepared by
native speakers, are ``'{disease}'`` and ``'No hay {disease}'``. A zero-shot classifier scores an image
against both prompts of every finding.

This module keeps

* :data:`FINDING_NAMES`: English finding key -> ``{language: name}``; it covers the CheXpert 14
  observations, the PadChest findings of the paper's zero-shot set (PDC: Atelectasis, Consolidation,
  Edema, Pleural Effusion, Cardiomegaly, Pneumothorax, Vascular Redistribution, Heart Insufficiency,
  Pneumonia, Hilar Enlargement, Lesion, Normal) and a few ChestX-ray14 findings (Nodule, Mass, ...);
* a registry of :class:`PromptTemplate` per language (``en`` and ``es`` built in).

Both are extensible from code (:func:`register_language`, :func:`register_findings`) or from a JSON /
dict configuration (:func:`load_prompt_config`)::

    {"languages": {"fr": {"positive": "{finding}", "negative": "Pas de {finding}",
                          "names": {"Cardiomegaly": "Cardiomégalie"}}},
     "findings": {"Hiatal Hernia": {"en": "Hiatal hernia", "es": "Hernia de hiato"}}}

A finding without a name in the requested language raises
:class:`monai_medunic.errors.TranslationMissingError` (naming both); an unregistered language raises
:class:`monai_medunic.errors.ConfigurationError`.
"""

from __future__ import annotations

import json
import os
import re
import string
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from monai_medunic.errors import ConfigurationError, TranslationMissingError

__all__ = [
    "PromptTemplate",
    "FINDING_NAMES",
    "CHEXPERT_14",
    "PADCHEST_ZERO_SHOT",
    "register_language",
    "register_findings",
    "load_prompt_config",
    "get_template",
    "supported_languages",
    "translate_finding",
    "build_prompts",
]

# CheXpert's 14 observations (Irvin et al., 2019).
CHEXPERT_14: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)

# The PadChest findings of Med-UniC's PDC zero-shot set (Sec. 4 and the appendix).
PADCHEST_ZERO_SHOT: tuple[str, ...] = (
    "Atelectasis",
    "Consolidation",
    "Edema",
    "Pleural Effusion",
    "Cardiomegaly",
    "Pneumothorax",
    "Vascular Redistribution",
    "Heart Insufficiency",
    "Pneumonia",
    "Hilar Enlargement",
    "Lesion",
    "Normal",
)

# English key -> {language: name}. Spanish names follow the radiological usage of PadChest's label set.
FINDING_NAMES: dict[str, dict[str, str]] = {
    "No Finding": {"en": "No Finding", "es": "Sin hallazgos"},
    "Enlarged Cardiomediastinum": {"en": "Enlarged Cardiomediastinum", "es": "Ensanchamiento cardiomediastínico"},
    "Cardiomegaly": {"en": "Cardiomegaly", "es": "Cardiomegalia"},
    "Lung Opacity": {"en": "Lung Opacity", "es": "Opacidad pulmonar"},
    "Lung Lesion": {"en": "Lung Lesion", "es": "Lesión pulmonar"},
    "Edema": {"en": "Edema", "es": "Edema"},
    "Consolidation": {"en": "Consolidation", "es": "Consolidación"},
    "Pneumonia": {"en": "Pneumonia", "es": "Neumonía"},
    "Atelectasis": {"en": "Atelectasis", "es": "Atelectasia"},
    "Pneumothorax": {"en": "Pneumothorax", "es": "Neumotórax"},
    "Pleural Effusion": {"en": "Pleural Effusion", "es": "Derrame pleural"},
    "Pleural Other": {"en": "Pleural Other", "es": "Otras alteraciones pleurales"},
    "Fracture": {"en": "Fracture", "es": "Fractura"},
    "Support Devices": {"en": "Support Devices", "es": "Dispositivos de soporte"},
    "Vascular Redistribution": {"en": "Vascular Redistribution", "es": "Redistribución vascular"},
    "Heart Insufficiency": {"en": "Heart Insufficiency", "es": "Insuficiencia cardiaca"},
    "Hilar Enlargement": {"en": "Hilar Enlargement", "es": "Aumento hiliar"},
    "Lesion": {"en": "Lesion", "es": "Lesión"},
    "Normal": {"en": "Normal", "es": "Normal"},
    "Nodule": {"en": "Nodule", "es": "Nódulo"},
    "Mass": {"en": "Mass", "es": "Masa"},
    "Emphysema": {"en": "Emphysema", "es": "Enfisema"},
    "Fibrosis": {"en": "Fibrosis", "es": "Fibrosis"},
    "Infiltration": {"en": "Infiltration", "es": "Infiltrado"},
    "Pleural Thickening": {"en": "Pleural Thickening", "es": "Engrosamiento pleural"},
    "Hernia": {"en": "Hernia", "es": "Hernia"},
}

_LOCK = threading.Lock()
_CODE_RE = re.compile(r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$")


def _norm_key(name: str) -> str:
    return " ".join(str(name).replace("_", " ").split()).casefold()


def _template_field(template: str, what: str) -> str:
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as err:
        raise ConfigurationError(f"{what}: invalid template {template!r}: {err}") from err
    if len(fields) != 1 or not fields[0].isidentifier():
        raise ConfigurationError(
            f"{what}: a template needs exactly one named placeholder such as '{{finding}}', got {template!r}"
        )
    return fields[0]


def _lower_words(name: str) -> str:
    """Lower-case every word that is not an acronym (two or more capitals)."""
    return " ".join(w if sum(c.isupper() for c in w) > 1 else w.lower() for w in name.split(" "))


@dataclass(frozen=True)
class PromptTemplate:
    """The positive and negative prompt of one language (Med-UniC Sec. 4).

    Args:
        language: language code (``"en"``, ``"es"``, ...).
        positive: template with one named placeholder, e.g. ``"{finding}"``.
        negative: template with one named placeholder, e.g. ``"No {finding}"`` or ``"No hay {hallazgo}"``.
        lowercase_in_negative: lower-case the words of the finding name inside the negative prompt, except
            acronyms (``"No pleural effusion"``, ``"No hay derrame pleural"``, but ``"No COPD"``).
    """

    language: str
    positive: str = "{finding}"
    negative: str = "No {finding}"
    lowercase_in_negative: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.language, str) or not _CODE_RE.match(self.language):
            raise ConfigurationError(f"prompt language must be a code such as 'en' or 'pt-br', got {self.language!r}")
        _template_field(self.positive, f"positive prompt of '{self.language}'")
        _template_field(self.negative, f"negative prompt of '{self.language}'")

    def render(self, name: str) -> tuple[str, str]:
        """The ``(positive, negative)`` prompt for a finding name already in this language."""
        pos = self.positive.format_map({_template_field(self.positive, "positive"): name})
        neg_name = _lower_words(name) if self.lowercase_in_negative else name
        neg = self.negative.format_map({_template_field(self.negative, "negative"): neg_name})
        return pos, neg


_TEMPLATES: dict[str, PromptTemplate] = {
    "en": PromptTemplate("en", positive="{finding}", negative="No {finding}"),
    "es": PromptTemplate("es", positive="{hallazgo}", negative="No hay {hallazgo}"),
}


def supported_languages() -> list[str]:
    """The language codes with a registered prompt template."""
    return sorted(_TEMPLATES)


def get_template(language: str) -> PromptTemplate:
    """The registered :class:`PromptTemplate` of ``language`` (raises :class:`ConfigurationError` if unknown)."""
    lang = str(language).strip().lower()
    if lang not in _TEMPLATES:
        raise ConfigurationError(
            f"no prompt template for language '{language}'; registered: {supported_languages()} "
            "(add one with register_language() or load_prompt_config())"
        )
    return _TEMPLATES[lang]


def _find_key(finding: str) -> str | None:
    if finding in FINDING_NAMES:
        return finding
    want = _norm_key(finding)
    for key, names in FINDING_NAMES.items():
        if _norm_key(key) == want or any(_norm_key(v) == want for v in names.values()):
            return key
    return None


def register_findings(names: Mapping[str, Mapping[str, str]], overwrite: bool = False) -> None:
    """Add findings or translations: ``{english_key: {language: name}}``.

    Args:
        names: new findings, or new languages of known findings.
        overwrite: replace an existing name of a finding in a language (otherwise a different name is an error).
    """
    with _LOCK:
        for key, per_lang in names.items():
            if not isinstance(per_lang, Mapping):
                raise ConfigurationError(f"finding '{key}': expected {{language: name}}, got {type(per_lang).__name__}")
            existing = _find_key(key)
            target = FINDING_NAMES.setdefault(existing or str(key), {"en": str(key)})
            for lang, name in per_lang.items():
                if not isinstance(name, str) or not name.strip():
                    raise ConfigurationError(f"finding '{key}': the '{lang}' name must be a non-empty string")
                if lang in target and target[lang] != name and not overwrite:
                    raise ConfigurationError(
                        f"finding '{key}' already has the '{lang}' name '{target[lang]}'; pass overwrite=True"
                    )
                target[str(lang).lower()] = name.strip()


def register_language(
    language: str,
    positive: str = "{finding}",
    negative: str = "No {finding}",
    names: Mapping[str, str] | None = None,
    lowercase_in_negative: bool = True,
    overwrite: bool = False,
) -> PromptTemplate:
    """Register the prompt template of a language and, optionally, its finding names.

    Example::

        register_language("fr", positive="{finding}", negative="Pas de {finding}",
                          names={"Cardiomegaly": "Cardiomégalie", "Pleural Effusion": "Épanchement pleural"})

    Args:
        language: language code.
        positive: positive template (one named placeholder).
        negative: negative template (one named placeholder).
        names: English finding key -> name in this language.
        lowercase_in_negative: see :class:`PromptTemplate`.
        overwrite: replace an existing template / names.

    Returns:
        the registered template.
    """
    tmpl = PromptTemplate(str(language).strip().lower(), positive, negative, lowercase_in_negative)
    with _LOCK:
        if tmpl.language in _TEMPLATES and _TEMPLATES[tmpl.language] != tmpl and not overwrite:
            raise ConfigurationError(f"language '{tmpl.language}' already has a prompt template; pass overwrite=True")
        _TEMPLATES[tmpl.language] = tmpl
    if names:
        register_findings({k: {tmpl.language: v} for k, v in names.items()}, overwrite=overwrite)
    return tmpl


def load_prompt_config(config: Mapping[str, Any] | str | os.PathLike, overwrite: bool = False) -> list[str]:
    """Register languages and findings from a dict or a JSON file (format in the module docstring).

    Returns:
        the languages registered by this config.

    Raises:
        ConfigurationError: the file is missing, not JSON, or a key has the wrong type (the message names it).
    """
    where = "prompt config"
    if not isinstance(config, Mapping):
        where = os.fspath(config)
        try:
            with open(where, encoding="utf-8") as f:
                config = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConfigurationError(f"{where}: cannot read the prompt config: {err}") from err
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"{where}: the prompt config must be a JSON object")
    unknown = set(config) - {"languages", "findings"}
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)} (allowed: 'languages', 'findings')")
    if "findings" in config:
        if not isinstance(config["findings"], Mapping):
            raise ConfigurationError(f"{where}: 'findings' must map an English key to {{language: name}}")
        register_findings(config["findings"], overwrite=overwrite)
    done = []
    for lang, spec in (config.get("languages") or {}).items():
        if not isinstance(spec, Mapping):
            raise ConfigurationError(f"{where}: languages.{lang} must be an object")
        bad = set(spec) - {"positive", "negative", "names", "lowercase_in_negative"}
        if bad:
            raise ConfigurationError(f"{where}: languages.{lang}: unknown keys {sorted(bad)}")
        register_language(lang, overwrite=overwrite, **dict(spec))
        done.append(str(lang).lower())
    return done


def translate_finding(finding: str, language: str) -> str:
    """The name of ``finding`` (an English key, or a name in any registered language) in ``language``.

    Raises:
        TranslationMissingError: the finding is unknown or has no name in ``language``.
    """
    lang = str(language).strip().lower()
    key = _find_key(finding)
    if key is None:
        raise TranslationMissingError(
            f"unknown finding '{finding}' (language '{lang}'): add it with register_findings() or a prompt config"
        )
    names = FINDING_NAMES[key]
    if lang not in names:
        raise TranslationMissingError(
            f"finding '{key}' has no name in language '{lang}' (has: {sorted(names)}); "
            "add one with register_findings() or a prompt config"
        )
    return names[lang]


def build_prompts(
    findings: Iterable[str], language: str, template: PromptTemplate | None = None
) -> list[tuple[str, str]]:
    """The ``(positive, negative)`` prompt pair of every finding, in ``language``.

    Example::

        >>> build_prompts(["Pleural Effusion"], "es")
        [('Derrame pleural', 'No hay derrame pleural')]

    Args:
        findings: English finding keys (case and ``_`` vs space do not matter) or names in any language.
        language: a registered prompt language.
        template: override the registered template of ``language``.

    Raises:
        ConfigurationError: ``language`` has no template (and none is given).
        TranslationMissingError: a finding has no name in ``language``.
    """
    tmpl = template or get_template(language)
    lang = str(language).strip().lower()
    if isinstance(findings, str):
        raise ConfigurationError(f"build_prompts needs a list of finding names, got the string {findings!r}")
    findings = list(findings)
    if not findings:
        raise ConfigurationError("build_prompts needs a non-empty list of finding names")
    return [tmpl.render(translate_finding(f, lang)) for f in findings]
