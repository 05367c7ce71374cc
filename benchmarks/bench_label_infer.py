"""Latency of the MONAI Label app (``apps/monailabel_medunic``) behind a real PACS, against the bare model forward.

A private Orthanc (DICOMweb plugin, loopback) holds the real chest CR of pydicom-data (RG1_UNCI.dcm,
1841 x 1955, MONOCHROME1), uploaded with STOW-RS; ``monailabel start_server`` runs in MONAI Label's
environment (``.venv-label``) with ``--studies`` on Orthanc's DICOMweb root.

* **cold start -> first answer**: from launching ``monailabel start_server`` to the end of the first
  ``POST /infer/zero_shot_findings`` (imports, bundle loading, prompt encoding, WADO-RS download of
  the series, DICOM decoding); ``/info`` ready is reported too;
* **warm /infer**: the HTTP round trip of further requests on the same series (the series is in the
  datastore's cache, as it is for every request after the first on a series);
* **bare forward**: the image encoder + zero-shot head on the preprocessed ``(1, 1, S, S)`` tensor,
  in this process (main environment), with the server idle.

* **grounding**: warm ``POST /infer/grounding`` (a free-text prompt's similarity map, returned as a
  NIfTI label of the radiograph's size) against the same map computed in-process by the inference API
  (``similarity_map`` on the loaded image: resize, forward, projector gradient, upsampling to
  1841 x 1955) and against the bare forward.

The goal is warm ``/infer`` <= 2 x bare forward. Medians and minima are both reported (minima are the
least disturbed by other load on the machine). By default the model is an untrained bundle with the
architecture of ``cxr_medunic_pretrain``'s ``train.json`` (ResNet-50 at 224 px; weights do not change
the cost); ``--model`` takes a trained bundle. Writes ``benchmarks/results/bench_label_infer.{json,md}``
and ``benchmarks/results/label_infer_transcript.txt`` / ``label_grounding_transcript.txt`` (one request
and its answer per task) and prints the table.

    python benchmarks/bench_label_infer.py [--model BUNDLE] [--requests 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO / "tests"))  # the private Orthanc and the MONAI Label launcher of the tests
sys.path.insert(0, str(REPO / "benchmarks"))


def bare_forward(model: Path, source: Path, n: int) -> dict:
    """The image encoder + zero-shot head on the preprocessed image, in this process (after warm-up)."""
    import torch

    from monai_medunic.pretrained import inference_preprocessing, load_pretrained_bundle, zero_shot_classifier

    bundle = load_pretrained_bundle(model)
    clf = zero_shot_classifier(model, bundle.model, ["en"])
    clf.refresh()
    preprocess = inference_preprocessing(model, keys="image", frame=0)
    t = time.perf_counter()
    image = torch.as_tensor(preprocess({"image": str(source)})["image"])[None]
    preprocess_s = time.perf_counter() - t
    with torch.no_grad():
        for _ in range(3):
            clf(image, "en")
        times = []
        for _ in range(n):
            t = time.perf_counter()
            clf(image, "en")
            times.append(time.perf_counter() - t)
    return {"forward": times, "preprocess_once_s": preprocess_s, "image_shape": list(image.shape)}


GROUNDING_TEXT = "Pleural effusion"


def bare_grounding(model: Path, source: Path, n: int) -> dict:
    """The inference API's similarity map of the loaded image, in this process (after warm-up)."""
    from monai_medunic.pretrained import load_inference

    api = load_inference(model)
    image = api.load_image(source)
    for _ in range(2):
        api.similarity_map(image, GROUNDING_TEXT)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        api.similarity_map(image, GROUNDING_TEXT)
        times.append(time.perf_counter() - t)
    return {"similarity_map": times}


def transcript(reply) -> str:
    req = reply.request
    body = req.body.decode() if isinstance(req.body, bytes) else str(req.body)
    lines = [f"{req.method} {req.url} HTTP/1.1"]
    lines += [f"{k}: {v}" for k, v in req.headers.items()]
    lines += ["", body, "", f"HTTP/1.1 {reply.status_code} {reply.reason}"]
    lines += [f"{k}: {v}" for k, v in reply.headers.items()]
    lines += ["", json.dumps(reply.json(), indent=2, ensure_ascii=False)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="a trained cxr_medunic_pretrain bundle (default: untrained)")
    p.add_argument("--requests", type=int, default=20, help="warm /infer requests (and bare forwards)")
    args = p.parse_args(argv)

    import pydicom
    import requests
    import torch
    from pydicom.data import get_testdata_file

    from label_server import LabelServer
    from orthanc import OrthancServer

    source = Path(get_testdata_file("RG1_UNCI.dcm"))
    series = str(pydicom.dcmread(source, stop_before_pixels=True).SeriesInstanceUID)
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        if args.model:
            model = args.model
        else:
            from bench_deploy_app import build_bundle

            model = build_bundle(tmp / "bundle")
        with OrthancServer(tmp / "pacs") as pacs:
            pacs.store_files([source])
            label = LabelServer(tmp / "label", pacs.dicomweb_url, {"bundle_path": str(model)})
            url = None
            try:
                t0 = time.perf_counter()
                label.launch()
                label.wait_ready()
                info_s = time.perf_counter() - t0
                url = f"{label.url}/infer/zero_shot_findings"
                query = {"image": series, "output": "json"}
                first = requests.post(url, params=query, data={"params": json.dumps({"language": "en"})}, timeout=600)
                cold_s = time.perf_counter() - t0
                first.raise_for_status()
                warm, server_total = [], []
                for i in range(args.requests):
                    t = time.perf_counter()
                    reply = requests.post(url, params=query, data={"params": json.dumps({"language": "en"})}, timeout=600)
                    warm.append(time.perf_counter() - t)
                    reply.raise_for_status()
                    server_total.append(reply.json()["latencies"]["total"])
                record = transcript(reply)
                gurl = f"{label.url}/infer/grounding"
                gparams = {"params": json.dumps({"text": GROUNDING_TEXT})}
                requests.post(gurl, params=query, data=gparams, timeout=600).raise_for_status()  # warm-up
                grounding = []
                for i in range(args.requests):
                    t = time.perf_counter()
                    greply = requests.post(gurl, params=query, data=gparams, timeout=600)
                    grounding.append(time.perf_counter() - t)
                    greply.raise_for_status()
                grounding_record = transcript(greply)
            finally:
                label.stop()
        bare = bare_forward(model, source, args.requests)
        bare_map = bare_grounding(model, source, args.requests)

    def stat(values: list[float]) -> tuple[float, float]:
        return statistics.median(values), min(values)

    fwd = stat(bare["forward"])
    rows = [
        ("bare forward, 1 image (encoder + zero-shot head), in-process", fwd),
        ("warm POST /infer round trip (HTTP, cached series, DICOM decode + VOI LUT, forward)", stat(warm)),
        ("  of which the task, as MONAI Label times it (latencies.total, 10 ms steps)", stat(server_total)),
        ("inference API similarity_map, 1 image, in-process (to 1841x1955)", stat(bare_map["similarity_map"])),
        ("warm POST /infer/grounding round trip (map + NIfTI label, JSON answer)", stat(grounding)),
    ]
    rows = [(name, med_s, min_s, med_s / fwd[0], min_s / fwd[1]) for name, (med_s, min_s) in rows]
    once = [
        ("cold start: launch -> /info answers (imports, bundle, prompts)", info_s),
        ("cold start: launch -> first /infer answered (+ WADO-RS download)", cold_s),
    ]
    meta = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "model": str(args.model) if args.model else "untrained bundle, resnet50 @ 224 (train.json architecture)",
        "source": "pydicom-data RG1_UNCI.dcm (CR, 1841x1955, MONOCHROME1) in Orthanc, over DICOMweb",
        "requests": args.requests,
        "warm_x_forward_median": rows[1][3],
        "warm_x_forward_min": rows[1][4],
        "grounding_x_api_map_median": rows[4][1] / rows[3][1],
        "grounding_x_forward_median": rows[4][3],
        "goal_warm_x_forward": 2.0,
        "load_average_1min": os.getloadavg()[0],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "label_infer_transcript.txt").write_text(record, encoding="utf-8")
    (RESULTS / "label_grounding_transcript.txt").write_text(grounding_record, encoding="utf-8")
    with open(RESULTS / "bench_label_infer.json", "w", encoding="utf-8") as f:
        json.dump(
            {
                "meta": meta,
                "bare": bare,
                "warm_s": warm,
                "grounding_s": grounding,
                "bare_similarity_map_s": bare_map["similarity_map"],
                "server_total_s": server_total,
                "cold": dict(once),
                "rows": [
                    {"what": n, "median_s": a, "min_s": b, "median_x_forward": r, "min_x_forward": q}
                    for n, a, b, r, q in rows
                ],
            },
            f,
            indent=1,
        )
    width = max(len(n) for n, *_ in rows + once)
    table = "\n".join(
        [
            f"| {'what'.ljust(width)} | median s | min s | x bare forward (median) | x bare forward (min) |",
            f"|{'-' * (width + 2)}|---------:|------:|------------------------:|---------------------:|",
        ]
        + [f"| {n.ljust(width)} | {a:8.3f} | {b:5.3f} | {r:23.2f} | {q:20.2f} |" for n, a, b, r, q in rows]
        + [f"| {n.ljust(width)} | {s:8.1f} |       |                         |                      |" for n, s in once]
    )
    verdict = "meets" if meta["warm_x_forward_median"] <= 2.0 else "misses"
    md = (
        "# MONAI Label app: /infer latency vs the bare model forward\n\n"
        f"{table}\n\nwarm /infer = {meta['warm_x_forward_median']:.2f} x bare forward (median; "
        f"{meta['warm_x_forward_min']:.2f} from the minima): {verdict} the goal of <= 2.\n"
        f"warm /infer/grounding = {meta['grounding_x_api_map_median']:.2f} x the API's similarity_map in-process (median).\n\n"
        f"Machine: {meta['machine']}, {meta['cpus']} CPU(s), torch threads {meta['torch_threads']}, "
        f"1-min load average at the end {meta['load_average_1min']:.1f}. Model: {meta['model']}. "
        f"Input: {meta['source']}. {args.requests} warm requests.\n"
    )
    (RESULTS / "bench_label_infer.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
