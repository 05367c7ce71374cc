"""End-to-end tests of the ``cxr_segmentation`` MONAI Deploy app (real SDK, real DICOM, dciodvfy; no mocks).

Each app run is its own process (as the SDK runs an app) and costs several seconds, so the runs are made once
per module, two at a time, and shared by the assertions below.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from monai_medunic.deploy.launch import _raise_stack_limit  # the 32 MiB stack holoscan wants
from monai_medunic.deploy.preprocessing import prepare_study
from monai_medunic.deploy.segmentation import SEG_JSON_NAME, load_segmentation_bundle, segment_prepared
from monai_medunic.transforms.dense import read_seg_masks
from monai_medunic.transforms.views import classify_view
from tiny_bundles import untrained_segmentation_bundle

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "apps" / "cxr_segmentation" / "app.py"
RG1 = Path(get_testdata_file("RG1_UNCI.dcm"))
SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
FINDINGS = ["Nodule", "Pneumothorax", "Pleural Effusion", "Consolidation"]


@dataclass
class AppRun:
    input: Path
    output: Path
    returncode: int
    stdout: str
    stderr: str

    @property
    def log(self) -> str:
        f = self.output / "cxr_segmentation.log"
        return f.read_text(encoding="utf-8") if f.exists() else ""

    def segs(self) -> list[Path]:
        return sorted(self.output.rglob("*.dcm")) if self.output.exists() else []


@pytest.fixture(scope="module")
def seg_bundle(tmp_path_factory) -> Path:
    """A cxr_segmentation bundle in its trained layout (inference.json + models/model.pt), ResNet-18 at 64 px,
    untrained: its logits sit near 0, so parts of each image fall on either side of the threshold and the
    SEGs hold real segments (the in-process comparison below checks pixels, not just empty masks)."""
    return untrained_segmentation_bundle(tmp_path_factory.mktemp("seg_app"))


def run_app(input_dir: Path, output_dir: Path, model: Path) -> AppRun:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    for var in ("HOLOSCAN_INPUT_PATH", "HOLOSCAN_OUTPUT_PATH", "HOLOSCAN_MODEL_PATH"):
        env.pop(var, None)
    proc = subprocess.run([sys.executable, str(APP), "-i", str(input_dir), "-o", str(output_dir), "-m", str(model)], env=env,
                          cwd=output_dir.parent, capture_output=True, text=True, timeout=900, preexec_fn=_raise_stack_limit)
    return AppRun(input_dir, output_dir, proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def runs(seg_bundle, tmp_path_factory) -> dict[str, AppRun]:
    from monai_medunic.data.demo import generate_demo_dataset

    root = tmp_path_factory.mktemp("seg_app_runs")
    inputs = {"rg1": root / "in_rg1", "empty": root / "in_empty"}
    inputs["rg1"].mkdir()
    shutil.copy(RG1, inputs["rg1"] / RG1.name)
    inputs["empty"].mkdir()
    # two demo studies (a frontal and a lateral image each, the report as SR) and, in the same folder, one
    # study's truth SEG: the app must pick the frontal image of each study and nothing else
    demo = generate_demo_dataset(root / "demo", num_studies=2, seed=11, lateral_fraction=1.0, sr_fraction=1.0, jpeg2000_fraction=0.5,
                                 num_ct_studies=0)
    inputs["demo"] = root / "demo" / "dicom"
    truth_segs = sorted((root / "demo" / "truth").rglob("*_seg.dcm"))
    if truth_segs:
        shutil.copy(truth_segs[0], inputs["demo"] / "truth_seg.dcm")
    not_a_bundle = root / "not_a_bundle"
    (not_a_bundle / "configs").mkdir(parents=True)
    jobs = {"rg1": seg_bundle, "demo": seg_bundle, "empty": seg_bundle, "not_bundle": not_a_bundle}
    inputs["not_bundle"] = inputs["rg1"]

    def job(name: str) -> tuple[str, AppRun]:
        return name, run_app(inputs[name], root / f"out_{name}", jobs[name])

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(pool.map(job, jobs))
    assert demo.num_studies == 2
    return done


def _dciodvfy_errors(path: Path) -> list[str]:
    out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


@pytest.mark.slow
def test_real_cr_gives_a_valid_seg_in_the_source_study(runs, seg_bundle) -> None:
    run = runs["rg1"]
    assert run.returncode == 0, run.stderr[-3000:]
    segs = run.segs()
    assert len(segs) == 1 and "wrote 1 SEG(s)" in run.stdout
    src = pydicom.dcmread(RG1, stop_before_pixels=True)
    seg = pydicom.dcmread(segs[0])
    assert seg.SOPClassUID == SEG_STORAGE and seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.SeriesInstanceUID != src.SeriesInstanceUID  # kept in the source study
    assert segs[0].parent.name == src.StudyInstanceUID
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == src.SeriesInstanceUID and ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert (seg.Rows, seg.Columns) == (src.Rows, src.Columns)
    assert _dciodvfy_errors(segs[0]) == []
    # highdicom reads it back; the segments are the bundle's findings with their SNOMED CT codes
    doc = hd.seg.segread(segs[0])
    assert [d.segment_label for d in doc.SegmentSequence] == FINDINGS
    assert doc.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "27925004"  # nodule
    # the masks are those the package computes in-process from the same file: identical pixels and model
    model = load_segmentation_bundle(seg_bundle)
    expected = segment_prepared(model, [prepare_study([("test", pydicom.dcmread(RG1))], model.image_size)])[0].masks
    masks = read_seg_masks(segs[0], src.SOPInstanceUID)
    assert sum(int(expected[i].any()) for i in range(4)) >= 1
    for i, f in enumerate(FINDINGS):
        assert np.array_equal(masks[f].astype(bool), expected[i]), f
    summary = json.loads((segs[0].parent / SEG_JSON_NAME).read_text())
    assert summary["seg_file"] == segs[0].name and summary["sop_instance_uid"] == src.SOPInstanceUID
    assert [f["pixels"] for f in summary["findings"]] == [int(m.sum()) for m in expected]
    assert all(f["area_mm2"] is None for f in summary["findings"])  # RG1 states a pixel spacing of 0: no area


@pytest.mark.slow
def test_one_seg_per_demo_study_from_its_frontal_image(runs) -> None:
    run = runs["demo"]
    assert run.returncode == 0, run.stderr[-3000:]
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in run.input.rglob("*.dcm")]
    views = {h.SOPInstanceUID: classify_view(h) for h in headers if h.Modality in ("CR", "DX")}
    assert sorted(views.values()) == ["frontal", "frontal", "lateral", "lateral"]
    segs = run.segs()
    studies = {h.StudyInstanceUID for h in headers}
    assert len(studies) == 2 and len(segs) == 2
    for path in segs:
        seg = pydicom.dcmread(path)
        assert path.parent.name == seg.StudyInstanceUID and seg.StudyInstanceUID in studies
        uid = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID
        assert views[uid] == "frontal"
        assert _dciodvfy_errors(path) == []
        assert set(read_seg_masks(path, uid)) == set(FINDINGS)


@pytest.mark.slow
@pytest.mark.parametrize("case, message", [("empty", "input folder is empty"), ("not_bundle", "not a trained cxr_segmentation bundle")])
def test_bad_input_is_one_clear_error_and_no_seg(runs, case, message) -> None:
    run = runs[case]
    assert run.returncode == 1 and run.segs() == []
    errors = [line for line in run.stderr.splitlines() if line.startswith("cxr_segmentation: error:")]
    assert len(errors) == 1 and message in errors[0], run.stderr[-3000:]
    assert "Traceback" not in run.stderr


@pytest.mark.slow
def test_no_patient_identifiers_in_output_or_logs(runs) -> None:
    src = pydicom.dcmread(RG1, stop_before_pixels=True)
    for name in ("rg1", "demo"):
        run = runs[name]
        headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in run.input.rglob("*.dcm")]
        phi = {str(h.PatientName) for h in headers} | {str(h.PatientID) for h in headers} | {str(src.PatientName), str(src.PatientID)}
        text = run.stdout + run.stderr + run.log + "".join(p.read_text() for p in run.output.rglob(SEG_JSON_NAME))
        assert run.log
        for value in phi - {""}:
            assert value not in text, f"{name}: a patient identifier appears in the app's output"
