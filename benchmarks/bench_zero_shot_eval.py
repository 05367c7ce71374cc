"""Cost of bilingual zero-shot classification per image, against the image encoder's bare forward pass.

The issue's requirement: with cached prompt embeddings, inference per image costs the image
encoder's forward pass plus one matrix product. Measured (same machine, same run, CPU):

* **bare forward**: ``model.encode_image`` on a ``(B, 1, S, S)`` batch (the baseline);
* **cached zero-shot, en + es**: ``ZeroShotClassifier(images, "en")`` and the Spanish scores from the same
  image embeddings (prompts encoded once, before timing);
* **uncached zero-shot, en + es**: the same but the prompts re-encoded for every batch (what a naive
  implementation does), to show what the cache saves.

Ratios are per image against the bare forward. The model is untrained (weights do not change the cost)
with the image architecture of ``cxr_medunic_pretrain``'s ``train.json`` (ResNet-50 at 224 px, 512-d
joint space) and a BERT-base-sized text encoder (12 layers, 768 wide) built from a config.
Writes benchmarks/results/bench_zero_shot_eval.{json,md} and prints the table.

    python benchmarks/bench_zero_shot_eval.py [--batch 8] [--batches 2] [--repeats 5] [--image-size 224]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
FINDINGS = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Nodule", "Consolidation", "Edema"]


def _tokenizer(tmp: Path):
    from tokenizers import BertWordPieceTokenizer
    from transformers import BertTokenizerFast

    from monai_medunic.text.prompts import build_prompts

    texts = [t for lang in ("en", "es") for pair in build_prompts(FINDINGS, lang) for t in pair]
    wp = BertWordPieceTokenizer(lowercase=True, strip_accents=False)
    wp.train_from_iterator(texts * 10, vocab_size=300, min_frequency=1)
    wp.save_model(str(tmp))
    return BertTokenizerFast.from_pretrained(str(tmp), local_files_only=True)


def _median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    import torch

    from monai_medunic.metrics.zero_shot import ZeroShotClassifier
    from monai_medunic.networks import MedUniC

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    train = json.loads((REPO / "bundles" / "cxr_medunic_pretrain" / "configs" / "train.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        tok = _tokenizer(Path(tmp))
    text_cfg = dict(model_type="bert", vocab_size=len(tok), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=128)
    model = MedUniC(train["image_encoder"], text_config=text_cfg, img_size=args.image_size,
                    embed_dim=int(train["embed_dim"]), ctr_dim=int(train["ctr_dim"])).eval()
    clf = ZeroShotClassifier(model, tok, FINDINGS, ("en", "es"), max_length=32)
    batches = [torch.rand(args.batch, 1, args.image_size, args.image_size) for _ in range(args.batches)]
    n_images = args.batch * args.batches

    @torch.no_grad()
    def bare() -> None:
        for x in batches:
            model.encode_image(x)

    def cached() -> None:
        for x in batches:
            emb = clf.encode_images(x)
            clf.classify_embeddings(emb, "en")
            clf.classify_embeddings(emb, "es")

    def uncached() -> None:
        for x in batches:
            clf._cache.clear()  # what a classifier without the cache pays: the prompts, every batch
            emb = clf.encode_images(x)
            clf.classify_embeddings(emb, "en")
            clf.classify_embeddings(emb, "es")

    clf.refresh()
    bare()  # warm-up
    # round-robin repeats, so that load from other processes hits every path alike
    paths = (("bare forward (baseline)", bare), ("cached zero-shot, en + es", cached), ("uncached zero-shot, en + es", uncached))
    times: dict[str, list[float]] = {name: [] for name, _ in paths}
    for _ in range(args.repeats):
        for name, fn in paths:
            times[name].append(_median_time(fn, 1))
    rows = {name: statistics.median(t) / n_images for name, t in times.items()}
    base = rows["bare forward (baseline)"]
    emb = torch.nn.functional.normalize(torch.randn(n_images, model.embed_dim), dim=-1)
    head = _median_time(lambda: (clf.classify_embeddings(emb, "en"), clf.classify_embeddings(emb, "es")), 20) / n_images
    result = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "settings": {"batch": args.batch, "batches": args.batches, "image_size": args.image_size,
                     "image_encoder": train["image_encoder"], "text": "BERT-base-sized, 12 x 768", "findings": len(FINDINGS)},
        "per_image_ms": {k: round(v * 1000, 3) for k, v in rows.items()},
        "ratio_vs_bare_forward": {k: round(v / base, 3) for k, v in rows.items()},
        "zero_shot_head_only_per_image_ms": round(head * 1000, 4),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "bench_zero_shot_eval.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    lines = ["| path | ms / image | ratio vs bare forward |", "|---|---|---|"]
    lines += [f"| {k} | {v * 1000:.2f} | {v / base:.3f} |" for k, v in rows.items()]
    lines += ["", f"zero-shot head only (2 languages x {len(FINDINGS)} findings, matrix product): {head * 1000:.4f} ms / image"]
    md = "\n".join(lines)
    (RESULTS / "bench_zero_shot_eval.md").write_text("# Zero-shot evaluation cost\n\n" + md + "\n", encoding="utf-8")
    print(md)


if __name__ == "__main__":
    main()
