"""Load: the cxr_findings Deploy app on 10 and on 200 demo studies, and the MONAI Label server under 50
concurrent requests on loopback.

* **Deploy app**: one run on the first 10 demo studies, one on 200 and one on 400 (``--more``; a demo
  dataset generated here, 128 px radiographs by default (``--image-size``), laterals and SR reports
  included), each with the frontal image of the middle study truncated. Reported: the app process's peak
  RSS (``wait4``'s ``ru_maxrss``) for each run and their ratios (flat memory = the peak does not grow
  with the input past the first batches of studies), the run time per study, and the checks that every intact study
  got exactly one result (SR + JSON) and the corrupt one none, with its reason in the log.
* **MONAI Label** (``--label``, default on when ``.venv-label`` exists): the server of
  ``apps/monailabel_medunic`` behind a private Orthanc holding 8 demo studies, 50 concurrent
  ``POST /infer/zero_shot_findings`` requests from 50 threads (each request bounded by a 600 s timeout,
  the server stopped at the end whatever happens): how many answered 200, the latency median / max, and the
  server's peak RSS. Baseline: one request alone, same run.

The model is an untrained bundle with the architecture of ``cxr_medunic_pretrain``'s ``train.json``
(``bench_deploy_app.build_bundle``); ``--model`` takes a trained one. Writes
``benchmarks/results/bench_deploy_load.{json,md}`` and prints the table.

    python benchmarks/bench_deploy_load.py [--studies 200] [--small 10] [--more 400] [--image-size 128] [--no-label] [--model BUNDLE]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
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
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "benchmarks"))


def deploy_runs(tmp: Path, model: Path, sizes: list[int], image_size: int = 128) -> list[dict]:
    import deploy_load

    dicom = deploy_load.demo_studies(tmp / "demo", max(sizes), image_size=image_size)
    rows = []
    for n in sizes:
        studies, corrupt = deploy_load.make_input(dicom, tmp / f"in_{n}", n, corrupt_index=n // 2)
        run = deploy_load.run_app(tmp / f"in_{n}", tmp / f"out_{n}", model, studies, corrupt)
        deploy_load.check_one_result_per_study(run)
        rows.append({"studies": n, "results": len(run.results()), "corrupt_study_logged": run.corrupt in run.log,
                     "peak_rss_mb": round(run.peak_rss_mb, 1), "seconds": round(run.seconds, 1),
                     "seconds_per_study": round(run.seconds / n, 2)})
        print(rows[-1], flush=True)
    return rows


def label_load(tmp: Path, model: Path, dicom_root: Path, concurrency: int) -> dict:
    import pydicom
    import requests

    from label_server import LabelServer
    from orthanc import OrthancServer

    files = sorted(dicom_root.rglob("frontal*.dcm"))[:8]
    series = [str(pydicom.dcmread(f, stop_before_pixels=True).SeriesInstanceUID) for f in files]
    with OrthancServer(tmp / "pacs") as pacs:
        pacs.store_files(files)
        label = LabelServer(tmp / "label", pacs.dicomweb_url, {"bundle_path": str(model)})
        try:
            label.launch()
            label.wait_ready()
            url = f"{label.url}/infer/zero_shot_findings"

            def infer(i: int) -> tuple[int, float]:
                t = time.perf_counter()
                try:
                    r = requests.post(url, params={"image": series[i % len(series)], "output": "json"},
                                      data={"params": json.dumps({"language": "es" if i % 2 else "en"})}, timeout=600)
                    return r.status_code, time.perf_counter() - t
                except requests.RequestException:
                    return -1, time.perf_counter() - t

            for s in series:  # warm the series cache: the concurrency test measures inference, not the first WADO-RS
                requests.post(url, params={"image": s, "output": "json"}, timeout=600).raise_for_status()
            single = [infer(i)[1] for i in range(3)]
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(max_workers=concurrency) as pool:
                answers = list(pool.map(infer, range(concurrency)))
            wall = time.perf_counter() - t0
            rss_kb = 0
            status = Path(f"/proc/{label.process.pid}/status") if getattr(label, "process", None) else None
            if status is not None and status.exists():
                for line in status.read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        rss_kb = int(line.split()[1])
        finally:
            code = label.stop()
    latencies = [s for c, s in answers if c == 200]
    return {"concurrent_requests": concurrency, "ok": sum(c == 200 for c, _ in answers),
            "failed": [c for c, _ in answers if c != 200], "wall_s": round(wall, 1),
            "latency_median_s": round(statistics.median(latencies), 2) if latencies else None,
            "latency_max_s": round(max(latencies), 2) if latencies else None,
            "single_request_s": round(statistics.median(single), 2),
            "server_peak_rss_mb": round(rss_kb / 1024, 1) if rss_kb else None, "server_stop_code": code}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=200)
    p.add_argument("--small", type=int, default=10)
    p.add_argument("--more", type=int, nargs="*", default=[400],
                   help="further input sizes: the peak should not grow past the first batches of studies")
    p.add_argument("--image-size", type=int, default=128, help="rows and columns of the demo radiographs")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--label", dest="label", action="store_true", default=None)
    p.add_argument("--no-label", dest="label", action="store_false")
    p.add_argument("--concurrency", type=int, default=50)
    args = p.parse_args(argv)
    label_on = args.label if args.label is not None else (REPO / ".venv-label" / "bin" / "python").exists()

    with tempfile.TemporaryDirectory(prefix="bench_deploy_load_") as tmp_s:
        tmp = Path(tmp_s)
        if args.model:
            model = args.model
        else:
            from bench_deploy_app import build_bundle

            model = build_bundle(tmp / "bundle")
        rows = deploy_runs(tmp, model, [args.small, args.studies, *args.more], args.image_size)
        label = label_load(tmp, model, tmp / "demo" / "dicom", args.concurrency) if label_on else None

    ratio = rows[1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    more = {r["studies"]: round(r["peak_rss_mb"] / rows[1]["peak_rss_mb"], 3) for r in rows[2:]}
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()} {os.cpu_count()} CPU", "image_size": args.image_size, "deploy": rows,
              "rss_ratio_large_to_small": round(ratio, 3), "rss_ratio_more_to_large": more, "label": label}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_deploy_load.json").write_text(json.dumps(result, indent=1))
    sizes = ", ".join(str(r["studies"]) for r in rows)
    lines = [f"# Load: cxr_findings on {sizes} demo studies of {args.image_size} px ({result['date']})", "",
             "| studies | results (one per intact study) | corrupt study logged | peak RSS (MB) | s / study |",
             "| ---: | ---: | :---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['studies']} | {r['results']} | {r['corrupt_study_logged']} | {r['peak_rss_mb']} | {r['seconds_per_study']} |")
    lines += ["", f"Peak RSS at {args.studies} / at {args.small} studies: **{ratio:.2f}**"]
    lines += [f"Peak RSS at {n} / at {args.studies} studies: **{v:.2f}**" for n, v in more.items()]
    lines += ["", "The app reads the input 8 studies at a time (ScreenedDICOMDataLoaderOperator): its RSS rises over the "
              "first batches (model, buffers, the allocator's pools) and then stays level, so a 10-study run ends before "
              "the plateau while larger inputs share it.", ""]
    if label:
        lines += [f"MONAI Label: {label['ok']} of {label['concurrent_requests']} concurrent requests answered 200 "
                  f"(failed: {label['failed']}); latency median {label['latency_median_s']} s, max {label['latency_max_s']} s "
                  f"(one request alone: {label['single_request_s']} s); server peak RSS {label['server_peak_rss_mb']} MB; "
                  f"stopped with code {label['server_stop_code']}."]
    (RESULTS / "bench_deploy_load.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
