"""Every DICOM object the Deploy app writes passes dciodvfy (dicom3tools) with 0 errors: the findings SR of
``apps/cxr_findings``, in English and Spanish, for the real chest CR of pydicom-data and for demo CR and DX
studies (the demo objects themselves are checked by ``tests/data/test_demo_dicom_validity.py``, the Deploy
SEG of ``apps/cxr_segmentation`` by ``tests/apps/test_cxr_segmentation_app.py``; a guard below keeps that
list complete as DICOM writers are added).

The SR is built and written by the functions the app's writer operator calls
(:func:`monai_medunic.deploy.write_study_outputs`), so no SDK run is needed; ``test_cxr_findings_app.py``
checks that the app writes this SR. The SR keeps patient identity only where the standard requires it:
the Patient Module's name and ID (type 2, which file the SR with its study in a PACS), and the birth date
as an empty value.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from monai_medunic.deploy import write_study_outputs
from monai_medunic.deploy.results import PreparedImage, StudyFindings

REPO = Path(__file__).resolve().parents[2]
# package modules that write DICOM objects of their own -> the tests that run dciodvfy on what they write
DICOM_WRITERS = {
    "monai_medunic/data/demo/generate.py": ["tests/data/test_demo_dicom_validity.py"],  # CR, DX, SR, SEG
    "monai_medunic/data/demo/dicom_io.py": ["tests/data/test_demo_dicom_validity.py"],  # the CT series encoder
    "monai_medunic/deploy/sr.py": ["tests/apps/test_output_dicom_validity.py"],  # Deploy findings SR
    "monai_medunic/deploy/sr_writer.py": ["tests/apps/test_output_dicom_validity.py"],  # its operator: write_study_outputs
    "monai_medunic/deploy/segmentation.py": ["tests/apps/test_cxr_segmentation_app.py"],  # Deploy SEG
}
# modules that only store objects received from a PACS, as received (not objects of ours)
RECEIVED_COPIES = {"monai_medunic/deploy/dicomweb.py", "monai_medunic/label/datastore.py"}
_WRITES_DICOM = re.compile(r"\.save_as\(|dcmwrite\(|write_file_meta_info|DICOM\w*WriterOperator")

FINDINGS = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Nodule", "Consolidation", "Edema"]


def dciodvfy_errors(path: Path) -> list[str]:
    exe = shutil.which("dciodvfy")
    assert exe, "dciodvfy (Debian package dicom3tools) is missing: run scripts/ensure_system_tools.sh"
    run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    from monai_medunic.data.demo import generate_demo_dataset

    out = tmp_path_factory.mktemp("sr_valid") / "demo"
    generate_demo_dataset(out, num_studies=6, seed=24, image_size=64, lateral_fraction=0.0, sr_fraction=0.0,
                          num_ct_studies=0, radiograph_truth=False)
    found = {"RG1 (pydicom-data CR)": Path(get_testdata_file("RG1_UNCI.dcm"))}
    for p in sorted((out / "dicom").rglob("*.dcm")):
        modality = str(pydicom.dcmread(p, stop_before_pixels=True).Modality)
        found.setdefault(f"demo {modality}", p)
    assert {"demo CR", "demo DX"} <= set(found), found
    return found


@pytest.mark.parametrize("language", ["en", "es"])
def test_findings_sr_passes_dciodvfy(sources, tmp_path, language) -> None:
    for name, source in sources.items():
        ds = pydicom.dcmread(source, stop_before_pixels=True)
        result = StudyFindings(PreparedImage(ds, torch.zeros(1, 8, 8)), FINDINGS, [0.1, 0.8, 0.3, 0.6, 0.2, 0.4],
                               [False, True, False, True, False, False], language, "cxr_medunic_pretrain", "0.2.0")
        sr_path, _ = write_study_outputs(result, tmp_path / name.replace(" ", "_"))
        assert dciodvfy_errors(sr_path) == [], (name, language)
        sr = pydicom.dcmread(sr_path)
        # patient identity only where the standard requires it
        assert sr.PatientID == ds.PatientID and str(sr.PatientName) == str(ds.PatientName)
        assert sr.PatientBirthDate == "" and sr.StudyInstanceUID == ds.StudyInstanceUID
        assert len(sr.SeriesDescription.encode("utf-8")) <= 64


def test_dciodvfy_catches_what_was_wrong(sources, tmp_path) -> None:
    """The check is not vacuous: the Spanish series description of 66 UTF-8 bytes it found is an error."""
    ds = pydicom.dcmread(sources["RG1 (pydicom-data CR)"], stop_before_pixels=True)
    result = StudyFindings(PreparedImage(ds, torch.zeros(1, 8, 8)), FINDINGS, [0.5] * 6, [True] * 6, "es",
                           "cxr_medunic_pretrain", "0.2.0")
    sr_path, _ = write_study_outputs(result, tmp_path / "bad")
    sr = pydicom.dcmread(sr_path)
    sr.SeriesDescription = "IA hallazgos RX tórax zero-shot - investigación, no diagnóstico"
    sr.save_as(sr_path, enforce_file_format=True)
    assert any("Series Description" in e for e in dciodvfy_errors(sr_path))


def test_every_dicom_writer_has_a_validity_test() -> None:
    """A module of the package that writes DICOM is listed above with a test that runs dciodvfy on its output."""
    writers = {str(p.relative_to(REPO)) for p in (REPO / "monai_medunic").rglob("*.py")
               if _WRITES_DICOM.search(p.read_text(encoding="utf-8"))}
    assert "monai_medunic/deploy/sr.py" in writers  # the scan finds writers
    unlisted = writers - set(DICOM_WRITERS) - RECEIVED_COPIES
    assert not unlisted, f"modules writing DICOM without a dciodvfy test: {sorted(unlisted)}; add them to DICOM_WRITERS"
    for module, tests in DICOM_WRITERS.items():
        for test in tests:
            assert "dciodvfy" in (REPO / test).read_text(encoding="utf-8"), (module, test)


@pytest.mark.parametrize("calibrated", [FINDINGS, FINDINGS[:2], []])
def test_sr_says_how_its_decisions_were_made(sources, tmp_path, calibrated) -> None:
    """A calibrated, partly calibrated or uncalibrated result: the SR stays valid and its algorithm parameters
    say which decision rule was used and whether its Probability is one."""
    from monai_medunic.metrics.zero_shot import ZeroShotPrediction

    ds = pydicom.dcmread(sources["RG1 (pydicom-data CR)"], stop_before_pixels=True)
    flags = torch.tensor([f in calibrated for f in FINDINGS])
    rule = ZeroShotPrediction(torch.zeros(1, 6), torch.zeros(1, 6, dtype=torch.bool), calibrated=flags).decision_rule
    result = StudyFindings(PreparedImage(ds, torch.zeros(1, 8, 8)), FINDINGS, [0.1, 0.8, 0.3, 0.6, 0.2, 0.4],
                           [False, True, False, True, False, False], "en", "cxr_medunic_pretrain", "0.2.0",
                           extra={"decision_rule": rule, "calibrated_findings": list(calibrated)})
    sr_path, json_path = write_study_outputs(result, tmp_path / "cal")
    assert dciodvfy_errors(sr_path) == []
    texts: list[str] = []

    def walk(items) -> None:
        for item in items:
            if "TextValue" in item:
                texts.append(str(item.TextValue))
            walk(item.get("ContentSequence", []))

    walk(pydicom.dcmread(sr_path).ContentSequence)
    dump = "\n".join(texts)
    assert f"decision={rule}" in dump
    if len(calibrated) == len(FINDINGS):
        assert "Platt-scaled" in dump and "UNCALIBRATED" not in dump and "Youden" in rule
    elif calibrated:
        assert "for 2 of 6 findings" in dump and "UNCALIBRATED" in dump
    else:
        assert "UNCALIBRATED score" in dump and rule == "s_pos > s_neg (uncalibrated)"
    assert json.loads(json_path.read_text())["decision_rule"] == rule
