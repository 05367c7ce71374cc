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
from monai_medunic.data.demo.cxr import render_chest_phantom
from monai_medunic.data.demo.dicom_io import _image_dataset, _QuietLoggers, _sample_storage, _sr_dataset, _uid
from monai_medunic.data.demo.reports import _report_text, compose_report
from monai_medunic.errors import ConfigurationError

__all__ = ["DemoDatasetInfo", "generate_demo_dataset", "cli_main"]

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

