"""One UniMedI training step, 2D and 3D: the bundle's trainer (MONAI SupervisedTrainer + TrainStep + the
EMATeacher handler + the objective from TERM_LIBRARY) against a plain PyTorch loop of the same step.

The same step in both: UniMedI forward (3D: attention slice selection by the teacher, teacher forward on
volume + slices, masked student forward; 2D: teacher and masked student), CLIP + DINO + iBOT losses,
backward, gradient clipping, AdamW, EMA update of the teacher. Two identical models (same seed), the same
pre-built batch, the same thread count, data loading left out of both. Rounds alternate plain / bundle
(interleaved), and each loop's figure is its best round (the mean step time of the round), so that a
burst of load from other processes hurts both equally and a quiet round counts; the ratio is computed in
the same run. Progress is printed after every round.

Usage: python benchmarks/bench_unimedi_step.py [--rounds 5] [--steps 4] [--threads 1] [--small]
Writes benchmarks/results/bench_unimedi_step.{json,md}. Target: bundle/plain throughput >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TEXT = dict(model_type="bert", vocab_size=400, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=128, max_position_embeddings=128)
INPUTS = {"images": "image", "volumes": "volume", "input_ids": "input_ids", "attention_mask": "attention_mask"}


def _setup(args, seed: int = 0):
    import torch

    from monai_medunic.engines.optim import trainable_parameters
    from monai_medunic.losses import build_objective
    from monai_medunic.networks import UniMedI

    torch.manual_seed(seed)
    model = UniMedI("vit_tiny", text_config=TEXT, img_size=args.image_size, volume_size=args.volume_size, embed_dim=128,
                    num_slices=args.k, distill_dim=args.distill_dim, distill_hidden_dim=256, distill_bottleneck_dim=64,
                    mask_ratio=0.5, pooling="mean")
    objective = build_objective({"clip": 1.0, "distill_cls": {"out_dim": args.distill_dim}, "distill_patch": {"out_dim": args.distill_dim}})
    optimizer = torch.optim.AdamW(trainable_parameters(model, objective), lr=1e-4, weight_decay=0.05)
    return model, objective, optimizer


def _batch(args, dim: int) -> dict:
    import torch

    g = torch.Generator().manual_seed(dim)
    b = args.batch
    out = {"input_ids": torch.randint(5, 400, (b, 48), generator=g), "attention_mask": torch.ones(b, 48, dtype=torch.long)}
    if dim == 2:
        out["image"] = torch.rand(b, 1, args.image_size, args.image_size, generator=g)
    else:
        out["volume"] = torch.rand(b, 1, *args.volume_size, generator=g)
    return out


class _Loop:
    """A model, its objective, optimiser and EMA teacher, built identically for both loops."""

    def __init__(self, args) -> None:
        from monai_medunic.engines.teacher import EMATeacher

        self.model, self.objective, self.optimizer = _setup(args)
        self.teacher = EMATeacher(self.model, momentum=0.996, total_steps=10_000)


class PlainLoop(_Loop):
    """The step written out by hand."""

    def run(self, batch: dict, steps: int) -> list[float]:
        import torch

        kwargs = {arg: batch[key] for arg, key in INPUTS.items() if key in batch}
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        times = []
        self.model.train()
        for _ in range(steps):
            t0 = time.perf_counter()
            self.optimizer.zero_grad(set_to_none=True)
            out = self.model(**kwargs)
            loss = self.objective({**batch, **out})["loss"]
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], 3.0)
            self.optimizer.step()
            self.teacher.update()
            times.append(time.perf_counter() - t0)
        return times


class BundleLoop(_Loop):
    """The bundle's step: SupervisedTrainer(iteration_update=TrainStep) with the EMATeacher handler."""

    def run(self, batch: dict, steps: int) -> list[float]:
        import torch
        from ignite.engine import Events
        from monai.engines import SupervisedTrainer

        from monai_medunic.engines.step import TrainStep

        trainer = SupervisedTrainer(
            device=torch.device("cpu"), max_epochs=1, train_data_loader=[batch] * steps, epoch_length=steps, network=self.model,
            optimizer=self.optimizer, loss_function=self.objective, decollate=False, optim_set_to_none=True,  # as the bundle's trainer
            iteration_update=TrainStep(INPUTS, optional_inputs=["images", "volumes"], precision="fp32", channels_last=False, grad_clip_norm=3.0),
        )
        self.teacher.attach(trainer)
        stamps: dict[int, float] = {}
        times: list[float] = []
        trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: stamps.__setitem__(e.state.iteration, time.perf_counter()))
        trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: times.append(time.perf_counter() - stamps[e.state.iteration]))
        trainer.run()
        return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per loop and round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--volume-size", type=int, nargs=3, default=[32, 64, 64])
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--distill-dim", type=int, default=1024)
    parser.add_argument("--small", action="store_true", help="a quick check: 32 px, 16x32x32, 2 rounds of 2 steps")
    args = parser.parse_args()
    if args.small:
        args.image_size, args.volume_size, args.rounds, args.steps, args.batch = 32, [16, 32, 32], 2, 2, 4
    args.volume_size = tuple(args.volume_size)

    import torch

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    started = time.perf_counter()
    loops = {"plain": PlainLoop(args), "bundle": BundleLoop(args)}
    result: dict = {"config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}, "load_average_start": load0}
    for dim in (2, 3):
        batch = _batch(args, dim)
        for name, loop in loops.items():  # warm-up (allocator, first-call costs) outside the timing
            loop.run(batch, 1)
        rounds: dict[str, list[float]] = {"plain": [], "bundle": []}
        for r in range(args.rounds):
            for name in (("plain", "bundle") if r % 2 == 0 else ("bundle", "plain")):  # interleaved, order alternating
                rounds[name].append(statistics.mean(loops[name].run(batch, args.steps)))
            print(f"[{dim}D round {r + 1}/{args.rounds}] step: plain {rounds['plain'][-1]:.3f} s, bundle {rounds['bundle'][-1]:.3f} s "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
        best = {n: min(v) for n, v in rounds.items()}
        result[f"{dim}d"] = {"plain_best_step_s": best["plain"], "bundle_best_step_s": best["bundle"],
                             "bundle_over_plain_throughput": best["plain"] / best["bundle"],
                             "plain_rounds_s": rounds["plain"], "bundle_rounds_s": rounds["bundle"],
                             "samples_per_s_plain": args.batch / best["plain"], "samples_per_s_bundle": args.batch / best["bundle"]}
        print(f"{dim}D: bundle/plain throughput {result[f'{dim}d']['bundle_over_plain_throughput']:.3f}", flush=True)
    result["load_average_end"] = os.getloadavg()
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_unimedi_step.json").write_text(json.dumps(result, indent=2))
    md = [
        f"# UniMedI training step: bundle trainer vs plain PyTorch (vit_tiny, {args.image_size} px, {'x'.join(map(str, args.volume_size))} "
        f"volumes, k={args.k}, batch {args.batch}, {args.distill_dim} prototypes, {args.threads} thread(s))",
        "",
        "| step | plain best (s) | bundle best (s) | bundle/plain throughput |",
        "| --- | --- | --- | --- |",
    ] + [f"| {d.upper()} | {result[d]['plain_best_step_s']:.3f} | {result[d]['bundle_best_step_s']:.3f} | "
         f"**{result[d]['bundle_over_plain_throughput']:.3f}** |" for d in ("2d", "3d")] + [
        "",
        f"Best of {args.rounds} interleaved rounds of {args.steps} steps each; load average {load0[0]:.1f} at the start, "
        f"{result['load_average_end'][0]:.1f} at the end; {result['seconds']:.0f} s.",
    ]
    (RESULTS / "bench_unimedi_step.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
