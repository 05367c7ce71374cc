"""The embedded demo dataset: synthetic bilingual chest-radiograph studies written as real DICOM.

This is the project's default data (``make demo``, the end-to-end tests, the bundles' defaults). It is
generated, not downloaded: :func:`generate_demo_dataset` draws, from a seed, chest radiograph
*phantoms* (body outline, lungs with vascular markings, heart, mediastinum, spine, ribs, clavicles,
diaphragm, exposure and noise) with findings at controlled prevalence, and writes

* ``out_dir/dicom/<study>/`` the images as CR or DX DICOM (a mix of MONOCHROME1 / MONOCHROME2, bit
  depths 8-16, windows with LINEAR / LINEAR_EXACT / SIGMOID functions or none, rescale intercepts,
  some JPEG 2000 lossless), some lateral views (to be filtered out, Med-UniC Sec. 4), and for some
  studies the report as a DICOM Comprehensive SR (highdicom) referencing the image;
* ``out_dir/manifest.jsonl`` one record per image-report pair (:mod:`monai_medunic.data.manifest`):
  ``image``, ``report`` (or ``report_sr``), ``language`` (``en`` or ``es``, about half each, the
  paper's two communities), ``translations`` (the same report in the other language, for
  cross-lingual evaluation), ``labels`` ``{finding: 0/1}`` (for evaluation only), ``split``
  (``train`` / ``val`` / ``test``, 70/15/15 by study) and ``study_uid``. Records carry no ``view``:
  the loader classifies each image from its DICOM header, so lateral views are filtered by the view
  rule (:func:`monai_medunic.transforms.views.classify_view`);
* ``out_dir/demo_info.json`` the counts of :class:`DemoDatasetInfo`.

Findings (:data:`DEMO_FINDINGS`) and how they look, chosen to stay visible at 96-128 px:

* Cardiomegaly: a heart about 1.5x wider (cardiothoracic ratio ~0.6 instead of ~0.4);
* Pleural Effusion: a dense basal opacity with a lateral meniscus that blunts the costophrenic angle
  and hides the hemidiaphragm (one side or both);
* Pneumothorax: a dark apico-lateral rim without lung markings, bounded by a thin pleural line;
* Nodule: one or two round opacities of 6-9 px diameter at 128 px;
* Consolidation: a patchy opacity in one zone of one lung;
* Edema: bilateral perihilar ("batwing") haze with a few basal septal lines.

Each finding occurs independently with probability ~0.2-0.3 (:data:`DEFAULT_PREVALENCE`); a study
without any is "normal". Nuisance variation: patient size and aspect, shift, rotation, exposure
(gain, gamma, offset), heel-effect gradient, blur and noise.

Reports follow varied English and Spanish templates (FINDINGS then IMPRESSION), mention each present
finding by the names of :data:`SPANISH_NAMES` (the zero-shot prompt names) and negate a random
subset of the absent ones ("No pleural effusion." / "Sin derrame pleural." / "No hay derrame
pleural."). A few normal studies get a terse two-word report, which the manifest loader drops as
``short_report`` (Med-UniC Sec. 4: reports of fewer than three tokens are removed).

Patient, study and series identifiers are obviously synthetic (``SYNTHETIC^DEMO^0001``,
``SYNTH-<seed>-0001``); UIDs are derived deterministically from the seed, so a seed reproduces the
dataset byte for byte.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    generate_uid,
)
from scipy import ndimage

from monai_medunic.errors import ConfigurationError

__all__ = [
    "DEMO_FINDINGS",
    "SPANISH_NAMES",
    "DEFAULT_PREVALENCE",
    "DemoCase",
    "DemoDatasetInfo",
    "sample_case",
    "render_chest_phantom",
    "compose_report",
    "generate_demo_dataset",
    "cli_main",
]

logger = logging.getLogger(__name__)

DEMO_FINDINGS: tuple[str, ...] = (
    "Cardiomegaly",
    "Pleural Effusion",
    "Pneumothorax",
    "Nodule",
    "Consolidation",
    "Edema",
)
SPANISH_NAMES: dict[str, str] = {
    "Cardiomegaly": "Cardiomegalia",
    "Pleural Effusion": "Derrame pleural",
    "Pneumothorax": "Neumotórax",
    "Nodule": "Nódulo",
    "Consolidation": "Consolidación",
    "Edema": "Edema",
}
DEFAULT_PREVALENCE: dict[str, float] = {
    "Cardiomegaly": 0.30,
    "Pleural Effusion": 0.28,
    "Pneumothorax": 0.24,
    "Nodule": 0.25,
    "Consolidation": 0.27,
    "Edema": 0.25,
}

CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's root; suffixes are hashes of the seed and study


# --------------------------------------------------------------------------------------------- cases
@dataclass
class DemoCase:
    """One synthetic study's ground truth: which findings, where, and the nuisance parameters."""

    index: int
    labels: dict[str, int]
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    language: str = "en"
    has_lateral: bool = False


def sample_case(
    rng: np.random.Generator, index: int = 0, prevalence: Mapping[str, float] | None = None, spanish_fraction: float = 0.5
) -> DemoCase:
    """Draw a study: findings (independent Bernoulli per :data:`DEFAULT_PREVALENCE`) and their attributes."""
    prev = dict(DEFAULT_PREVALENCE if prevalence is None else prevalence)
    labels = {f: int(rng.random() < prev.get(f, 0.0)) for f in DEMO_FINDINGS}
    attrs: dict[str, dict[str, Any]] = {}
    sides = ("right", "left")
    if labels["Pleural Effusion"]:
        side = "bilateral" if rng.random() < 0.25 else sides[int(rng.integers(2))]
        attrs["Pleural Effusion"] = {"side": side, "height": float(rng.uniform(0.16, 0.28))}
    if labels["Pneumothorax"]:
        attrs["Pneumothorax"] = {"side": sides[int(rng.integers(2))], "width": float(rng.uniform(0.32, 0.45))}
    if labels["Nodule"]:
        n = 2 if rng.random() < 0.15 else 1
        attrs["Nodule"] = {
            "side": sides[int(rng.integers(2))],
            "count": n,
            "radius": float(rng.uniform(0.05, 0.07)),
            "size_mm": int(rng.integers(8, 25)),
        }
    if labels["Consolidation"]:
        attrs["Consolidation"] = {
            "side": sides[int(rng.integers(2))],
            "zone": ("upper", "middle", "lower")[int(rng.integers(3))],
        }
    if labels["Cardiomegaly"]:
        attrs["Cardiomegaly"] = {"severity": ("mild", "moderate", "marked")[int(rng.integers(3))]}
    if labels["Edema"]:
        attrs["Edema"] = {"pattern": ("interstitial", "perihilar", "alveolar")[int(rng.integers(3))]}
    language = "es" if rng.random() < spanish_fraction else "en"
    return DemoCase(index=index, labels=labels, attrs=attrs, language=language)


# ------------------------------------------------------------------------------------------ phantom
def _soft(x: np.ndarray, k: float) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(x / (2.0 * k)))


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    small = max(size // 4, cells)
    coarse = ndimage.gaussian_filter(
        rng.standard_normal((small, small)).astype(np.float32), sigma=small / cells / 2.0, mode="reflect"
    )
    fine = ndimage.zoom(coarse, size / small, order=1, mode="nearest", grid_mode=True)[:size, :size]
    return (fine - fine.mean()) / (fine.std() + 1e-6)


def _ellipse_r(u: np.ndarray, v: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2)


def render_chest_phantom(
    case: DemoCase, rng: np.random.Generator, size: int = 256, view: str = "frontal"
) -> np.ndarray:
    """Render a chest radiograph phantom as display intensities in [0, 1] (bright = dense), ``(size, size)``.

    The frontal view is a PA projection seen as usual (the patient's right on the image's left). The
    lateral view is a left lateral (anterior on the image's left). Every finding of ``case`` is drawn
    on the frontal view; the lateral view shows the heart size and effusions.
    """
    if view not in ("frontal", "lateral"):
        raise ConfigurationError(f"view must be 'frontal' or 'lateral', got {view!r}")
    c = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2.0 - 1.0
    U, V = np.meshgrid(c, c)
    sx = float(rng.uniform(0.88, 1.05))
    sy = sx * float(rng.uniform(0.95, 1.05))
    dx, dy = float(rng.uniform(-0.06, 0.06)), float(rng.uniform(-0.05, 0.05))
    th = float(np.deg2rad(rng.uniform(-5.0, 5.0)))
    ct, st = float(np.cos(th)), float(np.sin(th))
    u = ((U - dx) * ct + (V - dy) * st) / sx
    v = (-(U - dx) * st + (V - dy) * ct) / sy
    edge = 0.012
    # findings draw from their own stream, so the anatomy and exposure of a study do not depend on them
    frng = np.random.default_rng(int(rng.integers(0, 2**62)))
    tex = _smooth_noise(rng, size, 28)
    tex2 = _smooth_noise(rng, size, 12)
    if view == "lateral":
        return _render_lateral(case, rng, u, v, tex, edge)

    body = _soft(1.0 - _ellipse_r(u, v, 0.0, 0.18, 0.86, 1.12), 0.02)
    D = 0.32 * body
    lungs: dict[str, dict[str, Any]] = {}
    for side, sign in (("right", -1.0), ("left", 1.0)):
        cx = sign * float(rng.uniform(0.34, 0.38))
        cy = -0.08 + float(rng.uniform(-0.02, 0.02))
        rx = float(rng.uniform(0.24, 0.27))
        ry = float(rng.uniform(0.52, 0.58))
        dome0 = (0.29 if side == "right" else 0.33) + float(rng.uniform(-0.03, 0.03))
        e = _ellipse_r(u, v, cx, cy, rx, ry)
        t_lat = (u - cx) / rx * sign  # +1 = lateral edge
        dome = dome0 + 0.2 * np.clip(t_lat, -1, 1) ** 2 + 0.08 * np.clip(t_lat, 0, 1)
        mask = _soft(1.0 - e, edge / max(rx, ry)) * _soft(dome - v, edge)
        lungs[side] = {"cx": cx, "cy": cy, "rx": rx, "ry": ry, "e": e, "t": t_lat, "mask": mask, "sign": sign, "dome0": dome0}
    lung = np.clip(lungs["right"]["mask"] + lungs["left"]["mask"], 0.0, 1.0)

    # pneumothorax rim (no markings there)
    rim = np.zeros_like(u)
    pleural_line = np.zeros_like(u)
    if case.labels.get("Pneumothorax"):
        a = case.attrs["Pneumothorax"]
        L = lungs[a["side"]]
        w = a["width"]
        region = _soft((L["cy"] + 0.2) - v, 0.03) * np.maximum(_soft(L["t"] + 0.3, 0.06), _soft((L["cy"] - 0.25) - v, 0.03))
        rim = L["mask"] * _soft(L["e"] - (1.0 - w), 0.01) * region
        pleural_line = L["mask"] * np.exp(-(((L["e"] - (1.0 - w)) / 0.018) ** 2)) * region

    # lung parenchyma with vascular markings, brighter towards the hila
    hilar = np.zeros_like(u)
    for L in lungs.values():
        hilar += np.exp(-(((u - (L["cx"] - L["sign"] * 0.16)) / 0.28) ** 2 + ((v - (L["cy"] + 0.05)) / 0.35) ** 2))
    markings = (0.028 * np.abs(tex) + 0.012 * tex2) * (0.4 + 0.8 * hilar)
    D = D - 0.24 * lung + lung * (1.0 - rim) * markings
    D = D * (1.0 - rim) + rim * 0.005 * body + 0.07 * pleural_line

    # mediastinum, heart, spine, ribs, clavicles
    med = _soft(1.0 - _ellipse_r(u, v, 0.0, -0.22, 0.1, 0.36), 0.015)
    D = D * (1.0 - med) + 0.36 * med
    hx = 0.08 + float(rng.uniform(-0.02, 0.02))
    if case.labels.get("Cardiomegaly"):
        sev = {"mild": 0.0, "moderate": 0.03, "marked": 0.06}[case.attrs["Cardiomegaly"]["severity"]]
        hrx, hry = float(rng.uniform(0.33, 0.36)) + sev, float(rng.uniform(0.23, 0.26))
    else:
        hrx, hry = float(rng.uniform(0.19, 0.23)), float(rng.uniform(0.18, 0.21))
    hy = 0.36 - hry  # the heart rests on the diaphragm
    heart = _soft(1.0 - _ellipse_r(u, v, hx, hy, hrx, hry), 0.012)
    D = D * (1.0 - heart) + (0.40 + 0.02 * tex2) * heart
    spine = _soft(0.06 - np.abs(u), 0.01) * body
    D = D + 0.06 * spine
    au = np.abs(u)
    # posterior ribs: nine bands 0.105 apart that slope down laterally; the band profile is periodic in
    # the distance to the rib curve, so one pass draws them all
    rib_phase = (v + 0.6 - 0.3 * np.clip((au - 0.08) / 0.65, 0, None) ** 1.3) / 0.105
    rib_dist = np.abs(rib_phase - np.rint(rib_phase)) * 0.105
    in_cage = _soft(rib_phase + 0.5, 0.05) * _soft(8.5 - rib_phase, 0.05)
    ribs = _soft(0.017 - rib_dist, 0.006) * _soft(au - 0.09, 0.02) * in_cage
    D = D + 0.04 * ribs * body
    clav = _soft(0.02 - np.abs(v - (-0.64 + 0.12 * np.clip(au - 0.1, 0, None))), 0.006) * _soft(0.62 - au, 0.03) * _soft(au - 0.05, 0.02)
    D = D + 0.09 * clav

    # findings
    if case.labels.get("Edema"):
        haze = np.zeros_like(u)
        for L in lungs.values():
            hxl = L["cx"] - L["sign"] * 0.12
            haze += np.exp(-(((u - hxl) / 0.2) ** 2 + ((v - (L["cy"] + 0.08)) / 0.28) ** 2) / 2.0)
        kerley = np.zeros_like(u)
        for L in lungs.values():
            for k in range(4):
                yk = L["dome0"] - 0.05 - 0.045 * k
                kerley += _soft(0.008 - np.abs(v - yk), 0.004) * _soft(L["t"] - 0.55, 0.05) * L["mask"]
        D = D + lung * (1.0 - rim) * (0.17 * np.clip(haze, 0, 1) * (0.85 + 0.15 * tex2) + 0.035) + 0.05 * kerley
    if case.labels.get("Consolidation"):
        a = case.attrs["Consolidation"]
        L = lungs[a["side"]]
        zy = {"upper": -0.5, "middle": 0.0, "lower": 0.45}[a["zone"]] * L["ry"] + L["cy"]
        ccx = L["cx"] + L["sign"] * float(frng.uniform(-0.05, 0.1))
        blob = np.exp(-(((u - ccx) / 0.19) ** 2 + ((v - zy) / 0.17) ** 2) / 2.0)
        patch = _soft(_smooth_noise(frng, u.shape[0], 14) + 0.5, 0.25)
        D = D + 0.38 * L["mask"] * (1.0 - rim) * blob * patch
    if case.labels.get("Nodule"):
        a = case.attrs["Nodule"]
        L = lungs[a["side"]]
        for k in range(int(a["count"])):
            for _ in range(50):
                rr, ang = float(frng.uniform(0.1, 0.7)), float(frng.uniform(0, 2 * np.pi))
                ncx, ncy = L["cx"] + rr * L["rx"] * np.cos(ang), L["cy"] + rr * L["ry"] * np.sin(ang) * 0.8
                if ncy < L["dome0"] - 0.1 and not (abs(ncx - hx) < hrx and ncy > hy - hry):
                    break
            r = a["radius"] * (0.85 if k else 1.0)
            d = np.sqrt((u - ncx) ** 2 + (v - ncy) ** 2)
            D = D + 0.42 * _soft(r - d, 0.006)
    if case.labels.get("Pleural Effusion"):
        a = case.attrs["Pleural Effusion"]
        for side in ("right", "left") if a["side"] == "bilateral" else (a["side"],):
            L = lungs[side]
            h = a["height"] * (0.8 if a["side"] == "bilateral" else 1.0)
            top = L["dome0"] + 0.06 - h * (1.0 + 0.6 * np.clip(L["t"], 0, 1))
            ext = _soft(1.06 - _ellipse_r(u, v, L["cx"], L["cy"], L["rx"], L["ry"]), 0.02)
            fluid = ext * _soft(v - top, 0.025) * _soft(0.62 - v, 0.02)
            D = D * (1.0 - fluid) + (0.36 + 0.01 * tex2) * fluid
    return _expose(D, rng, U, V)


def _render_lateral(case: DemoCase, rng: np.random.Generator, u: np.ndarray, v: np.ndarray, tex: np.ndarray, edge: float) -> np.ndarray:
    body = _soft(1.0 - _ellipse_r(u, v, 0.02, 0.15, 0.72, 1.12), 0.02)
    D = 0.34 * body
    dome = 0.3 + 0.18 * ((u - 0.05) / 0.5) ** 2
    lung = _soft(1.0 - _ellipse_r(u, v, 0.05, -0.08, 0.5, 0.58), 0.02) * _soft(dome - v, edge)
    D = D - 0.22 * lung + lung * 0.03 * np.abs(tex)
    hrx = 0.36 if case.labels.get("Cardiomegaly") else 0.26
    heart = _soft(1.0 - _ellipse_r(u, v, -0.22, 0.22, hrx, 0.24), 0.015)
    D = D * (1.0 - heart) + 0.4 * heart
    for k in range(9):  # vertebral bodies, posterior (image right)
        vy = -0.7 + k * 0.16
        D = D + 0.14 * _soft(0.06 - np.abs(v - vy), 0.01) * _soft(0.09 - np.abs(u - 0.52), 0.01)
    if case.labels.get("Pleural Effusion"):
        fluid = lung * _soft(v - (0.28 - case.attrs["Pleural Effusion"]["height"] * 0.6), 0.03) * _soft(u - 0.1, 0.05)
        D = D * (1.0 - fluid) + 0.36 * fluid
    U = u
    return _expose(D, rng, U, v)


def _expose(D: np.ndarray, rng: np.random.Generator, U: np.ndarray, V: np.ndarray) -> np.ndarray:
    size = D.shape[0]
    gain = float(rng.uniform(1.55, 1.9))
    gamma = float(rng.uniform(0.85, 1.15))
    offset = float(rng.uniform(0.0, 0.06))
    img = offset + gain * np.clip(D, 0.0, None) ** gamma
    img = img + float(rng.uniform(-0.04, 0.04)) * V + float(rng.uniform(-0.02, 0.02)) * U
    img = ndimage.gaussian_filter(img, sigma=float(rng.uniform(0.4, 0.9)) * size / 256.0)
    sigma = float(rng.uniform(0.006, 0.02))
    img = img + rng.standard_normal(img.shape).astype(np.float32) * sigma * (0.5 + np.sqrt(np.clip(img, 0, 1)))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------ reports
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


# --------------------------------------------------------------------------------------------- DICOM
@dataclass
class _Storage:
    sop_class: str
    modality: str
    photometric: str
    bits_stored: int
    window: str  # "single", "double", "none", "sigmoid", "linear_exact"
    intercept: int
    jpeg2000: bool


def _sample_storage(rng: np.random.Generator, mono1_fraction: float, j2k_fraction: float) -> _Storage:
    dx = rng.random() < 0.5
    bits = int(rng.choice([8, 10, 12, 14, 16], p=[0.2, 0.2, 0.3, 0.15, 0.15]))
    window = str(rng.choice(["single", "double", "none", "sigmoid", "linear_exact"], p=[0.45, 0.2, 0.15, 0.1, 0.1]))
    intercept = 0 if dx or bits < 12 or rng.random() < 0.6 else -int(rng.choice([512, 1024]))
    return _Storage(
        sop_class=DX_PRESENTATION_STORAGE if dx else CR_STORAGE,
        modality="DX" if dx else "CR",
        photometric="MONOCHROME1" if rng.random() < mono1_fraction else "MONOCHROME2",
        bits_stored=bits,
        window=window,
        intercept=intercept,
        jpeg2000=bool(rng.random() < j2k_fraction),
    )


def _uid(seed: int, *parts: Any) -> str:
    return generate_uid(prefix=_UID_PREFIX, entropy_srcs=["monai-medunic-demo", str(seed), *map(str, parts)])


def _patient(ds: Dataset, seed: int, index: int, rng_sex: str) -> None:
    ds.PatientName = f"SYNTHETIC^DEMO^{index + 1:04d}"
    ds.PatientID = f"SYNTH-{seed}-{index + 1:04d}"
    ds.PatientBirthDate = "19000101"
    ds.PatientSex = rng_sex
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = "Synthetic phantom, no real patient (monai-medunic demo data)"


def _image_dataset(
    img: np.ndarray,
    storage: _Storage,
    *,
    seed: int,
    case: DemoCase,
    study_uid: str,
    series_uid: str,
    sop_uid: str,
    view: str,
    view_encoding: str,
    series_number: int,
    study_date: str,
    sex: str,
    pixel_spacing: float,
    rng: np.random.Generator,
) -> Dataset:
    maxval = 2**storage.bits_stored - 1
    display = np.clip(img, 0.0, 1.0)
    values = display if storage.photometric == "MONOCHROME2" else 1.0 - display
    offset = -storage.intercept  # stored = value + offset, so value = stored + intercept
    span = maxval - offset
    stored = np.rint(values * span + offset).astype(np.uint16 if storage.bits_stored > 8 else np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = storage.sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = storage.sop_class
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = f"DEMO{case.index + 1:05d}"
    ds.AccessionNumber = f"SYNACC{seed % 1000:03d}{case.index + 1:05d}"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.StudyDescription = "SYNTHETIC CHEST RADIOGRAPH (DEMO)"
    ds.ReferringPhysicianName = ""
    _patient(ds, seed, case.index, sex)
    ds.Modality = storage.modality
    ds.Manufacturer = "monai-medunic synthetic phantom"
    ds.InstitutionName = "SYNTHETIC DEMO HOSPITAL"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.BodyPartExamined = "CHEST"
    # view attributes, in several encodings so that every rule of classify_view is exercised
    ds.ViewPosition = ""
    if view == "frontal":
        if view_encoding == "view_position":
            ds.ViewPosition = "PA" if storage.modality == "CR" or rng.random() < 0.5 else "AP"
            ds.SeriesDescription = "CHEST" if case.language == "en" else "TORAX"
            ds.PatientOrientation = ["L", "F"]
        elif view_encoding == "patient_orientation":
            ds.PatientOrientation = ["L", "F"]
        else:
            ds.SeriesDescription = "CHEST PA" if case.language == "en" else "TORAX PA"
    else:
        if view_encoding == "view_position":
            ds.ViewPosition = "LL"
            ds.SeriesDescription = "CHEST" if case.language == "en" else "TORAX"
            ds.PatientOrientation = ["A", "F"]
        elif view_encoding == "patient_orientation":
            ds.PatientOrientation = ["A", "F"]
        else:
            ds.SeriesDescription = "CHEST LAT" if case.language == "en" else "TORAX LATERAL"
    if storage.modality == "DX":
        ds.ImagerPixelSpacing = [pixel_spacing, pixel_spacing]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PresentationLUTShape = "INVERSE" if storage.photometric == "MONOCHROME1" else "IDENTITY"
        ds.DetectorType = "SCINTILLATOR"
    else:
        ds.PixelSpacing = [pixel_spacing, pixel_spacing]
    ds.Rows, ds.Columns = int(img.shape[0]), int(img.shape[1])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = storage.photometric
    ds.BitsAllocated = 8 if storage.bits_stored == 8 else 16
    ds.BitsStored = storage.bits_stored
    ds.HighBit = storage.bits_stored - 1
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"
    if storage.intercept != 0:
        ds.RescaleIntercept = storage.intercept
        ds.RescaleSlope = 1
        ds.RescaleType = "US"
    # windows on the modality-LUT output; they cover the body's intensity range
    real = stored.astype(np.float64) + storage.intercept
    lo, hi = (float(v) for v in np.percentile(real, [1.0, 99.8]))
    width = max(hi - lo, 2.0) * float(rng.uniform(0.95, 1.12))
    center = 0.5 * (lo + hi) + float(rng.uniform(-0.03, 0.03)) * width
    if storage.window in ("single", "sigmoid", "linear_exact"):
        ds.WindowCenter = round(center, 1)
        ds.WindowWidth = round(width, 1)
        if storage.window == "sigmoid":
            ds.VOILUTFunction = "SIGMOID"
        elif storage.window == "linear_exact":
            ds.VOILUTFunction = "LINEAR_EXACT"
        ds.WindowCenterWidthExplanation = "DEMO"
    elif storage.window == "double":
        ds.WindowCenter = [round(center, 1), round(center + 0.15 * width, 1)]
        ds.WindowWidth = [round(width, 1), round(0.4 * width, 1)]
        ds.WindowCenterWidthExplanation = ["STANDARD", "BONE"]
    ds.LossyImageCompression = "00"
    ds.PixelData = stored.tobytes()
    if storage.jpeg2000:
        # lossless: the same instance, so keep the SOP Instance UID (pydicom would make a new one)
        ds.compress(JPEG2000Lossless, stored, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    return ds


def _fixed_times(ds: Dataset, study_date: str) -> None:
    for kw, value in (
        ("InstanceCreationDate", study_date),
        ("InstanceCreationTime", "130000"),
        ("ContentDate", study_date),
        ("ContentTime", "130000"),
        ("SeriesDate", study_date),
        ("SeriesTime", "130000"),
    ):
        if kw in ds:
            setattr(ds, kw, value)
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = f"{study_date}130000"


class _QuietLoggers:
    """Raise the level of chatty third-party loggers (highdicom logs each copied module at INFO)."""

    def __init__(self, *names: str) -> None:
        self.loggers = [logging.getLogger(n) for n in names]
        self.levels = [lg.level for lg in self.loggers]

    def __enter__(self) -> None:
        for lg in self.loggers:
            lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))

    def __exit__(self, *exc: Any) -> None:
        for lg, level in zip(self.loggers, self.levels):
            lg.setLevel(level)


def _sr_dataset(
    image: Dataset, case: DemoCase, parts: tuple[str, str], language: str, *, sr_series: str, sr_uid: str, study_date: str
) -> Dataset:
    import highdicom as hd

    lang_code = hd.sr.CodedConcept(value=language, scheme_designator="RFC5646", meaning={"en": "English", "es": "Spanish"}[language])
    items: list[Any] = list(hd.sr.LanguageOfContentItemAndDescendants(language=lang_code))
    findings_text, impression_text = parts
    findings = hd.sr.ContainerContentItem(
        name=hd.sr.CodedConcept("121070", "DCM", "Findings"), relationship_type="CONTAINS"
    )
    findings.ContentSequence = [
        hd.sr.TextContentItem(
            name=hd.sr.CodedConcept("121071", "DCM", "Finding"), value=findings_text, relationship_type="CONTAINS"
        )
    ]
    items.append(findings)
    if impression_text:
        impression = hd.sr.ContainerContentItem(
            name=hd.sr.CodedConcept("121072", "DCM", "Impressions"), relationship_type="CONTAINS"
        )
        impression.ContentSequence = [
            hd.sr.TextContentItem(
                name=hd.sr.CodedConcept("121073", "DCM", "Impression"), value=impression_text, relationship_type="CONTAINS"
            )
        ]
        items.append(impression)
    root = hd.sr.ContainerContentItem(name=hd.sr.CodedConcept("18748-4", "LN", "Diagnostic imaging report"))
    root.ContentSequence = items
    sr = hd.sr.ComprehensiveSR(
        evidence=[image],
        content=root,
        series_instance_uid=sr_series,
        series_number=99,
        sop_instance_uid=sr_uid,
        instance_number=1,
        manufacturer="monai-medunic synthetic phantom",
        is_complete=True,
        is_final=True,
        series_description="SYNTHETIC REPORT (DEMO)",
    )
    _fixed_times(sr, study_date)
    return sr


# -------------------------------------------------------------------------------------------- driver
@dataclass
class DemoDatasetInfo:
    """What :func:`generate_demo_dataset` wrote."""

    out_dir: str
    manifest_path: str
    seed: int
    image_size: int
    num_studies: int
    num_images: int
    num_frontal: int
    num_lateral: int
    num_sr: int
    num_jpeg2000: int
    num_monochrome1: int
    num_short_reports: int
    findings: tuple[str, ...] = DEMO_FINDINGS
    prevalence: dict[str, float] = field(default_factory=dict)
    num_normal: int = 0
    languages: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)
    modalities: dict[str, int] = field(default_factory=dict)
    bits_stored: dict[str, int] = field(default_factory=dict)
    windows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["findings"] = list(self.findings)
        return d


def _split_of(num_studies: int, seed: int, fractions: Sequence[float]) -> list[str]:
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigurationError(f"split_fractions must be three non-negative numbers summing to 1, got {fractions}")
    order = np.random.default_rng([seed, 7919]).permutation(num_studies)
    n_train = int(round(fractions[0] * num_studies))
    n_val = int(round(fractions[1] * num_studies))
    split = ["test"] * num_studies
    for rank, idx in enumerate(order):
        split[int(idx)] = "train" if rank < n_train else ("val" if rank < n_train + n_val else "test")
    return split


def _write_studies(
    out: str,
    num_studies: int,
    seed: int,
    image_size: int,
    prevalence: Mapping[str, float] | None,
    lateral_fraction: float,
    sr_fraction: float,
    jpeg2000_fraction: float,
    monochrome1_fraction: float,
    spanish_fraction: float,
    splits: Sequence[str],
) -> tuple[list[dict[str, Any]], Counter[str], Counter[str]]:
    """Write every study's DICOM files; return the manifest records and the counts."""
    base_date = datetime.date(2024, 1, 1)
    pixel_spacing = round(430.0 / image_size, 4)
    records: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    label_sums: Counter[str] = Counter()
    for i in range(num_studies):
        rng = np.random.default_rng([seed, i])
        case = sample_case(rng, i, prevalence, spanish_fraction)
        case.has_lateral = bool(rng.random() < lateral_fraction)
        report = compose_report(case, rng)
        lang = case.language
        other = "en" if lang == "es" else "es"
        text = _report_text(report[lang])
        translation = _report_text(report[other])
        counts["short_reports"] += int(len(text.split()) < 3)
        study_uid = _uid(seed, i, "study")
        study_date = (base_date + datetime.timedelta(days=i % 365)).strftime("%Y%m%d")
        study_dir = os.path.join(out, "dicom", f"study_{i + 1:05d}")
        os.makedirs(study_dir, exist_ok=True)
        sex = "F" if rng.random() < 0.5 else "M"
        views = ["frontal"] + (["lateral"] if case.has_lateral else [])
        image_paths: list[tuple[str, str]] = []
        frontal_ds: Dataset | None = None
        for k, view in enumerate(views):
            storage = _sample_storage(rng, monochrome1_fraction, jpeg2000_fraction)
            enc = str(rng.choice(["view_position", "patient_orientation", "series_description"], p=[0.7, 0.15, 0.15]))
            img = render_chest_phantom(case, rng, image_size, view)
            ds = _image_dataset(
                img,
                storage,
                seed=seed,
                case=case,
                study_uid=study_uid,
                series_uid=_uid(seed, i, "series", k),
                sop_uid=_uid(seed, i, "image", k),
                view=view,
                view_encoding=enc,
                series_number=k + 1,
                study_date=study_date,
                sex=sex,
                pixel_spacing=pixel_spacing,
                rng=rng,
            )
            name = f"{'frontal' if view == 'frontal' else 'lateral'}_{k + 1}.dcm"
            path = os.path.join(study_dir, name)
            ds.save_as(path, enforce_file_format=True)
            image_paths.append((view, os.path.relpath(path, out).replace(os.sep, "/")))
            counts[f"view_{view}"] += 1
            counts["jpeg2000"] += int(storage.jpeg2000)
            counts["monochrome1"] += int(storage.photometric == "MONOCHROME1")
            counts[f"modality_{storage.modality}"] += 1
            counts[f"bits_{storage.bits_stored}"] += 1
            counts[f"window_{storage.window}"] += 1
            if view == "frontal":
                frontal_ds = ds
        sr_rel = None
        if rng.random() < sr_fraction and frontal_ds is not None:
            sr = _sr_dataset(
                frontal_ds,
                case,
                report[lang],
                lang,
                sr_series=_uid(seed, i, "sr-series"),
                sr_uid=_uid(seed, i, "sr"),
                study_date=study_date,
            )
            sr_path = os.path.join(study_dir, "report_sr.dcm")
            sr.save_as(sr_path, enforce_file_format=True)
            sr_rel = os.path.relpath(sr_path, out).replace(os.sep, "/")
            counts["sr"] += 1
        for f in DEMO_FINDINGS:
            label_sums[f] += case.labels[f]
        counts["normal"] += int(not any(case.labels.values()))
        counts[f"lang_{lang}"] += 1
        counts[f"split_{splits[i]}"] += 1
        for _view, rel in image_paths:
            rec: dict[str, Any] = {"image": rel}
            if sr_rel is not None:
                rec["report_sr"] = sr_rel
            else:
                rec["report"] = text
            rec.update(
                language=lang,
                translations={other: translation},
                labels=dict(case.labels),
                split=splits[i],
                study_uid=study_uid,
            )
            records.append(rec)
    return records, counts, label_sums


def generate_demo_dataset(
    out_dir: str | os.PathLike,
    num_studies: int = 300,
    seed: int = 0,
    image_size: int = 256,
    prevalence: Mapping[str, float] | None = None,
    lateral_fraction: float = 0.2,
    sr_fraction: float = 0.35,
    jpeg2000_fraction: float = 0.2,
    monochrome1_fraction: float = 0.35,
    spanish_fraction: float = 0.5,
    split_fractions: Sequence[float] = (0.7, 0.15, 0.15),
    overwrite: bool = False,
) -> DemoDatasetInfo:
    """Write the synthetic bilingual chest radiograph dataset (see the module docstring).

    Args:
        out_dir: output folder (created). Must be empty or absent unless ``overwrite``.
        num_studies: number of studies (each has one frontal image; some also a lateral).
        seed: the seed; a seed reproduces the dataset exactly. Study ``i`` depends only on ``(seed, i)``.
        image_size: stored rows and columns (square). 256 keeps generation and loading fast; training
            resizes to 96-128 px.
        prevalence: per-finding probabilities (default :data:`DEFAULT_PREVALENCE`).
        lateral_fraction: fraction of studies that also have a lateral view.
        sr_fraction: fraction of studies whose report is stored as a DICOM SR (the rest inline).
        jpeg2000_fraction: fraction of images stored JPEG 2000 lossless.
        monochrome1_fraction: fraction of images stored MONOCHROME1.
        spanish_fraction: fraction of studies reported in Spanish (the rest English).
        split_fractions: train / val / test fractions, assigned by study.
        overwrite: replace an existing non-empty ``out_dir``.

    Returns:
        :class:`DemoDatasetInfo` (also written to ``out_dir/demo_info.json``).
    """
    start = time.perf_counter()
    if num_studies < 1:
        raise ConfigurationError(f"num_studies must be >= 1, got {num_studies}")
    if image_size < 64:
        raise ConfigurationError(f"image_size must be >= 64, got {image_size}")
    for name, frac in (
        ("lateral_fraction", lateral_fraction),
        ("sr_fraction", sr_fraction),
        ("jpeg2000_fraction", jpeg2000_fraction),
        ("monochrome1_fraction", monochrome1_fraction),
        ("spanish_fraction", spanish_fraction),
    ):
        if not 0.0 <= frac <= 1.0:
            raise ConfigurationError(f"{name} must be in [0, 1], got {frac}")
    if prevalence is not None:
        unknown = set(prevalence) - set(DEMO_FINDINGS)
        if unknown:
            raise ConfigurationError(f"unknown findings in prevalence: {sorted(unknown)}; known: {DEMO_FINDINGS}")
    out = os.fspath(out_dir)
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise ConfigurationError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace it")
        for name in ("dicom", "manifest.jsonl", "demo_info.json"):
            target = os.path.join(out, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
    os.makedirs(os.path.join(out, "dicom"), exist_ok=True)
    splits = _split_of(num_studies, seed, split_fractions)
    with _QuietLoggers("highdicom", "openjpeg"):
        records, counts, label_sums = _write_studies(
            out, num_studies, seed, image_size, prevalence, lateral_fraction, sr_fraction, jpeg2000_fraction,
            monochrome1_fraction, spanish_fraction, splits,
        )
    manifest_path = os.path.join(out, "manifest.jsonl")
    with open(manifest_path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    info = DemoDatasetInfo(
        out_dir=out,
        manifest_path=manifest_path,
        seed=seed,
        image_size=image_size,
        num_studies=num_studies,
        num_images=counts["view_frontal"] + counts["view_lateral"],
        num_frontal=counts["view_frontal"],
        num_lateral=counts["view_lateral"],
        num_sr=counts["sr"],
        num_jpeg2000=counts["jpeg2000"],
        num_monochrome1=counts["monochrome1"],
        num_short_reports=counts["short_reports"],
        prevalence={f: label_sums[f] / num_studies for f in DEMO_FINDINGS},
        num_normal=counts["normal"],
        languages={k[5:]: v for k, v in sorted(counts.items()) if k.startswith("lang_")},
        splits={k[6:]: v for k, v in sorted(counts.items()) if k.startswith("split_")},
        modalities={k[9:]: v for k, v in sorted(counts.items()) if k.startswith("modality_")},
        bits_stored={k[5:]: v for k, v in sorted(counts.items()) if k.startswith("bits_")},
        windows={k[7:]: v for k, v in sorted(counts.items()) if k.startswith("window_")},
    )
    info.seconds = round(time.perf_counter() - start, 3)
    with open(os.path.join(out, "demo_info.json"), "w", encoding="utf-8") as fh:
        saved = {k: v for k, v in info.to_json().items() if k not in ("seconds", "out_dir")}
        saved["manifest_path"] = os.path.basename(manifest_path)  # relative: the folder can move
        json.dump(saved, fh, indent=2, ensure_ascii=False)
    logger.info(
        "demo dataset: %d studies, %d images (%d lateral), %d SR reports, %d JPEG 2000, %d MONOCHROME1 in %.1f s -> %s",
        info.num_studies,
        info.num_images,
        info.num_lateral,
        info.num_sr,
        info.num_jpeg2000,
        info.num_monochrome1,
        info.seconds,
        out,
    )
    return info


def cli_main(argv: Sequence[str]) -> int:
    """``medunic demo-data --out DIR --studies N --seed S``."""
    parser = argparse.ArgumentParser(
        prog="medunic demo-data",
        description="Generate the embedded synthetic bilingual chest radiograph dataset (DICOM + manifest.jsonl).",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--studies", type=int, default=300, help="number of studies (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--image-size", type=int, default=256, help="stored rows/columns (default 256)")
    parser.add_argument("--lateral-fraction", type=float, default=0.2)
    parser.add_argument("--sr-fraction", type=float, default=0.35)
    parser.add_argument("--jpeg2000-fraction", type=float, default=0.2)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --out")
    args = parser.parse_args(list(argv))
    info = generate_demo_dataset(
        args.out,
        num_studies=args.studies,
        seed=args.seed,
        image_size=args.image_size,
        lateral_fraction=args.lateral_fraction,
        sr_fraction=args.sr_fraction,
        jpeg2000_fraction=args.jpeg2000_fraction,
        overwrite=args.overwrite,
    )
    prevalence = ", ".join(f"{k} {v:.2f}" for k, v in info.prevalence.items())
    print(
        f"wrote {info.num_studies} studies ({info.num_images} images: {info.num_frontal} frontal, {info.num_lateral} lateral; "
        f"{info.num_sr} SR reports; {info.num_jpeg2000} JPEG 2000; {info.num_monochrome1} MONOCHROME1) in {info.seconds:.1f} s\n"
        f"prevalence: {prevalence}; normal {info.num_normal}\nmanifest: {info.manifest_path}"
    )
    return 0
