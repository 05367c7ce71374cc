"""Latency of the cxr_findings MONAI Deploy app against the bare model's forward pass on the same image.

Measured on the real chest CR of pydicom-data (RG1_UNCI.dcm, 1841 x 1955, MONOCHROME1):

* **cold start**: process start -> SR file written, one study per run (median of ``--repeats`` runs);
  includes Python + MONAI + SDK imports, bundle loading, prompt encoding, DICOM decoding, SR writing.
* **warm per study**: the marginal time of one more study in the same run, from a folder of
  ``--studies`` copies of the CR with new UIDs. Timed inside the app, from the graph start (the
  loader's first log line) to the last SR's mtime, so that start-up noise cancels:
  (graph time of N studies - graph time of 1 study) / (N - 1). Cold and warm runs are interleaved.
* **in-process pipeline per study** (no SDK, no process start): read the file, preprocess with the
  package transforms, zero-shot classify, build + write the SR and JSON.
* **bare forward**: the image encoder + zero-shot head on the preprocessed ``(1, 1, S, S)`` tensor.

Ratios are against the bare forward (same machine, same run), so the SDK / I/O overhead is visible;
medians and minima are both reported (minima are the least disturbed by other load on the machine).
By default the model is an untrained bundle with the architecture of ``cxr_medunic_pretrain``'s
``train.json`` (ResNet-50 at 224 px, 512-d joint space; a small BERT text encoder, which only costs
at start-up when the prompts are encoded): weights do not change the cost. ``--model`` takes a
trained bundle instead. Writes benchmarks/results/bench_deploy_app.{json,md} and prints the table.

    python benchmarks/bench_deploy_app.py [--model BUNDLE] [--repeats 3] [--studies 8]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "apps" / "cxr_findings" / "app.py"
RESULTS = REPO / "benchmarks" / "results"
FINDINGS = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Nodule", "Consolidation", "Edema"]


def _stack_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    want = 32 * 1024 * 1024
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_STACK, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))


def build_bundle(root: Path) -> Path:
    """An untrained bundle with the image architecture of cxr_medunic_pretrain's train.json."""
    import torch
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    from monai_medunic.networks import MedUniC
    from monai_medunic.pretrained import export_pretrained_bundle
    from monai_medunic.text.prompts import build_prompts

    bundle = root / "cxr_medunic_pretrain"
    shutil.copytree(
        REPO / "bundles" / "cxr_medunic_pretrain", bundle, ignore=shutil.ignore_patterns("models", "eval", "logs")
    )
    texts = [t for lang in ("en", "es") for pair in build_prompts(FINDINGS, lang) for t in pair]
    wp = BertWordPieceTokenizer(lowercase=True, strip_accents=False)
    wp.train_from_iterator(texts * 10, vocab_size=300, min_frequency=1)
    tok_dir = root / "tok"
    tok_dir.mkdir()
    wp.save_model(str(tok_dir))
    tok = BertTokenizerFast.from_pretrained(str(tok_dir), local_files_only=True)
    text_cfg = dict(
        model_type="bert",
        vocab_size=len(tok),
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    train = json.loads((REPO / "bundles" / "cxr_medunic_pretrain" / "configs" / "train.json").read_text())
    model = MedUniC(
        train["image_encoder"],
        text_config=text_cfg,
        img_size=int(train["image_size"]),
        embed_dim=int(train["embed_dim"]),
        ctr_dim=int(train["ctr_dim"]),
    ).eval()
    export_pretrained_bundle(model, tok, bundle, findings=FINDINGS, max_length=64)
    return bundle


def copies_with_new_uids(src: Path, folder: Path, n: int) -> list[str]:
    import pydicom
    from pydicom.uid import generate_uid

    uids = []
    for i in range(n):
        ds = pydicom.dcmread(src)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        (folder / f"study{i}").mkdir(parents=True)
        ds.save_as(folder / f"study{i}" / "image.dcm", enforce_file_format=True)
        uids.append(str(ds.StudyInstanceUID))
    return uids


def _loader_start(log_file: Path) -> float:
    """Epoch time of the loader's first line ("screening N input file(s)") in the app's log."""
    for line in log_file.read_text(encoding="utf-8").splitlines():
        if "screening" in line and "input file(s)" in line:
            stamp = line[1 : line.index("]")]
            return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()
    raise SystemExit(f"{log_file}: no loader start line")


def run_app(input_dir: Path, output_dir: Path, model: Path, expected_srs: int) -> dict:
    """Run the app. Seconds from process start to the graph start (imports, bundle, prompts) and to each SR."""
    if output_dir.exists():
        shutil.rmtree(output_dir)
    env = dict(os.environ)
    t0 = time.time()
    proc = subprocess.run(
        [sys.executable, str(APP), "-i", str(input_dir), "-o", str(output_dir), "-m", str(model)],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=_stack_limit,
    )
    exit_s = time.time() - t0
    if proc.returncode != 0:
        raise SystemExit(f"app failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    srs = sorted(output_dir.rglob("*.dcm"))
    if len(srs) != expected_srs:
        raise SystemExit(f"expected {expected_srs} SR(s), found {len(srs)}")
    written = sorted(p.stat().st_mtime - t0 for p in srs)
    start = _loader_start(output_dir / "cxr_findings.log") - t0
    return {
        "startup_s": start,
        "first_sr_s": written[0],
        "last_sr_s": written[-1],
        "processing_s": written[-1] - start,
        "exit_s": exit_s,
    }


def in_process(model: Path, source: Path, out: Path, repeats: int, batch: int) -> dict:
    """Bare forward and the SDK-free per-study pipeline, in this process (after warm-up)."""
    import pydicom
    import torch

    from monai_medunic.deploy.findings import classify_prepared
    from monai_medunic.deploy.preprocessing import prepare_study
    from monai_medunic.deploy.sr_writer import write_study_outputs
    from monai_medunic.metrics.zero_shot import ZeroShotClassifier
    from monai_medunic.pretrained import load_pretrained_bundle

    t = time.perf_counter()
    bundle = load_pretrained_bundle(model)
    clf = ZeroShotClassifier(bundle.model, bundle.tokenize, bundle.findings, languages=["en"])
    clf.refresh()
    load_s = time.perf_counter() - t

    def pipeline(i: int) -> None:
        ds = pydicom.dcmread(source)
        prepared = prepare_study([("bench", ds)], bundle.image_size)
        result = classify_prepared(clf, [prepared], "en", bundle.name, bundle.version)[0]
        write_study_outputs(result, out / f"run{i}")

    pipeline(-1)  # warm-up (first SR loads highdicom's standard tables)
    pipe = []
    for i in range(repeats * 3):
        t = time.perf_counter()
        pipeline(i)
        pipe.append(time.perf_counter() - t)
    image = prepare_study([("bench", pydicom.dcmread(source))], bundle.image_size).image[None]
    images = image.repeat(batch, 1, 1, 1)
    with torch.no_grad():
        for _ in range(3):
            clf(image, "en")
        fwd, fwd_batch = [], []
        for _ in range(10 * repeats):
            t = time.perf_counter()
            clf(image, "en")
            fwd.append(time.perf_counter() - t)
        for _ in range(2 * repeats):
            t = time.perf_counter()
            clf(images, "en")
            fwd_batch.append((time.perf_counter() - t) / batch)
    return {
        "bundle_load_and_prompts_s": load_s,
        "forward": fwd,
        "forward_batched_per_image": fwd_batch,
        "pipeline_per_study": pipe,
        "image_shape": list(image.shape),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=None, help="a trained cxr_medunic_pretrain bundle (default: untrained)")
    p.add_argument("--repeats", type=int, default=3, help="cold-start runs (median)")
    p.add_argument("--studies", type=int, default=8, help="studies in the warm-run folder")
    args = p.parse_args(argv)
    if args.studies < 2:
        p.error("--studies must be at least 2")
    from pydicom.data import get_testdata_file

    source = Path(get_testdata_file("RG1_UNCI.dcm"))
    import torch

    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        model = args.model or build_bundle(tmp / "bundle")
        one, many = tmp / "one", tmp / "many"
        copies_with_new_uids(source, one, 1)
        copies_with_new_uids(source, many, args.studies)
        cold, warm = [], []
        for _ in range(args.repeats):  # interleaved, so that machine load affects both alike
            cold.append(run_app(one, tmp / "out_one", model, 1))
            warm.append(run_app(many, tmp / "out_many", model, args.studies))
        bare = in_process(model, source, tmp / "inproc", args.repeats, min(args.studies, 8))

    def stat(values: list[float]) -> tuple[float, float]:
        return statistics.median(values), min(values)

    n = args.studies
    cold_sr = stat([r["first_sr_s"] for r in cold])
    cold_exit = stat([r["exit_s"] for r in cold])
    startup = stat([r["startup_s"] for r in cold])
    proc_1 = stat([r["processing_s"] for r in cold])
    proc_n = stat([r["processing_s"] for r in warm])
    # the marginal per-study time, from the medians and (the least load-disturbed estimate) from the minima
    warm_s = tuple((a - b) / (n - 1) for a, b in zip(proc_n, proc_1))
    fwd = stat(bare["forward"])
    rows = [
        ("bare forward, 1 image (encoder + zero-shot head), in-process", fwd),
        (f"bare forward per image, batch of {min(n, 8)}, in-process", stat(bare["forward_batched_per_image"])),
        ("in-process pipeline per study (read, preprocess, classify, SR + JSON)", stat(bare["pipeline_per_study"])),
        (f"app warm per study: marginal, (graph time {n} studies - 1 study) / {n - 1}", warm_s),
        (f"app graph time per study, {n} studies in one folder (loader start -> last SR) / {n}", tuple(v / n for v in proc_n)),
        ("app graph time, 1 study (loader start -> SR written)", proc_1),
        ("app start-up: process start -> graph start (imports, bundle, prompts)", startup),
        ("app cold start: process start -> SR written (1 study)", cold_sr),
        ("app cold start: process start -> exit (1 study)", cold_exit),
    ]
    rows = [(name, med_s, min_s, med_s / fwd[0], min_s / fwd[1]) for name, (med_s, min_s) in rows]
    meta = {
        "machine": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "model": str(args.model) if args.model else "untrained bundle, resnet50 @ 224 (train.json architecture)",
        "source": "pydicom-data RG1_UNCI.dcm (CR, 1841x1955, MONOCHROME1)",
        "repeats": args.repeats,
        "studies": args.studies,
        "bundle_load_and_prompts_s": bare["bundle_load_and_prompts_s"],
        "warm_overhead_vs_in_process": warm_s[0] / statistics.median(bare["pipeline_per_study"]),
        "load_average_1min": os.getloadavg()[0],
        "cold_runs": cold,
        "warm_runs": warm,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / "bench_deploy_app.json", "w", encoding="utf-8") as f:
        json.dump(
            {
                "meta": meta,
                "in_process": bare,
                "rows": [
                    {"what": n, "median_s": a, "min_s": b, "median_x_forward": r, "min_x_forward": q}
                    for n, a, b, r, q in rows
                ],
            },
            f,
            indent=1,
        )
    width = max(len(n) for n, *_ in rows)
    table = "\n".join(
        [
            f"| {'what'.ljust(width)} | median s | min s | x bare forward (median) | x bare forward (min) |",
            f"|{'-' * (width + 2)}|---------:|------:|------------------------:|---------------------:|",
        ]
        + [f"| {n.ljust(width)} | {a:8.3f} | {b:5.3f} | {r:23.1f} | {q:20.1f} |" for n, a, b, r, q in rows]
    )
    md = (
        "# cxr_findings Deploy app latency vs the bare model forward\n\n"
        f"{table}\n\nwarm per study / in-process pipeline per study: {meta['warm_overhead_vs_in_process']:.2f}\n\n"
        f"Machine: {meta['machine']}, {meta['cpus']} CPU(s), torch threads {meta['torch_threads']}, "
        f"1-min load average at the end {meta['load_average_1min']:.1f}. "
        f"Model: {meta['model']}. Input: {meta['source']}. Runs: {args.repeats} cold + {args.repeats} warm, interleaved.\n"
    )
    (RESULTS / "bench_deploy_app.md").write_text(md, encoding="utf-8")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
