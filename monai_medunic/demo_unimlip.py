"""``medunic demo-unimlip``: Uni-Mlip end to end on the embedded demo data, on a CPU (under ten minutes on 2 cores).

1. generate the demo dataset: radiograph studies (DICOM) with bilingual reports and the bilingual VQA
   pairs of their frontal images (no CT, no masks: this demo does not use them);
2. build a small base text model (WordPiece vocabulary + a 2-layer BERT) from the training reports;
3. pre-train with the bundle ``cxr_unimlip_pretrain`` (``python -m monai.bundle run``, the demo sizes in
   ``configs/demo_overrides.json``), same data, seed and budget for every run, two runs at a time:
   the four rows of the paper's Table 3 (CLIP; CLIP + naive SimCLR; strong views in the forward pass
   with the I2I weight at 0; CLIP + SimCLR with frozen BatchNorm statistics after a warm-up) and the
   rows of Table 4 (CLIP + each perturbed ITC term, and all five terms); "CLIP" is ITC + fused MLM,
   as in the paper's tables;
4. evaluate every run on the held-out studies as soon as it is trained (in this process, next to the
   runs still training): image-text retrieval Recall@1/5/10 both ways and zero-shot macro AUC
   (:func:`~monai_medunic.metrics.report.evaluate_bundle`);
5. fine-tune the full Uni-Mlip run for VQA with the bundle ``cxr_vqa`` (encoders at a tenth of the
   head's learning rate) and evaluate it: open, closed and overall accuracy, next to the accuracy of
   answering from the question alone (the most frequent training answer of each question type);
6. print the tables, say for each effect of the paper whether it reproduces here (beyond two standard
   errors of the difference) and write ``report.json`` / ``report.md``.

The demo sizes (ResNet-18 at 64 px, a 2-layer text model, 10 epochs) live in :data:`UNIMLIP_DEMO_SETTINGS`;
the bundles' defaults stay at the paper's sizes (ResNet-50 at 224 px, 100 epochs).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import threading
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from monai_medunic.demo import StepCache, _copy_bundle, _cpu_seconds, _fmt, _jsonable, _Timer, _write_json, repo_root, run_bundle

__all__ = ["run_unimlip_demo", "cli_main", "UNIMLIP_DEMO_SETTINGS", "VQA_DEMO_SETTINGS", "unimlip_variants", "TABLE3", "TABLE4"]

logger = logging.getLogger("monai_medunic.demo_unimlip")

PRETRAIN_BUNDLE = "cxr_unimlip_pretrain"
VQA_BUNDLE = "cxr_vqa"

# Demo-scale settings of the pre-training bundle (its defaults stay at the paper's sizes).
UNIMLIP_DEMO_SETTINGS: dict[str, Any] = {
    "image_encoder": "resnet18",
    "image_size": 64,
    "embed_dim": 128,
    "freeze_layers": 0,
    "text_pooling": "mean",  # the demo's text model starts untrained: mean pooling aligns faster than [CLS]
    "max_length": 64,
    "batch_size": 32,
    "val_batch_size": 64,
    "num_workers": 0,
    "max_epochs": 10,
    "learning_rate": 1e-3,
    "weight_decay": 0.05,
    "warmup_fraction": 0.1,
    "augment_translate_pixels": 4,
    "precision": "fp32",
    "channels_last": False,
    "val_interval": 10_000,  # the demo evaluates the held-out studies once, after training
    "checkpoint_every_n_epochs": 10_000,  # one checkpoint, at the end
}

VQA_DEMO_SETTINGS: dict[str, Any] = {
    "max_epochs": 8,
    "batch_size": 32,
    "val_batch_size": 64,
    "num_workers": 0,
    "encoder_lr": 2e-4,  # a tenth of the head's, as the paper's 5e-5 / 5e-4, scaled to a few hundred steps
    "head_lr": 2e-3,
    "max_length": 24,
    "precision": "fp32",
    "augment_translate_pixels": 4,
    "val_interval": 10_000,
}

#: the rows of the paper's tables, as runs of :func:`unimlip_variants`
TABLE3 = ("clip", "clip_naive_simclr", "strong_views_i2i_weight_0", "clip_simclr_frozen_bn")
TABLE4 = ("clip", "clip_perturbed_text", "clip_perturbed_image", "clip_simclr_frozen_bn", "unimlip")

_NO_STRONG_VIEWS = {"train#strong_view_transforms": []}  # runs that never read them skip making them
_NO_PERTURBED = {"perturbed_image_weight": 0.0, "perturbed_text_weight": 0.0}


def unimlip_variants(warmup_epochs: int) -> dict[str, dict[str, Any]]:
    """Each run's overrides of the bundle's config. Every run has ITC and the fused MLM at the paper's
    weights; the rows differ in the other terms, the strong views and the BatchNorm statistics:

    * ``clip``: ITC + MLM (Table 3 row 1, Table 4 row 1);
    * ``clip_naive_simclr``: + I2I from the first step, statistics updated by every view (Table 3 row 2);
    * ``strong_views_i2i_weight_0``: the strong views go through the encoder, I2I weight 0 (row 3);
    * ``clip_simclr_frozen_bn``: I2I switched on and the image encoder's statistics frozen after
      ``warmup_epochs`` epochs of ITC + MLM (Table 3 row 4, Table 4 row 4);
    * ``clip_perturbed_text`` / ``clip_perturbed_image``: + ``L_I~TC`` / ``L_~ITC`` (Table 4 rows 2, 3);
    * ``unimlip``: all five terms, I2I with frozen statistics after the warm-up (Table 4 row 5).
    """
    return {
        "clip": {**_NO_PERTURBED, "lambda_um": 0.0, "freeze_bn": False, **_NO_STRONG_VIEWS},
        "clip_naive_simclr": {**_NO_PERTURBED, "freeze_bn": False, "bn_warmup_epochs": 0},
        "strong_views_i2i_weight_0": {**_NO_PERTURBED, "lambda_um": 0.0, "freeze_bn": False, "strong_views": "always"},
        "clip_simclr_frozen_bn": {**_NO_PERTURBED, "freeze_bn": True, "bn_warmup_epochs": warmup_epochs},
        "clip_perturbed_text": {"perturbed_image_weight": 0.0, "lambda_um": 0.0, "freeze_bn": False, **_NO_STRONG_VIEWS},
        "clip_perturbed_image": {"perturbed_text_weight": 0.0, "lambda_um": 0.0, "freeze_bn": False, **_NO_STRONG_VIEWS},
        "unimlip": {"freeze_bn": True, "bn_warmup_epochs": warmup_epochs},
    }


ROW_LABELS = {
    "clip": ("V", "ITC, MLM", "no"),
    "clip_naive_simclr": ("V, Va, Vb", "ITC, MLM, I2I", "no"),
    "strong_views_i2i_weight_0": ("V, Va, Vb", "ITC, MLM (I2I weight 0)", "no"),
    "clip_simclr_frozen_bn": ("V, Va, Vb", "ITC, MLM, I2I", "yes (after warm-up)"),
    "clip_perturbed_text": ("V", "ITC, MLM, IT~C", "no"),
    "clip_perturbed_image": ("V", "ITC, MLM, ~ITC", "no"),
    "unimlip": ("V, Va, Vb", "ITC, MLM, IT~C, ~ITC, I2I", "yes (after warm-up)"),
}


# ----------------------------------------------------------------------------------------- numbers
def _recall(ev: dict, direction: str, k: int) -> float:
    return float(ev["retrieval"]["all"][direction][f"R@{k}"])


def _r1_mean_and_se(ev: dict) -> tuple[float, float]:
    """Mean of the i2t and t2i R@1, and its binomial standard error over the ``n`` queries."""
    n = int(ev["retrieval"]["all"]["n"])
    values = [_recall(ev, d, 1) for d in ("i2t", "t2i")]
    se = math.sqrt(sum(v * (1 - v) / n for v in values)) / 2
    return sum(values) / 2, se


def _effect(evaluations: dict, base: str, other: str, expected: str) -> dict[str, Any]:
    """Whether ``other`` - ``base`` (mean R@1) has the paper's sign beyond two standard errors."""
    (a, sa), (b, sb) = _r1_mean_and_se(evaluations[base]), _r1_mean_and_se(evaluations[other])
    diff, se = b - a, math.sqrt(sa * sa + sb * sb)
    if abs(diff) <= 2 * se:
        verdict = "within noise (not reproduced at this scale)"
    elif (diff > 0) == (expected == "up"):
        verdict = "reproduces"
    else:
        verdict = "opposite of the paper"
    return {"base": base, "run": other, "paper": expected, "difference": diff, "two_se": 2 * se, "verdict": verdict}


def _question_prior_accuracy(manifest: Path) -> dict[str, Any]:
    """Accuracy of answering each test question with the most frequent training answer of its question
    type (and language): what the question alone gives, the floor a VQA model must beat."""
    from monai_medunic.data.vqa import vqa_datalist
    from monai_medunic.metrics.vqa import vqa_accuracy

    train = vqa_datalist(manifest, split="train")
    test = vqa_datalist(manifest, split="test")
    counts: dict[tuple[str, str], Counter] = {}
    for q in train:
        counts.setdefault((q["question_type"], q["language"]), Counter())[q["answer_label"]] += 1
    pred = [counts.get((q["question_type"], q["language"]), Counter({-1: 1})).most_common(1)[0][0] for q in test]
    return vqa_accuracy(pred, [q["answer_label"] for q in test], [q["answer_type"] for q in test])


def _tables(evaluations: dict[str, dict], vqa: dict | None, prior: dict | None) -> dict[str, str]:
    from monai_medunic.metrics.report import _md_table

    tables: dict[str, str] = {}
    rows = []
    for name in TABLE3:
        if name in evaluations:
            ev = evaluations[name]
            rows.append([name, *ROW_LABELS[name]] + [_fmt(_recall(ev, d, k)) for d in ("i2t", "t2i") for k in (1, 5, 10)])
    tables["table3"] = _md_table(["run", "encoder input", "objectives", "frozen BN", "I2T R@1", "I2T R@5", "I2T R@10",
                                  "T2I R@1", "T2I R@5", "T2I R@10"], rows)
    rows = []
    if "clip" in evaluations:
        base = evaluations["clip"]
        for name in TABLE4:
            if name in evaluations:
                ev = evaluations[name]
                gain = [_recall(ev, d, 1) - _recall(base, d, 1) for d in ("i2t", "t2i")]
                rows.append([name, ROW_LABELS[name][1]] + [_fmt(_recall(ev, d, k)) for d in ("i2t", "t2i") for k in (1, 5, 10)]
                            + [f"{gain[0]:+.3f} / {gain[1]:+.3f}",
                               _fmt(((ev.get("zero_shot") or {}).get("en") or {}).get("all", {}).get("macro_auc"))])
    tables["table4"] = _md_table(["run", "objectives", "I2T R@1", "I2T R@5", "I2T R@10", "T2I R@1", "T2I R@5", "T2I R@10",
                                  "gain R@1 (I2T / T2I)", "zero-shot AUC (en)"], rows)
    if vqa is not None:
        vrows = [["unimlip, fine-tuned", _fmt(vqa.get("open")), _fmt(vqa.get("closed")), _fmt(vqa.get("overall")), str(vqa.get("n"))]]
        if prior is not None:
            vrows.append(["question prior (no image)", _fmt(prior.get("open")), _fmt(prior.get("closed")), _fmt(prior.get("overall")),
                          str(prior.get("n"))])
        for lang, r in (vqa.get("by_language") or {}).items():
            vrows.append([f"unimlip, {lang} questions", _fmt(r.get("open")), _fmt(r.get("closed")), _fmt(r.get("overall")), str(r.get("n"))])
        tables["vqa"] = _md_table(["model", "open", "closed", "overall", "questions"], vrows)
    return tables


def _effects(evaluations: dict) -> list[dict[str, Any]]:
    wanted = [("clip", "clip_naive_simclr", "down"), ("clip", "strong_views_i2i_weight_0", "down"),
              ("clip", "clip_simclr_frozen_bn", "up"), ("clip_naive_simclr", "clip_simclr_frozen_bn", "up"),
              ("clip", "clip_perturbed_text", "up"), ("clip", "clip_perturbed_image", "up"), ("clip", "unimlip", "up")]
    return [_effect(evaluations, a, b, e) for a, b, e in wanted if a in evaluations and b in evaluations]


# ----------------------------------------------------------------------------------------- the demo
def run_unimlip_demo(
    out_dir: str | os.PathLike = "demo_unimlip_output",
    num_studies: int = 400,
    seed: int = 0,
    epochs: int | None = None,
    jobs: int = 2,
    table4: bool = True,
    vqa: bool = True,
    force: bool = False,
) -> dict:
    """Run the Uni-Mlip demo end to end and return the report dict (also ``out_dir/report.json`` and ``report.md``).

    The data, the base text model, each pre-training run and the VQA fine-tuning are reused from an earlier run into
    ``out_dir`` with the same inputs (:class:`~monai_medunic.demo.StepCache`; ``force=True`` reruns them); the
    retrieval evaluation always runs."""
    from monai_medunic.data.datalist import manifest_datalist
    from monai_medunic.data.demo import generate_demo_dataset
    from monai_medunic.metrics.report import evaluate_bundle
    from monai_medunic.text.vocab import build_base_model

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    jobs = max(1, int(jobs))
    timer = _Timer()
    steps = StepCache(force=force)
    t_start = time.perf_counter()
    settings = dict(UNIMLIP_DEMO_SETTINGS, seed=seed, resume=False)
    if epochs is not None:
        settings["max_epochs"] = int(epochs)
    warmup = max(1, int(settings["max_epochs"]) // 3)
    variants = unimlip_variants(warmup)
    names = list(dict.fromkeys(TABLE3 + (TABLE4 if table4 else ()) + (("unimlip",) if vqa else ())))
    report: dict[str, Any] = {"settings": {"num_studies": num_studies, "seed": seed, "jobs": jobs, "pretrain": settings,
                                           "bn_warmup_epochs": warmup, "vqa": VQA_DEMO_SETTINGS}, "out_dir": str(out),
                          "load_average_start": round(os.getloadavg()[0], 2)}

    data_dir = out / "data"
    manifest = data_dir / "manifest.jsonl"
    # a quarter of the studies held out: a retrieval gallery of ~100 pairs at 400 studies
    data_settings = {"num_studies": num_studies, "seed": seed, "num_ct_studies": 0, "radiograph_truth": False,
                     "split_fractions": (0.7, 0.05, 0.25)}
    data = steps.run("demo data", data_dir, lambda: generate_demo_dataset(data_dir, **data_settings), settings=data_settings,
                     label=f"1/6 generate {num_studies} demo studies with their VQA pairs")
    report["dataset"] = data.result

    text_dir = out / "text" / "base"
    text_settings = {"vocab_size": 400, "hidden_size": 64, "num_layers": 2, "num_heads": 2, "max_position_embeddings": 128, "seed": seed}

    def base_model() -> str:
        texts = [r["report"] for r in manifest_datalist(manifest, split="train")]
        return str(build_base_model(text_dir, texts, **text_settings, overwrite=True))

    text = steps.run("base text model", text_dir.parent, base_model, settings=text_settings, upstream=[data],
                     label="2/6 base text model (WordPiece vocabulary + 2-layer BERT) from the training reports")

    bundles: dict[str, Path] = {}
    trained: dict[str, Any] = {}
    evaluations: dict[str, dict] = {}
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} if jobs > 1 else {}
    if jobs > 1:
        import torch

        torch.set_num_threads(1)  # this process evaluates next to the runs: one thread, like each of them
    with timer.step(f"3/6 pre-training, {len(names)} runs ({', '.join(names)}; bundle {PRETRAIN_BUNDLE}, {jobs} at a time); "
                    "4/6 retrieval and zero-shot evaluation of each on the test split"
                    + ("; 5/6 VQA fine-tuning of the unimlip run (bundle cxr_vqa)" if vqa else "")):
        def pretrain(name: str) -> None:
            t0 = time.perf_counter()
            bundle = out / "bundles" / name
            overrides = dict(settings, **variants[name], text_model_dir=str(text_dir), dataset_dir=str(data_dir))

            def train() -> None:
                _copy_bundle(PRETRAIN_BUNDLE, bundle)
                _write_json(bundle / "configs" / "demo_overrides.json", overrides)
                run_bundle(bundle, ["configs/train.json", "configs/demo_overrides.json"], env=env)

            trained[name] = steps.run(f"pre-training {name}", bundle, train, settings=overrides, upstream=[data, text],
                                      config_files=[repo_root() / "bundles" / PRETRAIN_BUNDLE / "configs"])
            bundles[name] = bundle
            t1 = time.perf_counter()
            evaluations[name] = evaluate_bundle(bundle, manifest, out / "eval" / name, split="test", plots=False, gradcam=False,
                                                print_summary=False, seed=seed)
            print(f"    {name}: trained in {t1 - t0:.0f} s, evaluated in {time.perf_counter() - t1:.0f} s", flush=True)

        # the longest run first; its VQA fine-tuning goes to the head of the queue as soon as it is trained
        queue: deque = deque((pretrain, n) for n in (["unimlip"] + [n for n in names if n != "unimlip"] if "unimlip" in names else names))
        lock = threading.Lock()
        vqa_result: dict[str, dict] = {}

        def worker() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    job, arg = queue.popleft()
                try:
                    job(arg)
                except BaseException:
                    with lock:
                        queue.clear()  # a failed run stops the demo: the other worker takes no new job
                    raise
                if vqa and arg == "unimlip":
                    with lock:
                        queue.appendleft((lambda b: vqa_result.update(report=steps.run(
                            "VQA fine-tuning", out / "bundles" / "vqa", lambda: _run_vqa(out, data_dir, b, seed, env),
                            settings=dict(VQA_DEMO_SETTINGS, seed=seed), upstream=[data, trained["unimlip"]],
                            config_files=[repo_root() / "bundles" / VQA_BUNDLE / "configs"]).result), bundles["unimlip"]))

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for f in [pool.submit(worker) for _ in range(jobs)]:
                f.result()
        vqa_report = vqa_result.get("report")

    evaluations = {n: evaluations[n] for n in names}
    report["evaluation"] = evaluations

    prior = None
    if vqa_report is not None:
        with timer.step("5/6 VQA accuracy from the question alone (the baseline of the fine-tuned model)"):
            prior = _question_prior_accuracy(data_dir / "vqa.jsonl")
            report["vqa"] = {"fine_tuned": vqa_report, "question_prior": prior}

    with timer.step("6/6 tables and report"):
        tables = _tables(evaluations, vqa_report, prior)
        effects = _effects(evaluations)
        report["tables"], report["effects"] = tables, effects
        n_test = next(iter(evaluations.values()))["retrieval"]["all"]["n"]
        titles = {
            "table3": f"Table 3 on demo data: retrieval recall on {n_test} held-out image-report pairs (same data, seed and budget)",
            "table4": "Table 4 on demo data: term ablation (gain = R@1 minus the ITC + MLM run)",
            "vqa": "VQA on the held-out studies (English and Spanish questions)",
        }
        for key, title in titles.items():
            if key in tables:
                print(f"\n{title}\n{tables[key]}", flush=True)
        lines = [f"- {e['run']} vs {e['base']} (paper: {e['paper']}): mean R@1 {e['difference']:+.3f} "
                 f"(2 SE {e['two_se']:.3f}): {e['verdict']}" for e in effects]
        print("\nDo the paper's effects reproduce here? (mean of I2T and T2I R@1)\n" + "\n".join(lines), flush=True)

    timer.times = {**{r.name: r.wall_s for r in steps.records if r.name in ("demo data", "base text model")}, **timer.times}
    report["timings_s"] = timer.times
    report["steps"] = [r.as_dict() for r in steps.records]
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    report["cpu_s"] = round(_cpu_seconds(), 1)  # this process and every bundle run: the work, whatever the machine's load
    report["load_average_end"] = round(os.getloadavg()[0], 2)
    _write_json(out / "report.json", _jsonable(report))
    md = ["# Uni-Mlip demo report", "",
          f"{num_studies} studies, seed {seed}, {settings['max_epochs']} epochs per run (I2I and frozen BatchNorm statistics after "
          f"{warmup}), total {report['total_s']:.0f} s ({jobs} jobs; {report['cpu_s']:.0f} CPU-seconds; 1-minute load average "
          f"{report['load_average_start']} at the start, {report['load_average_end']} at the end).", ""]
    for key, title in titles.items():
        if key in tables:
            md += [f"## {title}", "", tables[key], ""]
    md += ["## Do the paper's effects reproduce here?", "", *lines, "",
           "A difference within two standard errors (binomial, over the held-out queries) is reported as noise.", ""]
    md += ["## Timings (s)", ""] + [f"- {k}: {v}" for k, v in timer.times.items()] + [""]
    md += ["## Reusable steps (`--force` reruns them)", "", steps.table(), ""]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    print(f"\nUni-Mlip demo finished in {report['total_s']:.0f} s ({report['cpu_s']:.0f} CPU-seconds; load average "
          f"{report['load_average_start']} -> {report['load_average_end']}). Report: {out / 'report.md'}", flush=True)
    return report


def _run_vqa(out: Path, data_dir: Path, pretrained: Path, seed: int, env: dict[str, str]) -> dict:
    """Fine-tune and evaluate the bundle ``cxr_vqa`` from a trained Uni-Mlip bundle; the evaluation report."""
    t0 = time.perf_counter()
    bundle = _copy_bundle(VQA_BUNDLE, out / "bundles" / "vqa")
    _write_json(bundle / "configs" / "demo_overrides.json",
                dict(VQA_DEMO_SETTINGS, seed=seed, resume=False, dataset_dir=str(data_dir), pretrained_bundle=str(pretrained)))
    run_bundle(bundle, ["configs/train.json", "configs/demo_overrides.json"], env=env)
    run_bundle(bundle, ["configs/train.json", "configs/evaluate.json", "configs/demo_overrides.json"],
               log_file=bundle / "logs" / "evaluate.log", env=env)
    print(f"    vqa: fine-tuned and evaluated in {time.perf_counter() - t0:.0f} s", flush=True)
    return json.loads((bundle / "eval" / "vqa_report.json").read_text(encoding="utf-8"))


def cli_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="medunic demo-unimlip", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_unimlip_output", help="output folder (default: demo_unimlip_output)")
    parser.add_argument("--studies", type=int, default=400, help="radiograph studies (default 400)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="pre-training epochs of every run (default: the demo setting)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="runs side by side, one thread each (default: 2, or the CPU count if lower)")
    parser.add_argument("--no-table4", action="store_true", help="only the runs of Table 3")
    parser.add_argument("--no-vqa", action="store_true", help="skip the VQA fine-tuning")
    parser.add_argument("--force", action="store_true", help="rerun every step (default: reuse those an earlier run finished)")
    args = parser.parse_args(list(argv))
    run_unimlip_demo(args.out, args.studies, args.seed, args.epochs, args.jobs, table4=not args.no_table4, vqa=not args.no_vqa,
                     force=args.force)
    return 0
