"""Pre-training throughput: the bundle's MONAI/Ignite trainer against a plain PyTorch loop, and the share of
this machine's matmul peak that the image encoder's training step reaches (fp32 and bf16).

Both loops run the same Med-UniC step (:class:`monai_medunic.engines.step.TrainStep` configured as the
bundle does: two image views, text with a dropout view, CVL + SSV + CTR, AdamW) on the same model, batch and
pre-loaded data, each in its own subprocess so that its peak memory (max RSS) is its own. The matmul
peak is measured in the same run with a large square matmul on all threads.

Usage: python benchmarks/bench_pretrain_throughput.py [--steps 12] [--image-size 128] [--batch 16]
Writes benchmarks/results/pretrain_throughput.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def _model_and_batch(args):
    import torch

    from monai_medunic.networks import MedUniC

    torch.manual_seed(0)
    text_cfg = dict(model_type="bert", vocab_size=400, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=256, max_position_embeddings=128)
    model = MedUniC(args.encoder, text_config=text_cfg, img_size=args.image_size, embed_dim=128, ctr_dim=256)
    b, s = args.batch, args.image_size
    batch = {
        "image": torch.rand(b, 1, s, s),
        "image_aug": torch.rand(b, 1, s, s),
        "input_ids": torch.randint(5, 400, (b, 64)),
        "attention_mask": torch.ones(b, 64, dtype=torch.long),
    }
    return model, batch


def _worker(mode: str, args) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from monai_medunic.engines.precision import autocast, resolve_precision
    from monai_medunic.engines.step import TrainStep
    from monai_medunic.losses import MedUniCLoss

    model, batch = _model_and_batch(args)
    loss_fn = MedUniCLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    data = [batch] * (args.steps + args.warmup)
    loader = DataLoader(data, batch_size=None, shuffle=False)
    precision = resolve_precision(args.precision, "cpu")
    times: list[float] = []
    if mode == "plain":
        model.to(memory_format=torch.channels_last)
        model.train()
        for i, b in enumerate(loader):
            t0 = time.perf_counter()
            imgs = b["image"].contiguous(memory_format=torch.channels_last)
            aug = b["image_aug"].contiguous(memory_format=torch.channels_last)
            with autocast(precision, "cpu"):
                out = model(imgs, b["input_ids"], b["attention_mask"], aug)
            loss = loss_fn(out)["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if i >= args.warmup:
                times.append(time.perf_counter() - t0)
    else:
        from ignite.engine import Events
        from monai.engines import SupervisedTrainer

        trainer = SupervisedTrainer(
            device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=model, optimizer=opt,
            loss_function=loss_fn, iteration_update=TrainStep(
                {"images": "image", "images_aug": "image_aug", "input_ids": "input_ids", "attention_mask": "attention_mask"},
                precision=args.precision, channels_last=True),
            decollate=False,
        )
        stamps: dict[int, float] = {}
        trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: stamps.__setitem__(e.state.iteration, time.perf_counter()))
        trainer.add_event_handler(
            Events.ITERATION_COMPLETED,
            lambda e: times.append(time.perf_counter() - stamps[e.state.iteration]) if e.state.iteration > args.warmup else None,
        )
        trainer.run()
    pairs_per_s = args.batch * len(times) / sum(times)
    return {"mode": mode, "pairs_per_s": pairs_per_s, "step_s": sum(times) / len(times),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "precision": precision}


def _matmul_peak(dtype_name: str, n: int = 2048, reps: int = 6) -> float:
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def _encoder_step_gflops(args, dtype_name: str) -> tuple[float, float]:
    """(FLOPs of one image-encoder fwd+bwd on the batch's two views, achieved GFLOPS)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from monai_medunic.networks import CXRImageEncoder

    enc = CXRImageEncoder(args.encoder, img_size=args.image_size).to(memory_format=torch.channels_last)
    x = torch.rand(2 * args.batch, 1, args.image_size, args.image_size).contiguous(memory_format=torch.channels_last)
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if dtype_name == "bf16" else torch.autocast("cpu", enabled=False)
    with FlopCounterMode(display=False) as counter:
        with ctx:
            out = enc(x)["pooled"].float().sum()
        out.backward()
    flops = counter.get_total_flops()
    for _ in range(2):  # warm-up
        with ctx:
            out = enc(x)["pooled"].float().sum()
        out.backward()
    t0 = time.perf_counter()
    reps = 4
    for _ in range(reps):
        with ctx:
            out = enc(x)["pooled"].float().sum()
        out.backward()
    return flops, flops * reps / (time.perf_counter() - t0) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--encoder", default="resnet50")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--worker", default=None)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args)))
        return
    base = [sys.executable, __file__, "--steps", str(args.steps), "--warmup", str(args.warmup), "--batch", str(args.batch),
            "--image-size", str(args.image_size), "--encoder", args.encoder, "--precision", args.precision]
    runs = {}
    for i, mode in enumerate(("plain", "bundle", "plain", "bundle")):  # interleaved, best of two: less sensitive to load
        print(f"[{i + 1}/4] {mode} loop, {args.steps} timed steps ...", flush=True)
        out = subprocess.run(base + ["--worker", mode], capture_output=True, text=True, check=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
        if mode not in runs or res["pairs_per_s"] > runs[mode]["pairs_per_s"]:
            runs[mode] = res
    ratio = runs["bundle"]["pairs_per_s"] / runs["plain"]["pairs_per_s"]
    from monai_medunic.engines.precision import cpu_supports_bf16

    # a CPU without bf16 instructions emulates a bf16 matmul for many minutes: measure bf16 only where it is native
    dtypes = ("fp32", "bf16") if cpu_supports_bf16() else ("fp32",)
    print(f"matmul peak and image-encoder GFLOPS ({', '.join(dtypes)}) ...", flush=True)
    peaks = {d: _matmul_peak(d) for d in dtypes}
    encoder = {}
    for d in dtypes:
        flops, achieved = _encoder_step_gflops(args, d)
        encoder[d] = {"gflop_per_step": flops / 1e9, "achieved_gflops": achieved, "matmul_peak_gflops": peaks[d],
                      "share_of_peak": achieved / peaks[d]}
    result = {
        "config": vars(args) | {"threads": __import__("torch").get_num_threads()},
        "plain_loop": runs["plain"],
        "bundle_trainer": runs["bundle"],
        "trainer_over_plain_throughput": ratio,
        "framework_overhead_percent": (1 / ratio - 1) * 100,
        "peak_rss_ratio": runs["bundle"]["peak_rss_mb"] / runs["plain"]["peak_rss_mb"],
        "image_encoder_step": encoder,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "pretrain_throughput.json").write_text(json.dumps(result, indent=2))
    md = [
        f"# Pre-training throughput ({args.encoder}, {args.image_size} px, batch {args.batch}, precision {runs['plain']['precision']})",
        "",
        "| loop | image-report pairs/s | step (s) | peak RSS (MB) |",
        "| --- | --- | --- | --- |",
        f"| plain PyTorch (baseline) | {runs['plain']['pairs_per_s']:.2f} | {runs['plain']['step_s']:.3f} | {runs['plain']['peak_rss_mb']:.0f} |",
        f"| bundle trainer (SupervisedTrainer + TrainStep) | {runs['bundle']['pairs_per_s']:.2f} | {runs['bundle']['step_s']:.3f} | {runs['bundle']['peak_rss_mb']:.0f} |",
        "",
        f"Throughput ratio trainer/plain: **{ratio:.3f}** (framework overhead {(1 / ratio - 1) * 100:+.1f}%); "
        f"peak-memory ratio {result['peak_rss_ratio']:.3f}.",
        "",
        "| image encoder train step | GFLOP/step | achieved GFLOPS | matmul peak GFLOPS (same run) | share of peak |",
        "| --- | --- | --- | --- | --- |",
    ] + [
        f"| {d} | {e['gflop_per_step']:.1f} | {e['achieved_gflops']:.1f} | {e['matmul_peak_gflops']:.1f} | {e['share_of_peak']:.2f} |"
        for d, e in encoder.items()
    ]
    (RESULTS / "pretrain_throughput.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
