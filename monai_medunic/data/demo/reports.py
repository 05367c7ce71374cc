"""Bilingual (English / Spanish) report templates of the demo studies."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from monai_medunic.data.demo.cases import DEMO_FINDINGS, SPANISH_NAMES, DemoCase

__all__ = ["compose_report", "compose_ct_report"]

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


# ----------------------------------------------------------------------------------------- chest CT
_LOBE = {"upper": ("upper", "superior"), "middle": ("middle", "medio"), "lower": ("lower", "inferior")}
_EFFUSION_SIZE = {"small": ("Small", "pequeño"), "moderate": ("Moderate", "moderado")}
_CT_NODULE = [
    ("A {size} mm solid nodule in the {side_en} {lobe_en} lobe.", "Nódulo sólido de {size} mm en el lóbulo {lobe_es} {side_es}."),
    ("Pulmonary nodule of {size} mm in the {side_en} {lobe_en} lobe.", "Nódulo pulmonar de {size} mm en el lóbulo {lobe_es} {side_es}."),
    ("There is a {size} mm nodule in the {side_en} lung.", "Se observa un nódulo de {size} mm en el pulmón {side_es}."),
]
_CT_NODULES = [
    ("Two nodules in the {side_en} lung, the larger {size} mm.", "Dos nódulos en el pulmón {side_es}, el mayor de {size} mm."),
    ("Two solid pulmonary nodules in the {side_en} lung, up to {size} mm.", "Dos nódulos pulmonares sólidos en el pulmón {side_es}, de hasta {size} mm."),
]
_CT_CONSOLIDATION = [
    ("Consolidation in the {side_en} {lobe_en} lobe.", "Consolidación en el lóbulo {lobe_es} {side_es}."),
    ("Airspace consolidation in the {side_en} {lobe_en} lobe.", "Consolidación del espacio aéreo en el lóbulo {lobe_es} {side_es}."),
    ("There is consolidation of the {side_en} {lobe_en} lobe.", "Se observa consolidación en el lóbulo {lobe_es} {side_es}."),
]
_CT_EFFUSION = [
    ("{Side_en} pleural effusion.", "Derrame pleural {side_es}."),
    ("{Size_en} {side_en} pleural effusion with adjacent compressive atelectasis.", "Derrame pleural {side_es} {size_es} con atelectasia pasiva adyacente."),
    ("There is a {size_en} {side_en} pleural effusion.", "Se observa derrame pleural {side_es} {size_es}."),
]
_CT_NEGATIVE: dict[str, list[tuple[str, str]]] = {
    "Nodule": [("No pulmonary nodule.", "Sin nódulos pulmonares."), ("No suspicious pulmonary nodule.", "No se observan nódulos pulmonares sospechosos.")],
    "Consolidation": [("No consolidation.", "Sin consolidación."), ("No focal consolidation.", "No se observa consolidación.")],
    "Pleural Effusion": [("No pleural effusion.", "Sin derrame pleural."), ("There is no pleural effusion.", "No hay derrame pleural.")],
}
_CT_BACKGROUND = [
    ("Heart size is normal. No mediastinal lymphadenopathy.", "Tamaño cardiaco normal. Sin adenopatías mediastínicas."),
    ("The airways are patent.", "Vía aérea permeable."),
    ("The visualized upper abdomen is unremarkable.", "Abdomen superior visualizado sin alteraciones."),
]
_CT_NORMAL_IMPRESSION = [
    ("No acute intrathoracic abnormality.", "Sin hallazgos intratorácicos agudos."),
    ("Normal chest CT.", "TC de tórax normal."),
]


def _ct_values(lesion: Mapping[str, Any], size: int | None = None) -> dict[str, Any]:
    side = lesion.get("side", "right")
    lobe = lesion.get("lobe", "lower")
    eff = lesion.get("size", "small")
    return {
        "side_en": _SIDE[side][0],
        "Side_en": _SIDE[side][0].capitalize(),
        "side_es": _SIDE[side][1],
        "lobe_en": _LOBE[lobe][0],
        "lobe_es": _LOBE[lobe][1],
        "size": size if size is not None else lesion.get("diameter_mm", 10),
        "size_en": _EFFUSION_SIZE[eff][0].lower(),
        "Size_en": _EFFUSION_SIZE[eff][0],
        "size_es": _EFFUSION_SIZE[eff][1],
    }


def compose_ct_report(lesions: Sequence[Mapping[str, Any]], rng: np.random.Generator) -> dict[str, tuple[str, str]]:
    """``{"en": (findings, impression), "es": (findings, impression)}`` for a chest CT with these lesions.

    ``lesions`` are the ones the phantom drew (:attr:`~monai_medunic.data.demo.ct.CTPhantom.lesions`),
    so sides, lobes and nodule diameters match the volume. Each finding present is stated (two nodules
    of one side in one sentence; an effusion of both sides as bilateral), each absent one is negated
    with probability 0.6, and one or two background sentences are added, in a varied order. English and
    Spanish share every choice. The impression names the findings by the zero-shot prompt names
    (:data:`~monai_medunic.data.demo.cases.SPANISH_NAMES`).
    """
    from monai_medunic.data.demo.ct import CT_FINDINGS

    by_finding: dict[str, list[Mapping[str, Any]]] = {f: [les for les in lesions if les["finding"] == f] for f in CT_FINDINGS}
    positives = [f for f in CT_FINDINGS if by_finding[f]]
    sentences: list[tuple[str, str]] = []
    order = list(CT_FINDINGS)
    rng.shuffle(order)
    for f in order:
        found = by_finding[f]
        if not found:
            if rng.random() < 0.6:
                sentences.append(_CT_NEGATIVE[f][int(rng.integers(len(_CT_NEGATIVE[f])))])
            continue
        if f == "Nodule":
            for side in ("right", "left"):
                group = [les for les in found if les["side"] == side]
                if len(group) == 1:
                    pair = _CT_NODULE[int(rng.integers(len(_CT_NODULE)))]
                    values = _ct_values(group[0])
                elif group:
                    pair = _CT_NODULES[int(rng.integers(len(_CT_NODULES)))]
                    values = _ct_values(group[0], size=max(int(les["diameter_mm"]) for les in group))
                else:
                    continue
                sentences.append((pair[0].format(**values), pair[1].format(**values)))
        elif f == "Consolidation":
            pair = _CT_CONSOLIDATION[int(rng.integers(len(_CT_CONSOLIDATION)))]
            values = _ct_values(found[0])
            sentences.append((pair[0].format(**values), pair[1].format(**values)))
        else:
            sides = {les["side"] for les in found}
            lesion = dict(found[0], side="bilateral" if len(sides) > 1 else found[0]["side"])
            pair = _CT_EFFUSION[int(rng.integers(len(_CT_EFFUSION)))]
            values = _ct_values(lesion)
            sentences.append((pair[0].format(**values), pair[1].format(**values)))
    background = [_CT_BACKGROUND[i] for i in rng.permutation(len(_CT_BACKGROUND))[: int(rng.integers(1, 3))]]
    if not positives:
        background.insert(0, ("The lungs are clear.", "Pulmones sin alteraciones."))
    en = [s[0] for s in sentences + background]
    es = [s[1] for s in sentences + background]
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
        imp_en, imp_es = _CT_NORMAL_IMPRESSION[int(rng.integers(len(_CT_NORMAL_IMPRESSION)))]
    return {"en": (" ".join(en), imp_en), "es": (" ".join(es), imp_es)}
