"""The embedded demo dataset: determinism, counts, prevalence, valid DICOM (J2K, MONOCHROME1), SR, reports, CLI."""

from __future__ import annotations

import filecmp
import json
import os
import re
from collections import Counter

import highdicom as hd
import numpy as np
import pydicom
import pytest

from monai_medunic.cli import main as medunic_main
from monai_medunic.data.demo import (
    DEFAULT_PREVALENCE,
    DEMO_FINDINGS,
    SPANISH_NAMES,
    DemoCase,
    cli_main,
    compose_report,
    generate_demo_dataset,
    render_chest_phantom,
    sample_case,
)
from monai_medunic.data.manifest import load_manifest
from monai_medunic.errors import ConfigurationError
from monai_medunic.text.prompts import FINDING_NAMES
from monai_medunic.transforms import LoadDicomImage, classify_view, read_report_from_sr

N = 48


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    info = generate_demo_dataset(out, num_studies=N, seed=11, image_size=128, lateral_fraction=0.3, jpeg2000_fraction=0.3)
    return info


def _files(root: str) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)


def test_api_constants_match_the_prompt_tables() -> None:
    assert DEMO_FINDINGS == ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Nodule", "Consolidation", "Edema")
    assert SPANISH_NAMES["Pneumothorax"] == "Neumotórax" and SPANISH_NAMES["Pleural Effusion"] == "Derrame pleural"
    for f in DEMO_FINDINGS:
        assert FINDING_NAMES[f]["es"] == SPANISH_NAMES[f]
        assert 0.2 <= DEFAULT_PREVALENCE[f] <= 0.35


def test_deterministic_for_a_seed(tmp_path, demo) -> None:
    again = generate_demo_dataset(tmp_path / "again", num_studies=N, seed=11, image_size=128, lateral_fraction=0.3, jpeg2000_fraction=0.3)
    files = _files(demo.out_dir)
    assert files == _files(again.out_dir)
    match, mismatch, errors = filecmp.cmpfiles(demo.out_dir, again.out_dir, files, shallow=False)
    assert mismatch == [] and errors == [] and len(match) == len(files)  # byte for byte, SR included
    other = generate_demo_dataset(tmp_path / "other", num_studies=8, seed=12, image_size=128)
    first_a = pydicom.dcmread(os.path.join(demo.out_dir, "dicom/study_00001/frontal_1.dcm"))
    first_b = pydicom.dcmread(os.path.join(other.out_dir, "dicom/study_00001/frontal_1.dcm"))
    assert first_a.StudyInstanceUID != first_b.StudyInstanceUID
    # study i depends only on (seed, i): a smaller dataset is a prefix of a larger one
    prefix = generate_demo_dataset(tmp_path / "prefix", num_studies=5, seed=11, image_size=128, lateral_fraction=0.3, jpeg2000_fraction=0.3)
    assert filecmp.cmp(
        os.path.join(prefix.out_dir, "dicom/study_00005/frontal_1.dcm"),
        os.path.join(demo.out_dir, "dicom/study_00005/frontal_1.dcm"),
        shallow=False,
    )


def test_counts_splits_languages_and_info_file(demo) -> None:
    rows = [json.loads(line) for line in open(demo.manifest_path, encoding="utf-8")]
    assert sum(r.get("modality") == "CT" for r in rows) == demo.num_ct_studies == 2  # default: at least 2
    rows = [r for r in rows if r.get("modality") != "CT"]
    assert len(rows) == demo.num_images == demo.num_frontal + demo.num_lateral
    assert demo.num_frontal == N and demo.num_lateral > 0 and demo.num_sr > 0 and demo.num_jpeg2000 > 0
    studies = {r["study_uid"]: r for r in rows}
    assert len(studies) == N
    split = Counter(r["split"] for r in studies.values())
    assert split == Counter({"train": round(0.7 * N), "val": round(0.15 * N), "test": N - round(0.7 * N) - round(0.15 * N)})
    langs = Counter(r["language"] for r in studies.values())
    assert set(langs) == {"en", "es"} and min(langs.values()) >= N // 4
    assert all(set(r["translations"]) == ({"en", "es"} - {r["language"]}) for r in rows)
    assert sum("report_sr" in r for r in studies.values()) == demo.num_sr
    assert all(set(r["labels"]) == set(DEMO_FINDINGS) for r in rows)
    saved = json.load(open(os.path.join(demo.out_dir, "demo_info.json"), encoding="utf-8"))
    assert saved["num_lateral"] == demo.num_lateral and saved["findings"] == list(DEMO_FINDINGS)
    for f in DEMO_FINDINGS:
        assert demo.prevalence[f] == pytest.approx(sum(r["labels"][f] for r in studies.values()) / N)


def test_prevalence_and_normal_fraction_of_the_sampler() -> None:
    rng = np.random.default_rng(0)
    cases = [sample_case(rng, i) for i in range(4000)]
    for f in DEMO_FINDINGS:
        assert 0.2 <= np.mean([c.labels[f] for c in cases]) <= 0.35, f
    normal = np.mean([not any(c.labels.values()) for c in cases])
    assert 0.1 <= normal <= 0.25
    assert 0.45 <= np.mean([c.language == "es" for c in cases]) <= 0.55


def test_manifest_loader_filters_laterals_and_short_reports(demo) -> None:
    res = load_manifest(demo.manifest_path)
    s = res.summary
    assert s.total == demo.num_images + demo.num_ct_studies
    assert s.kept + s.num_dropped == s.total
    assert set(s.dropped) <= {"lateral_view", "short_report", "other_dimension"}
    assert s.dropped["other_dimension"] == demo.num_ct_studies  # the CT records: not for a 2D consumer
    assert all(r.view in ("frontal",) for r in res.records)  # every demo frontal is recognisable
    lateral_short = demo.num_lateral - s.dropped["lateral_view"]
    assert 0 <= lateral_short <= demo.num_short_reports
    assert s.reports_from_sr > 0
    # every lateral DICOM is classified lateral, whichever attribute encodes it
    lat = [os.path.join(d, f) for d, _, fs in os.walk(demo.out_dir) for f in fs if f.startswith("lateral")]
    assert len(lat) == demo.num_lateral and all(classify_view(p) == "lateral" for p in lat)
    sources = Counter()
    for p in lat:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        sources["vp" if ds.ViewPosition else ("po" if ds.get("PatientOrientation") else "sd")] += 1
    assert len(sources) >= 2


def test_images_decode_with_consistent_polarity(demo) -> None:
    load = LoadDicomImage()
    rows = [json.loads(line) for line in open(demo.manifest_path, encoding="utf-8")]
    seen = Counter()
    for r in rows:
        if r.get("spatial_dims") == 3:
            continue
        path = os.path.join(demo.out_dir, r["image"])
        raw = pydicom.dcmread(path)
        img = load(path)
        assert img.shape == (1, 128, 128) and 0.0 <= float(img.min()) and float(img.max()) <= 1.0
        seen[raw.PhotometricInterpretation] += 1
        seen[raw.file_meta.TransferSyntaxUID.name] += 1
        seen[f"bits{raw.BitsStored}"] += 1
        assert "^" in str(raw.PatientName) and raw.PatientID.startswith("RX") and len(raw.PatientBirthDate) == 8
        if raw.file_meta.TransferSyntaxUID == pydicom.uid.JPEG2000Lossless:
            assert raw.pixel_array.shape == (128, 128)
        a = img[0].numpy()
        if classify_view(raw) == "frontal":
            # bright means dense after loading, whatever was stored: the air outside the body is the
            # darkest, the abdomen below the diaphragm brighter than the (clear) lung fields
            abdomen = a[112:124, 48:80].mean()
            corners = np.concatenate([a[:8, :8].ravel(), a[:8, -8:].ravel()]).mean()
            assert corners < np.median(a) - 0.05 and abdomen > corners + 0.3, (path, abdomen, corners)
            if not any(r["labels"].values()):
                lungs = np.median(np.concatenate([a[30:60, 24:44].ravel(), a[30:60, 84:104].ravel()]))
                assert abdomen > lungs + 0.1, (path, abdomen, lungs)
                seen["normal_checked"] += 1
    assert seen["MONOCHROME1"] > 0 and seen["MONOCHROME2"] > 0 and seen["normal_checked"] > 0
    assert seen["JPEG 2000 Image Compression (Lossless Only)"] > 0 and seen["Explicit VR Little Endian"] > 0
    assert len([k for k in seen if k.startswith("bits")]) >= 3


def test_sr_documents_are_valid_and_reference_the_image(demo) -> None:
    rows = [json.loads(line) for line in open(demo.manifest_path, encoding="utf-8")]
    sr_rows = [r for r in rows if "report_sr" in r]
    assert sr_rows
    for r in sr_rows[:6]:
        path = os.path.join(demo.out_dir, r["report_sr"])
        sr = hd.sr.srread(path)
        assert isinstance(sr, hd.sr.ComprehensiveSR)
        image = pydicom.dcmread(os.path.join(demo.out_dir, r["image"]), stop_before_pixels=True)
        assert sr.StudyInstanceUID == image.StudyInstanceUID == r["study_uid"]
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
        assert evidence.ReferencedSOPSequence[0].ReferencedSOPInstanceUID in {image.SOPInstanceUID} | {
            pydicom.dcmread(os.path.join(demo.out_dir, x["image"]), stop_before_pixels=True).SOPInstanceUID
            for x in rows
            if x["study_uid"] == r["study_uid"]
        }
        report = read_report_from_sr(path)
        assert report.language == r["language"] and report.sections_used.startswith("findings")
        assert len(report.text.split()) >= 2


def test_reports_mention_positives_and_negate_absent_findings() -> None:
    rng = np.random.default_rng(3)
    negations = 0
    for i in range(300):
        case = sample_case(rng, i)
        report = compose_report(case, rng)
        en, es = " ".join(report["en"]).lower(), " ".join(report["es"]).lower()
        for f in DEMO_FINDINGS:
            if case.labels[f]:
                assert f.lower() in en and SPANISH_NAMES[f].lower() in es, (f, en, es)
                assert f"no {f.lower()}" not in en and f"sin {SPANISH_NAMES[f].lower()}" not in es
            else:
                neg_en = re.search(rf"\b(no|no evidence of|there is no) {f.lower()}\b", en)
                neg_es = re.search(rf"\b(sin|no hay|no se observa) {SPANISH_NAMES[f].lower()}\b", es)
                assert bool(neg_en) == bool(neg_es)
                negations += bool(neg_en)
                if not neg_en:
                    assert f.lower() not in en and SPANISH_NAMES[f].lower() not in es, (f, en, es)
    assert negations > 200


def test_each_finding_changes_the_phantom() -> None:
    """Same nuisance draw with and without one finding: the difference lies where the finding should be."""
    base = DemoCase(index=0, labels={f: 0 for f in DEMO_FINDINGS})
    img0 = render_chest_phantom(base, np.random.default_rng(5), 128)
    sizes = {}
    for f in DEMO_FINDINGS:
        case = sample_case(np.random.default_rng(1), 0, prevalence={g: float(g == f) for g in DEMO_FINDINGS})
        img1 = render_chest_phantom(case, np.random.default_rng(5), 128)
        diff = np.abs(img1 - img0)
        sizes[f] = int((diff > 0.1).sum())
        assert sizes[f] > 8, (f, sizes)
    assert sizes["Nodule"] < sizes["Consolidation"] < sizes["Cardiomegaly"] + sizes["Pleural Effusion"]


def test_cli_and_errors(tmp_path, capsys) -> None:
    out = tmp_path / "cli"
    assert cli_main(["--out", str(out), "--studies", "3", "--seed", "2", "--image-size", "96"]) == 0
    assert "wrote 3 studies" in capsys.readouterr().out
    assert len(open(out / "manifest.jsonl").read().splitlines()) >= 3
    # the dispatcher turns our typed error into a one-line message and exit code 1
    assert medunic_main(["demo-data", "--out", str(out), "--studies", "3"]) == 1
    assert "not empty" in capsys.readouterr().err
    assert medunic_main(["demo-data", "--out", str(out), "--studies", "2", "--overwrite"]) == 0
    assert len(os.listdir(out / "dicom")) == 2
    with pytest.raises(ConfigurationError):
        generate_demo_dataset(tmp_path / "x", num_studies=0)
    with pytest.raises(ConfigurationError, match="unknown findings"):
        generate_demo_dataset(tmp_path / "y", num_studies=1, prevalence={"Atelectasis": 0.3})
