"""Bilingual (English / Spanish) report templates of the demo studies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from monai_medunic.data.demo.cases import DEMO_FINDINGS, SPANISH_NAMES, DemoCase

__all__ = ["compose_report"]

_SIDE = {"right": ("right", "derecho"), "left": ("left", "izquierdo"), "bilateral": ("bilateral", "bilateral")}
_ZONE = {"upper": ("upper", "superior"), "middle": ("middle", "medio"), "lower": ("lower", "inferior")}
_SEVERITY = {"mild": ("Mild", "leve"), "moderate": ("Moderate", "moderada"), "marked": ("Marked", "marcada")}

_POSITIVE: dict[str, list[tuple[str, str]]] = {
    "Cardiomegaly": [
        ("Cardiomegaly.", "Cardiomegalia."),
        ("The heart is enlarged, consistent with cardiomegaly.", "Silueta cardiaca aumentada de tamaño, compatible con cardiomegalia."),
        ("{sev_en} cardiomegaly.", "Cardiomegalia {sev_es}."),
        ("Cardiomegaly is present.", "Se observa cardiomegalia."),
    ],
    "Pleural Effusion": [
        ("{Side_en} pleural effusion.", "Derrame pleural {side_es}."),
        ("{Side_en} pleural effusion blunting the costophrenic angle.", "Derrame pleural {side_es} con pinzamiento del seno costofrénico."),
        ("There is a {side_en} pleural effusion.", "Se observa derrame pleural {side_es}."),
    ],
    "Pneumothorax": [
        ("{Side_en} pneumothorax.", "Neumotórax {side_es}."),
        ("There is a {side_en} apical pneumothorax.", "Neumotórax apical {side_es}."),
        ("Pneumothorax on the {side_en} side, without mediastinal shift.", "Neumotórax {side_es}, sin desplazamiento mediastínico."),
    ],
    "Nodule": [
        ("Nodule in the {side_en} lung.", "Nódulo en el pulmón {side_es}."),
        ("A {size} mm nodule is seen in the {side_en} lung.", "Nódulo pulmonar de {size} mm en el pulmón {side_es}."),
        ("Pulmonary nodule, {side_en} side.", "Se observa un nódulo pulmonar {side_es}."),
    ],
    "Consolidation": [
        ("Consolidation in the {side_en} {zone_en} zone.", "Consolidación en el campo {zone_es} {side_es}."),
        ("Patchy consolidation in the {zone_en} {side_en} lung.", "Consolidación parcheada en el campo {zone_es} del pulmón {side_es}."),
        ("Airspace consolidation, {side_en} {zone_en} zone.", "Se observa consolidación en el campo {zone_es} {side_es}."),
    ],
    "Edema": [
        ("Bilateral perihilar edema.", "Edema perihiliar bilateral."),
        ("Pulmonary edema.", "Edema pulmonar."),
        ("Interstitial edema with perihilar haziness.", "Edema intersticial con opacidad perihiliar."),
    ],
}
_NEGATIVE: list[tuple[str, str]] = [
    ("No {en}.", "Sin {es}."),
    ("No {en}.", "No hay {es}."),
    ("There is no {en}.", "No se observa {es}."),
    ("No evidence of {en}.", "No hay {es}."),
]
_NORMAL_HEART = [("Heart size is normal.", "Tamaño cardiaco normal."), ("The cardiomediastinal silhouette is normal.", "Silueta cardiomediastínica normal.")]
_CLEAR_LUNGS = [("The lungs are clear.", "Pulmones sin alteraciones."), ("No focal airspace disease.", "Campos pulmonares claros.")]
_NORMAL_IMPRESSION = [
    ("No acute cardiopulmonary abnormality.", "Sin hallazgos cardiopulmonares agudos."),
    ("Normal chest radiograph.", "Radiografía de tórax normal."),
]
_TERSE = ("Normal study.", "Estudio normal.")
_LUNG_FINDINGS = ("Pneumothorax", "Nodule", "Consolidation", "Edema", "Pleural Effusion")


def _fill(template: str, attrs: Mapping[str, Any]) -> str:
    side = attrs.get("side", "right")
    values = {
        "side_en": _SIDE[side][0],
        "Side_en": _SIDE[side][0].capitalize(),
        "side_es": _SIDE[side][1],
        "zone_en": _ZONE[attrs.get("zone", "lower")][0],
        "zone_es": _ZONE[attrs.get("zone", "lower")][1],
        "sev_en": _SEVERITY[attrs.get("severity", "moderate")][0],
        "sev_es": _SEVERITY[attrs.get("severity", "moderate")][1],
        "size": attrs.get("size_mm", 10),
    }
    return template.format(**values)


def compose_report(case: DemoCase, rng: np.random.Generator, terse_normal_prob: float = 0.2) -> dict[str, tuple[str, str]]:
    """``{"en": (findings, impression), "es": (findings, impression)}``: parallel reports from the same choices.

    Present findings are stated with a random template (English/Spanish pairs share the index, so the
    two texts are translations of each other); each absent finding is negated with probability 0.5;
    normal studies get normal-report phrasing (and, with ``terse_normal_prob``, a two-word report).
    """
    positives = [f for f in DEMO_FINDINGS if case.labels.get(f)]
    if not positives and rng.random() < terse_normal_prob:
        return {"en": (_TERSE[0], ""), "es": (_TERSE[1], "")}
    en: list[str] = []
    es: list[str] = []
    rest = list(DEMO_FINDINGS[1:])
    rng.shuffle(rest)
    order = [DEMO_FINDINGS[0], *rest]  # the heart first, as radiologists do; the rest in a varied order
    if not case.labels.get("Cardiomegaly") and rng.random() < 0.6:
        pair = _NORMAL_HEART[int(rng.integers(len(_NORMAL_HEART)))]
        en.append(pair[0])
        es.append(pair[1])
    for f in order:
        if case.labels.get(f):
            pair = _POSITIVE[f][int(rng.integers(len(_POSITIVE[f])))]
            en.append(_fill(pair[0], case.attrs.get(f, {})))
            es.append(_fill(pair[1], case.attrs.get(f, {})))
        elif rng.random() < 0.5:
            neg = _NEGATIVE[int(rng.integers(len(_NEGATIVE)))]
            en.append(neg[0].format(en=f.lower()))
            es.append(neg[1].format(es=SPANISH_NAMES[f].lower()))
    if not any(case.labels.get(f) for f in _LUNG_FINDINGS) and rng.random() < 0.6:
        pair = _CLEAR_LUNGS[int(rng.integers(len(_CLEAR_LUNGS)))]
        en.append(pair[0])
        es.append(pair[1])
    if positives:
        names_en = [f.lower() for f in positives]
        names_es = [SPANISH_NAMES[f].lower() for f in positives]
        if len(positives) == 1:
            imp_en, imp_es = names_en[0].capitalize() + ".", names_es[0].capitalize() + "."
        else:
            imp_en = ", ".join(names_en[:-1]).capitalize() + " and " + names_en[-1] + "."
            imp_es = ", ".join(names_es[:-1]).capitalize() + " y " + names_es[-1] + "."
        if rng.random() < 0.5:
            imp_en = "Findings consistent with " + imp_en[0].lower() + imp_en[1:]
            imp_es = "Hallazgos compatibles con " + imp_es[0].lower() + imp_es[1:]
    else:
        imp_en, imp_es = _NORMAL_IMPRESSION[int(rng.integers(len(_NORMAL_IMPRESSION)))]
    if not en:
        en, es = [_NORMAL_HEART[0][0]], [_NORMAL_HEART[0][1]]
    return {"en": (" ".join(en), imp_en), "es": (" ".join(es), imp_es)}


def _report_text(parts: tuple[str, str]) -> str:
    return " ".join(p for p in parts if p)
