"""The Uni-Mlip training step with all its terms: the bundle's step (MONAI SupervisedTrainer + TrainStep)
against a plain PyTorch loop of the same step, and each term's share of the step time.

Both loops run the step of ``cxr_unimlip_pretrain`` at the demo's sizes by default (ResNet-18 at 64 px,
batch 32, a 2-layer BERT, ``max_length`` 64): :class:`~monai_medunic.networks.UniMlip` asked for the
objective's required outputs (clean view + two strong views in one encoder batch, the report and its
masked copy in one text batch, DropBlock / dropout perturbations, the 4-layer fusion MLM),
:class:`~monai_medunic.losses.UniMlipLoss` (ITC, two perturbed ITC terms sharing one learnable tau, I2I,
fused MLM), backward, gradient clipping at 1.0 and AdamW. The plain loop is that, written out.

Timing: one process, one model, pre-built batches. Rounds interleave the configurations (plain loop,
bundle step with all terms, bundle step with each term switched off in turn), each round timing
``--steps`` consecutive steps wall-clock (first step start to last step end, everything in between
included: the trainer's events and batch fetching, the loop's batch fetching); per configuration the
best round counts, so a burst of load from other processes on the machine hits a round, not the result.
A term's share is ``1 - t(step without the term) / t(step with all terms)``: its marginal cost,
including the inputs computed only for it (the strong views for I2I, the masked text copy and the
fusion for MLM).

Usage: python benchmarks/bench_unimlip_step.py [--rounds 5] [--steps 6] [--image-size 64] [--batch 32]
Writes benchmarks/results/unimlip_step.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"
TERMS = ("itc", "itc_perturbed_image", "itc_perturbed_text", "i2i", "fused_mlm")
INPUTS = {"images": "image", "images_strong_a": "image_strong_a", "images_strong_b": "image_strong_b", "input_ids": "input_ids",
          "attention_mask": "attention_mask", "mlm_input_ids": "mlm_input_ids", "mlm_token_labels": "mlm_token_labels"}


def _setup(args):
    from monai_medunic.losses import UniMlipLoss
    from monai_medunic.networks import UniMlip

    torch.manual_seed(0)
    text_cfg = dict(model_type="bert", vocab_size=400, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=256, max_position_embeddings=128)
    model = UniMlip(args.encoder, text_config=text_cfg, img_size=args.image_size, embed_dim=128)
    objective = UniMlipLoss()
    g = torch.Generator().manual_seed(1)
    b, s, length = args.batch, args.image_size, args.max_length
    batches = []
    for _ in range(args.steps):
        x = torch.rand(b, 1, s, s, generator=g)
        ids = torch.randint(5, 400, (b, length), generator=g)
        labels = torch.full_like(ids, -100)
        mlm = ids.clone()
        sel = torch.rand(b, length, generator=g) < 0.15
        sel[:, 1] = True
        labels[sel], mlm[sel] = ids[sel], 4
        batches.append({"image": x, "image_strong_a": x.flip(-1) * 1.2, "image_strong_b": (x + 0.1).clamp(max=1),
                        "input_ids": ids, "attention_mask": torch.ones_like(ids), "mlm_input_ids": mlm, "mlm_token_labels": labels})
    from monai_medunic.engines.optim import trainable_parameters

    opt = torch.optim.AdamW(trainable_parameters(model, objective), lr=1e-4)
    return model, objective, opt, batches


def _plain_round(model, objective, opt, batches) -> float:
    """The step written out in PyTorch: forward (required outputs only), objective, backward, clip, AdamW."""
    params = [p for g in opt.param_groups for p in g["params"]]
    t0 = time.perf_counter()
    for batch in batches:
        model.train()
        opt.zero_grad(set_to_none=True)
        out = model(images=batch["image"], images_strong_a=batch["image_strong_a"], images_strong_b=batch["image_strong_b"],
                    input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], mlm_input_ids=batch["mlm_input_ids"],
                    mlm_token_labels=batch["mlm_token_labels"], required_outputs=objective.required_keys)
        loss = objective({**batch, **out})["loss"]
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], 1.0)
        opt.step()
    return time.perf_counter() - t0


def _bundle_round(model, objective, opt, batches, step) -> float:
    from ignite.engine import Events
    from monai.engines import SupervisedTrainer

    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=batches, network=model,
                                optimizer=opt, loss_function=objective, iteration_update=step, decollate=False)
    stamps: list[float] = []
    trainer.add_event_handler(Events.ITERATION_STARTED(once=1), lambda e: stamps.append(time.perf_counter()))
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=len(batches)), lambda e: stamps.append(time.perf_counter()))
    trainer.run()
    return stamps[1] - stamps[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per round and configuration")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--encoder", default="resnet18")
    args = parser.parse_args()

    from monai_medunic.engines.step import TrainStep

    model, objective, opt, batches = _setup(args)
    weights = dict(objective.weights)
    step = TrainStep(INPUTS, precision="fp32", grad_clip_norm=1.0,
                     optional_inputs=["images_strong_a", "images_strong_b", "mlm_input_ids", "mlm_token_labels"])
    configs = ["plain", "bundle"] + [f"bundle_without_{t}" for t in TERMS]
    print(f"warm-up (load average {os.getloadavg()[0]:.2f}) ...", flush=True)
    _plain_round(model, objective, opt, batches[:2])
    _bundle_round(model, objective, opt, batches[:2], step)
    best: dict[str, float] = {}
    rounds: dict[str, list[float]] = {name: [] for name in configs}
    load: list[float] = []
    for r in range(args.rounds):
        # the order alternates between rounds, so neither loop always runs after the same configuration
        for name in (configs if r % 2 == 0 else configs[::-1]):
            for t in TERMS:
                objective.set_weight(t, weights[t])
            if name.startswith("bundle_without_"):
                objective.set_weight(name[len("bundle_without_"):], 0.0)
            seconds = _plain_round(model, objective, opt, batches) if name == "plain" else _bundle_round(model, objective, opt, batches, step)
            best[name] = min(best.get(name, float("inf")), seconds)
            rounds[name].append(seconds / args.steps)
            load.append(os.getloadavg()[0])
            print(f"[round {r + 1}/{args.rounds}] {name:32s} {seconds / args.steps:.3f} s/step (best {best[name] / args.steps:.3f}; "
                  f"load {load[-1]:.2f})", flush=True)
    per_step = {k: v / args.steps for k, v in best.items()}
    ratio = per_step["plain"] / per_step["bundle"]  # throughput ratio bundle / plain
    # the median of the rounds: one lucky round of either loop moves the best-of ratio, not this one
    median = {k: statistics.median(v) for k, v in rounds.items()}
    ratio_median = median["plain"] / median["bundle"]
    shares = {t: 1.0 - per_step[f"bundle_without_{t}"] / per_step["bundle"] for t in TERMS}
    result = {
        "config": vars(args) | {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count()},
        "seconds_per_step_best": per_step,
        "bundle_over_plain_throughput": ratio,
        "seconds_per_step_median": median,
        "bundle_over_plain_throughput_median": ratio_median,
        "seconds_per_step_rounds": rounds,
        "term_share_of_step": shares,
        "load_average_1min": {"min": min(load), "max": max(load), "mean": sum(load) / len(load)},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "unimlip_step.json").write_text(json.dumps(result, indent=2))
    md = [
        f"# Uni-Mlip training step, all terms ({args.encoder}, {args.image_size} px, batch {args.batch}, fp32, "
        f"{torch.get_num_threads()} threads; best of {args.rounds} interleaved rounds of {args.steps} steps)",
        "",
        "| loop | s/step | pairs/s |",
        "| --- | --- | --- |",
        f"| plain PyTorch loop (baseline) | {per_step['plain']:.3f} | {args.batch / per_step['plain']:.1f} |",
        f"| bundle step (SupervisedTrainer + TrainStep) | {per_step['bundle']:.3f} | {args.batch / per_step['bundle']:.1f} |",
        "",
        f"Throughput ratio bundle/plain: **{ratio:.3f}** best of rounds, **{ratio_median:.3f}** median of rounds "
        f"(plain {median['plain']:.3f} s/step, bundle {median['bundle']:.3f} s/step; target >= 0.95).",
        "",
        "| term | step without it (s) | share of the step |",
        "| --- | --- | --- |",
    ] + [f"| {t} | {per_step[f'bundle_without_{t}']:.3f} | {shares[t] * 100:.1f}% |" for t in TERMS] + [
        "",
        f"1-minute load average during the rounds: {min(load):.2f} to {max(load):.2f} on {os.cpu_count()} cores "
        "(other processes share the machine).",
    ]
    (RESULTS / "unimlip_step.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
