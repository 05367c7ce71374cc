"""Chest CT phantoms: axial volumes in Hounsfield units with lungs, body wall and lesions in known voxels.

UniMedI (``../shared/papers/unimedi.txt``, Sec. 3.3) pre-trains one encoder on radiographs and CT
volumes and selects, by attention, the slices of a volume that its report talks about. The demo CT
studies give that method (and the 3D segmentation downstream task) a truth to be measured against:
every lesion is drawn from a geometry that is also written out as a voxel label map, so the slices
that hold a finding are known exactly.

Geometry (DICOM patient coordinates, LPS, millimetres): axial slices, rows along +y (posterior),
columns along +x (patient left), slice ``k`` at ``z0 + k * dz`` (inferior to superior, so index ``k``
is the index along Z of the volume as :func:`monai_medunic.transforms.volume.read_dicom_series`
sorts it). The default grid is ``(64, 128, 128)`` voxels (slices, rows, columns) over 320 mm x 360 mm
x 360 mm: 5 mm slices and 2.8125 mm pixels, small enough for an honest CPU run.

Anatomy, in HU: air (-1000) around a body of subcutaneous fat (-90) and muscle (45); a rib cage (650,
ribs sloping down anteriorly), sternum and a vertebral column (300 trabecular, 650 cortex, spinal canal
20); two lungs (about -850, with a smooth texture and vessels up to about -100) whose domes sit on the
diaphragm, the right one higher; a heart (40) resting on the diaphragm, the aorta, trachea and main
bronchi; below the domes the liver (60, right), the rest of the upper abdomen (40) and a gastric air
bubble. Then Gaussian noise (about 12 HU) and a slight in-plane blur.

Findings (:data:`CT_FINDINGS`, labels of :data:`CT_MASK_LABELS` in the mask):

* Nodule: one or two solid spheres (20-60 HU) of 10-20 mm diameter, inside aerated lung, away from the
  pleura and from any consolidation;
* Consolidation: an irregular airspace opacity (0-45 HU) made of three or four overlapping ellipsoids
  with a patchy edge, confined to one lobe of the aerated lung;
* Pleural Effusion: dependent fluid (5-20 HU) in the posterior pleural space of one or both sides
  (supine patient), a crescent that is deepest at the base and tapers cranially, replacing lung.

Masks: a voxel belongs to a finding when the finding's own density reaches half its full value there
(the half-maximum of the soft edge, before noise and blur), and the later finding wins where two meet
(effusion over lung lesions). The report states each nodule's diameter from the same geometry.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from monai_medunic.errors import ConfigurationError

__all__ = [
    "CT_FINDINGS",
    "CT_MASK_LABELS",
    "CT_DEFAULT_PREVALENCE",
    "CT_DEFAULT_SHAPE",
    "CTCase",
    "CTPhantom",
    "sample_ct_case",
    "render_chest_ct",
]

CT_FINDINGS: tuple[str, ...] = ("Nodule", "Consolidation", "Pleural Effusion")
CT_MASK_LABELS: dict[str, int] = {"Nodule": 1, "Consolidation": 2, "Pleural Effusion": 3}
CT_DEFAULT_PREVALENCE: dict[str, float] = {"Nodule": 0.45, "Consolidation": 0.35, "Pleural Effusion": 0.35}
CT_DEFAULT_SHAPE: tuple[int, int, int] = (64, 128, 128)
_FOV_MM = 360.0  # in-plane field of view (columns)
_LENGTH_MM = 320.0  # cranio-caudal coverage
_LOBES = {"right": ("upper", "middle", "lower"), "left": ("upper", "lower")}


@dataclass
class CTCase:
    """One synthetic CT study's findings and their attributes (before the geometry is drawn)."""

    index: int
    labels: dict[str, int]
    attrs: dict[str, dict[str, Any]] = field(default_factory=dict)
    language: str = "en"


@dataclass
class CTPhantom:
    """A rendered CT study.

    Attributes:
        hu: ``(slices, rows, columns)`` float32 Hounsfield units.
        mask: ``(slices, rows, columns)`` uint8 label map (:data:`CT_MASK_LABELS`, 0 elsewhere).
        spacing: ``(slice, row, column)`` spacing in mm.
        origin: LPS position (mm) of the centre of voxel ``(0, 0, 0)`` (slice 0, row 0, column 0).
        lesions: one dict per lesion: ``finding``, ``side``, ``lobe`` and for nodules ``diameter_mm``.
        case: the case it was drawn from (its ``attrs`` completed with what the geometry decided).
    """

    hu: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    lesions: list[dict[str, Any]]
    case: CTCase

    def lesion_slices(self) -> dict[str, list[int]]:
        """``{finding: sorted slice indices holding its mask}`` for the findings present."""
        out: dict[str, list[int]] = {}
        for finding, value in CT_MASK_LABELS.items():
            ks = np.flatnonzero((self.mask == value).any(axis=(1, 2)))
            if ks.size:
                out[finding] = [int(k) for k in ks]
        return out


def sample_ct_case(
    rng: np.random.Generator,
    index: int = 0,
    prevalence: Mapping[str, float] | None = None,
    spanish_fraction: float = 0.5,
) -> CTCase:
    """Draw a CT study: findings (independent Bernoulli per :data:`CT_DEFAULT_PREVALENCE`) and their attributes."""
    prev = dict(CT_DEFAULT_PREVALENCE if prevalence is None else prevalence)
    labels = {f: int(rng.random() < prev.get(f, 0.0)) for f in CT_FINDINGS}
    attrs: dict[str, dict[str, Any]] = {}
    sides = ("right", "left")
    if labels["Nodule"]:
        n = 2 if rng.random() < 0.2 else 1
        attrs["Nodule"] = {
            "side": sides[int(rng.integers(2))],
            "count": n,
            "radii_mm": [float(rng.uniform(5.0, 10.0)) for _ in range(n)],
        }
    if labels["Consolidation"]:
        side = sides[int(rng.integers(2))]
        attrs["Consolidation"] = {"side": side, "lobe": _LOBES[side][int(rng.integers(len(_LOBES[side])))]}
    if labels["Pleural Effusion"]:
        side = "bilateral" if rng.random() < 0.25 else sides[int(rng.integers(2))]
        depth = float(rng.uniform(0.25, 0.5))
        attrs["Pleural Effusion"] = {"side": side, "depth": depth, "size": "small" if depth < 0.35 else "moderate"}
    language = "es" if rng.random() < spanish_fraction else "en"
    return CTCase(index=index, labels=labels, attrs=attrs, language=language)


def _soft(x: np.ndarray, k: float) -> np.ndarray:
    """A smooth step from 0 to 1 around ``x = 0`` of width ``k`` (the same edge as the radiograph phantoms)."""
    return 0.5 * (1.0 + np.tanh(x / (2.0 * k)))


def _smooth_noise3d(rng: np.random.Generator, shape: tuple[int, int, int], factor: int, sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance noise smoothed on a grid ``factor`` times coarser, then upsampled.

    The upsampling repeats each coarse voxel and smooths the blocks away with a Gaussian of about
    half a coarse voxel (several times faster than spline zooming, and as smooth at this use).
    """
    small = tuple(max(2, -(-s // factor)) for s in shape)
    coarse = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), sigma=sigma, mode="wrap")
    up = coarse.repeat(factor, 0).repeat(factor, 1).repeat(factor, 2)[: shape[0], : shape[1], : shape[2]]
    out = ndimage.gaussian_filter(up, sigma=0.5 * factor, mode="nearest", truncate=2.0)
    return (out - out.mean()) / (out.std() + 1e-6)


def _box(center: Sequence[float], radius: float, origin: Sequence[float], step: Sequence[float], shape: Sequence[int]) -> tuple[slice, ...]:
    """Index slices of the voxels within ``radius`` mm of ``center`` (``(z, y, x)`` mm), clipped to the grid."""
    out = []
    for c, o, s, n in zip(center, origin, step, shape):
        lo = int(np.floor((c - radius - o) / s))
        hi = int(np.ceil((c + radius - o) / s)) + 1
        out.append(slice(max(lo, 0), min(max(hi, 0), n)))
    return tuple(out)


def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) for s in shape):
        raise ConfigurationError(f"ct_shape must be three integers (slices, rows, columns), got {shape!r}")
    d, h, w = (int(s) for s in shape)
    if d < 16 or h < 48 or w < 48:
        raise ConfigurationError(f"ct_shape must be at least (16, 48, 48) voxels, got {(d, h, w)}")
    if d > 512 or h > 1024 or w > 1024:
        raise ConfigurationError(f"ct_shape must be at most (512, 1024, 1024) voxels, got {(d, h, w)}")
    return d, h, w


def render_chest_ct(
    case: CTCase, rng: np.random.Generator, shape: Sequence[int] = CT_DEFAULT_SHAPE
) -> CTPhantom:
    """Render a chest CT phantom of ``shape`` ``(slices, rows, columns)`` (module docstring).

    Anatomy and noise draw from ``rng``; the lesions draw from their own stream (seeded by ``rng``),
    so a study's anatomy does not depend on its findings.

    Raises:
        ConfigurationError: a shape outside (16, 48, 48) .. (512, 1024, 1024).
    """
    d, h, w = _check_shape(shape)
    px = _FOV_MM / w
    dz = _LENGTH_MM / d
    x = ((np.arange(w, dtype=np.float32) - (w - 1) / 2.0) * px)[None, None, :]
    y = ((np.arange(h, dtype=np.float32) - (h - 1) / 2.0) * px)[None, :, None]
    z = ((np.arange(d, dtype=np.float32) - (d - 1) / 2.0) * dz)[:, None, None]
    origin = (float(x[0, 0, 0]), float(y[0, 0, 0]), float(z[0, 0, 0]))
    frng = np.random.default_rng(int(rng.integers(0, 2**62)))

    # patient
    sx, sy = float(rng.uniform(0.86, 1.0)), float(rng.uniform(0.86, 1.0))
    bax, bay = 165.0 * sx, 118.0 * sy  # body semi-axes
    body_cy = float(rng.uniform(-4.0, 4.0))
    cav_ax, cav_ay, cav_cy = bax - 24.0, bay - 30.0, body_cy - 6.0  # thoracic cavity (inside the wall)
    r_body = np.sqrt((x / bax) ** 2 + ((y - body_cy) / bay) ** 2)  # (1, h, w)
    r_cav = np.sqrt((x / cav_ax) ** 2 + ((y - cav_cy) / cav_ay) ** 2)
    body = np.broadcast_to(r_body < 1.0, (d, h, w))
    muscle_r = 1.0 - 11.0 / bay  # subcutaneous fat outside, muscle inside

    # lungs (per side): cross-section ellipses that narrow to the apex, cut below by a diaphragm dome
    apex = float(rng.uniform(118.0, 138.0))
    lungs: dict[str, dict[str, Any]] = {}
    for side, sign in (("right", -1.0), ("left", 1.0)):
        L: dict[str, Any] = {
            "cx": sign * float(rng.uniform(68.0, 78.0)) * sx,
            "cy": cav_cy + float(rng.uniform(2.0, 12.0)),
            "rx": float(rng.uniform(50.0, 58.0)) * sx,
            "ry": float(rng.uniform(66.0, 76.0)) * sy,
            "dome": (-62.0 if side == "right" else -74.0) + float(rng.uniform(-8.0, 8.0)),
            "apex": apex + float(rng.uniform(-4.0, 4.0)),
        }
        zmid = L["apex"] - 105.0
        f = np.sqrt(np.clip(1.0 - np.clip((z - zmid) / (L["apex"] - zmid), 0.0, None) ** 2, 0.0, 1.0))  # (d,1,1)
        q = ((x - L["cx"]) / L["rx"]) ** 2 + ((y - L["cy"]) / L["ry"]) ** 2  # (1,h,w)
        section = q < f**2  # (d,h,w)
        # lower at the periphery, most posteriorly: the costophrenic recesses
        posterior = np.clip((y - L["cy"]) / L["ry"], -1.0, 1.0)
        dome_z = L["dome"] - 42.0 * np.clip(q, 0.0, 1.0) * (0.55 + 0.45 * posterior)
        L["q"], L["section"], L["dome_z"] = q, section, dome_z
        L["lung"] = section & (z > dome_z) & (np.abs(x) > 16.0)
        lungs[side] = L
    # the abdomen side of the diaphragm: under the right dome for x < 0, under the left one otherwise
    below = np.where(x < 0, z < lungs["right"]["dome_z"], z < lungs["left"]["dome_z"])

    # mediastinum
    hx, hy = float(rng.uniform(8.0, 18.0)), cav_cy - float(rng.uniform(18.0, 28.0))
    hz = max(lungs["right"]["dome"], lungs["left"]["dome"]) + 38.0
    hax, hay, haz = float(rng.uniform(50.0, 60.0)) * sx, float(rng.uniform(42.0, 50.0)) * sy, float(rng.uniform(40.0, 48.0))
    heart = ((x - hx) / hax) ** 2 + ((y - hy) / hay) ** 2 + ((z - hz) / haz) ** 2 < 1.0
    aorta_asc = (((x - 2.0) ** 2 + (y - (hy + 8.0)) ** 2) < 13.0**2) & (z > hz) & (z < hz + 70.0)
    aorta_desc = (((x - 22.0 * sx) ** 2 + (y - (cav_cy + 50.0 * sy)) ** 2) < 11.0**2) & (z < hz + 70.0)
    carina = hz + 62.0
    trachea = ((x**2 + (y - (cav_cy + 18.0)) ** 2) < 9.0**2) & (z > carina)
    t = np.clip((carina - z) / 30.0, 0.0, 1.0)
    bronchi = (
        ((((x - 28.0 * t) ** 2 + (y - (cav_cy + 20.0)) ** 2) < 6.0**2) | (((x + 28.0 * t) ** 2 + (y - (cav_cy + 20.0)) ** 2) < 6.0**2))
        & (z <= carina)
        & (z > carina - 30.0)
    )
    spine_y = cav_cy + cav_ay - 8.0
    r_vb = np.sqrt(x**2 + (y - spine_y) ** 2)
    canal = (x**2 + (y - (spine_y + 26.0)) ** 2) < 8.0**2
    posterior_el = ((x / 22.0) ** 2 + ((y - (spine_y + 36.0)) / 9.0) ** 2) < 1.0
    thorax_z = (z > min(lungs["right"]["dome"], lungs["left"]["dome"]) - 50.0) & (z < apex + 8.0)
    ring = (r_cav >= 1.0) & (r_cav < 1.0 + 8.0 / cav_ay) & (np.abs(x) > 20.0)
    rib_phase = (z + 0.4 * (-(y - cav_cy)) + float(rng.uniform(0.0, 25.0))) / 25.0
    ribs = ring & thorax_z & ((rib_phase - np.floor(rib_phase)) < 0.36)
    sternum = (((x / 14.0) ** 2 + ((y - (cav_cy - cav_ay - 2.0)) / 6.0) ** 2) < 1.0) & thorax_z

    # textures
    tex = _smooth_noise3d(rng, (d, h, w), 4, 1.0)
    fine = ndimage.gaussian_filter(rng.standard_normal((d, h, w)).astype(np.float32), sigma=(0.6, 1.2, 1.2))
    fine /= fine.std() + 1e-6

    hu = np.full((d, h, w), -1000.0, dtype=np.float32)
    hu[body] = -90.0
    hu[np.broadcast_to(r_body < muscle_r, (d, h, w))] = 45.0
    cavity = np.broadcast_to(r_cav < 1.0, (d, h, w))
    hu[cavity] = -70.0  # mediastinal fat by default
    abdomen = cavity & below
    hu[abdomen] = 40.0
    hu[abdomen & (x < 20.0)] = 60.0  # liver under the right dome
    bubble = ((x - 55.0 * sx) ** 2 + (y - (cav_cy - 30.0)) ** 2 + (z - (lungs["left"]["dome"] - 22.0)) ** 2) < 22.0**2
    hu[abdomen & bubble & (y < cav_cy - 30.0)] = -1000.0
    lung_any = lungs["right"]["lung"] | lungs["left"]["lung"]
    lung_any &= ~heart & ~aorta_asc & ~aorta_desc & (r_vb > 20.0)
    vessels = np.clip((fine - 1.6) * 450.0, 0.0, 750.0) * (0.5 + 0.5 * np.clip(1.0 - np.abs(x) / 140.0, 0.0, 1.0))
    lung_hu = -850.0 + 22.0 * tex + vessels
    hu[lung_any] = lung_hu[lung_any]
    hu[heart] = 40.0
    hu[aorta_asc | aorta_desc] = 45.0
    hu[np.broadcast_to(r_vb < 19.0, (d, h, w))] = 650.0
    hu[np.broadcast_to(r_vb < 16.0, (d, h, w))] = 300.0
    hu[np.broadcast_to(posterior_el, (d, h, w)) & body] = 420.0
    hu[np.broadcast_to(canal, (d, h, w))] = 20.0
    hu[ribs] = 650.0
    hu[sternum] = 380.0
    hu[trachea | bronchi] = -1000.0

    mask = np.zeros((d, h, w), dtype=np.uint8)
    lesions: list[dict[str, Any]] = []
    aerated = {side: L["lung"] & lung_any for side, L in lungs.items()}

    # pleural effusion first: the lung lesions are then placed in the lung that stays aerated
    if case.labels.get("Pleural Effusion"):
        a = case.attrs["Pleural Effusion"]
        for side in ("right", "left") if a["side"] == "bilateral" else (a["side"],):
            L = lungs[side]
            depth = a["depth"] * (0.8 if a["side"] == "bilateral" else 1.0)
            y_back = L["cy"] + L["ry"]
            # deepest at the base, gone 60-100 mm above the dome (small to moderate effusions)
            taper = np.clip(1.0 - (z - L["dome"]) / (40.0 + 120.0 * depth), 0.0, 1.0)
            level = y_back - depth * 2.0 * L["ry"] * taper  # dependent: posterior of this level
            space = L["section"] & (z > L["dome_z"] - 12.0) & ~heart & (r_vb > 20.0) & cavity
            w_fluid = _soft(y - level, 2.0) * space
            fluid = w_fluid > 0.5
            if not fluid.any():
                continue
            value = float(frng.uniform(5.0, 20.0))
            hu[:] = hu * (1.0 - w_fluid) + value * w_fluid
            mask[fluid] = CT_MASK_LABELS["Pleural Effusion"]
            aerated[side] = aerated[side] & ~fluid
            lesions.append({"finding": "Pleural Effusion", "side": side, "size": a["size"]})

    def lobe_range(side: str, lobe: str) -> tuple[float, float]:
        L = lungs[side]
        lo, hi = L["dome"] - 30.0, L["apex"]
        cuts = np.linspace(lo, hi, len(_LOBES[side]) + 1)
        i = _LOBES[side][::-1].index(lobe)  # lobes listed top-down, cuts bottom-up
        return float(cuts[i]), float(cuts[i + 1])

    grid0, step = (float(z[0, 0, 0]), float(y[0, 0, 0]), float(x[0, 0, 0])), (dz, px, px)

    def mm(index: np.ndarray) -> tuple[float, float, float]:
        return (float(z[index[0], 0, 0]), float(y[0, index[1], 0]), float(x[0, 0, index[2]]))

    def local(box: tuple[slice, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return z[box[0]], y[:, box[1]], x[:, :, box[2]]

    if case.labels.get("Consolidation"):
        a = case.attrs["Consolidation"]
        z_lo, z_hi = lobe_range(a["side"], a["lobe"])
        lobe_slab = (z > z_lo - 10.0) & (z < z_hi + 10.0)
        cand = np.argwhere(aerated[a["side"]] & (z > z_lo + 8.0) & (z < z_hi - 8.0))
        if cand.size == 0:
            cand = np.argwhere(aerated[a["side"]])
        center = np.asarray(mm(cand[int(frng.integers(len(cand)))]), dtype=np.float32)
        box = _box(center, 55.0, grid0, step, (d, h, w))
        zb, yb, xb = local(box)
        field_ = np.zeros((zb.shape[0], yb.shape[1], xb.shape[2]), dtype=np.float32)
        for _ in range(int(frng.integers(3, 5))):
            off = center + frng.uniform(-14.0, 14.0, 3).astype(np.float32)
            rz, ry_, rx_ = frng.uniform(14.0, 26.0, 3)
            np.maximum(field_, np.exp(-(((zb - off[0]) / rz) ** 2 + ((yb - off[1]) / ry_) ** 2 + ((xb - off[2]) / rx_) ** 2)), out=field_)
        patch = _smooth_noise3d(frng, field_.shape, 3, 0.8)
        w_cons = _soft(field_ + 0.12 * patch - 0.45, 0.04) * (aerated[a["side"]][box] & lobe_slab[box[0]])
        cons = w_cons > 0.5
        if cons.any():
            value = 45.0 * float(frng.uniform(0.4, 1.0))
            hu[box] = hu[box] * (1.0 - w_cons) + (value + 12.0 * tex[box]) * w_cons
            mask[box][cons] = CT_MASK_LABELS["Consolidation"]
            lesions.append({"finding": "Consolidation", "side": a["side"], "lobe": a["lobe"]})
            aerated[a["side"]][box] &= ~ndimage.binary_dilation(cons, iterations=2)
    if case.labels.get("Nodule"):
        a = case.attrs["Nodule"]
        L = lungs[a["side"]]
        for r in a["radii_mm"]:
            inside = aerated[a["side"]]
            cand = np.argwhere(inside)
            chosen = None
            margin = r + 4.0  # the nodule and a margin lie in aerated lung: away from pleura and other lesions
            for _ in range(200):
                c = mm(cand[int(frng.integers(len(cand)))])
                box = _box(c, margin, grid0, step, (d, h, w))
                zb, yb, xb = local(box)
                ball = ((zb - c[0]) ** 2 + (yb - c[1]) ** 2 + (xb - c[2]) ** 2) < margin**2
                if inside[box][ball].all():
                    chosen = c
                    break
            if chosen is None:
                continue
            box = _box(chosen, margin, grid0, step, (d, h, w))
            zb, yb, xb = local(box)
            dist = np.sqrt((zb - chosen[0]) ** 2 + (yb - chosen[1]) ** 2 + (xb - chosen[2]) ** 2)
            w_nod = _soft(r - dist, 0.8)
            value = float(frng.uniform(20.0, 60.0))
            hu[box] = hu[box] * (1.0 - w_nod) + value * w_nod
            mask[box][w_nod > 0.5] = CT_MASK_LABELS["Nodule"]
            zrel = (chosen[0] - (L["dome"] - 30.0)) / (L["apex"] - L["dome"] + 30.0)
            lobes = _LOBES[a["side"]]
            lobe = lobes[min(len(lobes) - 1, max(0, int((1.0 - zrel) * len(lobes))))]
            lesions.append({"finding": "Nodule", "side": a["side"], "lobe": lobe, "diameter_mm": int(round(2 * r))})
            inside[box] &= dist > margin

    hu = ndimage.gaussian_filter(hu, sigma=(0.0, 0.5, 0.5))
    hu += rng.standard_normal(hu.shape).astype(np.float32) * float(rng.uniform(9.0, 15.0))
    np.clip(hu, -1024.0, 3071.0, out=hu)
    # what the geometry decided is the truth the report states
    case.labels = {f: int(any(les["finding"] == f for les in lesions)) for f in CT_FINDINGS}
    return CTPhantom(hu=hu, mask=mask, spacing=(dz, px, px), origin=origin, lesions=lesions, case=case)
