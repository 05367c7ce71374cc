"""Chest radiograph phantoms: frontal (PA) and lateral views drawn from a :class:`~.cases.DemoCase`."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from monai_medunic.data.demo.cases import DemoCase
from monai_medunic.errors import ConfigurationError

__all__ = ["MASK_FINDINGS", "CONSOLIDATION_THRESHOLD", "render_chest_phantom", "render_chest_phantom_with_truth"]

# the findings with a pixel truth on frontal views (Cardiomegaly and Edema are diffuse: labels only)
MASK_FINDINGS: tuple[str, ...] = ("Nodule", "Pneumothorax", "Pleural Effusion", "Consolidation")
# a consolidation's mask: where its opacity reaches this fraction of its full density. Its edge is a
# Gaussian fall-off, not a step: at 0.2 every masked pixel is at least ~0.1 brighter in display units
# (several noise sigmas, so visible), and the mask covers ~90% of what the finding visibly changes; the
# half maximum would keep only the core (~45%). Measured in tests/data/test_demo_truth.py.
CONSOLIDATION_THRESHOLD = 0.2


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
    return _render(case, rng, size, view, None)


def render_chest_phantom_with_truth(
    case: DemoCase, rng: np.random.Generator, size: int = 256
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The frontal phantom of :func:`render_chest_phantom` (the same image for the same ``rng`` state)
    and the truth of its lesions: one dict per lesion with ``finding``, ``side`` and ``mask``
    (``(size, size)`` bool), for the findings of :data:`MASK_FINDINGS`.

    Each mask is taken from the geometry that draws the lesion, from the lesion's own contribution
    (before exposure, blur and noise; at its half maximum where the edge is a step), and keeps only
    what stays visible:

    * Nodule: the disc of radius ``r`` (its soft edge's midpoint);
    * Pneumothorax: where the lucent rim replaces the lung (rim weight > 0.5);
    * Consolidation: where the patchy opacity reaches :data:`CONSOLIDATION_THRESHOLD` (0.2) of its full
      density (lung x blob x patch; its margin fades gradually, see the constant);
    * Pleural Effusion: where the fluid (weight > 0.5) replaces lung, one lesion per side; below the
      dome the fluid has the abdomen's density and is not visible, so it is not in the mask;
    * the effusion is drawn last: nodules and consolidation under it are removed from their masks.

    Drawing the truth takes no random numbers, so the images are those of :func:`render_chest_phantom`.
    """
    lesions: list[dict[str, Any]] = []
    img = _render(case, rng, size, "frontal", lesions)
    effusion = np.zeros((size, size), dtype=bool)
    for les in lesions:
        if les["finding"] == "Pleural Effusion":
            effusion |= les["mask"]
    for les in lesions:
        if les["finding"] in ("Nodule", "Consolidation"):
            les["mask"] = les["mask"] & ~effusion
    return img, [les for les in lesions if les["mask"].any()]


def _render(
    case: DemoCase, rng: np.random.Generator, size: int, view: str, truth: list[dict[str, Any]] | None
) -> np.ndarray:
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
        if truth is not None:
            truth.append({"finding": "Pneumothorax", "side": a["side"], "mask": rim > 0.5})

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
        if truth is not None:
            truth.append({"finding": "Consolidation", "side": a["side"], "mask": L["mask"] * (1.0 - rim) * blob * patch > CONSOLIDATION_THRESHOLD})
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
            if truth is not None:
                truth.append({"finding": "Nodule", "side": a["side"], "mask": d < r})
    if case.labels.get("Pleural Effusion"):
        a = case.attrs["Pleural Effusion"]
        for side in ("right", "left") if a["side"] == "bilateral" else (a["side"],):
            L = lungs[side]
            h = a["height"] * (0.8 if a["side"] == "bilateral" else 1.0)
            top = L["dome0"] + 0.06 - h * (1.0 + 0.6 * np.clip(L["t"], 0, 1))
            ext = _soft(1.06 - _ellipse_r(u, v, L["cx"], L["cy"], L["rx"], L["ry"]), 0.02)
            fluid = ext * _soft(v - top, 0.025) * _soft(0.62 - v, 0.02)
            D = D * (1.0 - fluid) + (0.36 + 0.01 * tex2) * fluid
            if truth is not None:
                truth.append({"finding": "Pleural Effusion", "side": side, "mask": (fluid > 0.5) & (L["mask"] > 0.5)})
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

