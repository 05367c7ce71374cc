"""``medunic evaluate``: every evaluation of a trained Med-UniC bundle on a manifest, in one report.

:func:`evaluate_bundle` loads a trained bundle (:func:`monai_medunic.pretrained.load_pretrained_bundle`)
and a manifest split, encodes every image and report once, and computes

* bilingual zero-shot classification (Med-UniC Sec. 4.2, Tab. 1 layout): macro AUC / F1 per prompt
  language x data-language community (:mod:`monai_medunic.metrics.zero_shot`);
* image-text retrieval Recall@1/5/10 per data language (:mod:`monai_medunic.metrics.retrieval`);
* the language gap (:mod:`monai_medunic.metrics.language_gap`) of text and image embeddings and the
  cross-lingual prompt agreement;
* plots: t-SNE by language and by finding, ROC curves per finding, prompt-conditioned Grad-CAM in
  every prompt language (Med-UniC Fig. 5).

It writes ``report.json``, ``report.md`` and the PNGs to ``out_dir``, prints a summary, and returns the
report dict. The bundle's ``configs/evaluate.json`` calls the same function through a ``_target_``.

report.json
-----------
::

    {
      "bundle":   {"name", "version", "path"},
      "manifest": "<path>", "split": "test" | null,
      "findings": [...], "prompt_languages": ["en", "es"],
      "data":     {"n_images", "by_language": {lang: n}, "skipped": {reason: n}, "text_sources": {...}},
      "zero_shot": {"<prompt_lang>": {"<data_lang>" | "all": {
                       "macro_auc": float | null, "macro_f1": float,
                       "per_finding_auc": {finding: float | null}, "per_finding_f1": {...},
                       "undefined_auc": [findings whose labels hold one class], "n": int}}},
      "retrieval": {"<data_lang>" | "all": {"i2t": {"R@1", "R@5", "R@10"}, "t2i": {...}, "n": int}},
      "language_gap": {"text":  {"probe_accuracy", "probe_accuracy_std", "majority_baseline", "folds",
                                 "n", "counts", "centroid_gap"},
                       "image": {...same...},
                       "prompt_agreement": float | null},
      "plots": ["tsne.png", "roc_en_es.png", "gradcam_*.png"],
      "notes": ["..."]
    }

``null`` means *undefined*, never 0.5: e.g. an AUC whose label column holds a single class, or a
language gap when the data hold one language. Markdown shows it as ``n/a``.

Text embeddings for the language gap are the reports *and*, when the manifest has them, their
``translations``: the same meaning in both languages, so a language-ID probe at the majority baseline
means the text encoder keeps no language signal. Retrieval uses the original reports, and treats
identical report texts as equally correct answers (see :mod:`monai_medunic.metrics.retrieval`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from monai_medunic.errors import DataError, MetricInputError
from monai_medunic.metrics.language_gap import language_gap_report
from monai_medunic.metrics.retrieval import retrieval_by_language
from monai_medunic.metrics.zero_shot import ZeroShotClassifier, evaluate_zero_shot

__all__ = [
    "evaluate_bundle",
    "render_markdown",
    "summary_table",
    "ablation_table",
    "write_ablation_report",
    "calibrate_bundle",
    "calibration_comparison",
]

logger = logging.getLogger(__name__)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _normalise_text(text: str) -> str:
    return " ".join(text.lower().split())


def _label_matrix(records, findings: Sequence[str], manifest: str) -> np.ndarray:
    rows = []
    for rec in records:
        labels = rec.labels or {}
        missing = [f for f in findings if f not in labels]
        if missing:
            rid = rec.study_uid or os.path.basename(rec.image_paths[0])
            raise MetricInputError(
                f"{manifest}: line {rec.line}: field 'labels': record '{rid}' has no label for {missing}; "
                "zero-shot AUC/F1 needs every finding labelled (fix the manifest, choose findings with --findings, "
                "or skip zero-shot with --no-zero-shot)"
            )
        rows.append([int(labels[f]) for f in findings])
    return np.asarray(rows, dtype=np.int64)


def _load_images(records, image_size: int, on_error: str, skipped: Counter) -> tuple[list, torch.Tensor | None]:
    from monai_medunic.transforms import LoadDicomImage
    from monai_medunic.transforms.pipelines import model_input_transform

    load, prep = LoadDicomImage(), model_input_transform(image_size)
    kept, images = [], []
    for rec in records:
        path = rec.image_paths[0]
        try:
            img = torch.as_tensor(prep(load(path)))
        except DataError as err:
            if on_error == "raise":
                raise
            logger.warning("skipping %s: %s", os.path.basename(path), err)
            skipped["unreadable_image"] += 1
            continue
        if img.shape[0] != 1:  # multi-frame objects: the first frame
            img = img[:1]
        kept.append(rec)
        images.append(img)
    return kept, (torch.stack(images) if images else None)


@torch.no_grad()
def _encode_images(model, images: torch.Tensor, batch_size: int, device) -> torch.Tensor:
    out = [model.encode_image(images[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def _encode_texts(bundle, texts: Sequence[str], batch_size: int, device) -> torch.Tensor:
    out = []
    for i in range(0, len(texts), batch_size):
        tok = bundle.tokenize(texts[i : i + batch_size])
        out.append(bundle.model.encode_text(tok["input_ids"].to(device), tok["attention_mask"].to(device)).float().cpu())
    return torch.cat(out)


def _finding_keys(labels: np.ndarray | None, findings: Sequence[str], n: int) -> list[str] | None:
    if labels is None:
        return None
    from monai_medunic.metrics.plots import finding_names_for_plot

    return finding_names_for_plot(labels, findings)[:n]


def evaluate_bundle(
    bundle_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str | None = "test",
    batch_size: int = 16,
    device: str = "cpu",
    findings: Sequence[str] | None = None,
    prompt_languages: Sequence[str] | None = None,
    zero_shot: bool = True,
    plots: bool = True,
    gradcam: bool = True,
    gradcam_images: int = 2,
    on_error: str = "skip",
    seed: int = 0,
    print_summary: bool = True,
) -> dict:
    """Evaluate a trained bundle on a manifest split and write ``report.json``, ``report.md`` and PNGs.

    Args:
        bundle_dir: a trained ``cxr_medunic_pretrain`` bundle directory.
        manifest: a JSONL / CSV manifest (:mod:`monai_medunic.data.manifest`).
        out_dir: output directory (created).
        split: the manifest split to evaluate (``"train"``, ``"val"``, ``"test"``); ``None`` or ``"all"``
            evaluates every record.
        batch_size: encoder batch size.
        device: torch device.
        findings: zero-shot findings (default: the bundle's).
        prompt_languages: zero-shot prompt languages (default: the bundle's).
        zero_shot: compute zero-shot metrics (needs labels for every finding).
        plots: write t-SNE and ROC plots.
        gradcam: write Grad-CAM overlays (convolutional image encoders only).
        gradcam_images: how many images get a Grad-CAM overlay.
        on_error: ``"skip"`` bad manifest records / unreadable images with a counted reason, or ``"raise"``.
        seed: seed of t-SNE and of the language-ID probe's folds.
        print_summary: print the summary table to stdout.

    Returns:
        the report dict (structure in the module docstring).

    Raises:
        MetricInputError: no usable record in the split, or labels missing for zero-shot.
        TranslationMissingError: a finding has no name in a prompt language.
        ModelLoadError, ManifestError: unreadable bundle or manifest.
    """
    from monai_medunic.data.manifest import load_manifest
    from monai_medunic.pretrained import load_pretrained_bundle

    torch.manual_seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = os.fspath(manifest)
    split = None if split in (None, "all") else split
    bundle = load_pretrained_bundle(bundle_dir, device=device)
    findings = list(findings or bundle.findings)
    languages = [str(x).lower() for x in (prompt_languages or bundle.prompt_languages)]
    # fails first, naming finding and language, if a prompt has no translation
    classifier = ZeroShotClassifier(bundle.model, bundle.tokenizer, findings, languages, max_length=bundle.max_length)
    calibrated = ZeroShotClassifier(bundle.model, bundle.tokenizer, findings, languages, max_length=bundle.max_length,
                                    calibration=bundle.calibration) if bundle.calibration is not None else None

    loaded = load_manifest(manifest, on_error=on_error, split=split)
    skipped: Counter = Counter(loaded.summary.dropped)
    skipped.pop("other_split", None)
    if not loaded.records:
        raise MetricInputError(
            f"{manifest}: no usable record in split '{split or 'all'}' (kept by split: {dict(loaded.summary.kept_by_split)}; "
            f"dropped: {dict(loaded.summary.dropped)})"
        )
    records, images = _load_images(loaded.records, bundle.image_size, on_error, skipped)
    if images is None:
        raise MetricInputError(f"{manifest}: no image of split '{split or 'all'}' could be loaded (skipped: {dict(skipped)})")
    labels = _label_matrix(records, findings, manifest) if zero_shot else None
    data_langs = [r.language for r in records]
    notes: list[str] = []

    image_emb = _encode_images(bundle.model, images, batch_size, device)
    reports = [r.report for r in records]
    report_emb = _encode_texts(bundle, reports, batch_size, device)
    # language-gap text set: reports + their translations (same meaning, other language)
    gap_texts, gap_langs = list(reports), list(data_langs)
    n_translations = 0
    for r in records:
        for lang, text in (r.translations or {}).items():
            if text and text.strip():
                gap_texts.append(text)
                gap_langs.append(lang)
                n_translations += 1
    text_emb = torch.cat([report_emb, _encode_texts(bundle, gap_texts[len(reports):], batch_size, device)]) if n_translations else report_emb

    report: dict[str, Any] = {
        "bundle": {"name": bundle.name, "version": bundle.version, "path": os.fspath(bundle_dir)},
        "manifest": manifest,
        "split": split,
        "findings": findings,
        "prompt_languages": languages,
        "data": {
            "n_images": len(records),
            "by_language": dict(sorted(Counter(data_langs).items())),
            "skipped": dict(skipped),
            "text_sources": {"reports": len(reports), "translations": n_translations},
        },
    }

    decisions = None
    zs = None
    if zero_shot:
        zs = evaluate_zero_shot(classifier, image_emb, labels, data_langs, languages)
        report["zero_shot"] = zs.table  # the paper's table: AUC of the margin, F1 of s_pos > s_neg
        decisions = zs.decisions
        if calibrated is not None:
            calibrated._cache = classifier._cache  # the same prompt embeddings
            zs_cal = evaluate_zero_shot(calibrated, image_emb, labels, data_langs, languages)
            report["calibration"] = calibration_comparison(labels, zs, zs_cal, bundle.calibration)
            decisions = zs_cal.decisions  # what the bundle decides, as its users see it
        else:
            report["calibration"] = {"status": "uncalibrated", "decision_rule": "s_pos > s_neg (uncalibrated)"}
            notes.append("the bundle has no models/calibration.json: its decisions are UNCALIBRATED (s_pos > s_neg); "
                         "fit one with `medunic calibrate`")
    else:
        report["zero_shot"] = None
        notes.append("zero-shot skipped (--no-zero-shot)")

    groups = [_normalise_text(t) for t in reports]
    report["retrieval"] = retrieval_by_language(image_emb, report_emb, data_langs, groups=groups)
    pair = tuple(languages[:2]) if len(languages) >= 2 else ("en", "es")
    report["language_gap"] = language_gap_report(text_emb, gap_langs, image_emb, data_langs, decisions, pair=pair, seed=seed)
    if report["language_gap"]["prompt_agreement"] is None:
        notes.append("prompt agreement needs zero-shot decisions in two prompt languages")

    plot_files: list[str] = []
    if plots:
        from monai_medunic.metrics.plots import plot_roc_curves, plot_tsne

        keys = _finding_keys(labels, findings, len(records))
        try:
            plot_tsne(out / "tsne.png", image_emb, data_langs, report_emb, data_langs, keys, keys, seed=seed,
                      title=f"{bundle.name}: image (o) and report (^) embeddings")
            plot_files.append("tsne.png")
        except MetricInputError as err:
            notes.append(f"t-SNE skipped: {err}")
        if zs is not None:
            name = f"roc_{'_'.join(languages)}.png"
            plot_roc_curves(out / name, labels, {f"{p} prompts": zs.probs[p] for p in languages}, findings,
                            title="zero-shot ROC per finding")
            plot_files.append(name)
    if gradcam and gradcam_images > 0:
        from monai_medunic.errors import ConfigurationError
        from monai_medunic.metrics.gradcam import save_gradcam_overlays

        try:
            for i in range(min(gradcam_images, len(records))):
                pos = [findings[j] for j in range(len(findings)) if labels is not None and labels[i, j] == 1]
                finding = pos[0] if pos else findings[0]
                plot_files += save_gradcam_overlays(
                    classifier, images[i : i + 1].to(device), finding, out, languages,
                    names=[f"image {i} ({data_langs[i]} report)"], prefix=f"gradcam_{i}",
                )
        except ConfigurationError as err:
            notes.append(f"Grad-CAM skipped: {err}")
    report["plots"] = plot_files
    report["notes"] = notes

    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False), encoding="utf-8")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    if print_summary:
        print(summary_table(report))
    logger.info("evaluation report written to %s", out)
    return report


def calibration_comparison(labels, raw, calibrated, calibration) -> dict:
    """Macro F1 and ECE per prompt language, with the paper's rule (``s_pos > s_neg``, ``sigmoid(m / tau)``)
    and with the bundle's calibration, on the same images (:func:`evaluate_zero_shot` results)."""
    from monai_medunic.metrics.calibration import expected_calibration_error

    out: dict[str, Any] = {"status": "calibrated", "rule": calibration.rule, "method": calibration.method,
                           "fitted_on": calibration.fitted_on, "languages": {}}
    for lang in raw.probs:
        out["languages"][lang] = {
            "macro_f1_uncalibrated": raw.table[lang]["all"]["macro_f1"],
            "macro_f1_calibrated": calibrated.table[lang]["all"]["macro_f1"],
            "ece_uncalibrated": expected_calibration_error(labels, raw.probs[lang]),
            "ece_calibrated": expected_calibration_error(labels, calibrated.probs[lang]),
            "per_finding_f1_calibrated": calibrated.table[lang]["all"]["per_finding_f1"],
            "fitted_findings": sorted(f for f, c in calibration.languages.get(lang, {}).items() if c.fitted),
        }
    return out


def calibrate_bundle(
    bundle_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    split: str | None = "val",
    batch_size: int = 16,
    device: str = "cpu",
    on_error: str = "skip",
) -> dict:
    """Fit the bundle's zero-shot calibration (:mod:`monai_medunic.metrics.calibration`) on a labelled
    manifest split and write ``models/calibration.json``; returns the fitted file's content.

    Raises:
        MetricInputError: no usable labelled record in the split.
    """
    from monai_medunic.data.manifest import load_manifest
    from monai_medunic.metrics.calibration import fit_classifier_calibration, save_calibration
    from monai_medunic.pretrained import load_pretrained_bundle

    manifest = os.fspath(manifest)
    split = None if split in (None, "all") else split
    bundle = load_pretrained_bundle(bundle_dir, device=device)
    classifier = ZeroShotClassifier(bundle.model, bundle.tokenizer, bundle.findings, bundle.prompt_languages,
                                    max_length=bundle.max_length)
    loaded = load_manifest(manifest, on_error=on_error, split=split)
    skipped: Counter = Counter(loaded.summary.dropped)
    skipped.pop("other_split", None)
    records, images = _load_images(loaded.records, bundle.image_size, on_error, skipped)
    if images is None:
        raise MetricInputError(f"{manifest}: no image of split '{split or 'all'}' could be loaded to calibrate on (skipped: {dict(skipped)})")
    labels = _label_matrix(records, bundle.findings, manifest)
    emb = _encode_images(bundle.model, images, batch_size, device)
    cal = fit_classifier_calibration(classifier, emb, labels, fitted_on={"split": split or "all", "skipped": dict(skipped)})
    path = save_calibration(bundle_dir, cal)
    logger.info("zero-shot calibration fitted on %d images of split '%s' written to %s", len(records), split or "all", path)
    return cal.to_json()


def _zero_shot_rows(report: Mapping) -> list[list[str]]:
    rows = []
    for plang, row in (report.get("zero_shot") or {}).items():
        for dlang, cell in row.items():
            rows.append([plang, dlang, _fmt(cell["macro_auc"]), _fmt(cell["macro_f1"]), str(cell["n"])])
    return rows


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _gap_rows(gap: Mapping) -> list[list[str]]:
    rows = []
    for kind in ("text", "image"):
        g = gap.get(kind) or {}
        rows.append([kind, _fmt(g.get("probe_accuracy")), _fmt(g.get("majority_baseline")), _fmt(g.get("centroid_gap"))])
    return rows


def render_markdown(report: Mapping) -> str:
    """``report.md``: the report dict as Markdown tables (undefined values shown as ``n/a``)."""
    b = report["bundle"]
    parts = [
        f"# Evaluation of {b['name']} {b['version']}",
        "",
        f"Manifest `{report['manifest']}`, split `{report['split'] or 'all'}`: {report['data']['n_images']} images "
        f"({', '.join(f'{k}: {v}' for k, v in report['data']['by_language'].items())}); "
        f"skipped: {report['data']['skipped'] or 'none'}.",
        "",
        "## Zero-shot classification (macro over findings)",
        "",
    ]
    if report.get("zero_shot"):
        parts.append(_md_table(["prompt language", "data language", "macro AUC", "macro F1", "n"], _zero_shot_rows(report)))
        findings = report["findings"]
        rows = []
        for plang, row in report["zero_shot"].items():
            rows.append([plang] + [_fmt(row["all"]["per_finding_auc"][f]) for f in findings])
        parts += ["", "Per-finding AUC (all images):", "", _md_table(["prompt language"] + list(findings), rows)]
    else:
        parts.append("not computed")
    cal = report.get("calibration")
    if cal:
        parts += ["", "## Decisions and calibration", ""]
        if cal.get("status") == "calibrated":
            parts += [f"Calibrated ({cal['rule']} thresholds, {cal['method']} scaling; fitted on {cal['fitted_on']}).", "",
                      _md_table(["prompt language", "macro F1 s_pos > s_neg", "macro F1 calibrated", "ECE uncalibrated", "ECE calibrated"],
                                _calibration_rows(cal))]
        else:
            parts.append("**Uncalibrated**: decisions are s_pos > s_neg and scores are sigmoid(margin / tau), not probabilities.")
    parts += ["", "## Image-text retrieval (recall)", ""]
    rows = []
    for lang, r in report["retrieval"].items():
        rows.append([lang, *[_fmt(r["i2t"][k]) for k in ("R@1", "R@5", "R@10")], *[_fmt(r["t2i"][k]) for k in ("R@1", "R@5", "R@10")], str(r["n"])])
    parts.append(_md_table(["data language", "i2t R@1", "i2t R@5", "i2t R@10", "t2i R@1", "t2i R@5", "t2i R@10", "n"], rows))
    gap = report["language_gap"]
    parts += [
        "",
        "## Language gap (community bias)",
        "",
        _md_table(["embeddings", "language-ID probe accuracy", "majority baseline", "centroid gap"], _gap_rows(gap)),
        "",
        f"Cross-lingual prompt agreement: {_fmt(gap.get('prompt_agreement'))}",
        "",
        "Probe accuracy at the majority baseline means no linear language signal; centroid gap 0 means the "
        "language communities share a centre.",
    ]
    if report.get("plots"):
        parts += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report["plots"]]
    if report.get("notes"):
        parts += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(parts) + "\n"


def _calibration_rows(cal: Mapping) -> list[list[str]]:
    return [[lang, _fmt(c["macro_f1_uncalibrated"]), _fmt(c["macro_f1_calibrated"]), _fmt(c["ece_uncalibrated"]), _fmt(c["ece_calibrated"])]
            for lang, c in cal.get("languages", {}).items()]


def _text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda r: "  ".join(str(x).ljust(w) for x, w in zip(r, widths))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def summary_table(report: Mapping) -> str:
    """The plain-text summary printed by ``medunic evaluate``."""
    b = report["bundle"]
    parts = [f"== {b['name']} {b['version']} on {report['data']['n_images']} images (split {report['split'] or 'all'}) =="]
    if report.get("zero_shot"):
        parts += ["zero-shot:", _text_table(["prompt", "data", "AUC", "F1", "n"], _zero_shot_rows(report))]
    cal = report.get("calibration") or {}
    if cal.get("status") == "calibrated":
        parts += ["calibration (all images):", _text_table(["prompt", "F1 s_pos>s_neg", "F1 calibrated", "ECE before", "ECE after"],
                                                           _calibration_rows(cal))]
    elif cal:
        parts.append("decisions: UNCALIBRATED (s_pos > s_neg); fit a calibration with `medunic calibrate`")
    rows = [[lang, _fmt(r["i2t"]["R@1"]), _fmt(r["i2t"]["R@10"]), _fmt(r["t2i"]["R@1"]), _fmt(r["t2i"]["R@10"])] for lang, r in report["retrieval"].items()]
    parts += ["retrieval:", _text_table(["data", "i2t R@1", "i2t R@10", "t2i R@1", "t2i R@10"], rows)]
    gap = report["language_gap"]
    parts += [
        "language gap:",
        _text_table(["embeddings", "lang-ID acc", "baseline", "centroid gap"], _gap_rows(gap)),
        f"prompt agreement (en vs es decisions): {_fmt(gap.get('prompt_agreement'))}",
    ]
    return "\n".join(parts)


def ablation_table(reports: Mapping[str, Mapping]) -> dict:
    """Side-by-side numbers of several evaluation reports (e.g. ``{"with CTR": r1, "without CTR": r2}``).

    Returns ``{"runs": [names], "rows": [{"metric": name, "<run>": value, ...}]}`` with the three gap numbers
    (text and image language-ID probe accuracy and centroid gap, prompt agreement) and the zero-shot
    macro AUCs per prompt language x data language.
    """
    names = list(reports)
    if not names:
        raise MetricInputError("ablation_table needs at least one report")
    metrics: list[tuple[str, Any]] = []
    for kind in ("text", "image"):
        metrics.append((f"{kind} language-ID probe accuracy", lambda r, k=kind: r["language_gap"][k].get("probe_accuracy")))
        metrics.append((f"{kind} language-ID majority baseline", lambda r, k=kind: r["language_gap"][k].get("majority_baseline")))
        metrics.append((f"{kind} centroid gap", lambda r, k=kind: r["language_gap"][k].get("centroid_gap")))
    metrics.append(("prompt agreement (en vs es)", lambda r: r["language_gap"].get("prompt_agreement")))
    cells: list[tuple[str, str]] = []
    for r in reports.values():
        for plang, row in (r.get("zero_shot") or {}).items():
            for dlang in row:
                if (plang, dlang) not in cells:
                    cells.append((plang, dlang))
    for plang, dlang in cells:
        metrics.append(
            (f"zero-shot macro AUC, {plang} prompts, {dlang} data",
             lambda r, p=plang, d=dlang: (((r.get("zero_shot") or {}).get(p) or {}).get(d) or {}).get("macro_auc"))
        )
    for key in ("R@1", "R@10"):
        metrics.append((f"retrieval i2t {key} (all)", lambda r, k=key: r["retrieval"]["all"]["i2t"][k]))
    rows = [{"metric": name, **{n: fn(reports[n]) for n in names}} for name, fn in metrics]
    return {"runs": names, "rows": rows}


def write_ablation_report(
    reports: Mapping[str, Mapping], out_dir: str | os.PathLike, name: str = "ctr_ablation", title: str = "CTR ablation"
) -> dict:
    """Write ``<name>.json`` and ``<name>.md`` with :func:`ablation_table` and return the table.

    The Markdown adds a column ``difference`` (second run minus first) when two runs are compared; it
    reports what comes out, whichever way it goes.
    """
    table = ablation_table(reports)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(table, indent=2, allow_nan=False), encoding="utf-8")
    runs = table["runs"]
    header = ["metric"] + runs + (["difference"] if len(runs) == 2 else [])
    rows = []
    for row in table["rows"]:
        vals = [row[n] for n in runs]
        extra = []
        if len(runs) == 2:
            extra = [_fmt(vals[1] - vals[0]) if all(isinstance(v, (int, float)) for v in vals) else "n/a"]
        rows.append([row["metric"], *[_fmt(v) for v in vals], *extra])
    md = [f"# {title}", "", _md_table(header, rows), ""]
    if len(runs) == 2:
        md.append(f"difference = {runs[1]} - {runs[0]}. Lower probe accuracy / centroid gap and higher agreement mean less community bias.")
    (out / f"{name}.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    return table
