"""Segmentation inference per image against the bare encoder + decoder forward, same run, interleaved.

Network: the ``cxr_segmentation`` bundle's default architecture (``train.json``: ResNet-50 at 224 px,
MONAI ``FlexibleUNet``'s U-Net decoder, one channel per finding), untrained (weights do not change the
cost), or a trained bundle with ``--model``. Input: the real chest CR of pydicom (RG1_UNCI.dcm,
1841 x 1955, MONOCHROME1), read and resized by the Deploy app's own preprocessing (``prepare_study``),
one image per call.

Timed, interleaved round by round so that the machine's load affects all alike:

* **bare forward**: ``network.decoder(network.encoder(x))`` on the ``(1, 1, S, S)`` tensor under
  ``torch.inference_mode`` (the encoder + decoder, nothing else);
* **segmentation inference**: :func:`monai_medunic.networks.dense.predict_masks` at the network's
  resolution (the network's forward, sigmoid, threshold): what the bundle's inference computes;
* **app inference per image**: :func:`monai_medunic.deploy.segmentation.segment_prepared`, the Deploy
  operator's path (batching, the forward, sigmoid, bilinear resize of the probabilities to the
  1955 x 1841 source pixels, threshold, to NumPy).

Ratios are against the bare forward; medians and minima (the least load-disturbed) are both given,
with the 1-minute load average. Writes benchmarks/results/bench_segmentation_infer.{json,md}.

    python benchmarks/bench_segmentation_infer.py [--model TRAINED_SEG_BUNDLE] [--rounds 15] [--threads N]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TARGET = 1.2


def default_model():
    """An untrained network of the bundle's default train.json architecture, as the app loads it."""
    import torch

    from monai_medunic.deploy.segmentation import SegmentationModel
    from monai_medunic.networks import ImageEncoder
    from monai_medunic.networks.dense import EncoderSegmentationNetwork

    cfg = json.loads((REPO / "bundles" / "cxr_segmentation" / "configs" / "train.json").read_text(encoding="utf-8"))
    torch.manual_seed(0)
    encoder = ImageEncoder(cfg["image_encoder"], in_channels=1, img_size=cfg["image_size"])
    net = EncoderSegmentationNetwork(encoder, len(cfg["findings"]), decoder=cfg["decoder"], freeze_encoder=True).eval()
    return SegmentationModel(REPO / "bundles" / "cxr_segmentation", net, list(cfg["findings"]), int(cfg["image_size"]), 0.5,
                             "cxr_segmentation (untrained)", "0")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="a trained cxr_segmentation bundle (default: untrained, train.json's architecture)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args(argv)

    import pydicom
    import torch
    from pydicom.data import get_testdata_file

    from monai_medunic.deploy.preprocessing import prepare_study
    from monai_medunic.deploy.segmentation import load_segmentation_bundle, segment_prepared
    from monai_medunic.networks.dense import predict_masks

    if args.threads:
        torch.set_num_threads(args.threads)
    model = load_segmentation_bundle(args.model) if args.model else default_model()
    net = model.network.eval()
    source = pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm"))
    prepared = prepare_study([("benchmark", source)], model.image_size)
    x = torch.as_tensor(prepared.image, dtype=torch.float32)[None]

    def bare() -> None:
        with torch.inference_mode():
            net.decoder(net.encoder(x))

    def inference() -> None:
        predict_masks(net, x, model.threshold)

    def app_path() -> None:
        segment_prepared(model, [prepared])

    cases = {"bare forward (encoder + decoder)": bare, "segmentation inference (predict_masks)": inference,
             "app inference per image (segment_prepared, masks at 1955 x 1841)": app_path}
    for f in cases.values():  # warm-up
        f()
        f()
    times: dict[str, list[float]] = {k: [] for k in cases}
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        order = list(cases.items()) if r % 2 == 0 else list(reversed(cases.items()))  # interleaved, alternating order
        for name, f in order:
            t0 = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - t0)
    loads.append(os.getloadavg()[0])

    base = list(cases)[0]
    rows = []
    for name, values in times.items():
        med, low = statistics.median(values), min(values)
        rows.append({"case": name, "median_s": med, "min_s": low,
                     "ratio_median": med / statistics.median(times[base]), "ratio_min": low / min(times[base])})
    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "rounds": args.rounds, "model": model.name, "image_size": model.image_size,
        "load_average_1min_start_end": loads, "target_ratio": TARGET,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_segmentation_infer.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2), encoding="utf-8")
    lines = ["# Segmentation inference per image vs the bare encoder + decoder forward", "",
             "| case | median s | min s | ratio (median) | ratio (min) |", "|---|---|---|---|---|"]
    lines += [f"| {r['case']} | {r['median_s']:.4f} | {r['min_s']:.4f} | {r['ratio_median']:.3f} | {r['ratio_min']:.3f} |" for r in rows]
    lines += ["", f"{meta['model']}, {meta['image_size']} px input, batch 1, {meta['threads']} torch threads, {meta['rounds']} interleaved "
              f"rounds; 1-min load average {loads[0]:.1f} at the start, {loads[1]:.1f} at the end ({meta['machine']}). "
              f"Target: segmentation inference <= {TARGET} x the bare forward."]
    md = "\n".join(lines) + "\n"
    (RESULTS / "bench_segmentation_infer.md").write_text(md, encoding="utf-8")
    print(md)
    ratio = rows[1]["ratio_median"]
    print(f"segmentation inference / bare forward (median): {ratio:.3f} ({'within' if ratio <= TARGET else 'ABOVE'} the {TARGET} target)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
