"""Radiograph loading throughput: LoadDicomImage against MONAI's LoadImage(reader=PydicomReader) on the same files.

Files: pydicom-data's real chest CR, uncompressed (RG1_UNCI: the decompressed 10:1 lossy version; RG1_UNCR:
the original) and JPEG 2000 lossless (RG1_J2KR), 1955 x 1841 pixels, 15 bits, MONOCHROME1; and the
embedded demo dataset's CR/DX images (256 x 256, a mix of MONOCHROME1/2, bit depths and JPEG 2000).

Both loaders decode with the same pydicom pixel handlers. The baseline returns stored values; ours
also applies the modality LUT, the VOI window and the MONOCHROME1 inversion, and returns [0, 1]
float32 ``(1, H, W)``. Figures are images per second (best of ``--repeats`` timed passes, each over
``--passes`` loads per file) and the ratio ours / MONAI, measured in the same run on the same machine.
Writes benchmarks/results/bench_dicom_loading.{json,md} and prints the table.

    python benchmarks/bench_dicom_loading.py [--passes 10] [--repeats 3] [--demo-studies 60]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence

import torch

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _rate(load: Callable[[str], object], files: Sequence[str], passes: int, repeats: int) -> float:
    for f in files:  # warm-up: imports, decoder plugin discovery, page cache
        load(f)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(passes):
            for f in files:
                load(f)
        best = min(best, time.perf_counter() - t)
    return passes * len(files) / best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--passes", type=int, default=10, help="loads per file in one timed pass (JPEG 2000: a third)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--demo-studies", type=int, default=60)
    args = p.parse_args(argv)
    torch.set_num_threads(1)

    from monai.data import PydicomReader
    from monai.transforms import LoadImage
    from pydicom.data import get_testdata_file

    from monai_medunic.data.demo import generate_demo_dataset
    from monai_medunic.transforms import LoadDicomImage

    ours = LoadDicomImage()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai = LoadImage(reader=PydicomReader(), image_only=True)

    def monai_load(f: str) -> object:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PydicomReader warns about missing IOP/IPP on every CR
            return monai(f)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        info = generate_demo_dataset(os.path.join(tmp, "demo"), num_studies=args.demo_studies, seed=0, lateral_fraction=0.0)
        demo_files = sorted(
            os.path.join(d, f) for d, _, fs in os.walk(os.path.join(info.out_dir, "dicom")) for f in fs if f.startswith("frontal")
        )
        cases = [
            ("RG1_UNCI.dcm (CR, uncompressed)", [get_testdata_file("RG1_UNCI.dcm")], args.passes),
            ("RG1_UNCR.dcm (CR, uncompressed original)", [get_testdata_file("RG1_UNCR.dcm")], args.passes),
            ("RG1_J2KR.dcm (CR, JPEG 2000 lossless)", [get_testdata_file("RG1_J2KR.dcm")], max(1, args.passes // 3)),
            (f"demo CR/DX 256x256 ({len(demo_files)} files, {info.num_jpeg2000} JPEG 2000)", demo_files, max(1, args.passes // 5)),
        ]
        for name, files, passes in cases:
            r_ours = _rate(ours, files, passes, args.repeats)
            r_monai = _rate(monai_load, files, passes, args.repeats)
            rows.append({"files": name, "ours_images_per_s": r_ours, "monai_images_per_s": r_monai, "ratio_ours_over_monai": r_ours / r_monai})

    meta = {"machine": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch_threads": torch.get_num_threads(), "passes": args.passes, "repeats": args.repeats,
            "baseline": "monai.transforms.LoadImage(reader=monai.data.PydicomReader(), image_only=True)",
            "ours": "monai_medunic.transforms.LoadDicomImage() (modality LUT + VOI window + MONOCHROME1 inversion)"}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "bench_dicom_loading.json"), "w", encoding="utf-8") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=1)
    lines = ["| files | LoadDicomImage (img/s) | MONAI LoadImage+PydicomReader (img/s) | ratio ours/MONAI |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['files']} | {r['ours_images_per_s']:.1f} | {r['monai_images_per_s']:.1f} | {r['ratio_ours_over_monai']:.2f} |")
    table = "\n".join(lines)
    with open(os.path.join(RESULTS, "bench_dicom_loading.md"), "w", encoding="utf-8") as f:
        f.write(f"# Radiograph loading throughput\n\n{table}\n\nOne thread, best of {args.repeats} passes. {meta['ours']}.\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
