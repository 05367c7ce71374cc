"""End-to-end tests of the ``cxr_findings`` MONAI Deploy app on real DICOM files (real SDK, no mocks).

Each app run is a separate process (the SDK's way of running an app) and costs several seconds, so
the runs are made once per module, two at a time, and shared by the assertions below.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from monai_medunic.deploy import classify_prepared, prepare_study, read_findings_sr
from monai_medunic.deploy.launch import format_findings, run_cxr_findings_app
from monai_medunic.deploy.results import RESULT_JSON_NAME, SR_FILE_NAME
from monai_medunic.metrics.zero_shot import ZeroShotClassifier
from monai_medunic.pretrained import load_pretrained_bundle
from monai_medunic.text.prompts import translate_finding
from monai_medunic.transforms.views import classify_view

REPO = Path(__file__).resolve().parents[2]
APP = REPO / "apps" / "cxr_findings" / "app.py"
RG1 = Path(get_testdata_file("RG1_UNCI.dcm"))
RG1_J2K = Path(get_testdata_file("RG1_J2KR.dcm"))
CT = Path(get_testdata_file("CT_small.dcm"))
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
RUN_TIMEOUT = 600


def _stack_limit() -> None:  # holoscan needs an 32 MiB stack (as `ulimit -s 32768` in the Makefile)
    soft, hard = resource.getrlimit(resource.RLIMIT_STACK)
    want = 32 * 1024 * 1024
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_STACK, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))


@dataclass
class AppRun:
    input: Path
    output: Path
    returncode: int
    stdout: str
    stderr: str
    seconds: float = 0.0
    launcher: object = None

    @property
    def log(self) -> str:
        log_file = self.output / "cxr_findings.log"
        return log_file.read_text(encoding="utf-8") if log_file.exists() else ""

    @property
    def everything_printed(self) -> str:
        return self.stdout + self.stderr + self.log

    def srs(self) -> list[Path]:
        return sorted(self.output.rglob("*.dcm")) if self.output.exists() else []


def run_app(
    input_dir: Path, output_dir: Path, model: Path, language: str | None = None, use_env: bool = False
) -> AppRun:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    for var in ("HOLOSCAN_INPUT_PATH", "HOLOSCAN_OUTPUT_PATH", "HOLOSCAN_MODEL_PATH", "CXR_FINDINGS_LANGUAGE", "MEDUNIC_LANGUAGE"):
        env.pop(var, None)
    cmd = [sys.executable, str(APP)]
    if use_env:
        env.update(
            HOLOSCAN_INPUT_PATH=str(input_dir), HOLOSCAN_OUTPUT_PATH=str(output_dir), HOLOSCAN_MODEL_PATH=str(model)
        )
        if language:
            env["CXR_FINDINGS_LANGUAGE"] = language
    else:
        cmd += ["-i", str(input_dir), "-o", str(output_dir), "-m", str(model)]
        if language:
            cmd += ["--language", language]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, env=env, cwd=output_dir.parent, capture_output=True, text=True, timeout=RUN_TIMEOUT, preexec_fn=_stack_limit
    )
    return AppRun(input_dir, output_dir, proc.returncode, proc.stdout, proc.stderr, time.perf_counter() - t0)


def _copy_with_new_uids(src: Path, dst: Path, **changes) -> pydicom.Dataset:
    ds = pydicom.dcmread(src)
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for key, value in changes.items():
        setattr(ds, key, value)
    dst.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(dst, enforce_file_format=True)
    return ds


def _folder(root: Path, name: str, *files: Path) -> Path:
    d = root / name
    d.mkdir(parents=True)
    for f in files:
        shutil.copy(f, d / f.name)
    return d


def _demo_studies(root: Path) -> Path:
    """Two held-out demo studies, each with a frontal image, a lateral view and its report as a DICOM SR."""
    from monai_medunic.data.demo import generate_demo_dataset

    generate_demo_dataset(root, num_studies=2, seed=11, lateral_fraction=1.0, sr_fraction=1.0, jpeg2000_fraction=0.5)
    return root / "dicom"


@pytest.fixture(scope="module")
def runs(tiny_bundle, tmp_path_factory) -> dict[str, AppRun]:
    """Every app run of this module, made once, two processes at a time."""
    root = tmp_path_factory.mktemp("cxr_app")
    inputs: dict[str, Path] = {
        "cr_en": _folder(root, "in_cr_en", RG1),
        "cr_es": _folder(root, "in_cr_es", RG1),
        "j2k_env": _folder(root, "in_j2k", RG1_J2K),
        "ct": _folder(root, "in_ct", CT),
        "empty": _folder(root, "in_empty"),
        "no_dicom": _folder(root, "in_no_dicom"),
    }
    (inputs["no_dicom"] / "notes.txt").write_text("not DICOM")
    (inputs["no_dicom"] / "scan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(64))
    # a lateral-only CR study: the real CR re-labelled as a left-lateral projection
    inputs["lateral"] = root / "in_lateral"
    _copy_with_new_uids(RG1, inputs["lateral"] / "lateral.dcm", ViewPosition="LL", PatientOrientation=["A", "F"])
    # the valid CR + a random-bytes file + a truncated header + a second study whose only image has
    # truncated pixel data (its header reads, its pixels do not decode)
    corrupt = _folder(root, "in_corrupt", RG1)
    raw = RG1.read_bytes()
    (corrupt / "garbage.dcm").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (corrupt / "truncated_header.dcm").write_bytes(raw[:1000])
    _copy_with_new_uids(RG1, root / "pixels.dcm")
    (corrupt / "truncated_pixels.dcm").write_bytes((root / "pixels.dcm").read_bytes()[: len(raw) // 2])
    inputs["corrupt"] = corrupt
    # several demo studies in one folder (held-out synthetic chest radiographs of the demo generator)
    inputs["demo"] = _demo_studies(root / "demo")
    not_a_bundle = root / "not_a_bundle"
    not_a_bundle.mkdir()
    (not_a_bundle / "model.pt").write_bytes(b"not a bundle")

    jobs = {
        "cr_en": dict(language="en"),
        "cr_es": dict(language="es"),
        "j2k_env": dict(language="en", use_env=True),
        "ct": {},
        "lateral": {},
        "corrupt": {},
        "demo": {},
        "empty": {},
        "no_dicom": {},
        "not_bundle": dict(model=not_a_bundle),
    }
    inputs["not_bundle"] = inputs["cr_en"]

    def job(name: str) -> tuple[str, AppRun]:
        kw = dict(jobs[name])
        model = kw.pop("model", tiny_bundle)
        if name == "demo":  # through the launcher `make demo` uses
            t0 = time.perf_counter()
            res = run_cxr_findings_app(inputs[name], root / f"out_{name}", model, language="en", timeout=RUN_TIMEOUT)
            run = AppRun(inputs[name], root / f"out_{name}", res.returncode, res.stdout, res.stderr)
            run.seconds, run.launcher = time.perf_counter() - t0, res
            return name, run
        return name, run_app(inputs[name], root / f"out_{name}", model, **kw)

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(pool.map(job, jobs))
    print("app run seconds:", {k: round(v.seconds, 1) for k, v in done.items()})
    return done


def _only_sr(run: AppRun) -> Path:
    assert run.returncode == 0, run.stderr[-3000:]
    srs = run.srs()
    assert len(srs) == 1, srs
    return srs[0]


def _expected_findings(bundle_dir: Path, source: Path, language: str) -> list[float]:
    """The same study scored in-process with the package's transforms and classifier."""
    bundle = load_pretrained_bundle(bundle_dir)
    prepared = prepare_study([("test", pydicom.dcmread(source))], bundle.image_size)
    clf = ZeroShotClassifier(bundle.model, bundle.tokenize, bundle.findings, languages=[language])
    return classify_prepared(clf, [prepared], language, bundle.name, bundle.version)[0].probs


# ----------------------------------------------------------------------------------------- real CR


@pytest.mark.slow
def test_real_cr_sr_references_study_and_holds_one_entry_per_finding(runs, tiny_bundle):
    run = runs["cr_en"]
    sr_path = _only_sr(run)
    src = pydicom.dcmread(RG1, stop_before_pixels=True)
    sr = pydicom.dcmread(sr_path)
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR and sr.Modality == "SR"
    assert sr.StudyInstanceUID == src.StudyInstanceUID
    assert sr.SeriesInstanceUID != src.SeriesInstanceUID
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
    assert evidence.StudyInstanceUID == src.StudyInstanceUID
    ref_series = evidence.ReferencedSeriesSequence[0]
    assert ref_series.SeriesInstanceUID == src.SeriesInstanceUID
    assert ref_series.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    assert sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED"
    assert sr.ContentQualification == "RESEARCH"

    bundle = load_pretrained_bundle(tiny_bundle)
    table = read_findings_sr(sr_path)  # highdicom's TID 1500 parser
    assert len(table) == len(bundle.findings) == 6
    assert [row["meaning"] for row in table] == [translate_finding(f, "en") for f in bundle.findings]
    assert table[0]["code"] == (codes.SCT.Cardiomegaly.value, "SCT")
    assert all(row["algorithm"] == (bundle.name, bundle.version) for row in table)
    # the scores are what the package computes in-process on the same file: identical pixels and model
    expected = _expected_findings(tiny_bundle, RG1, "en")
    np.testing.assert_allclose([row["probability"] for row in table], expected, atol=2e-6)
    result = json.loads((sr_path.parent / RESULT_JSON_NAME).read_text(encoding="utf-8"))
    assert result["study_instance_uid"] == src.StudyInstanceUID and result["sr_file"] == SR_FILE_NAME
    assert [f["positive"] for f in result["findings"]] == [row["positive"] for row in table]
    np.testing.assert_allclose([f["probability"] for f in result["findings"]], expected, atol=2e-6)
    # each group references the source image
    doc = hd.sr.srread(sr_path)
    for group in doc.content.get_image_measurement_groups():
        assert group.source_images[0].referenced_sop_instance_uid == src.SOPInstanceUID


def _flatten(items, depth=0) -> list[tuple]:
    """Structure of a content tree: value type, relationship, concept code (no meanings, text or numbers).

    The Present/Absent value of each finding is a result, like its probability, not structure: each
    prompt language scores on its own, so an (untrained) model may decide differently per language.
    """
    evaluation_values = {codes.SCT.Present.value, codes.SCT.Absent.value}
    out = []
    for item in items:
        name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
        code = item.ConceptCodeSequence[0] if "ConceptCodeSequence" in item else None
        out.append(
            (
                depth,
                item.get("ValueType"),
                item.get("RelationshipType"),
                (name.CodeValue if "CodeValue" in name else name.LongCodeValue, name.CodingSchemeDesignator) if name else None,
                (
                    "<present/absent>"
                    if code and code.get("CodeValue") in evaluation_values
                    else (code.get("CodeValue") or code.get("LongCodeValue"), code.CodingSchemeDesignator)
                )
                if code
                else None,
            )
        )
        if "ContentSequence" in item:
            out += _flatten(item.ContentSequence, depth + 1)
    return out


def _meanings(items) -> list[str]:
    out = []
    for item in items:
        for seq in ("ConceptNameCodeSequence", "ConceptCodeSequence"):
            if seq in item:
                out.append(str(item[seq][0].CodeMeaning))
        if "ContentSequence" in item:
            out += _meanings(item.ContentSequence)
    return out


@pytest.mark.slow
def test_english_and_spanish_srs_differ_only_in_language(runs, tiny_bundle):
    en = pydicom.dcmread(_only_sr(runs["cr_en"]))
    es = pydicom.dcmread(_only_sr(runs["cr_es"]))
    assert en.StudyInstanceUID == es.StudyInstanceUID
    language_item = ("121049", "DCM")  # TID 1204 Language of Content Item and Descendants
    structure = {
        tag: [row if row[3] != language_item else row[:4] for row in _flatten(ds.ContentSequence)]
        for tag, ds in (("en", en), ("es", es))
    }
    assert structure["en"] == structure["es"]
    assert en.ConceptNameCodeSequence[0].CodeValue == es.ConceptNameCodeSequence[0].CodeValue
    lang = {
        tag: [i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeValue == "121049"][0]
        for tag, ds in (("en", en), ("es", es))
    }
    assert lang["en"].ConceptCodeSequence[0].CodeValue == "en-US"
    assert lang["es"].ConceptCodeSequence[0].CodeValue == "es"
    bundle = load_pretrained_bundle(tiny_bundle)
    es_table, en_table = read_findings_sr(pydicom.dcmread(_only_sr(runs["cr_es"]))), read_findings_sr(en)
    assert [r["meaning"] for r in es_table] == [translate_finding(f, "es") for f in bundle.findings]
    assert "Neumotórax" in [r["meaning"] for r in es_table]  # accents survive (UTF-8)
    assert es.SpecificCharacterSet == en.SpecificCharacterSet == "ISO_IR 192"
    assert set(_meanings(es.ContentSequence)) - set(_meanings(en.ContentSequence))  # Spanish words in es only
    assert [r["code"] for r in es_table] == [r["code"] for r in en_table]
    # scores come from the prompts of each language (Med-UniC scores each language separately)
    np.testing.assert_allclose([r["probability"] for r in es_table], _expected_findings(tiny_bundle, RG1, "es"), atol=2e-6)
    texts = {
        tag: [i.TextValue for i in ds.ContentSequence if i.ValueType == "TEXT"] for tag, ds in (("en", en), ("es", es))
    }
    assert any("Not a diagnosis" in t for t in texts["en"])
    assert any("No es un diagnóstico" in t for t in texts["es"])
    assert en.SeriesDescription != es.SeriesDescription


@pytest.mark.slow
def test_jpeg2000_study_via_holoscan_environment_variables(runs):
    run = runs["j2k_env"]
    sr = pydicom.dcmread(_only_sr(run))
    src = pydicom.dcmread(RG1_J2K, stop_before_pixels=True)
    assert str(src.file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    assert sr.StudyInstanceUID == src.StudyInstanceUID
    ref = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert ref.ReferencedSOPInstanceUID == src.SOPInstanceUID
    # lossless JPEG 2000 decodes to the same pixels as the uncompressed file: same scores
    uncompressed = read_findings_sr(_only_sr(runs["cr_en"]))
    np.testing.assert_allclose(
        [r["probability"] for r in read_findings_sr(sr)], [r["probability"] for r in uncompressed], atol=1e-6
    )


@pytest.mark.slow
def test_dcmtk_reads_the_sr(runs):
    sr_path = _only_sr(runs["cr_es"])
    dump = subprocess.run(["dsrdump", "+U8", str(sr_path)], capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    messages = (dump.stdout + dump.stderr).splitlines()
    assert not [m for m in messages if m.startswith(("E:", "F:"))], messages
    # DCMTK 3.6.7's VR checker does not know ISO_IR 192: the only warning tolerated is that one
    assert all("VR checker does not support this Specific Character Set" in m for m in messages if m.startswith("W:"))
    out = dump.stdout
    assert "Comprehensive 3D SR Document" in out
    assert out.count('(,,"Measurement Group")') == 6
    assert '"Derrame pleural"' in out and '"Neumotórax"' in out
    assert re.search(r'\(52101004,SCT,"Presente"\)|\(272519000,SCT,"Ausente"\)', out)
    assert 'TEXT:(,,"Algorithm Name")="cxr_medunic_pretrain"' in out
    src = pydicom.dcmread(RG1, stop_before_pixels=True)
    header = subprocess.run(["dcmdump", "-Un", "+U8", str(sr_path)], capture_output=True, text=True, timeout=60)
    assert header.returncode == 0, header.stderr
    expected = {
        "(0008,0016)": COMPREHENSIVE_3D_SR,
        "(0008,0060)": "SR",
        "(0020,000d)": str(src.StudyInstanceUID),
        "(0008,0005)": "ISO_IR 192",
        "(0040,a491)": "COMPLETE",
        "(0040,a493)": "UNVERIFIED",
        "(0018,9004)": "RESEARCH",
    }
    for tag, value in expected.items():
        line = next((ln for ln in header.stdout.splitlines() if ln.startswith(tag)), "")
        assert value in line, (tag, line)


# ------------------------------------------------------------------------------------------ studies


@pytest.mark.slow
def test_one_sr_per_demo_study_from_its_frontal_image(runs):
    run = runs["demo"]
    assert run.returncode == 0, run.stderr[-3000:]
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in run.input.rglob("*") if f.is_file()]
    views = {str(h.SOPInstanceUID): classify_view(h) for h in headers if h.Modality in ("CR", "DX")}
    assert sorted(views.values()) == ["frontal", "frontal", "lateral", "lateral"]
    assert sum(h.Modality == "SR" for h in headers) == 2  # the demo reports, not eligible
    study_uids = {str(h.StudyInstanceUID) for h in headers}
    srs = run.srs()
    assert len(study_uids) == 2 and len(srs) == 2
    assert {str(pydicom.dcmread(p).StudyInstanceUID) for p in srs} == study_uids
    for p in srs:
        sr = pydicom.dcmread(p)
        assert p.parent.name == str(sr.StudyInstanceUID)
        ref = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert views[str(ref.ReferencedSOPInstanceUID)] == "frontal"
        assert len(read_findings_sr(p)) == 6
        assert json.loads((p.parent / RESULT_JSON_NAME).read_text(encoding="utf-8"))["view"] == "frontal"
    # what `make demo` prints: the launcher's view of the same outputs
    launched = run.launcher
    assert launched.srs == srs and len(launched.results) == 2
    text = format_findings(launched.results)
    for res in launched.results:
        assert f"study {res['study_instance_uid']}" in text
        for f in res["findings"]:
            assert re.search(rf"{re.escape(f['name'])}\s+{f['probability']:.3f}\s+{'positive' if f['positive'] else 'negative'}", text)


# ------------------------------------------------------------------------------------ bad studies


@pytest.mark.slow
@pytest.mark.parametrize("case", ["lateral", "ct"])
def test_no_eligible_series_exits_cleanly_without_sr(runs, case):
    run = runs[case]
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.srs() == []
    assert "no eligible series" in run.stdout
    assert "Traceback" not in run.stderr
    if case == "lateral":
        assert "lateral view" in run.log


@pytest.mark.slow
def test_corrupt_files_are_skipped_with_a_warning(runs):
    run = runs["corrupt"]
    sr = pydicom.dcmread(_only_sr(run))
    assert sr.StudyInstanceUID == pydicom.dcmread(RG1, stop_before_pixels=True).StudyInstanceUID
    log = run.log
    assert re.search(r"WARNING.*skipped input file garbage\.dcm: not a DICOM file", log)
    assert re.search(r"WARNING.*skipped input file truncated_header\.dcm: truncated or corrupt", log)
    truncated_uid = pydicom.dcmread(run.input / "truncated_pixels.dcm", stop_before_pixels=True).SOPInstanceUID
    assert re.search(rf"WARNING.*instance {re.escape(truncated_uid)} not used: .*cannot decode the pixel data", log)
    assert "2 unreadable file(s) skipped" in run.stdout
    assert "Traceback" not in run.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    "case, message",
    [("empty", "input folder is empty"), ("no_dicom", "no DICOM file in the input folder"), ("not_bundle", "not a trained bundle")],
)
def test_bad_input_is_a_clear_error_with_nonzero_exit(runs, case, message):
    run = runs[case]
    assert run.returncode != 0
    assert run.srs() == []
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("cxr_findings: error:")]
    assert len(errors) == 1 and message in errors[0], run.stderr[-3000:]
    assert "Traceback" not in run.stderr and "GXF" not in run.stderr


# --------------------------------------------------------------------------------------------- PHI


@pytest.mark.slow
def test_no_patient_identifiers_in_output_or_logs(runs):
    src = pydicom.dcmread(RG1, stop_before_pixels=True)
    phi = [str(src.PatientName), str(src.PatientID), str(src.PatientName).split("^")[0]]
    demo = [pydicom.dcmread(f, stop_before_pixels=True) for f in runs["demo"].input.rglob("*.dcm")]
    demo_phi = {str(h.PatientName) for h in demo} | {str(h.PatientID) for h in demo}
    for name in ("cr_en", "cr_es", "j2k_env", "corrupt", "lateral", "demo"):
        run = runs[name]
        values = phi + sorted(demo_phi) if name == "demo" else phi
        assert run.log, f"{name}: the app wrote no log"
        text = run.everything_printed
        for value in values:
            assert value not in text, f"{name}: a patient identifier appears in the app's output"
        for json_file in run.output.rglob(RESULT_JSON_NAME):
            for value in values:
                assert value not in json_file.read_text(encoding="utf-8")


def test_help_shows_the_apps_own_options_before_the_sdks() -> None:
    proc = subprocess.run([sys.executable, str(APP), "--help"], capture_output=True, text=True, timeout=300, preexec_fn=_stack_limit)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ours = proc.stdout.index("cxr_findings options:")
    for option in ("--language", "--dicomweb", "--study", "-m, --model"):
        assert option in proc.stdout[ours:], option
    assert proc.stdout.index("--driver") > ours  # the SDK's options follow ours
