"""Every DICOM object the demo generator writes (CR, DX, SR, CT, SEG) passes dciodvfy (dicom3tools) with
0 errors, and the attributes added for validity do not change the pixels the loader produces."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter

import numpy as np
import pydicom
import pytest

from monai_medunic.data.demo import generate_demo_dataset
from monai_medunic.transforms import LoadDicomImage


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("valid") / "demo"
    # many laterals, SRs and J2K, every storage variant of a few dozen studies
    return generate_demo_dataset(
        out, num_studies=30, seed=24, image_size=96, lateral_fraction=0.5, sr_fraction=0.5, jpeg2000_fraction=0.3,
        num_ct_studies=2, ct_shape=(20, 64, 64),
    )


def _dicom_files(root: str) -> list[str]:
    out = []
    for d, _, fs in os.walk(root):
        for f in fs:
            p = os.path.join(d, f)
            with open(p, "rb") as fh:
                head = fh.read(132)
            if head[128:132] == b"DICM":
                out.append(p)
    return sorted(out)


def _dciodvfy_errors(path: str) -> list[str]:
    exe = shutil.which("dciodvfy")
    assert exe, "dciodvfy (Debian package dicom3tools) is missing: run scripts/ensure_system_tools.sh"
    run = subprocess.run([exe, path], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_every_demo_dicom_object_passes_dciodvfy(demo) -> None:
    files = _dicom_files(demo.out_dir)
    kinds: Counter[str] = Counter()
    failures = {}
    for p in files:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        kinds[f"{ds.Modality}:{ds.SOPClassUID.name}"] += 1
        errors = _dciodvfy_errors(p)
        if errors:
            failures[os.path.relpath(p, demo.out_dir)] = errors
    assert failures == {}, failures
    modalities = {k.split(":")[0] for k in kinds}
    assert {"CR", "DX", "SR", "CT", "SEG"} <= modalities, kinds
    # both DX SOP classes: FOR PRESENTATION (with a window) and FOR PROCESSING (without)
    assert {k for k in kinds if k.startswith("DX")} == {
        "DX:Digital X-Ray Image Storage - For Presentation",
        "DX:Digital X-Ray Image Storage - For Processing",
    }, kinds
    assert len(files) == demo.num_images + demo.num_sr + demo.num_ct_slices + demo.num_seg
    assert demo.num_seg > 5 and kinds["SEG:Segmentation Storage"] == demo.num_seg


def test_dciodvfy_catches_what_was_missing(demo, tmp_path) -> None:
    """The check is not vacuous: a DX image without the DX-module attributes fails it."""
    dx = next(p for p in _dicom_files(demo.out_dir) if pydicom.dcmread(p, stop_before_pixels=True).Modality == "DX")
    ds = pydicom.dcmread(dx)
    for kw in ("ImageType", "RescaleSlope", "RescaleIntercept", "RescaleType", "ImageLaterality", "PositionerType"):
        delattr(ds, kw)
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad, enforce_file_format=True)
    errors = " ".join(_dciodvfy_errors(str(bad)))
    for kw in ("ImageType", "RescaleSlope", "RescaleIntercept", "ImageLaterality", "PositionerType"):
        assert kw in errors, (kw, errors)


# the attributes written for validity only; without them the files are those of the earlier generator
_VALIDITY_ONLY = (
    "ImageType",
    "PixelIntensityRelationship",
    "PixelIntensityRelationshipSign",
    "ImageLaterality",
    "AnatomicRegionSequence",
    "PositionerType",
    "ViewCodeSequence",
    "AcquisitionContextSequence",
)


def test_validity_attributes_do_not_change_the_loaded_pixels(demo) -> None:
    load = LoadDicomImage()
    checked: Counter[str] = Counter()
    for p in _dicom_files(demo.out_dir):
        ds = pydicom.dcmread(p)
        if ds.Modality not in ("CR", "DX"):
            continue
        stripped = pydicom.dcmread(p)
        for kw in _VALIDITY_ONLY:
            if kw in stripped:
                delattr(stripped, kw)
        if ds.Modality == "DX" and float(ds.RescaleIntercept) == 0:
            for kw in ("RescaleSlope", "RescaleIntercept", "RescaleType"):
                delattr(stripped, kw)
        a, b = load(ds), load(stripped)
        assert np.array_equal(a.numpy(), b.numpy()), p
        assert a.meta["view"] == b.meta["view"], p
        if ds.Modality == "DX":
            # a DX image FOR PRESENTATION has a window; FOR PROCESSING has none and keeps the fallback
            has_window = "WindowCenter" in ds
            assert has_window == (ds.PresentationIntentType == "FOR PRESENTATION"), p
            checked["dx_window" if has_window else "dx_fallback"] += 1
            assert a.meta["voi"] == ("window[0]" if has_window else "full_range")
        checked[ds.Modality] += 1
    assert checked["CR"] and checked["DX"] and checked["dx_fallback"] and checked["dx_window"], checked
