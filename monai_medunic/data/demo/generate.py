"""The driver of the demo dataset: :func:`generate_demo_dataset` (study loop, splits, manifest, info) and ``medunic demo-data``."""

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
from pydicom.dataset import Dataset

from monai_medunic.data.demo.cases import DEMO_FINDINGS, sample_case
from monai_medunic.data.demo.ct import CT_DEFAULT_SHAPE, CT_FINDINGS, CT_MASK_LABELS, render_chest_ct, sample_ct_case
from monai_medunic.data.demo.cxr import MASK_FINDINGS, render_chest_phantom, render_chest_phantom_with_truth
from monai_medunic.data.demo.dicom_io import (
    _fixed_times,
    _image_dataset,
    _QuietLoggers,
    _sample_storage,
    _sr_dataset,
    _uid,
    write_ct_series,
)
from monai_medunic.data.demo.reports import _report_text, compose_ct_report, compose_report
from monai_medunic.data.demo.truth import (
    box_of,
    ct_affine,
    finding_slug,
    radiograph_seg,
    write_label_nifti,
    write_mask_nifti_2d,
)
from monai_medunic.data.demo.vqa import VQA_ANSWERS_FILE, VQA_MANIFEST, write_demo_vqa
from monai_medunic.errors import ConfigurationError

__all__ = ["DemoDatasetInfo", "generate_demo_dataset", "default_ct_studies", "cli_main"]

logger = logging.getLogger("monai_medunic.data.demo")

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
    num_ct_studies: int = 0
    num_ct_slices: int = 0
    ct_shape: tuple[int, ...] = ()
    ct_findings: tuple[str, ...] = CT_FINDINGS
    ct_prevalence: dict[str, float] = field(default_factory=dict)
    ct_splits: dict[str, int] = field(default_factory=dict)
    mask_findings: tuple[str, ...] = MASK_FINDINGS
    num_seg: int = 0
    num_masks: int = 0
    num_boxes: int = 0
    vqa: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    seconds_by_part: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["findings"] = list(self.findings)
        d["ct_findings"] = list(self.ct_findings)
        d["ct_shape"] = list(self.ct_shape)
        d["mask_findings"] = list(self.mask_findings)
        return d


def _split_of(num_studies: int, seed: int, fractions: Sequence[float], stream: int = 0) -> list[str]:
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigurationError(f"split_fractions must be three non-negative numbers summing to 1, got {fractions}")
    order = np.random.default_rng([seed, 7919] + ([stream] if stream else [])).permutation(num_studies)
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
    truth: bool = True,
    cases: list | None = None,
) -> tuple[list[dict[str, Any]], Counter[str], Counter[str]]:
    """Write every study's DICOM files (and, with ``truth``, its frontal image's masks, SEG and boxes);
    return the manifest records and the counts (and append each study's case to ``cases``)."""
    base_date = datetime.date(2024, 1, 1)
    pixel_spacing = round(430.0 / image_size, 4)
    records: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    label_sums: Counter[str] = Counter()
    for i in range(num_studies):
        rng = np.random.default_rng([seed, i])
        case = sample_case(rng, i, prevalence, spanish_fraction)
        case.has_lateral = bool(rng.random() < lateral_fraction)
        if cases is not None:
            cases.append(case)
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
        image_paths: list[tuple[str, str, str]] = []
        frontal_ds: Dataset | None = None
        lesions: list[dict[str, Any]] | None = None
        for k, view in enumerate(views):
            storage = _sample_storage(rng, monochrome1_fraction, jpeg2000_fraction)
            enc = str(rng.choice(["view_position", "patient_orientation", "series_description"], p=[0.7, 0.15, 0.15]))
            if view == "frontal" and truth:  # the same image, and the truth of its lesions
                img, lesions = render_chest_phantom_with_truth(case, rng, image_size)
            else:
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
            image_paths.append((view, os.path.relpath(path, out).replace(os.sep, "/"), storage.modality))
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
        truth_fields: dict[str, Any] = {}
        if lesions is not None and frontal_ds is not None:
            truth_fields = _write_radiograph_truth(out, image_paths[0][1], frontal_ds, lesions, seed, i, pixel_spacing, study_date, counts)
        for f in DEMO_FINDINGS:
            label_sums[f] += case.labels[f]
        counts["normal"] += int(not any(case.labels.values()))
        counts[f"lang_{lang}"] += 1
        counts[f"split_{splits[i]}"] += 1
        for view, rel, modality in image_paths:
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
                modality=modality,
            )
            if view == "frontal":
                rec.update(truth_fields)
            records.append(rec)
    return records, counts, label_sums


def _write_radiograph_truth(
    out: str,
    image_rel: str,
    image: Dataset,
    lesions: Sequence[Mapping[str, Any]],
    seed: int,
    index: int,
    pixel_spacing: float,
    study_date: str,
    counts: Counter[str],
) -> dict[str, Any]:
    """Write a frontal image's truth under ``truth/`` (a tree mirroring the images'); return its manifest fields.

    Per finding of :data:`~monai_medunic.data.demo.cxr.MASK_FINDINGS` present: a 2D NIfTI mask
    (``<image>_<finding>.nii.gz``) and a box per lesion; one DICOM SEG (``<image>_seg.dcm``) with a
    segment per finding, referencing the image. An image without such a finding gets empty ``masks``
    and ``boxes`` (its truth is known: nothing to segment) and no SEG.
    """
    stem = "truth/" + image_rel[: -len(".dcm")]
    masks: dict[str, np.ndarray] = {}
    boxes: dict[str, list[list[int]]] = {}
    for f in MASK_FINDINGS:
        found = [les for les in lesions if les["finding"] == f]
        if found:
            masks[f] = np.logical_or.reduce([les["mask"] for les in found])
            boxes[f] = [box_of(les["mask"]) for les in found]
    fields: dict[str, Any] = {"masks": {}, "boxes": boxes}
    for f, mask in masks.items():
        rel = f"{stem}_{finding_slug(f)}.nii.gz"
        write_mask_nifti_2d(os.path.join(out, rel), mask, (pixel_spacing, pixel_spacing))
        fields["masks"][f] = rel
        counts["masks"] += 1
        counts["boxes"] += len(boxes[f])
    if masks:
        seg = radiograph_seg(image, masks, series_uid=_uid(seed, index, "seg-series"), sop_uid=_uid(seed, index, "seg"))
        _fixed_times(seg, study_date)
        rel = f"{stem}_seg.dcm"
        seg.save_as(os.path.join(out, rel), enforce_file_format=True)
        fields["seg"] = rel
        counts["seg"] += 1
    return fields


def default_ct_studies(num_studies: int) -> int:
    """The number of CT studies written next to ``num_studies`` radiograph studies by default.

    One CT study per 40 radiograph studies, at least 2: ``medunic demo``'s 800 studies get 20 chest CT
    volumes (64 x 128 x 128), so every demo dataset exercises both dimensions. A CT study costs about
    as much as 3-4 radiograph studies with their truth (``benchmarks/bench_demo_generation.py``), so
    the CT studies add under a tenth to the generation time.
    """
    return max(2, int(num_studies) // 40)


def _write_ct_studies(
    out: str,
    num_ct: int,
    seed: int,
    shape: Sequence[int],
    prevalence: Mapping[str, float] | None,
    spanish_fraction: float,
    splits: Sequence[str],
) -> tuple[list[dict[str, Any]], Counter[str], Counter[str]]:
    """Write the chest CT studies (series, label map, bilingual report); return the manifest records and counts.

    CT study ``i`` draws from its own stream ``(seed, "ct", i)``, so the radiograph studies do not
    depend on how many CT studies are written, and a smaller CT set is a prefix of a larger one.
    """
    base_date = datetime.date(2024, 7, 1)
    records: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    label_sums: Counter[str] = Counter()
    for i in range(num_ct):
        rng = np.random.default_rng([seed, 3, i])  # "3": the CT stream; radiograph study i uses [seed, i]
        case = sample_ct_case(rng, i, prevalence, spanish_fraction)
        sex = "F" if rng.random() < 0.5 else "M"
        phantom = render_chest_ct(case, rng, shape)
        report = compose_ct_report(phantom.lesions, rng)
        lang = case.language
        other = "en" if lang == "es" else "es"
        study_uid = _uid(seed, i, "ct-study")
        study_date = (base_date + datetime.timedelta(days=i % 365)).strftime("%Y%m%d")
        rel_series = f"ct/study_{i + 1:05d}"
        write_ct_series(
            os.path.join(out, rel_series),
            phantom.hu,
            phantom.spacing,
            phantom.origin,
            seed=seed,
            index=i,
            study_uid=study_uid,
            series_uid=_uid(seed, i, "ct-series"),
            frame_uid=_uid(seed, i, "ct-frame"),
            study_date=study_date,
            sex=sex,
            language=lang,
        )
        rel_mask = f"truth/{rel_series}/mask.nii.gz"
        write_label_nifti(os.path.join(out, rel_mask), phantom.mask, ct_affine(phantom.spacing, phantom.origin))
        for f in CT_FINDINGS:
            label_sums[f] += case.labels[f]
        counts["ct_studies"] += 1
        counts["ct_slices"] += int(phantom.hu.shape[0])
        counts[f"ct_split_{splits[i]}"] += 1
        records.append(
            {
                "image": rel_series,
                "modality": "CT",
                "spatial_dims": 3,
                "report": _report_text(report[lang]),
                "language": lang,
                "translations": {other: _report_text(report[other])},
                # the six demo findings, as on the radiographs: the CT phantom draws no cardiomegaly,
                # pneumothorax or edema, so those are truly 0
                "labels": {f: int(case.labels.get(f, 0)) for f in DEMO_FINDINGS},
                "split": splits[i],
                "study_uid": study_uid,
                "mask": rel_mask,
                "mask_labels": {f: CT_MASK_LABELS[f] for f in CT_FINDINGS},
                "lesion_slices": phantom.lesion_slices(),
            }
        )
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
    num_ct_studies: int | None = None,
    ct_shape: Sequence[int] = CT_DEFAULT_SHAPE,
    ct_prevalence: Mapping[str, float] | None = None,
    radiograph_truth: bool = True,
    vqa: bool = True,
) -> DemoDatasetInfo:
    """Write the synthetic bilingual chest radiograph and chest CT dataset (see the package docstring).

    Args:
        out_dir: output folder (created). Must be empty or absent unless ``overwrite``.
        num_studies: number of radiograph studies (each has one frontal image; some also a lateral).
        seed: the seed; a seed reproduces the dataset exactly. Study ``i`` depends only on ``(seed, i)``.
        image_size: stored rows and columns (square). 256 keeps generation and loading fast; training
            resizes to 96-128 px.
        prevalence: per-finding probabilities (default :data:`DEFAULT_PREVALENCE`).
        lateral_fraction: fraction of studies that also have a lateral view.
        sr_fraction: fraction of studies whose report is stored as a DICOM SR (the rest inline).
        jpeg2000_fraction: fraction of images stored JPEG 2000 lossless.
        monochrome1_fraction: fraction of images stored MONOCHROME1.
        spanish_fraction: fraction of studies reported in Spanish (the rest English).
        split_fractions: train / val / test fractions, assigned by study (radiographs and CT apart).
        overwrite: replace an existing non-empty ``out_dir``.
        num_ct_studies: number of chest CT studies; ``None`` for :func:`default_ct_studies`
            (``num_studies // 40``, at least 2), ``0`` for none.
        ct_shape: CT grid ``(slices, rows, columns)`` (default 64 x 128 x 128).
        ct_prevalence: per-finding probabilities of the CT studies (default
            :data:`~monai_medunic.data.demo.ct.CT_DEFAULT_PREVALENCE`).
        radiograph_truth: write the frontal radiographs' truth (NIfTI masks, DICOM SEG, boxes). It
            changes no image: the truth is drawn from the same geometry, with no random draw.
        vqa: write the bilingual VQA pairs of the frontal radiographs (``vqa.jsonl``, ``vqa_answers.json``;
            :mod:`~monai_medunic.data.demo.vqa`). No random draw of the images depends on it.

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
    num_ct = default_ct_studies(num_studies) if num_ct_studies is None else int(num_ct_studies)
    if num_ct < 0:
        raise ConfigurationError(f"num_ct_studies must be >= 0 (0 writes no CT), got {num_ct_studies}")
    ct_shape_t = _check_ct_shape(ct_shape)
    if ct_prevalence is not None:
        unknown = set(ct_prevalence) - set(CT_FINDINGS)
        if unknown:
            raise ConfigurationError(f"unknown findings in ct_prevalence: {sorted(unknown)}; known: {CT_FINDINGS}")
    out = os.fspath(out_dir)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigurationError(f"{out}: the output path exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise ConfigurationError(f"{out} is not empty; pass overwrite=True (--overwrite) to replace it")
        for name in ("dicom", "ct", "truth", "manifest.jsonl", "demo_info.json", VQA_MANIFEST, VQA_ANSWERS_FILE):
            target = os.path.join(out, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
    os.makedirs(os.path.join(out, "dicom"), exist_ok=True)
    splits = _split_of(num_studies, seed, split_fractions)
    parts: dict[str, float] = {}
    with _QuietLoggers("highdicom", "openjpeg"):
        t = time.perf_counter()
        cases: list = []
        records, counts, label_sums = _write_studies(
            out, num_studies, seed, image_size, prevalence, lateral_fraction, sr_fraction, jpeg2000_fraction,
            monochrome1_fraction, spanish_fraction, splits, radiograph_truth, cases,
        )
        parts["radiographs"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        ct_records, ct_counts, ct_sums = _write_ct_studies(
            out, num_ct, seed, ct_shape_t, ct_prevalence, spanish_fraction, _split_of(num_ct, seed, split_fractions, stream=3)
        )
        parts["ct"] = round(time.perf_counter() - t, 3)
    manifest_path = os.path.join(out, "manifest.jsonl")
    with open(manifest_path, "w", encoding="utf-8") as fh:
        for rec in records + ct_records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    vqa_counts = write_demo_vqa(out, records, cases, seed) if vqa else {}
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
        num_ct_studies=ct_counts["ct_studies"],
        num_ct_slices=ct_counts["ct_slices"],
        ct_shape=ct_shape_t if num_ct else (),
        ct_prevalence={f: ct_sums[f] / num_ct for f in CT_FINDINGS} if num_ct else {},
        ct_splits={k[9:]: v for k, v in sorted(ct_counts.items()) if k.startswith("ct_split_")},
        mask_findings=MASK_FINDINGS if radiograph_truth else (),
        num_seg=counts["seg"],
        num_masks=counts["masks"],
        num_boxes=counts["boxes"],
        vqa=vqa_counts,
    )
    info.seconds = round(time.perf_counter() - start, 3)
    info.seconds_by_part = parts
    with open(os.path.join(out, "demo_info.json"), "w", encoding="utf-8") as fh:
        saved = {k: v for k, v in info.to_json().items() if k not in ("seconds", "seconds_by_part", "out_dir")}
        saved["manifest_path"] = os.path.basename(manifest_path)  # relative: the folder can move
        json.dump(saved, fh, indent=2, ensure_ascii=False)
    logger.info(
        "demo dataset: %d studies, %d images (%d lateral), %d SR reports, %d JPEG 2000, %d MONOCHROME1; "
        "%d CT studies (%d slices) in %.1f s -> %s",
        info.num_studies,
        info.num_images,
        info.num_lateral,
        info.num_sr,
        info.num_jpeg2000,
        info.num_monochrome1,
        info.num_ct_studies,
        info.num_ct_slices,
        info.seconds,
        out,
    )
    return info


def _check_ct_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    from monai_medunic.data.demo.ct import _check_shape

    return _check_shape(tuple(shape))


def cli_main(argv: Sequence[str]) -> int:
    """``medunic demo-data --out DIR [--studies N] [--seed S] [--ct-studies M | --no-ct] [--ct-shape D H W]``."""
    parser = argparse.ArgumentParser(
        prog="medunic demo-data",
        description=(
            "Generate the embedded synthetic bilingual dataset: chest radiographs (CR/DX DICOM, reports inline "
            "or as SR) and chest CT series with voxel masks, and manifest.jsonl."
        ),
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--studies", type=int, default=300, help="number of radiograph studies (default 300)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--image-size", type=int, default=256, help="stored rows/columns of the radiographs (default 256)")
    parser.add_argument("--lateral-fraction", type=float, default=0.2)
    parser.add_argument("--sr-fraction", type=float, default=0.35)
    parser.add_argument("--jpeg2000-fraction", type=float, default=0.2)
    ct = parser.add_mutually_exclusive_group()
    ct.add_argument(
        "--ct-studies", type=int, default=None, metavar="M",
        help="number of chest CT studies written next to the radiographs (default: studies // 40, at least 2)",
    )
    ct.add_argument("--no-ct", action="store_true", help="write no CT studies (radiographs only)")
    parser.add_argument(
        "--ct-shape", type=int, nargs=3, default=list(CT_DEFAULT_SHAPE), metavar=("SLICES", "ROWS", "COLUMNS"),
        help="CT grid (default 64 128 128: 5 mm slices, 2.8 mm pixels)",
    )
    parser.add_argument(
        "--no-truth", action="store_true",
        help="write no radiograph truth (NIfTI masks, DICOM SEG, boxes); the images are the same either way",
    )
    parser.add_argument("--no-vqa", action="store_true", help="write no VQA pairs (vqa.jsonl, vqa_answers.json)")
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
        num_ct_studies=0 if args.no_ct else args.ct_studies,
        ct_shape=tuple(args.ct_shape),
        radiograph_truth=not args.no_truth,
        vqa=not args.no_vqa,
    )
    prevalence = ", ".join(f"{k} {v:.2f}" for k, v in info.prevalence.items())
    lines = [
        f"wrote {info.num_studies} studies ({info.num_images} images: {info.num_frontal} frontal, {info.num_lateral} lateral; "
        f"{info.num_sr} SR reports; {info.num_jpeg2000} JPEG 2000; {info.num_monochrome1} MONOCHROME1) in {info.seconds:.1f} s",
        f"prevalence: {prevalence}; normal {info.num_normal}",
    ]
    if info.num_seg or info.num_masks:
        lines.append(f"radiograph truth: {info.num_masks} NIfTI masks, {info.num_boxes} boxes, {info.num_seg} DICOM SEG")
    if info.num_ct_studies:
        ct_prev = ", ".join(f"{k} {v:.2f}" for k, v in info.ct_prevalence.items())
        shape = "x".join(str(v) for v in info.ct_shape)
        lines.append(f"CT: {info.num_ct_studies} studies of {shape} voxels ({info.num_ct_slices} slices); prevalence: {ct_prev}")
    if info.vqa:
        lines.append(f"VQA: {info.vqa['num_questions']} questions ({info.vqa.get('closed', 0)} closed, {info.vqa.get('open', 0)} "
                     f"open; en {info.vqa.get('lang_en', 0)}, es {info.vqa.get('lang_es', 0)}) in {VQA_MANIFEST}")
    lines.append(f"manifest: {info.manifest_path}")
    print("\n".join(lines))
    return 0
