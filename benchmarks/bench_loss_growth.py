"""How the cost of each Med-UniC loss term grows with the batch ``K`` and the CTR dimension ``D'``.

Times forward + backward of each term alone, on random embeddings that require gradients:

* **CVL** (Eq. 2-3, :class:`monai_medunic.losses.CVLLoss`, ``gather_distributed=True`` inside an initialised
  gloo process group of world size 1). ``K x (K W)`` logits per rank: ``O((K W)^2 d)``; at ``W = 1`` the
  gather is the identity, so growing ``K`` here is growing the global batch ``K W``. Exponent 2 in ``K``.
* **SSV** (Eq. 4, :class:`monai_medunic.losses.SSVLoss`): the same InfoNCE between two image views, 2 in ``K``.
* **TF** (Eq. 5, :class:`monai_medunic.losses.ctr.TextFeatureAlignmentLoss`): the ``D' x D'`` cross-correlation,
  ``O(K D'^2)``: exponent 1 in ``K``, 2 in ``D'``.
* **TT** (Eq. 6, :class:`monai_medunic.losses.ctr.TextToTextAlignmentLoss`): the ``K x K`` matrix,
  ``O(K^2 D')``: exponent 2 in ``K``, 1 in ``D'``.

CVL and SSV take the shared embedding (``--embed-dim``, fixed), not ``D'``, so they appear only in the ``K`` sweep.
Sweeps: ``K`` in {16, 32, 64, 128, 256} at ``D' = --fixed-dim`` and ``D'`` in {512, 1024, 1536, 2048} at
``K = --fixed-k``. One thread (the exponents are those of the arithmetic, not of the thread pool), rounds
interleaved over every (term, size) point, best of ``--repeats`` rounds.

Slopes are least-squares fits of ``log t`` against ``log K`` (or ``log D'``), over the whole sweep and over
its upper half (the three largest sizes, where fixed per-call overhead matters least). A term FAILS when
either slope exceeds its complexity exponent by more than ``--tolerance`` (default 0.25): a term that grows
faster than its complexity. A slope *below* the exponent is expected at small sizes (per-call overhead).

Usage: python benchmarks/bench_loss_growth.py [--repeats 7] [--tolerance 0.25]
Writes benchmarks/results/bench_loss_growth.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
K_SWEEP = (16, 32, 64, 128, 256)
D_SWEEP = (512, 1024, 1536, 2048)
EXPONENT = {("cvl", "K"): 2, ("ssv", "K"): 2, ("tf", "K"): 1, ("tt", "K"): 2, ("tf_ref", "K"): 1,
            ("tf", "D'"): 2, ("tt", "D'"): 1, ("tf_ref", "D'"): 2}
COMPLEXITY = {"cvl": "O((K W)^2 d)", "ssv": "O((K W)^2 d)", "tf": "O(K D'^2)", "tt": "O(K^2 D')", "tf_ref": "O(K D'^2)"}
TERMS_K = ("cvl", "ssv", "tf", "tt", "tf_ref")
TERMS_D = ("tf", "tt", "tf_ref")


def _tf_reference(lambd: float):
    """Reference only (not the package's loss): Eq. 5 through MONAI's ``BarlowTwinsLoss``, as the package's TF
    computed it before it took the off-diagonal sum as ``sum(C^2) - sum(diag(C)^2)`` (MONAI weights the
    off-diagonal through a boolean-mask index of the ``D' x D'`` matrix). Same value (checked at start-up);
    the baseline of TF's cost in the same run."""
    import torch
    from monai.losses import BarlowTwinsLoss

    barlow = BarlowTwinsLoss(lambd=lambd)

    def tf_ref(z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        return barlow(z_a, z_b) / z_a.shape[1]

    return tf_ref


def _losses(lambd: float):
    from monai_medunic.losses import CVLLoss, SSVLoss
    from monai_medunic.losses.ctr import TextFeatureAlignmentLoss, TextToTextAlignmentLoss

    return {"cvl": CVLLoss(gather_distributed=True), "ssv": SSVLoss(gather_distributed=True),
            "tf": TextFeatureAlignmentLoss(lambd), "tt": TextToTextAlignmentLoss(lambd), "tf_ref": _tf_reference(lambd)}


def _time_call(fn, min_seconds: float) -> float:
    """Seconds per call of ``fn``, timing enough calls to last ``min_seconds``."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return elapsed / n
        n = max(2 * n, int(n * 1.2 * min_seconds / max(elapsed, 1e-9)))


def _slope(xs, ys) -> float:
    import numpy as np

    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tolerance", type=float, default=0.25)
    parser.add_argument("--fixed-k", type=int, default=128)
    parser.add_argument("--fixed-dim", type=int, default=1024, help="D' of the K sweep (the bundle's ctr_dim)")
    parser.add_argument("--embed-dim", type=int, default=512, help="d of CVL/SSV (the bundle's embed_dim)")
    parser.add_argument("--min-seconds", type=float, default=0.2, help="time each point for at least this long")
    parser.add_argument("--lambd", type=float, default=5.1e-3)
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args()

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    torch.manual_seed(0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    losses = _losses(args.lambd)

    za, zb = torch.randn(64, 256), torch.randn(64, 256)
    assert torch.allclose(losses["tf"](za, zb), losses["tf_ref"](za, zb), rtol=1e-4), "tf_ref must equal TF"
    points = [(t, "K", k) for t in TERMS_K for k in K_SWEEP] + [(t, "D'", d) for t in TERMS_D for d in D_SWEEP]
    inputs = {}
    for term, axis, size in points:
        k, dim = (size, args.fixed_dim) if axis == "K" else (args.fixed_k, size)
        if term in ("cvl", "ssv"):
            dim = args.embed_dim
        a, b = torch.randn(k, dim, requires_grad=True), torch.randn(k, dim, requires_grad=True)
        inputs[(term, axis, size)] = (a, b, k, dim)

    def step(term, a, b):
        loss = losses[term](a, b)
        loss.backward()
        a.grad = b.grad = None

    for key in points:  # warm-up (allocator, kernels)
        a, b, _, _ = inputs[key]
        step(key[0], a, b)
    best: dict[tuple, float] = {}
    t_start = time.perf_counter()
    for r in range(args.repeats):
        for key in points:
            a, b, _, _ = inputs[key]
            t = _time_call(lambda: step(key[0], a, b), args.min_seconds)
            best[key] = min(best.get(key, float("inf")), t)
        print(f"[round {r + 1}/{args.repeats}] {len(points)} points, {time.perf_counter() - t_start:.0f} s elapsed", flush=True)
    dist.destroy_process_group()

    rows, fits = [], []
    for key in points:
        a, b, k, dim = inputs[key]
        rows.append({"term": key[0], "axis": key[1], "K": k, "dim": dim, "seconds": best[key]})
    for (term, axis), exponent in EXPONENT.items():  # tf_ref is a reference, reported but not part of all_pass
        pts = [(size, best[(t, ax, size)]) for (t, ax, size) in points if t == term and ax == axis]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        full, upper = _slope(xs, ys), _slope(xs[-3:], ys[-3:])
        ok = max(full, upper) <= exponent + args.tolerance
        fits.append({"term": term, "axis": axis, "exponent": exponent, "slope_all": full, "slope_upper": upper,
                     "pass": ok, "complexity": COMPLEXITY[term]})
        print(f"{term.upper():4s} vs {axis:2s}: slope {full:.2f} (all) / {upper:.2f} (upper half), complexity exponent "
              f"{exponent} -> {'PASS' if ok else 'FAIL'}", flush=True)

    load = os.getloadavg()
    result = {
        "config": vars(args) | {"threads": 1, "K_sweep": K_SWEEP, "D_sweep": D_SWEEP, "torch": torch.__version__,
                                "cpu_capability": torch.backends.cpu.get_cpu_capability(), "machine": platform.machine(),
                                "cpu_count": os.cpu_count()},
        "load_average_1_5_15_at_end": load,
        "timings": rows,
        "fits": fits,
        "all_pass": all(f["pass"] for f in fits if f["term"] != "tf_ref"),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench_loss_growth.json").write_text(json.dumps(result, indent=2))

    def table(axis, sizes, terms, fixed):
        head = f"| term | " + " | ".join(f"{axis}={s}" for s in sizes) + " |"
        lines = [f"Forward + backward, ms per call ({fixed}):", "", head, "|" + " --- |" * (len(sizes) + 1)]
        for t in terms:
            lines.append(f"| {t.upper()} | " + " | ".join(f"{best[(t, axis, s)] * 1e3:.3f}" for s in sizes) + " |")
        return lines + [""]

    md = [
        "# Med-UniC loss terms: cost against the batch K and the CTR dimension D'",
        "",
        "Produced by `python benchmarks/bench_loss_growth.py` "
        f"(repeats {args.repeats}, tolerance {args.tolerance}); one thread, {torch.backends.cpu.get_cpu_capability()}, "
        f"{os.cpu_count()} cores, load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end. "
        "Best of the interleaved rounds; fp32.",
        "",
        "TF_REF is not a package loss: Eq. 5 through MONAI's BarlowTwinsLoss (a boolean-mask index of the D'xD' matrix), "
        "as the package's TF computed it before it took the off-diagonal sum as sum(C^2) - sum(diag(C)^2); same value "
        "(checked at start-up). It is the same-run baseline of TF's cost, not part of the overall verdict.",
        "",
        "CVL is measured with the cross-rank gather path (gloo process group of world size 1, where the gather is the "
        "identity): growing K here is growing the global batch K·W that each rank's logits span. "
        f"CVL and SSV use the embedding dimension d = {args.embed_dim}, not D'.",
        "",
    ]
    md += table("K", K_SWEEP, TERMS_K, f"D' = {args.fixed_dim}, d = {args.embed_dim}")
    md += table("D'", D_SWEEP, TERMS_D, f"K = {args.fixed_k}")
    md += [
        "Log-log slopes (least squares over the whole sweep, and over its three largest sizes) against the complexity "
        f"exponent. FAIL = a slope above exponent + {args.tolerance}, i.e. a term growing faster than its complexity. "
        "Slopes below the exponent come from fixed per-call costs (autograd, normalisation, allocation) that dominate "
        "the small sizes.",
        "",
        "| term | complexity | axis | exponent | slope (all) | slope (upper half) | verdict |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ] + [f"| {f['term'].upper()} | {f['complexity']} | {f['axis']} | {f['exponent']} | {f['slope_all']:.2f} | "
         f"{f['slope_upper']:.2f} | {'PASS' if f['pass'] else 'FAIL'} |" for f in fits]
    ratio = best[("tf", "D'", D_SWEEP[-1])] / best[("tf_ref", "D'", D_SWEEP[-1])]
    result["tf_over_tf_ref_at_largest_dim"] = ratio
    (RESULTS / "bench_loss_growth.json").write_text(json.dumps(result, indent=2))
    md += [
        "",
        f"Overall (package terms CVL, SSV, TF, TT): **{'PASS' if result['all_pass'] else 'FAIL'}**. "
        f"At K = {args.fixed_k}, D' = {D_SWEEP[-1]}, TF takes {ratio:.1f}x the time of TF_REF (same value).",
    ]
    (RESULTS / "bench_loss_growth.md").write_text("\n".join(md) + "\n")

    if not args.no_plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
        for ax, axis, sizes, terms, fixed in ((axes[0], "K", K_SWEEP, TERMS_K, f"D'={args.fixed_dim}, d={args.embed_dim}"),
                                              (axes[1], "D'", D_SWEEP, TERMS_D, f"K={args.fixed_k}")):
            for t in terms:
                ys = [best[(t, axis, s)] * 1e3 for s in sizes]
                slope = next(f["slope_all"] for f in fits if f["term"] == t and f["axis"] == axis)
                color = f"C{TERMS_K.index(t)}"  # one colour per term in both panels
                ax.plot(sizes, ys, "o-", color=color, label=f"{t.upper()} (slope {slope:.2f}, exp. {EXPONENT[(t, axis)]})")
                e = EXPONENT[(t, axis)]
                ax.plot(sizes, [ys[-1] * (s / sizes[-1]) ** e for s in sizes], ":", color=color, alpha=0.6)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel(axis)
            ax.set_ylabel("forward + backward (ms)")
            ax.set_title(f"cost against {axis} ({fixed})")
            ax.legend(fontsize=8)
            ax.grid(True, which="both", alpha=0.3)
        fig.suptitle("Med-UniC loss terms (dotted: complexity exponent through the largest point)")
        fig.tight_layout()
        fig.savefig(RESULTS / "bench_loss_growth.png", dpi=110)
    print(f"TF / TF_REF time at K={args.fixed_k}, D'={D_SWEEP[-1]}: {ratio:.1f}x", flush=True)
    print(f"wrote {RESULTS / 'bench_loss_growth.md'} (all pass: {result['all_pass']})", flush=True)


if __name__ == "__main__":
    main()
