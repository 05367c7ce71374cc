"""``medunic demo-unimedi``: UniMedI end to end on the embedded demo data, on a CPU (about ten minutes on 2 cores).

1. generate the demo dataset: radiograph studies and chest CT studies (DICOM series, lesion masks,
   lesion slices in the manifest);
2. build a small base text model (WordPiece vocabulary + a 2-layer BERT) from the training reports;
3. pre-train with the bundle ``cxr_ct_unimedi_pretrain`` (``python -m monai.bundle run``, the demo sizes
   in ``configs/demo_overrides.json``): the full method and, for the ablation (UniMedI Tab. 7), the same
   run without self-distillation, with random instead of attentive slices, and without either
   (``plain_2d3d``: one model on 2D + 3D with the CLIP loss only, the "without the method" of Fig. 2);
   the runs go two at a time, one thread each;
4. write the random-init baseline in the same bundle layout
   (:func:`~monai_medunic.metrics.unimedi_eval.random_init_bundle`);
5. evaluate every bundle (:func:`~monai_medunic.metrics.unimedi_eval.evaluate_unimedi_bundle`): slice
   selection precision@k against the true lesion slices (attention, report-guided, middle, random),
   2D zero-shot AUC on the radiographs, 3D zero-shot and 3D linear-probe AUC on the CT findings, 2D-3D
   embedding distance;
6. downstream, pre-trained vs random init (:mod:`~monai_medunic.metrics.volume_tasks`): fine-tuning on
   the CT findings, and MONAI UNETR segmentation of the lesion masks with the ViT as encoder (Dice);
7. print the tables and write ``report.json`` / ``report.md``.

The demo sizes (``vit_tiny``, 64 px radiographs, CT resampled to 32 x 64 x 64, k = 2 of 8 slabs, a
1024-prototype distillation head) live in :data:`UNIMEDI_DEMO_SETTINGS`; the bundle's defaults stay at the
paper's sizes (ViT-B/16, 224 px, 64 x 128 x 128, k = 4, 8192 prototypes).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import shutil
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Sequence

from monai_medunic.demo import StepCache, _copy_bundle, _cpu_seconds, _jsonable, _Timer, _write_json, repo_root, run_bundle

__all__ = ["run_unimedi_demo", "cli_main", "UNIMEDI_DEMO_SETTINGS", "UNIMEDI_VARIANTS", "DOWNSTREAM_SETTINGS"]

logger = logging.getLogger("monai_medunic.demo_unimedi")

BUNDLE = "cxr_ct_unimedi_pretrain"

# Demo-scale settings of the pre-training bundle (its defaults stay at the paper's sizes).
UNIMEDI_DEMO_SETTINGS: dict[str, Any] = {
    "image_encoder": "vit_tiny",
    "image_size": 64,
    "volume_size": [32, 64, 64],  # the 64 x 128 x 128 demo series, area-resampled by the bundle's volume pipeline
    "patch_depth": 4,  # 8 token slabs of 4 resampled (8 acquired) slices each
    "num_slices": 2,
    "embed_dim": 128,
    "distill_dim": 1024,
    "distill_hidden_dim": 256,
    "distill_bottleneck_dim": 64,
    "mask_ratio": 0.5,
    "freeze_layers": 0,
    "text_pooling": "mean",  # the demo's text model starts untrained: mean pooling aligns faster than [CLS]
    "max_length": 64,
    "batch_size_2d": 8,
    "batch_size_3d": 8,
    "val_batch_size": 64,
    "num_workers": 0,
    "max_epochs": 10,
    "learning_rate": 5e-4,
    "weight_decay": 0.05,
    "warmup_fraction": 0.1,
    "teacher_momentum": 0.99,  # a few hundred steps: 0.996 would leave the teacher near its initialisation
    "precision": "fp32",
}

#: The ablation (UniMedI Tab. 7) and the "without the method" baseline of Fig. 2: overrides of each run.
UNIMEDI_VARIANTS: dict[str, dict[str, Any]] = {
    "unimedi": {},
    "no_distill": {"distill_cls_weight": 0.0, "distill_patch_weight": 0.0},
    "random_slices": {"slice_selection": "random"},
    "plain_2d3d": {"num_slices": 0, "distill_cls_weight": 0.0, "distill_patch_weight": 0.0},
}

#: Downstream training budgets (CPU-sized; UniMedI App. 7 trains 50-100 epochs / 25k iterations on GPUs).
DOWNSTREAM_SETTINGS: dict[str, dict[str, Any]] = {
    "finetune": {"epochs": 8, "lr": 1e-4, "batch_size": 4},
    "segment": {"epochs": 4, "lr": 5e-4, "batch_size": 2, "feature_size": 8},
}


# ----------------------------------------------------------------------------------------- workers
def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    logging.basicConfig(level=logging.WARNING)


def _load_studies(cache: str) -> dict:
    import torch

    return torch.load(cache, weights_only=True)


def _evaluate_job(bundle: str, manifest: str, out: str, cache: str, seed: int) -> dict:
    from monai_medunic.metrics.unimedi_eval import evaluate_unimedi_bundle

    return evaluate_unimedi_bundle(bundle, manifest, out, split="test", slice_split="all", seed=seed,
                                   print_summary=False, ct_studies=_load_studies(cache))


def _downstream_job(kind: str, bundle: str, cache: str, settings: dict, seed: int) -> dict:
    import torch

    from monai_medunic.data.demo import CT_MASK_LABELS
    from monai_medunic.metrics.volume_tasks import finetune_3d, segment_3d_unetr
    from monai_medunic.networks.unimedi import UniMedIVisionEncoder
    from monai_medunic.pretrained import load_pretrained_bundle

    t0 = time.perf_counter()
    studies = _load_studies(cache)
    model = load_pretrained_bundle(bundle).model
    splits = studies["splits"]
    tr = torch.tensor([s in ("train", "val") for s in splits])
    te = torch.tensor([s == "test" for s in splits])
    vols = studies["volumes"]
    if kind == "finetune":
        encoder = UniMedIVisionEncoder.from_model(copy.deepcopy(model))
        out = finetune_3d(encoder, (vols[tr], studies["labels"][tr]), (vols[te], studies["labels"][te]), studies["findings"],
                          seed=seed, **settings)
    else:
        out = segment_3d_unetr(copy.deepcopy(model.image_encoder), (vols[tr], studies["masks"][tr]), (vols[te], studies["masks"][te]),
                               CT_MASK_LABELS, seed=seed, **settings)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


# ----------------------------------------------------------------------------------------- tables
def _fmt(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}" if isinstance(x, float) else str(x)


def _md(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows])


def _tables(evaluations: dict[str, dict], downstream: dict[str, dict], k: int) -> dict[str, str]:
    from monai_medunic.metrics.unimedi_eval import unimedi_summary_rows

    tables: dict[str, str] = {}
    names = list(evaluations)
    summary = {n: unimedi_summary_rows(evaluations[n]) for n in names}
    cols = ["precision@k attention", "2D zero-shot AUC", "3D zero-shot AUC", "3D linear probe AUC", "2D-3D centroid gap", "2D-3D probe acc."]
    tables["ablation"] = _md(["run", "self-distillation", "slice selection"] + cols, [
        [n, "yes" if n in ("unimedi", "random_slices") else "no",
         {"unimedi": "attention", "no_distill": "attention", "random_slices": "random", "plain_2d3d": "none"}.get(n, "-")]
        + [summary[n][c] for c in cols] for n in names])
    if "unimedi" in evaluations:
        sel = evaluations["unimedi"].get("slice_selection") or {}
        tables["slice_selection"] = _md(
            ["ranking (unimedi)", f"precision@{k}", f"hit@{k}", "volumes"],
            [[r, _fmt((sel.get(r) or {}).get("precision")), _fmt((sel.get(r) or {}).get("hit_rate")), str((sel.get(r) or {}).get("volumes"))]
             for r in ("attention", "attention_last_layer", "report_guided", "middle", "random")])
    gap_rows = []
    for n in names:
        for kind in ("image", "report"):
            g = ((evaluations[n].get("dimension_gap") or {}).get(kind)) or {}
            gap_rows.append([n, kind, _fmt(g.get("centroid_gap")), _fmt(g.get("centroid_distance")), _fmt(g.get("probe_accuracy")),
                             _fmt(g.get("majority_baseline"))])
    tables["dimension_gap"] = _md(["run", "embeddings", "centroid gap", "centroid distance", "2D/3D probe acc.", "majority"], gap_rows)
    if downstream:
        rows = []
        for init in ("pretrained", "random_init"):
            ev = evaluations.get("unimedi" if init == "pretrained" else "random_init") or {}
            ft = (downstream.get(f"finetune_{init}") or {})
            sg = (downstream.get(f"segment_{init}") or {})
            dice = sg.get("dice") or {}
            rows.append([init, summary.get("unimedi" if init == "pretrained" else "random_init", {}).get("2D zero-shot AUC", "n/a"),
                         _fmt(((ev.get("linear_probe_3d") or {}).get("auc") or {}).get("macro")),
                         _fmt((ft.get("auc") or {}).get("macro")), _fmt(sg.get("mean_dice"))]
                        + [_fmt(dice.get(c)) for c in ("Nodule", "Consolidation", "Pleural Effusion")])
        tables["downstream"] = _md(["vision encoder", "2D zero-shot AUC", "3D linear probe AUC", "3D fine-tune AUC", "UNETR mean Dice",
                                    "Dice nodule", "Dice consolidation", "Dice effusion"], rows)
    return tables


# ----------------------------------------------------------------------------------------- the demo
def run_unimedi_demo(
    out_dir: str | os.PathLike = "demo_unimedi_output",
    num_studies: int = 160,
    num_ct_studies: int = 60,
    seed: int = 0,
    epochs: int | None = None,
    jobs: int = 2,
    ablation: bool = True,
    downstream: bool = True,
    force: bool = False,
) -> dict:
    """Run the UniMedI demo end to end and return the report dict (also ``out_dir/report.json`` and ``report.md``).

    The data, the base text model and each pre-training run are reused from an earlier run into ``out_dir`` with
    the same inputs (:class:`~monai_medunic.demo.StepCache`; ``force=True`` reruns them); evaluation and downstream
    always run."""
    import torch

    from monai_medunic.data.datalist import manifest_datalist
    from monai_medunic.data.demo import generate_demo_dataset
    from monai_medunic.metrics.unimedi_eval import CT_EVAL_FINDINGS, random_init_bundle
    from monai_medunic.metrics.volume_tasks import load_ct_studies
    from monai_medunic.text.vocab import build_base_model

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    jobs = max(1, int(jobs))
    timer = _Timer()
    steps = StepCache(force=force)
    t_start = time.perf_counter()
    settings = dict(UNIMEDI_DEMO_SETTINGS, seed=seed, resume=False)
    if epochs is not None:
        settings["max_epochs"] = int(epochs)
    report: dict[str, Any] = {"settings": {"num_studies": num_studies, "num_ct_studies": num_ct_studies, "seed": seed, "jobs": jobs,
                                           "pretrain": settings, "downstream": DOWNSTREAM_SETTINGS}, "out_dir": str(out),
                          "load_average_start": round(os.getloadavg()[0], 2)}

    data_dir, text_dir = out / "data", out / "text" / "base"
    manifest = data_dir / "manifest.jsonl"
    cache_dir = out / "cache" / "ct_train"  # the resampled training volumes, read from DICOM once for every run
    data = steps.run("demo data", data_dir, lambda: generate_demo_dataset(data_dir, num_studies=num_studies,
                                                                         num_ct_studies=num_ct_studies, seed=seed),
                     settings={"num_studies": num_studies, "num_ct_studies": num_ct_studies, "seed": seed},
                     label=f"1/7 generate {num_studies} radiograph and {num_ct_studies} CT demo studies")
    report["dataset"] = data.result
    if data.status == "ran" and cache_dir.exists():  # cached volumes of the previous data (same file names)
        shutil.rmtree(cache_dir)

    text_settings = {"vocab_size": 400, "hidden_size": 64, "num_layers": 2, "num_heads": 2, "max_position_embeddings": 128, "seed": seed}

    def base_model() -> str:
        texts = [r["report"] for r in manifest_datalist(manifest, split="train", dimensions=None)]
        return str(build_base_model(text_dir, texts, **text_settings, overwrite=True))

    text = steps.run("base text model", text_dir.parent, base_model, settings=text_settings, upstream=[data],
                     label="2/7 base text model (WordPiece vocabulary + 2-layer BERT) from the training reports")

    variants = UNIMEDI_VARIANTS if ablation else {"unimedi": {}}
    bundles: dict[str, Path] = {}
    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} if jobs > 1 else {}
    with timer.step(f"3/7 pre-training ({', '.join(variants)}; bundle {BUNDLE}, {jobs} at a time)"):
        def pretrain(name: str) -> None:
            bundle = out / "bundles" / name
            overrides = dict(settings, **variants[name], text_model_dir=str(text_dir), dataset_dir=str(data_dir))
            overrides["train#dataset_3d"] = {"_target_": "PersistentDataset", "data": "@train#datalist_3d",
                                             "transform": "@train#preprocessing_3d", "cache_dir": str(cache_dir)}

            def train() -> None:
                _copy_bundle(BUNDLE, bundle)
                _write_json(bundle / "configs" / "demo_overrides.json", overrides)
                run_bundle(bundle, ["configs/train.json", "configs/demo_overrides.json"], env=env)

            rec = steps.run(f"pre-training {name}", bundle, train, settings=overrides, upstream=[data, text],
                            config_files=[repo_root() / "bundles" / BUNDLE / "configs"])
            bundles[name] = bundle
            if rec.status == "ran":
                print(f"    {name}: trained in {rec.wall_s:.0f} s", flush=True)

        cache_dir.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            for f in [pool.submit(pretrain, n) for n in variants]:
                f.result()

    with timer.step("4/7 random-init baseline bundle, CT volumes for evaluation"):
        bundles["random_init"] = random_init_bundle(bundles["unimedi"], out / "bundles" / "random_init", text_dir, seed=seed)
        ct_records = manifest_datalist(manifest, split=None, findings=list(CT_EVAL_FINDINGS), dimensions=3)
        studies = load_ct_studies(ct_records, settings["volume_size"], list(CT_EVAL_FINDINGS), masks=True)
        studies["splits"] = [r.get("split") for r in ct_records]
        studies["findings"] = list(CT_EVAL_FINDINGS)
        cache = out / "cache" / "ct_studies.pt"
        torch.save(studies, cache)

    ctx = get_context("spawn")
    evaluations: dict[str, dict] = {}
    results: dict[str, dict] = {}
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_init_worker) as pool:
        with timer.step(f"5/7 evaluation of {len(bundles)} bundles" + (" + 6/7 downstream, pre-trained vs random init" if downstream else "")):
            futures: dict[str, Future] = {}
            if downstream:  # the longest jobs first
                for kind in ("segment", "finetune"):
                    for init in ("pretrained", "random_init"):
                        src = bundles["unimedi" if init == "pretrained" else "random_init"]
                        futures[f"{kind}_{init}"] = pool.submit(_downstream_job, kind, str(src), str(cache), DOWNSTREAM_SETTINGS[kind], seed)
            for name, bundle in bundles.items():
                futures[f"eval_{name}"] = pool.submit(_evaluate_job, str(bundle), str(manifest), str(out / "eval" / name), str(cache), seed)
            for key, fut in futures.items():
                res = fut.result()
                if key.startswith("eval_"):
                    evaluations[key[5:]] = res
                else:
                    results[key] = res
    report["evaluation"] = evaluations
    report["downstream"] = results

    with timer.step("7/7 tables and report"):
        k = int(settings["num_slices"])
        tables = _tables(evaluations, results, k)
        report["tables"] = tables
        titles = {
            "slice_selection": f"Slice selection after the demo training: precision@{k} against the true lesion slabs (all CT volumes with a lesion)",
            "ablation": "Ablation (UniMedI Tab. 7 on demo data; same data, seed and budget)",
            "dimension_gap": "2D-3D embedding distance (UniMedI Fig. 2c as numbers; test split, with the method = unimedi, without = plain_2d3d)",
            "downstream": "Downstream on the demo data: pre-trained vs random-init vision encoder",
        }
        for key, title in titles.items():
            if key in tables:
                print(f"\n{title}\n{tables[key]}", flush=True)

    timer.times = {**{r.name: r.wall_s for r in steps.records if r.name in ("demo data", "base text model")}, **timer.times}
    report["timings_s"] = timer.times
    report["steps"] = [r.as_dict() for r in steps.records]
    report["total_s"] = round(time.perf_counter() - t_start, 1)
    report["cpu_s"] = round(_cpu_seconds(), 1)  # this process, the bundle runs and the worker pool: the work, whatever the load
    report["load_average_end"] = round(os.getloadavg()[0], 2)
    _write_json(out / "report.json", _jsonable(report))
    md = ["# UniMedI demo report", "", f"{num_studies} radiograph and {num_ct_studies} CT studies, seed {seed}, "
          f"total {report['total_s']:.0f} s ({jobs} jobs; {report['cpu_s']:.0f} CPU-seconds; 1-minute load average "
          f"{report['load_average_start']} at the start, {report['load_average_end']} at the end).", ""]
    for key, title in titles.items():
        if key in tables:
            md += [f"## {title}", "", tables[key], ""]
    md += ["## Timings (s)", ""] + [f"- {k_}: {v}" for k_, v in timer.times.items()] + [""]
    md += ["## Reusable steps (`--force` reruns them)", "", steps.table(), ""]
    (out / "report.md").write_text("\n".join(md), encoding="utf-8")
    print(f"\nUniMedI demo finished in {report['total_s']:.0f} s ({report['cpu_s']:.0f} CPU-seconds; load average "
          f"{report['load_average_start']} -> {report['load_average_end']}). Report: {out / 'report.md'}", flush=True)
    return report


def cli_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="medunic demo-unimedi", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="demo_unimedi_output", help="output folder (default: demo_unimedi_output)")
    parser.add_argument("--studies", type=int, default=160, help="radiograph studies (default 160)")
    parser.add_argument("--ct-studies", type=int, default=60, help="CT studies (default 60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="pre-training epochs (default: the demo setting)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="runs side by side, one thread each (default: 2, or the CPU count if lower)")
    parser.add_argument("--no-ablation", action="store_true", help="pre-train the full method only")
    parser.add_argument("--no-downstream", action="store_true", help="skip fine-tuning and segmentation")
    parser.add_argument("--force", action="store_true", help="rerun every step (default: reuse those an earlier run finished)")
    args = parser.parse_args(list(argv))
    run_unimedi_demo(args.out, args.studies, args.ct_studies, args.seed, args.epochs, args.jobs,
                     ablation=not args.no_ablation, downstream=not args.no_downstream, force=args.force)
    return 0
