"""Demo dataset generation time (``medunic demo-data``) against the floor of writing the same DICOM files.

Generates N studies (default 500) with :func:`monai_medunic.data.demo.generate_demo_dataset` at the
default 256 x 256 and compares with a baseline measured in the same run on the same machine: pydicom
writing the same number of uncompressed 256 x 256 16-bit CR files of constant pixels (no phantom, no
report, no JPEG 2000, no SR). The ratio says how much the phantoms, reports, compression and SR
documents cost on top of plain DICOM I/O. Also times loading the manifest (view filtering reads every
DICOM header). Writes benchmarks/results/bench_demo_generation.{json,md} and prints the table.

    python benchmarks/bench_demo_generation.py [--studies 500] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _plain_dicom_writes(folder: str, n: int, size: int) -> float:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    os.makedirs(folder, exist_ok=True)
    pixels = np.full((size, size), 1000, dtype=np.uint16).tobytes()
    t = time.perf_counter()
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID, ds.Modality = "SYNTHETIC^BASELINE", f"B{i}", "CR"
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels
        ds.save_as(os.path.join(folder, f"{i}.dcm"), enforce_file_format=True)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=256)
    args = p.parse_args(argv)

    from monai_medunic.data.demo import generate_demo_dataset
    from monai_medunic.data.manifest import load_manifest

    with tempfile.TemporaryDirectory() as tmp:
        # import costs (MONAI, highdicom) stay outside the timings, as in a running program
        import highdicom  # noqa: F401

        import monai_medunic.transforms  # noqa: F401

        t = time.perf_counter()
        info = generate_demo_dataset(os.path.join(tmp, "demo"), num_studies=args.studies, seed=args.seed, image_size=args.image_size)
        gen_s = time.perf_counter() - t
        t = time.perf_counter()
        loaded = load_manifest(info.manifest_path)
        load_s = time.perf_counter() - t
        base_s = _plain_dicom_writes(os.path.join(tmp, "plain"), info.num_images, args.image_size)
    row = {
        "studies": info.num_studies,
        "images": info.num_images,
        "sr_documents": info.num_sr,
        "jpeg2000_images": info.num_jpeg2000,
        "generation_seconds": gen_s,
        "ms_per_study": 1000 * gen_s / info.num_studies,
        "baseline_plain_dicom_write_seconds": base_s,
        "ratio_generation_over_plain_writes": gen_s / base_s,
        "manifest_load_seconds": load_s,
        "manifest_kept": loaded.summary.kept,
        "manifest_dropped": dict(loaded.summary.dropped),
        "prevalence": info.prevalence,
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "bench_demo_generation.json"), "w", encoding="utf-8") as f:
        json.dump(row, f, indent=1)
    table = "\n".join(
        [
            "| studies | images | SR | JPEG 2000 | generation (s) | ms/study | plain DICOM writes (s) | ratio | manifest load (s) |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {info.num_studies} | {info.num_images} | {info.num_sr} | {info.num_jpeg2000} | {gen_s:.1f} | {row['ms_per_study']:.1f}"
            f" | {base_s:.2f} | {row['ratio_generation_over_plain_writes']:.1f} | {load_s:.2f} |",
        ]
    )
    with open(os.path.join(RESULTS, "bench_demo_generation.md"), "w", encoding="utf-8") as f:
        f.write(f"# Demo dataset generation ({args.image_size} x {args.image_size})\n\n{table}\n\nManifest: kept {loaded.summary.kept}, dropped {dict(loaded.summary.dropped)}.\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
