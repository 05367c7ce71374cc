"""Cost of the Uni-Mlip components against same-run baselines (ratios, median of repeats).

* Image FP: :class:`~monai_medunic.networks.perturbation.ImageFeaturePerturbation` (DropBlock + pooling
  of the encoder's feature map) as a share of the image encoder's forward that produced the map.
* L_I2I: :class:`~monai_medunic.losses.simclr.I2ILoss` (Eq. 2; and its NT-Xent mode) forward + backward
  against ``monai.losses.ContrastiveLoss`` on the same embeddings; also the size of the ``(2B, 2B, D)``
  tensor that ContrastiveLoss materialises.
* Fused MLM: :class:`~monai_medunic.networks.fusion.FusedMaskedLM` with ``labels`` (logits for the
  masked positions only) against full ``(B, L, V)`` logits, forward + MaskedLMLoss + backward, at a
  BERT-sized vocabulary.

Writes benchmarks/results/bench_unimlip_components.{json,md} and prints the table.

    python benchmarks/bench_unimlip_components.py [--repeats 5] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Callable

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up (oneDNN primitives, allocator)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--vocab", type=int, default=30522)
    args = p.parse_args(argv)
    torch.manual_seed(0)

    from monai.losses import ContrastiveLoss

    from monai_medunic.losses import MaskedLMLoss
    from monai_medunic.losses.simclr import I2ILoss
    from monai_medunic.networks import CXRImageEncoder
    from monai_medunic.networks.fusion import FusedMaskedLM
    from monai_medunic.networks.perturbation import ImageFeaturePerturbation
    from monai_medunic.text.masking import RandMaskTokens

    rows: dict[str, dict] = {}
    b = args.batch

    # Image FP vs the encoder forward that produced the feature map
    enc = CXRImageEncoder("resnet18", img_size=args.image_size).train()
    images = torch.rand(b, 1, args.image_size, args.image_size)
    fp = ImageFeaturePerturbation().train()
    with torch.no_grad():
        fmap = enc(images)["feature_map"]
        t_enc = _median_seconds(lambda: enc(images), args.repeats)
        t_fp = _median_seconds(lambda: fp(fmap), args.repeats)
    rows["image_fp"] = {"baseline": f"resnet18 forward, {b} x {args.image_size} px", "baseline_s": t_enc,
                        "component_s": t_fp, "ratio": t_fp / t_enc, "feature_map": list(fmap.shape)}

    # L_I2I vs monai ContrastiveLoss, forward + backward
    d = 512
    za, zb = torch.randn(4 * b, d), torch.randn(4 * b, d)

    def fwd_bwd(loss_fn: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            a, c = za.clone().requires_grad_(True), zb.clone().requires_grad_(True)
            loss_fn(a, c).backward()
        return run

    t_monai = _median_seconds(fwd_bwd(ContrastiveLoss(temperature=0.1)), args.repeats)
    t_eq2 = _median_seconds(fwd_bwd(I2ILoss(0.1)), args.repeats)
    t_nt = _median_seconds(fwd_bwd(I2ILoss(0.1, intra_view_negatives=True)), args.repeats)
    rows["i2i_eq2"] = {"baseline": f"monai ContrastiveLoss, B={4 * b}, D={d}", "baseline_s": t_monai, "component_s": t_eq2,
                       "ratio": t_eq2 / t_monai,
                       "monai_pairwise_tensor_mib": (2 * 4 * b) ** 2 * d * 4 / 2**20,
                       "i2i_logits_mib": (4 * b) ** 2 * 4 / 2**20}
    rows["i2i_nt_xent"] = {"baseline": rows["i2i_eq2"]["baseline"], "baseline_s": t_monai, "component_s": t_nt,
                           "ratio": t_nt / t_monai}

    # Fused MLM: masked-positions-only logits vs full logits
    length, hidden, n_img = 128, 256, 49
    mlm = FusedMaskedLM(512, hidden, args.vocab, num_layers=4).train()
    masker = RandMaskTokens(mask_token_id=4, vocab_size=args.vocab, special_ids=[0, 1, 2, 3, 4])
    masker.set_random_state(0)
    ids = torch.randint(5, args.vocab, (b, length))
    labels = torch.stack([masker(r)[1] for r in ids])
    img_tok, txt_tok = torch.randn(b, n_img, 512), torch.randn(b, length, hidden)
    loss_fn = MaskedLMLoss()

    def full() -> None:
        loss_fn(mlm(img_tok, txt_tok)["mlm_logits"], labels).backward()

    def selected() -> None:
        out = mlm(img_tok, txt_tok, labels=labels)
        loss_fn(out["mlm_logits"], out["mlm_labels"]).backward()

    t_full = _median_seconds(full, args.repeats)
    t_sel = _median_seconds(selected, args.repeats)
    m = int((labels != -100).sum())
    rows["fused_mlm_selected"] = {"baseline": f"full (B, L, V) logits, B={b}, L={length}, V={args.vocab}", "baseline_s": t_full,
                                  "component_s": t_sel, "ratio": t_sel / t_full,
                                  "full_logits_mib": b * length * args.vocab * 4 / 2**20,
                                  "selected_logits_mib": m * args.vocab * 4 / 2**20}

    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "bench_unimlip_components.json"), "w", encoding="utf-8") as f:
        json.dump({"torch_threads": torch.get_num_threads(), "repeats": args.repeats, "rows": rows}, f, indent=1)
    lines = ["| component | baseline (same run) | baseline s | component s | ratio |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['baseline']} | {r['baseline_s']:.4f} | {r['component_s']:.4f} | {r['ratio']:.3f} |")
    table = "\n".join(lines)
    notes = (f"ContrastiveLoss pairwise tensor: {rows['i2i_eq2']['monai_pairwise_tensor_mib']:.1f} MiB vs I2I logits "
             f"{rows['i2i_eq2']['i2i_logits_mib']:.2f} MiB; fused-MLM logits: full {rows['fused_mlm_selected']['full_logits_mib']:.0f} MiB "
             f"vs selected {rows['fused_mlm_selected']['selected_logits_mib']:.0f} MiB.")
    with open(os.path.join(RESULTS, "bench_unimlip_components.md"), "w", encoding="utf-8") as f:
        f.write(f"# Uni-Mlip components\n\n{table}\n\n{notes}\n")
    print(table)
    print(notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
