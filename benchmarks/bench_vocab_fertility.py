"""Tokeniser fertility and [UNK] rate before / after the Spanish vocabulary extension (Med-UniC Sec. 3.2).

Base: a WordPiece vocabulary trained on English IU X-ray reports only (the stand-in for an English
CXR-BERT). Extension: the top-M TF-IDF words of PadChest training reports (spaCy blank('es') + TF-IDF).
Evaluation: held-out IU (English) and PadChest (Spanish) reports. Ratios are after / before on the same
machine in the same run. Writes benchmarks/results/bench_vocab_fertility.{json,md} and prints the table.

    python benchmarks/bench_vocab_fertility.py [--vocab-size 4000] [--num-tokens 2000 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from monai_medunic.data.corpora import IUXRayCorpus, PadChestCorpus  # noqa: E402
from monai_medunic.text.fertility import tokenizer_stats  # noqa: E402
from monai_medunic.text.vocab import build_base_model, extend_vocabulary  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab-size", type=int, default=4000, help="English base WordPiece vocabulary size")
    p.add_argument("--num-tokens", type=int, nargs="+", default=[1000, 3000], help="M values to evaluate")
    p.add_argument("--es-train", type=int, default=50000, help="PadChest reports used to rank new words")
    p.add_argument("--test-size", type=int, default=5000, help="held-out reports per language")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    t0 = time.perf_counter()
    en = IUXRayCorpus().texts()
    es = PadChestCorpus().texts()
    rng = random.Random(args.seed)
    rng.shuffle(en)
    rng.shuffle(es)
    n_en_test = min(args.test_size, len(en) // 5)
    en_test, en_train = en[:n_en_test], en[n_en_test:]
    es_test, es_train = es[: args.test_size], es[args.test_size : args.test_size + args.es_train]
    load_s = time.perf_counter() - t0

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base_en")
        build_base_model(base, en_train, vocab_size=args.vocab_size, hidden_size=32, num_layers=1, num_heads=2)
        tok_dirs = {"base (English-only)": (base, 0)}
        for m in args.num_tokens:
            out = os.path.join(tmp, f"ext_{m}")
            t = time.perf_counter()
            res = extend_vocabulary(base, es_train, out, num_tokens=m, language="es", tokenizer_only=True)
            tok_dirs[f"+{len(res.added_tokens)} es"] = (out, time.perf_counter() - t)
        before = {lang: tokenizer_stats(base, texts) for lang, texts in (("en", en_test), ("es", es_test))}
        for name, (d, build_s) in tok_dirs.items():
            for lang, texts in (("en", en_test), ("es", es_test)):
                s = tokenizer_stats(d, texts)
                b = before[lang]
                rows.append({
                    "tokenizer": name, "language": lang, "texts": s.texts, "words": s.words, "tokens": s.tokens,
                    "fertility": s.fertility, "unk_rate": s.unk_rate, "split_word_rate": s.split_word_rate,
                    "fertility_ratio_vs_base": s.fertility / b.fertility,
                    "tokens_ratio_vs_base": s.tokens / b.tokens, "extension_seconds": build_s,
                })

    meta = {"base_vocab_size_requested": args.vocab_size, "en_train_reports": len(en_train),
            "es_train_reports": len(es_train), "en_test_reports": len(en_test), "es_test_reports": len(es_test),
            "corpus_load_seconds": load_s, "total_seconds": time.perf_counter() - t0,
            "note": "PadChest report text is stemmed in the source"}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "bench_vocab_fertility.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    header = "| tokenizer | lang | fertility | ratio vs base | [UNK] rate | split-word rate | tokens |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['tokenizer']} | {r['language']} | {r['fertility']:.3f} | {r['fertility_ratio_vs_base']:.3f}"
                     f" | {r['unk_rate']:.4%} | {r['split_word_rate']:.3f} | {r['tokens']} |")
    table = "\n".join(lines)
    md = (f"# Tokeniser fertility before / after the Spanish vocabulary extension\n\n{table}\n\n"
          f"Held-out: {len(en_test)} IU (en) and {len(es_test)} PadChest (es) reports; base trained on "
          f"{len(en_train)} English IU reports; new words ranked on {len(es_train)} PadChest reports "
          "(stemmed text).\n")
    with open(os.path.join(RESULTS, "bench_vocab_fertility.md"), "w", encoding="utf-8") as f:
        f.write(md)
    print(table)
    print(json.dumps(meta, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
