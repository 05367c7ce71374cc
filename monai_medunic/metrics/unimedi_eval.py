"""Evaluation of a trained UniMedI bundle on radiographs *and* CT volumes, in one report.

:func:`evaluate_unimedi_bundle` (the bundle's ``configs/evaluate.json``) writes ``report.json`` /
``report.md`` with:

* **2D**: :func:`~monai_medunic.metrics.report.evaluate_bundle` on the radiographs of the split
  (bilingual zero-shot AUC, retrieval, language gap), under ``2d``;
* **slice selection** (UniMedI Sec. 3.2): precision@k and hit@k against the true lesion slices of the
  CT records (:mod:`monai_medunic.metrics.slice_selection`) for the attention ranking (Eq. 1-2 with the
  bundle's ``attention_layers``, and with the last layer only), the report-guided ranking (each volume's own report,
  :meth:`~monai_medunic.networks.unimedi.UniMedI.slab_text_similarity`), the middle slabs and random slabs;
* **3D zero-shot** macro AUC on the split's CT volumes over the CT findings, and a **3D linear probe**
  (:func:`~monai_medunic.metrics.volume_tasks.linear_probe_3d`: trained on the train + val volumes,
  scored on the split's);
* **2D-3D embedding distance** (UniMedI Fig. 2c, as numbers): :func:`dimension_gap` of the split's
  radiograph and volume embeddings, next to the same numbers for their reports (the paper's
  reference: reports of 2D and 3D studies share one space, Fig. 1b).

:func:`random_init_bundle` writes the random-init baseline in the same trained-bundle layout, so that
every "pre-trained vs random init" number comes from the same code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monai_medunic.errors import ConfigurationError, MetricInputError

__all__ = ["dimension_gap", "evaluate_unimedi_bundle", "random_init_bundle", "unimedi_summary_rows", "CT_EVAL_FINDINGS"]

logger = logging.getLogger(__name__)

#: The findings the demo CT phantoms draw (the others are 0 on every volume).
CT_EVAL_FINDINGS = ("Nodule", "Consolidation", "Pleural Effusion")


def dimension_gap(emb_2d, emb_3d, name: str = "image embeddings", seed: int = 0) -> dict:
    """How far apart 2D and 3D embeddings lie (UniMedI Fig. 2c as numbers).

    ``centroid_gap``: distance between the 2D and 3D centroids over the mean within-group spread
    (:func:`~monai_medunic.metrics.language_gap.centroid_gap`, groups ``2D`` / ``3D``; 0 = one cloud);
    ``centroid_distance``: the plain distance of the centroids of the L2-normalised embeddings;
    ``probe_accuracy``: cross-validated accuracy of a linear probe telling 2D from 3D (the majority
    share = not separable; 1.0 = two separate clouds).
    """
    from monai_medunic.metrics.language_gap import embedding_gap

    a, b = torch.as_tensor(emb_2d).double(), torch.as_tensor(emb_3d).double()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not len(a) or not len(b):
        raise MetricInputError(f"{name}: need (n, d) 2D and (m, d) 3D embeddings, got {tuple(a.shape)} and {tuple(b.shape)}")
    x = torch.cat([a, b])
    groups = ["2D"] * len(a) + ["3D"] * len(b)
    out = embedding_gap(x, groups, name=name, seed=seed)
    out["centroid_distance"] = float((a.mean(0) - b.mean(0)).norm())
    out["n_2d"], out["n_3d"] = len(a), len(b)
    return out


def _encode_batches(fn, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i : i + batch_size]).float() for i in range(0, len(x), batch_size)])


def _encode_texts(bundle, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    model, device = bundle.model, next(bundle.model.parameters()).device
    out = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            tok = bundle.tokenize(texts[i : i + batch_size])
            out.append(model.encode_text(tok["input_ids"].to(device), tok["attention_mask"].to(device)).float().cpu())
    return torch.cat(out)


def _load_radiographs(bundle_dir: str | os.PathLike, records: Sequence[Mapping[str, Any]]) -> tuple[torch.Tensor, list[int]]:
    from monai_medunic.pretrained import inference_preprocessing

    pre = inference_preprocessing(bundle_dir)
    images, kept = [], []
    for i, rec in enumerate(records):
        try:
            images.append(torch.as_tensor(pre({"image": rec["image"]})["image"]))
            kept.append(i)
        except Exception as err:  # noqa: BLE001 - a bad image is skipped with a logged reason, as evaluate_bundle does
            logger.warning("skipped radiograph %s: %s", rec.get("id"), str(err).splitlines()[0][:200])
    if not images:
        raise MetricInputError("no radiograph of the split could be loaded")
    return torch.stack(images), kept


def evaluate_unimedi_bundle(
    bundle_dir: str | os.PathLike,
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str | None = "test",
    k: int | None = None,
    slice_split: str | None = "all",
    probe_splits: Sequence[str] = ("train", "val"),
    evaluate_2d: bool = True,
    linear_probe: bool = True,
    batch_size: int = 8,
    seed: int = 0,
    print_summary: bool = True,
    ct_studies: Mapping[str, Any] | None = None,
) -> dict:
    """Evaluate a trained UniMedI bundle on the radiographs and CT volumes of a manifest (module docstring).

    Args:
        bundle_dir: the trained bundle. manifest: JSONL / CSV manifest with 2D and 3D records.
        out_dir: output folder (``report.json``, ``report.md``, the 2D report under ``2d/``).
        split: the split of the 2D evaluation, the 3D zero-shot, the probe's test set and the 2D-3D gap.
        k: slices to select (default: the bundle's ``num_slices``).
        slice_split: the split whose CT volumes score slice selection (``"all"``: every CT record; the
            selection never sees the lesion truth, only reports in training).
        probe_splits: the splits the 3D linear probe trains on.
        evaluate_2d: run the 2D report. linear_probe: run the 3D linear probe.
        ct_studies: the manifest's CT records already loaded at the bundle's volume size
            (:func:`~monai_medunic.metrics.volume_tasks.load_ct_studies` of every 3D record, in manifest
            order), to evaluate several bundles without reading the series again.

    Raises:
        ConfigurationError: not a UniMedI bundle. MetricInputError / ManifestError: no usable record.
    """
    from monai_medunic.data.datalist import manifest_datalist
    from monai_medunic.metrics.slice_selection import lesion_slabs, slice_selection_scores
    from monai_medunic.metrics.volume_tasks import linear_probe_3d, load_ct_studies
    from monai_medunic.metrics.zero_shot import ZeroShotClassifier, multilabel_auc
    from monai_medunic.networks.unimedi import UniMedI, UniMedIVisionEncoder, select_slices
    from monai_medunic.pretrained import load_pretrained_bundle

    torch.manual_seed(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bundle = load_pretrained_bundle(bundle_dir)
    model = bundle.model
    if not isinstance(model, UniMedI):
        raise ConfigurationError(f"{bundle_dir}: evaluate_unimedi_bundle needs a trained UniMedI bundle, not '{bundle.method}'")
    enc = model.image_encoder
    k = int(k or model.num_slices or 1)
    window = (bundle.settings.get("unimedi") or {}).get("volume_window", "lung")
    split_arg = None if split in (None, "all") else split
    ct_findings = [f for f in CT_EVAL_FINDINGS if f in bundle.findings] or list(CT_EVAL_FINDINGS)
    report: dict[str, Any] = {"bundle": {"name": bundle.name, "version": bundle.version, "path": os.fspath(bundle_dir)},
                              "manifest": os.fspath(manifest), "split": split_arg, "k": k, "ct_findings": ct_findings}

    if evaluate_2d:
        from monai_medunic.metrics.report import evaluate_bundle

        r2 = evaluate_bundle(bundle_dir, manifest, out / "2d", split=split_arg, plots=False, gradcam=False,
                             print_summary=False, seed=seed)
        report["zero_shot_2d"] = {p: (row.get("all") or {}).get("macro_auc") for p, row in (r2.get("zero_shot") or {}).items()}
        report["retrieval_2d"] = (r2.get("retrieval") or {}).get("all")

    # every CT record once: slice selection on `slice_split`, the rest on `split`
    all_ct = manifest_datalist(manifest, split=None, findings=ct_findings, dimensions=3)
    if ct_studies is None:
        studies = load_ct_studies(all_ct, enc.volume_size, ct_findings, window)
    else:
        studies = dict(ct_studies)
        if list(studies["ids"]) != [str(r.get("id") or r["image"]) for r in all_ct] or tuple(studies["volumes"].shape[2:]) != tuple(enc.volume_size):
            raise ConfigurationError("ct_studies do not hold this manifest's CT records at the bundle's volume size "
                                     f"{tuple(enc.volume_size)}: load them with load_ct_studies")
    vols, splits = studies["volumes"], [r.get("split") for r in all_ct]
    model.eval()

    in_slice = [i for i, s in enumerate(splits) if slice_split in (None, "all") or s == slice_split]
    x = vols[in_slice]
    att = _encode_batches(lambda v: select_slices(model, v, k, model.attention_layers)["slab_scores"], x, batch_size)
    last = _encode_batches(lambda v: select_slices(model, v, k, 1)["slab_scores"], x, batch_size)
    texts = [studies["reports"][i] for i in in_slice]
    with torch.no_grad():
        txt = torch.cat([model.slab_text_similarity(x[i : i + batch_size], **bundle.tokenize(texts[i : i + batch_size]))
                         for i in range(0, len(x), batch_size)]) if len(x) else att
    truth = [lesion_slabs(studies["lesion_slices"][i], studies["depths"][i], enc.volume_size[0], enc.patch_depth) for i in in_slice]
    report["slice_selection"] = slice_selection_scores({"attention": att, "attention_last_layer": last, "report_guided": txt}, truth, k)
    report["slice_selection"]["slabs"] = enc.grid_3d[0]
    report["slice_selection"]["split"] = slice_split or "all"

    test_idx = [i for i, s in enumerate(splits) if split_arg is None or s == split_arg]
    if test_idx:
        emb3 = _encode_batches(model.encode_image, vols[test_idx], batch_size)
        classifier = ZeroShotClassifier(model, bundle.tokenizer, ct_findings, bundle.prompt_languages, max_length=bundle.max_length)
        labels = studies["labels"][test_idx]
        report["zero_shot_3d"] = {}
        for lang in bundle.prompt_languages:
            pred = classifier.classify_embeddings(emb3, lang)
            report["zero_shot_3d"][lang] = multilabel_auc(labels.numpy(), pred.probs.numpy(), ct_findings)["macro"]
        if linear_probe:
            train_idx = [i for i, s in enumerate(splits) if s in probe_splits]
            if train_idx:
                report["linear_probe_3d"] = linear_probe_3d(UniMedIVisionEncoder.from_model(model), (vols[train_idx], studies["labels"][train_idx]),
                                                            (vols[test_idx], labels), ct_findings, seed=seed)
        # 2D-3D distance on the split's radiographs and volumes, and on their reports
        rad = manifest_datalist(manifest, split=split_arg, dimensions=2)
        images, kept = _load_radiographs(bundle_dir, rad)
        emb2 = _encode_batches(model.encode_image, images, batch_size)
        report["dimension_gap"] = {
            "image": dimension_gap(emb2, emb3, "image embeddings", seed),
            "report": dimension_gap(_encode_texts(bundle, [rad[i]["report"] for i in kept]),
                                    _encode_texts(bundle, [studies["reports"][i] for i in test_idx]), "report embeddings", seed),
        }
    (out / "report.json").write_text(json.dumps(report, indent=2, allow_nan=False), encoding="utf-8")
    (out / "report.md").write_text(render_unimedi_markdown(report), encoding="utf-8")
    if print_summary:
        print(render_unimedi_markdown(report))
    return report


def _fmt(x: Any, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def unimedi_summary_rows(report: Mapping[str, Any]) -> dict[str, str]:
    """The headline numbers of a :func:`evaluate_unimedi_bundle` report, formatted (for tables of several runs)."""
    sel = report.get("slice_selection") or {}
    zs2 = report.get("zero_shot_2d") or {}
    zs3 = report.get("zero_shot_3d") or {}
    gap = (report.get("dimension_gap") or {}).get("image") or {}
    probe = ((report.get("linear_probe_3d") or {}).get("auc") or {}).get("macro")
    return {
        "precision@k attention": _fmt((sel.get("attention") or {}).get("precision")),
        "precision@k attention (last layer)": _fmt((sel.get("attention_last_layer") or {}).get("precision")),
        "precision@k report-guided": _fmt((sel.get("report_guided") or {}).get("precision")),
        "precision@k middle": _fmt((sel.get("middle") or {}).get("precision")),
        "precision@k random": _fmt((sel.get("random") or {}).get("precision")),
        "2D zero-shot AUC": _fmt(float(np.mean([v for v in zs2.values() if v is not None])) if any(v is not None for v in zs2.values()) else None),
        "3D zero-shot AUC": _fmt(float(np.mean([v for v in zs3.values() if v is not None])) if any(v is not None for v in zs3.values()) else None),
        "3D linear probe AUC": _fmt(probe),
        "2D-3D centroid gap": _fmt(gap.get("centroid_gap")),
        "2D-3D probe acc.": _fmt(gap.get("probe_accuracy")),
    }


def render_unimedi_markdown(report: Mapping[str, Any]) -> str:
    b = report["bundle"]
    sel = report.get("slice_selection") or {}
    lines = [f"# UniMedI evaluation: {b['name']} {b['version']}", "",
             f"Manifest `{report['manifest']}`, split `{report['split'] or 'all'}`, k = {report['k']}.", "",
             f"## Slice selection (precision@{report['k']} against the lesion slices, {sel.get('volumes', (sel.get('attention') or {}).get('volumes'))} "
             f"volumes with a lesion, {sel.get('slabs')} slabs each, split `{sel.get('split')}`)", "",
             "| ranking | precision@k | hit@k | volumes |", "|---|---|---|---|"]
    for name in ("attention", "attention_last_layer", "report_guided", "middle", "random"):
        r = sel.get(name) or {}
        lines.append(f"| {name} | {_fmt(r.get('precision'))} | {_fmt(r.get('hit_rate'))} | {r.get('volumes', 'n/a')} |")
    lines += ["", "## Headline numbers", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in unimedi_summary_rows(report).items()]
    gap = report.get("dimension_gap") or {}
    if gap:
        lines += ["", "## 2D-3D distance (UniMedI Fig. 2c)", "", "| embeddings | centroid gap | centroid distance | 2D/3D probe acc. | majority |",
                  "|---|---|---|---|---|"]
        for kind, g in gap.items():
            lines.append(f"| {kind} | {_fmt(g.get('centroid_gap'))} | {_fmt(g.get('centroid_distance'))} | {_fmt(g.get('probe_accuracy'))} "
                         f"| {_fmt(g.get('majority_baseline'))} |")
    return "\n".join(lines) + "\n"


def random_init_bundle(trained_bundle: str | os.PathLike, dest: str | os.PathLike, text_model_dir: str | os.PathLike | None = None,
                       seed: int = 0) -> Path:
    """A copy of a trained bundle whose weights are those of a freshly built ``network_def`` (seeded): the
    random-init baseline in the same layout, so every evaluation runs unchanged on it.

    Args:
        text_model_dir: an HF directory to put in ``models/text`` instead of the trained text encoder
            (e.g. the base text model the pre-training started from).
    """
    from monai.bundle import ConfigParser

    from monai_medunic.pretrained import INFERENCE_CONFIG, MODEL_FILE, TEXT_DIR, save_model_weights

    src, dst = Path(trained_bundle), Path(dest)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "logs", "eval", "*.ts"))
    if text_model_dir is not None:
        shutil.rmtree(dst / TEXT_DIR)
        shutil.copytree(text_model_dir, dst / TEXT_DIR)
    parser = ConfigParser()
    parser.read_config(str(dst / INFERENCE_CONFIG))
    parser["bundle_root"] = str(dst)
    torch.manual_seed(seed)
    save_model_weights(parser.get_parsed_content("network_def", instantiate=True), dst / MODEL_FILE)
    return dst
