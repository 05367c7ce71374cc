"""Demo dataset generation time (``medunic demo-data``) against the floor of writing the same DICOM files.

Generates N radiograph studies (default 500) with :func:`monai_medunic.data.demo.generate_demo_dataset`
at the default 256 x 256 in three configurations, each ``--repeats`` times interleaved after a warm-up
(the minimum is kept: the machine is shared), and compares with baselines measured in the same run on
the same machine:

* ``radiographs``: radiographs only (``num_ct_studies=0, radiograph_truth=False``: what the generator
  wrote before CT and truth were added), against pydicom writing the same number of uncompressed
  256 x 256 16-bit CR files of constant pixels (no phantom, no report, no JPEG 2000, no SR): how much
  the phantoms, reports, compression and SR documents cost on top of plain DICOM I/O;
* ``+ truth``: the same with the radiograph truth (NIfTI masks, boxes, DICOM SEG): its ratio to the
  radiographs-only run is the cost of the truth, and the SEG cost per SEG written is reported;
* ``default``: the defaults of ``medunic demo-data`` and ``medunic demo`` (truth, and
  :func:`~monai_medunic.data.demo.default_ct_studies` CT studies: N // 40, at least 2). The CT part is
  compared with pydicom writing the same number of plain 128 x 128 CT slices one ``save_as`` each,
  and the whole run with the radiographs-only run: the slowdown of the generation step.

Also times loading the manifest (view filtering reads every DICOM header), the 3D datalist with its
truth checks, and the 2D datalist with ``truth=True``. Writes
benchmarks/results/bench_demo_generation.{json,md} and prints the table.

    python benchmarks/bench_demo_generation.py [--studies 500] [--seed 0] [--repeats 2]
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


def _plain_dicom_writes(folder: str, n: int, size: int, modality: str = "CR") -> float:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    sop_class = {"CR": "1.2.840.10008.5.1.4.1.1.1", "CT": "1.2.840.10008.5.1.4.1.1.2"}[modality]
    os.makedirs(folder, exist_ok=True)
    pixels = np.full((size, size), 1000, dtype=np.uint16).tobytes()
    t = time.perf_counter()
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID = sop_class
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.PatientName, ds.PatientID, ds.Modality = "SYNTHETIC^BASELINE", f"B{i}", modality
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
    p.add_argument("--repeats", type=int, default=2, help="runs of each configuration, interleaved; the minimum is kept")
    args = p.parse_args(argv)

    from monai_medunic.data.datalist import manifest_datalist
    from monai_medunic.data.demo import CT_DEFAULT_SHAPE, default_ct_studies, generate_demo_dataset
    from monai_medunic.data.manifest import load_manifest

    n = args.studies
    with tempfile.TemporaryDirectory() as tmp:
        # import costs (MONAI, highdicom, nibabel) stay outside the timings, as in a running program
        import highdicom  # noqa: F401
        import nibabel  # noqa: F401

        import monai_medunic.transforms  # noqa: F401

        # warm-up: first-use costs (JPEG 2000 encoder, highdicom's IOD tables) stay outside the timings
        generate_demo_dataset(os.path.join(tmp, "warm"), num_studies=4, seed=args.seed + 1, num_ct_studies=1)
        common = dict(num_studies=n, seed=args.seed, image_size=args.image_size, overwrite=True)
        configs = {
            "plain": dict(num_ct_studies=0, radiograph_truth=False),
            "truth": dict(num_ct_studies=0, radiograph_truth=True),
            "full": {},
        }
        best: dict[str, float] = {}
        infos: dict[str, object] = {}
        ct_best = float("inf")
        for _ in range(max(1, args.repeats)):
            for name, options in configs.items():
                t = time.perf_counter()
                infos[name] = generate_demo_dataset(os.path.join(tmp, name), **common, **options)
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
                if name == "full":
                    ct_best = min(ct_best, infos[name].seconds_by_part["ct"])
        plain, truth, full = infos["plain"], infos["truth"], infos["full"]
        plain_s, truth_s, full_s = best["plain"], best["truth"], best["full"]
        t = time.perf_counter()
        loaded = load_manifest(full.manifest_path)
        load_s = time.perf_counter() - t
        t = time.perf_counter()
        truth_2d = manifest_datalist(full.manifest_path, truth=True)
        load_truth_s = time.perf_counter() - t
        t = time.perf_counter()
        volumes = manifest_datalist(full.manifest_path, dimensions=3)
        load_3d_s = time.perf_counter() - t
        base_s = _plain_dicom_writes(os.path.join(tmp, "base"), plain.num_images, args.image_size)
        base_ct_s = _plain_dicom_writes(os.path.join(tmp, "base_ct"), full.num_ct_slices, CT_DEFAULT_SHAPE[1], "CT")
    ct_s = ct_best
    truth_cost = truth_s - plain_s
    row = {
        "studies": n,
        "repeats": args.repeats,
        "images": plain.num_images,
        "sr_documents": plain.num_sr,
        "jpeg2000_images": plain.num_jpeg2000,
        "seg_documents": truth.num_seg,
        "nifti_masks": truth.num_masks,
        "boxes": truth.num_boxes,
        "ct_studies": full.num_ct_studies,
        "ct_slices": full.num_ct_slices,
        "default_ct_studies": default_ct_studies(n),
        "radiographs_seconds": plain_s,
        "ms_per_study": 1000 * plain_s / n,
        "baseline_plain_dicom_write_seconds": base_s,
        "ratio_generation_over_plain_writes": plain_s / base_s,
        "with_truth_seconds": truth_s,
        "ratio_truth_over_radiographs_only": truth_s / plain_s,
        "truth_ms_per_seg": 1000 * truth_cost / max(truth.num_seg, 1),
        "ratio_truth_cost_over_plain_writes": truth_cost / base_s,
        "default_seconds": full_s,
        "ct_seconds": ct_s,
        "ms_per_ct_study": 1000 * ct_s / max(full.num_ct_studies, 1),
        "baseline_plain_ct_slice_write_seconds": base_ct_s,
        "ratio_ct_over_plain_ct_slice_writes": ct_s / base_ct_s if base_ct_s else float("nan"),
        "ct_study_cost_in_radiograph_studies": (ct_s / max(full.num_ct_studies, 1)) / (truth_s / n),
        "ratio_default_over_radiographs_only": full_s / plain_s,
        "manifest_load_seconds": load_s,
        "datalist_2d_truth_seconds": load_truth_s,
        "datalist_3d_seconds": load_3d_s,
        "manifest_kept": loaded.summary.kept,
        "manifest_dropped": dict(loaded.summary.dropped),
        "datalist_2d_truth_records": len(truth_2d),
        "datalist_3d_records": len(volumes),
        "prevalence": plain.prevalence,
        "ct_prevalence": full.ct_prevalence,
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "bench_demo_generation.json"), "w", encoding="utf-8") as f:
        json.dump(row, f, indent=1)
    table = "\n".join(
        [
            "| run | what | seconds | ratio | against |",
            "|---|---|---|---|---|",
            f"| radiographs only | {n} studies, {plain.num_images} images, {plain.num_sr} SR, {plain.num_jpeg2000} JPEG 2000"
            f" | {plain_s:.1f} ({row['ms_per_study']:.0f} ms/study) | {row['ratio_generation_over_plain_writes']:.1f}"
            f" | plain writes of {plain.num_images} CR files ({base_s:.2f} s) |",
            f"| + radiograph truth | {truth.num_masks} NIfTI masks, {truth.num_boxes} boxes, {truth.num_seg} SEG"
            f" | {truth_s:.1f} ({row['truth_ms_per_seg']:.0f} ms per SEG) | {row['ratio_truth_over_radiographs_only']:.2f}"
            f" | radiographs only; truth alone = {row['ratio_truth_cost_over_plain_writes']:.1f} x plain writes |",
            f"| CT part of the default | {full.num_ct_studies} CT studies, {full.num_ct_slices} slices"
            f" | {ct_s:.1f} ({row['ms_per_ct_study']:.0f} ms/CT study) | {row['ratio_ct_over_plain_ct_slice_writes']:.2f}"
            f" | plain writes of {full.num_ct_slices} CT slices ({base_ct_s:.2f} s); one CT study costs"
            f" {row['ct_study_cost_in_radiograph_studies']:.1f} radiograph studies |",
            f"| default (truth + CT) | what `medunic demo-data` / `medunic demo` write | {full_s:.1f}"
            f" | {row['ratio_default_over_radiographs_only']:.2f} | radiographs only |",
            f"| manifest load | 2D records, view filter | {load_s:.2f} | | |",
            f"| datalist truth=True | 2D records, truth checked | {load_truth_s:.2f} | | |",
            f"| datalist dimensions=3 | {len(volumes)} CT records, truth checked | {load_3d_s:.2f} | | |",
        ]
    )
    with open(os.path.join(RESULTS, "bench_demo_generation.md"), "w", encoding="utf-8") as f:
        f.write(
            f"# Demo dataset generation ({args.image_size} x {args.image_size} radiographs, CT {'x'.join(map(str, CT_DEFAULT_SHAPE))})\n\n"
            f"{table}\n\nManifest: kept {loaded.summary.kept}, dropped {dict(loaded.summary.dropped)}.\n"
        )
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
