"""The ``medunic`` command line.

Each sub-command lives next to the code it drives and is imported only when it is called, so that
``medunic --help`` stays fast. A command's entry point takes its own ``argv`` and returns an exit code.
Errors derived from :class:`monai_medunic.errors.MedUniCError` are printed as one clear line with a
non-zero exit, not as a traceback.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import Sequence

from monai_medunic.errors import MedUniCError

# name -> ("module:function", one-line help). The function has the signature f(argv) -> int.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo-data": ("monai_medunic.data.demo:cli_main", "generate the embedded synthetic bilingual CXR DICOM dataset"),
    "build-vocab": ("monai_medunic.text.vocab:cli_main", "extend a WordPiece vocabulary with a second language"),
    "build-base-model": ("monai_medunic.text.vocab:base_model_cli_main", "build an offline BERT base model on a report corpus"),
    "demo": ("monai_medunic.demo:cli_main", "run the whole pipeline on the embedded demo data"),
    "demo-unimedi": ("monai_medunic.demo_unimedi:cli_main", "run UniMedI (2D + 3D pre-training, slice selection, downstream) on the demo data"),
    "demo-dense": ("monai_medunic.demo_dense:cli_main", "Dice / mAP@0.5 label-efficiency tables of the dense bundles on the demo data"),
    "demo-unimlip": ("monai_medunic.demo_unimlip:cli_main", "run Uni-Mlip (Table 3 and 4 ablations, VQA) on the demo data"),
    "evaluate": ("monai_medunic.cli:evaluate_main", "evaluate a pre-trained bundle on a manifest"),
    "calibrate": ("monai_medunic.cli:calibrate_main", "fit a trained bundle's zero-shot thresholds and probabilities on a labelled split"),
    "grounding": ("monai_medunic.metrics.grounding:cli_main", "pointing game and mask IoU of a bundle's similarity maps and Grad-CAM"),
}


def evaluate_main(argv: Sequence[str]) -> int:
    """``medunic evaluate --bundle DIR --manifest FILE --out DIR [options]``
    (:func:`monai_medunic.metrics.report.evaluate_bundle`)."""
    import argparse
    import os

    from monai_medunic.metrics.report import evaluate_bundle

    p = argparse.ArgumentParser(prog="medunic evaluate", description="Evaluate a trained vision-language bundle on a manifest: "
                                "bilingual zero-shot, retrieval, language gap, plots -> report.json / report.md / PNGs.")
    p.add_argument("--bundle", required=True, help="trained bundle directory (cxr_medunic_pretrain layout)")
    p.add_argument("--manifest", required=True, help="JSONL or CSV manifest")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--split", default="test", help="train / val / test, or 'all' (default: test)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--findings", nargs="+", default=None, help="zero-shot findings (default: the bundle's)")
    p.add_argument("--prompt-languages", nargs="+", default=None, help="prompt languages (default: the bundle's)")
    p.add_argument("--no-zero-shot", action="store_true", help="skip zero-shot (for manifests without labels)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-gradcam", action="store_true")
    p.add_argument("--gradcam-images", type=int, default=2)
    p.add_argument("--strict", action="store_true", help="stop on the first bad record / unreadable image")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(list(argv))
    evaluate_bundle(
        args.bundle, args.manifest, args.out, split=args.split, batch_size=args.batch_size, device=args.device,
        findings=args.findings, prompt_languages=args.prompt_languages, zero_shot=not args.no_zero_shot,
        plots=not args.no_plots, gradcam=not args.no_gradcam, gradcam_images=args.gradcam_images,
        on_error="raise" if args.strict else "skip", seed=args.seed,
    )
    print(f"report written to {os.path.join(args.out, 'report.json')}")
    return 0


def calibrate_main(argv: Sequence[str]) -> int:
    """``medunic calibrate --bundle DIR --manifest FILE [--split val]``
    (:func:`monai_medunic.metrics.report.calibrate_bundle`)."""
    import argparse

    from monai_medunic.metrics.calibration import CALIBRATION_FILE
    from monai_medunic.metrics.report import calibrate_bundle

    p = argparse.ArgumentParser(prog="medunic calibrate", description="Fit per-finding decision thresholds (Youden's J) and "
                                "Platt scaling of the zero-shot margin, per prompt language, on a labelled manifest split, "
                                f"and write them into the bundle ({CALIBRATION_FILE}).")
    p.add_argument("--bundle", required=True, help="trained bundle directory")
    p.add_argument("--manifest", required=True, help="JSONL or CSV manifest with labels for the bundle's findings")
    p.add_argument("--split", default="val", help="the split to fit on (default: val; never the test split you report on)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--strict", action="store_true", help="stop on the first bad record / unreadable image")
    args = p.parse_args(list(argv))
    cal = calibrate_bundle(args.bundle, args.manifest, split=args.split, batch_size=args.batch_size, device=args.device,
                           on_error="raise" if args.strict else "skip")
    for lang, cols in cal["languages"].items():
        fitted = sum(c["status"] == "fitted" for c in cols.values())
        print(f"{lang}: {fitted}/{len(cols)} findings calibrated on {cal['fitted_on']['images']} images")
    print(f"calibration written to {args.bundle}/{CALIBRATION_FILE}")
    return 0


def _usage() -> str:
    lines = ["usage: medunic COMMAND [options]", "", "commands:"]
    width = max(len(n) for n in COMMANDS)
    for name, (_, text) in sorted(COMMANDS.items()):
        lines.append(f"  {name.ljust(width)}  {text}")
    lines.append("")
    lines.append("`medunic COMMAND --help` shows a command's options.")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"medunic: unknown command '{name}'\n\n{_usage()}", file=sys.stderr)
        return 2
    target, _ = COMMANDS[name]
    module_name, func_name = target.split(":")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(rest) or 0)
    except MedUniCError as err:
        print(f"medunic {name}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
