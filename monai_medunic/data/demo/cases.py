"""The demo dataset's vocabulary (findings, Spanish names, prevalence) and the sampler of a radiograph study's truth."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DEMO_FINDINGS", "SPANISH_NAMES", "DEFAULT_PREVALENCE", "DemoCase", "sample_case"]

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

