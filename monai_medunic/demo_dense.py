"""``python -m monai_medunic.demo_dense``: the label-efficiency tables of the dense tasks on the demo data.

Med-UniC (Wan et al., 2023, Sec. 4.2, Tables 3 and 4) and UniMedI (Sec. 4.2.2) train a segmentation
decoder or a detection head on the pre-trained image encoder with 1 %, 10 % and 100 % of the training
labels and compare with random initialisation. This command does the same on the synthetic demo data,
on a CPU, in demo-scale settings (a ResNet-18 at 64 px):

1. generate demo radiograph studies with their truth (per-finding masks, boxes, DICOM SEG);
2. build a tiny English/Spanish text model from the training reports and pre-train Med-UniC on the
   training split (bundle ``cxr_medunic_pretrain``, ``python -m monai.bundle run``), unless
   ``--pretrained-bundle`` names a trained one;
3. segmentation (bundle ``cxr_segmentation``): Dice on the test split at each fraction for the Med-UniC
   encoder (frozen, U-Net decoder), the linear-probe baseline (frozen Med-UniC encoder, a 1x1 decoder),
   and random initialisation (frozen, and trained end to end);
4. detection (bundle ``cxr_detection``): mAP@0.5 on the test split at each fraction for the Med-UniC
   encoder (frozen, RetinaNet) and random initialisation (frozen, and end to end); a linear probe does
   not apply to box regression;
5. print both tables and the gain of pre-training at each fraction, and write
   ``<out>/dense_label_efficiency.{json,md}`` (every run's ``result.json`` under ``<out>/segmentation``
   and ``<out>/detection``).

Each dense run is MONAI's bundle workflow on the bundle's ``train.json`` then ``evaluate.json``
(:func:`monai_medunic.metrics.dense.run_label_efficiency`), with the same iteration budget at every fraction.
The numbers describe synthetic phantoms, not clinical performance.

    python -m monai_medunic.demo_dense --out dense_output [--studies 400] [--iterations 150]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from monai_medunic.errors import ConfigurationError

__all__ = ["SEGMENTATION_VARIANTS", "DETECTION_VARIANTS", "select_variants", "run_dense_demo", "gain_table", "cli_main"]

logger = logging.getLogger("monai_medunic.demo_dense")

IMAGE_SIZE = 64

#: Segmentation variants: the Med-UniC encoder frozen under the U-Net decoder, the linear-probe baseline
#: (frozen Med-UniC encoder, 1x1 decoder), and random initialisation (frozen, and trained end to end).
SEGMENTATION_VARIANTS: dict[str, dict[str, Any]] = {
    "medunic_frozen": {},
    "linear_probe": {"decoder": "linear"},
    "random_frozen": {"encoder_init": "random"},
    "random_end_to_end": {"encoder_init": "random", "freeze_encoder": False},
}

#: Detection variants (no linear probe: a 1x1 classifier does not regress boxes).
DETECTION_VARIANTS: dict[str, dict[str, Any]] = {
    "medunic_frozen": {},
    "random_frozen": {"encoder_init": "random"},
    "random_end_to_end": {"encoder_init": "random", "freeze_encoder": False},
}

#: Demo-scale settings of the dense bundles (their defaults stay at the papers' sizes).
SEGMENTATION_DEMO_SETTINGS: dict[str, Any] = {"image_encoder": "resnet18", "image_size": IMAGE_SIZE, "batch_size": 4, "num_workers": 0}
DETECTION_DEMO_SETTINGS: dict[str, Any] = {
    "image_encoder": "resnet18", "image_size": IMAGE_SIZE, "batch_size": 4, "num_workers": 0,
    "returned_layers": [1, 2, 3], "anchor_shapes": [[8, 8], [12, 8], [8, 12]], "pyramid_channels": 64,
}


def _pretrain(out: Path, manifest: Path, epochs: int, seed: int) -> Path:
    """A tiny text model from the training reports, then ``cxr_medunic_pretrain`` on the training split; the trained bundle."""
    from monai_medunic.data.datalist import manifest_datalist
    from monai_medunic.demo import PRETRAIN_DEMO_SETTINGS, _copy_bundle, _write_json, run_bundle
    from monai_medunic.text.vocab import build_base_model

    texts = [r["report"] for r in manifest_datalist(manifest, split="train")]
    text_dir = build_base_model(out / "text" / "base", texts, vocab_size=400, hidden_size=64, num_layers=2, num_heads=2,
                                max_position_embeddings=128, seed=seed, overwrite=True)
    bundle = _copy_bundle("cxr_medunic_pretrain", out / "bundles" / "cxr_medunic_pretrain")
    settings = dict(PRETRAIN_DEMO_SETTINGS, image_size=IMAGE_SIZE, augment_translate_pixels=4, text_model_dir=str(text_dir),
                    dataset_dir=str(manifest.parent), manifest=str(manifest), seed=seed, max_epochs=int(epochs), resume=False)
    _write_json(bundle / "configs" / "demo_overrides.json", settings)
    run_bundle(bundle, ["configs/train.json", "configs/demo_overrides.json"])
    return bundle


def select_variants(task: str, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """The variants of ``task`` (:data:`SEGMENTATION_VARIANTS` or :data:`DETECTION_VARIANTS`) among ``names``
    (``None``: all); names of the other task's variants are ignored.

    Raises:
        ConfigurationError: a name that is no variant of either task, or a selection without ``medunic_frozen``
            (the row every gain is measured from).
    """
    table = SEGMENTATION_VARIANTS if task == "segmentation" else DETECTION_VARIANTS
    if names is not None:
        unknown = sorted(set(names) - set(SEGMENTATION_VARIANTS) - set(DETECTION_VARIANTS))
        if unknown:
            raise ConfigurationError(f"unknown variants {unknown}; segmentation: {sorted(SEGMENTATION_VARIANTS)}, "
                                     f"detection: {sorted(DETECTION_VARIANTS)}")
    chosen = {k: dict(v) for k, v in table.items() if names is None or k in names}
    if "medunic_frozen" not in chosen:
        raise ConfigurationError(f"the {task} variants must include medunic_frozen (the pre-trained encoder), got {sorted(chosen)}")
    return chosen


def gain_table(summary: Mapping[str, Any], pretrained: str = "medunic_frozen") -> str:
    """Markdown rows: the ``pretrained`` variant minus every other variant, per fraction (``n/a`` where undefined)."""
    fractions = [f"{float(f):g}" for f in summary["fractions"]]
    table = summary["table"]
    lines = [f"| {pretrained} minus | " + " | ".join(f"{float(f) * 100:g} %" for f in fractions) + " |",
             "| --- |" + " --- |" * len(fractions)]
    for name, row in table.items():
        if name == pretrained:
            continue
        cells = []
        for f in fractions:
            a, b = table[pretrained].get(f), row.get(f)
            cells.append("n/a" if a is None or b is None else f"{a - b:+.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_dense_demo(
    out_dir: str | os.PathLike = "dense_output",
    num_studies: int = 400,
    seed: int = 0,
    pretrain_epochs: int = 8,
    iterations: int = 150,
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    tasks: Sequence[str] = ("segmentation", "detection"),
    pretrained_bundle: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    variants: Sequence[str] | None = None,
) -> dict:
    """Run the steps of the module docstring; returns the report (also in ``<out>/dense_label_efficiency.json``)."""
    from monai_medunic.demo import repo_root
    from monai_medunic.metrics.dense import dense_datalist, efficiency_table, run_label_efficiency

    unknown = [t for t in tasks if t not in ("segmentation", "detection")]
    if unknown or not tasks:
        raise ConfigurationError(f"tasks must be among ('segmentation', 'detection'), got {list(tasks)}")
    chosen_variants = {task: select_variants(task, variants) for task in tasks}
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    report: dict[str, Any] = {"settings": {"num_studies": num_studies, "seed": seed, "pretrain_epochs": pretrain_epochs,
                                           "iterations": iterations, "fractions": list(fractions), "image_size": IMAGE_SIZE}}
    t0 = time.perf_counter()
    if manifest is None:
        from monai_medunic.data.demo import generate_demo_dataset

        info = generate_demo_dataset(out / "data", num_studies=num_studies, seed=seed, image_size=2 * IMAGE_SIZE, num_ct_studies=0,
                                     lateral_fraction=0.1, overwrite=True)
        manifest = Path(info.manifest_path)
    manifest = Path(manifest).resolve()
    times["data"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    if pretrained_bundle is None:
        pretrained_bundle = _pretrain(out, manifest, pretrain_epochs, seed)
        times["pretraining"] = round(time.perf_counter() - t0, 1)
    report["pretrained_bundle"], report["manifest"] = str(pretrained_bundle), str(manifest)
    common = {"pretrained_bundle": str(pretrained_bundle), "manifest": str(manifest), "num_iterations": int(iterations), "seed": seed}
    jobs = {"segmentation": ("cxr_segmentation", SEGMENTATION_VARIANTS, SEGMENTATION_DEMO_SETTINGS),
            "detection": ("cxr_detection", DETECTION_VARIANTS, DETECTION_DEMO_SETTINGS)}
    md = ["# Dense label efficiency on the demo data", "",
          f"{num_studies} synthetic studies, ResNet-18 at {IMAGE_SIZE} px, {iterations} training iterations at every fraction; "
          "test split. Synthetic phantoms: not clinical performance.", ""]
    for task in tasks:
        bundle, _, settings = jobs[task]
        chosen = chosen_variants[task]
        findings = json.loads((repo_root() / "bundles" / bundle / "configs" / "train.json").read_text(encoding="utf-8"))["findings"]
        t0 = time.perf_counter()
        summary = run_label_efficiency(repo_root() / "bundles" / bundle, out / task, chosen, fractions, {**settings, **common})
        times[task] = round(time.perf_counter() - t0, 1)
        report[task] = summary
        summary["n_train"] = {f"{float(f):g}": len(dense_datalist(manifest, findings, "train", task, float(f), seed)) for f in fractions}
        summary["n_test"] = summary["runs"][0].get("n_test")
        table, gains = efficiency_table(summary), gain_table(summary)
        sizes = (f"training images per fraction: {', '.join(f'{float(k) * 100:g} %: {v}' for k, v in summary['n_train'].items())}; "
                 f"test images: {summary['n_test']}")
        print(f"\n## {task} ({bundle}): {summary['metric']}\n\n{table}\n\n{sizes}\n\nGain of pre-training:\n\n{gains}\n", flush=True)
        md += [f"## {task} (`{bundle}`)", "", table, "", sizes, "", "Gain of pre-training (Med-UniC frozen minus each variant):", "", gains, ""]
        logger.info("%s done in %.0f s", task, times[task])
    report["timings_s"] = times
    (out / "dense_label_efficiency.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out / "dense_label_efficiency.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    print(f"tables: {out / 'dense_label_efficiency.md'} (timings {times})", flush=True)
    return report


def cli_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m monai_medunic.demo_dense", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="dense_output", help="output folder (default: dense_output)")
    parser.add_argument("--studies", type=int, default=400, help="synthetic studies to generate (default 400)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrain-epochs", type=int, default=8, help="Med-UniC pre-training epochs (default 8)")
    parser.add_argument("--iterations", type=int, default=150, help="training iterations of every dense run (default 150)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="label fractions (default 0.01 0.1 1)")
    parser.add_argument("--tasks", nargs="+", default=["segmentation", "detection"], choices=["segmentation", "detection"])
    parser.add_argument("--variants", nargs="+", default=None,
                        help=f"variants to run (default: all; segmentation {sorted(SEGMENTATION_VARIANTS)}, detection {sorted(DETECTION_VARIANTS)})")
    parser.add_argument("--pretrained-bundle", default=None, help="a trained cxr_medunic_pretrain bundle (skips pre-training)")
    parser.add_argument("--manifest", default=None, help="a manifest with truth (skips data generation)")
    args = parser.parse_args(list(argv))
    if args.iterations < 1 or not all(0 < f <= 1 for f in args.fractions) or not math.isfinite(sum(args.fractions)):
        parser.error("--iterations must be >= 1 and every fraction in (0, 1]")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    run_dense_demo(args.out, args.studies, args.seed, args.pretrain_epochs, args.iterations, args.fractions, args.tasks,
                   args.pretrained_bundle, args.manifest, args.variants)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(cli_main(sys.argv[1:]))
