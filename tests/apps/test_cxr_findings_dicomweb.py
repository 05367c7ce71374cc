"""The ``cxr_findings`` Deploy app against a real PACS: a private Orthanc with its DICOMweb plugin.

``--dicomweb URL --study UID`` reads the study over WADO-RS and stores the SR back over STOW-RS. The
study is the real MONOCHROME1 CR of pydicom-data, uploaded with STOW-RS; the SR that comes back
from the PACS must hold the scores the package computes in-process on the file itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from pydicom.data import get_testdata_file

from monai_medunic.deploy import classify_prepared, prepare_study, read_findings_sr
from monai_medunic.deploy.dicomweb import DicomWebTarget, retrieve_study, split_dicomweb_args, store_instances
from monai_medunic.errors import ConfigurationError, DataError
from monai_medunic.metrics.zero_shot import ZeroShotClassifier
from monai_medunic.pretrained import load_pretrained_bundle
from orthanc import OrthancServer, free_port

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "apps" / "cxr_findings" / "app.py"
RG1 = Path(get_testdata_file("RG1_UNCI.dcm"))
RUN_TIMEOUT = 600


def _stack_limit() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    want = 32 * 1024 * 1024
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_STACK, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))


def run_app(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for var in ("HOLOSCAN_INPUT_PATH", "HOLOSCAN_OUTPUT_PATH", "HOLOSCAN_MODEL_PATH", "CXR_FINDINGS_LANGUAGE"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, str(APP), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        preexec_fn=_stack_limit,
    )


@pytest.fixture(scope="module")
def pacs(tmp_path_factory):
    with OrthancServer(tmp_path_factory.mktemp("orthanc")) as server:
        server.store_files([RG1])
        yield server


@pytest.fixture(scope="module")
def runs(pacs, tiny_bundle, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    root = tmp_path_factory.mktemp("dicomweb_runs")
    study = str(pydicom.dcmread(RG1, stop_before_pixels=True).StudyInstanceUID)
    closed = f"http://127.0.0.1:{free_port()}/dicom-web"
    jobs = {
        "es": ["--dicomweb", pacs.dicomweb_url, "--study", study, "--language", "es"],
        "unknown_study": ["--dicomweb", pacs.dicomweb_url, "--study", "1.2.826.0.1.3680043.9.7133.1.1"],
        "no_pacs": ["--dicomweb", closed, "--study", study, "--dicomweb-timeout", "5"],
    }

    def job(name: str):
        out = root / f"out_{name}"
        return name, (run_app([*jobs[name], "-o", str(out), "-m", str(tiny_bundle)], root), out)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(job, jobs))


def _direct_scores(bundle_dir: Path, language: str) -> list[float]:
    bundle = load_pretrained_bundle(bundle_dir)
    prepared = prepare_study([("test", pydicom.dcmread(RG1))], bundle.image_size)
    clf = ZeroShotClassifier(bundle.model, bundle.tokenize, bundle.findings, languages=[language])
    return classify_prepared(clf, [prepared], language, bundle.name, bundle.version)[0].probs


@pytest.mark.slow
def test_study_read_from_pacs_and_sr_stored_back(runs, pacs, tiny_bundle, tmp_path):
    proc, out = runs["es"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    src = pydicom.dcmread(RG1, stop_before_pixels=True)
    assert f"stored the SR of study {src.StudyInstanceUID}" in proc.stdout
    local_sr = out / str(src.StudyInstanceUID) / "cxr_findings_sr.dcm"
    assert local_sr.is_file()
    # the PACS now holds an SR series in the study, and it is the SR the app wrote
    reply = requests.get(
        f"{pacs.dicomweb_url}/studies/{src.StudyInstanceUID}/series", params={"Modality": "SR"}, timeout=30
    )
    assert reply.status_code == 200 and len(reply.json()) == 1, reply.text[:500]
    back = retrieve_study(DicomWebTarget(pacs.dicomweb_url, str(src.StudyInstanceUID)), tmp_path / "back")
    srs = [pydicom.dcmread(f) for f in back if pydicom.dcmread(f, stop_before_pixels=True).Modality == "SR"]
    assert len(srs) == 1
    stored = srs[0]
    assert stored.SOPInstanceUID == pydicom.dcmread(local_sr).SOPInstanceUID
    ref = stored.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
    table = read_findings_sr(stored)
    assert "Neumotórax" in [row["meaning"] for row in table]  # the Spanish SR survives the round trip
    # scores: those of the file itself, scored in-process (WADO-RS delivers the original pixels)
    np.testing.assert_allclose([row["probability"] for row in table], _direct_scores(tiny_bundle, "es"), atol=2e-6)


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, message", [("unknown_study", "the PACS holds no"), ("no_pacs", "the PACS cannot be reached")]
)
def test_pacs_failures_are_one_line_errors(runs, case, message):
    proc, out = runs[case]
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("cxr_findings: error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert not list(out.rglob("*.dcm")) if out.exists() else True


def test_dicomweb_arguments_are_checked():
    target, rest = split_dicomweb_args(["--dicomweb=http://127.0.0.1:1/dicom-web/", "--study", "1.2.3", "-o", "x"])
    assert target == DicomWebTarget("http://127.0.0.1:1/dicom-web", "1.2.3", 60.0) and rest == ["-o", "x"]
    assert split_dicomweb_args(["-o", "x"]) == (None, ["-o", "x"])
    for bad in (
        ["--dicomweb", "http://127.0.0.1:1/dicom-web"],
        ["--study", "1.2.3"],
        ["--dicomweb", "ftp://pacs", "--study", "1.2.3"],
        ["--dicomweb", "http://pacs", "--study", "../1.2"],
        ["--dicomweb", "http://pacs", "--study", "1.2.3", "--dicomweb-timeout", "soon"],
    ):
        with pytest.raises(ConfigurationError):
            split_dicomweb_args(bad)


def test_stow_refusal_is_a_data_error(pacs, tmp_path):
    """Orthanc refuses an instance without a SOP Instance UID: STOW-RS failure becomes a DataError naming the URL."""
    ds = pydicom.dcmread(RG1)
    del ds.SOPInstanceUID
    bad = tmp_path / "bad.dcm"
    ds.save_as(bad)
    before = pacs.instance_count()
    with pytest.raises(DataError, match="STOW-RS|HTTP"):
        store_instances(pacs.dicomweb_url, [bad], timeout=30)
    assert pacs.instance_count() == before
    start = time.monotonic()
    with pytest.raises(DataError, match="cannot be reached"):
        store_instances(f"http://127.0.0.1:{free_port()}/dicom-web", [RG1], timeout=5)
    assert time.monotonic() - start < 30
