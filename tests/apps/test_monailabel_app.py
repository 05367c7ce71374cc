"""The MONAI Label app ``apps/monailabel_medunic`` behind a real PACS, over HTTP (no mocks).

A private Orthanc with its DICOMweb plugin holds the studies (uploaded with STOW-RS): the real
MONOCHROME1 chest CR of pydicom-data and demo studies of the project's generator (``medunic
demo-data``: CR/DX frontal and lateral views, JPEG 2000, MONOCHROME1, SR reports). ``monailabel
start_server`` runs in MONAI Label's own environment (``.venv-label``) with ``--studies`` on
Orthanc's DICOMweb root and ``--conf bundle_path`` on a tiny trained-bundle layout. The servers are
started once per module and stopped, with a check for leftover processes, by the last test.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
import torch
from pydicom.data import get_testdata_file

from label_server import LabelServer
from monai_medunic.pretrained import inference_preprocessing, load_pretrained_bundle, zero_shot_classifier
from monai_medunic.text.prompts import translate_finding
from monai_medunic.transforms.pipelines import model_input_transform
from orthanc import OrthancServer
from tiny_bundles import untrained_segmentation_bundle

RG1 = Path(get_testdata_file("RG1_UNCI.dcm"))
TASK = "zero_shot_findings"
GROUNDING = "grounding"
SEGMENTATION = "segmentation"
HTTP_TIMEOUT = 120
TOL = 1e-5


class Stack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.pacs: OrthancServer | None = None
        self.label: LabelServer | None = None
        self.deploy = None
        self.bad_start: tuple[int, str] | None = None
        self.series: dict[str, dict] = {}  # SeriesInstanceUID -> header facts of the uploaded file

    def infer(self, image: str | None, params: dict | str | None = None, task: str = TASK, query_output: str = "json",
              **kw) -> requests.Response:
        query = {"output": query_output}
        if image is not None:
            query["image"] = image
        data = {"params": params if isinstance(params, str) else json.dumps(params or {})}
        return requests.post(f"{self.label.url}/infer/{task}", params=query, data=data, timeout=HTTP_TIMEOUT, **kw)


def _headers(files: list[Path]) -> dict[str, dict]:
    out = {}
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        out[str(ds.SeriesInstanceUID)] = {
            "file": f,
            "modality": str(ds.Modality),
            "study": str(ds.StudyInstanceUID),
            "sop": str(ds.SOPInstanceUID),
            "name": f.name,
            "photometric": str(ds.get("PhotometricInterpretation", "")),
        }
    return out


@pytest.fixture(scope="module")
def seg_bundle(tmp_path_factory) -> Path:
    """A cxr_segmentation bundle in its trained layout, ResNet-18 at 64 px, untrained (logits near 0: real masks)."""
    return untrained_segmentation_bundle(tmp_path_factory.mktemp("label_seg"))


@pytest.fixture(scope="module")
def stack(tiny_bundle, seg_bundle, tmp_path_factory):
    from monai_medunic.data.demo import generate_demo_dataset
    from monai_medunic.deploy.launch import run_cxr_findings_app

    root = tmp_path_factory.mktemp("label_stack")
    s = Stack(root)
    rg1_dir = root / "rg1"
    rg1_dir.mkdir()
    shutil.copy(RG1, rg1_dir / "rg1.dcm")
    generate_demo_dataset(root / "demo", num_studies=3, seed=11, lateral_fraction=1.0, sr_fraction=1.0, jpeg2000_fraction=0.5)
    files = [rg1_dir / "rg1.dcm", *sorted((root / "demo" / "dicom").rglob("*.dcm"))]
    s.series = _headers(files)

    def deploy_run():  # the Deploy app on the same file, meanwhile
        return run_cxr_findings_app(rg1_dir, root / "deploy_out", tiny_bundle, language="en", timeout=600)

    def bad_start():  # a server given a bundle path that does not exist must stop with a message
        bad = LabelServer(root / "bad", "http://127.0.0.1:1/dicom-web", {"bundle_path": str(root / "no_bundle")}).launch()
        code = bad.wait_exit(300)
        return code, bad.log_tail(20000)

    with ThreadPoolExecutor(max_workers=2) as pool:
        deploy_future = pool.submit(deploy_run)
        s.pacs = OrthancServer(root / "pacs").start()
        try:
            s.pacs.store_files(files)  # STOW-RS
            conf = {"bundle_path": str(tiny_bundle), "segmentation_bundle_path": str(seg_bundle)}
            s.label = LabelServer(root / "label", s.pacs.dicomweb_url, conf).start()
            bad_future = pool.submit(bad_start)
            s.deploy = deploy_future.result()
            s.bad_start = bad_future.result()
        except BaseException:
            if s.label is not None:
                s.label.stop()
            s.pacs.stop()
            raise
    yield s
    if s.label is not None:
        s.label.stop()
    s.pacs.stop()


def _direct(bundle_dir: Path, source: Path, language: str) -> list[float]:
    """The file scored in-process with the bundle's own preprocessing and classifier (no app, no server)."""
    bundle = load_pretrained_bundle(bundle_dir)
    image = inference_preprocessing(bundle_dir, keys="image", frame=0)({"image": str(source)})["image"]
    clf = zero_shot_classifier(bundle_dir, bundle.model, [language])
    return clf(torch.as_tensor(image)[None], language).probs[0].tolist()


def _naive(bundle_dir: Path, source: Path, language: str) -> list[float]:
    """What a NIfTI conversion hands a model: the stored values, min-max scaled (no VOI LUT, no MONOCHROME1 inversion)."""
    bundle = load_pretrained_bundle(bundle_dir)
    raw = pydicom.dcmread(source).pixel_array.astype(np.float32)
    raw = (raw - raw.min()) / (raw.max() - raw.min())
    image = model_input_transform(bundle.image_size)(torch.as_tensor(raw)[None])
    clf = zero_shot_classifier(bundle_dir, bundle.model, [language])
    return clf(torch.as_tensor(image)[None], language).probs[0].tolist()


def _probs(answer: dict) -> list[float]:
    return [f["probability"] for f in answer["findings"]]


# ----------------------------------------------------------------------------------------- /info


@pytest.mark.slow
def test_info_lists_the_tasks_built_from_the_bundle(stack, tiny_bundle):
    info = requests.get(f"{stack.label.url}/info/", timeout=HTTP_TIMEOUT).json()
    bundle = load_pretrained_bundle(tiny_bundle)
    assert sorted(info["models"]) == [GROUNDING, SEGMENTATION, TASK]
    assert info["models"][SEGMENTATION]["labels"] == ["Nodule", "Pneumothorax", "Pleural Effusion", "Consolidation"]
    grounding = info["models"][GROUNDING]
    assert grounding["type"] == "segmentation" and grounding["labels"] == ["grounding"]
    assert grounding["config"]["kind"] == ["contribution", "cosine"] and "not a diagnosis" in grounding["description"]
    task = info["models"][TASK]
    assert task["type"] == "classification" and task["dimension"] == 2
    assert task["labels"] == bundle.findings
    assert task["config"]["language"] == ["en", "es"]  # the default first, then the bundle's other languages
    assert bundle.name in task["description"] and "not a diagnosis" in task["description"]
    assert set(info["labels"]) == {*bundle.findings, "grounding"}  # MONAI Label's union over the tasks
    # the datastore lists the PACS's CR series (its QIDO-RS filter), read from Orthanc
    cr_series = [uid for uid, h in stack.series.items() if h["modality"] == "CR"]
    assert info["datastore"]["total"] == len(cr_series) >= 2


# ------------------------------------------------------------------------------ the MONOCHROME1 CR


@pytest.mark.slow
def test_monochrome1_cr_from_pacs_matches_deploy_app_and_direct_scoring(stack, tiny_bundle):
    src = pydicom.dcmread(RG1, stop_before_pixels=True)
    assert src.PhotometricInterpretation == "MONOCHROME1"
    series = str(src.SeriesInstanceUID)
    answers = {}
    for language in ("en", "es"):
        reply = stack.infer(series, {"language": language})
        assert reply.status_code == 200, reply.text[:2000]
        answers[language] = reply.json()
    en = answers["en"]
    assert en["source"] == {
        "study_instance_uid": str(src.StudyInstanceUID),
        "series_instance_uid": series,
        "sop_instance_uid": str(src.SOPInstanceUID),
        "modality": "CR",
        "view": "frontal",
        "skipped_instances": 0,
    }
    bundle = load_pretrained_bundle(tiny_bundle)
    assert [f["finding"] for f in en["findings"]] == bundle.findings
    assert [f["name"] for f in answers["es"]["findings"]] == [translate_finding(k, "es") for k in bundle.findings]
    assert en["algorithm"] == {"name": bundle.name, "version": bundle.version}
    assert [p["score"] for p in en["prediction"]] == _probs(en)  # MONAI Label's classification layout
    for language, answer in answers.items():
        probs = _probs(answer)
        assert [f["positive"] for f in answer["findings"]] == [p > 0.5 for p in probs]  # s_pos > s_neg
        # the original DICOM through LoadDicomImage, as scoring the file directly (pydicom 3 here, 2 in MONAI Label)
        np.testing.assert_allclose(probs, _direct(tiny_bundle, RG1, language), atol=TOL)
    # the Deploy app on the same file: same findings, same scores
    assert stack.deploy.returncode == 0, stack.deploy.stderr[-3000:]
    (deploy,) = stack.deploy.results
    assert [f["finding"] for f in deploy["findings"]] == [f["finding"] for f in en["findings"]]
    assert [f["positive"] for f in deploy["findings"]] == [f["positive"] for f in en["findings"]]
    np.testing.assert_allclose([f["probability"] for f in deploy["findings"]], _probs(en), atol=TOL)
    # the test can tell: the stored values without the VOI LUT and the MONOCHROME1 inversion score otherwise
    assert np.abs(np.subtract(_naive(tiny_bundle, RG1, "en"), _probs(en))).max() > 100 * TOL
    # what the datastore cached is the original Part 10 file, not a NIfTI conversion
    cached = sorted(p for p in stack.label.cache_dir.rglob("*") if p.is_file() and series in str(p))
    assert [p.suffix for p in cached] == [".dcm"]
    assert pydicom.dcmread(cached[0], stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME1"
    assert not list(stack.label.cache_dir.rglob("*.nii*"))


@pytest.mark.slow
def test_uploaded_file_gets_the_same_answer(stack):
    series = str(pydicom.dcmread(RG1, stop_before_pixels=True).SeriesInstanceUID)
    from_pacs = stack.infer(series).json()
    with open(RG1, "rb") as fh:
        reply = stack.infer(None, files={"file": ("rg1.dcm", fh, "application/dicom")})
    assert reply.status_code == 200, reply.text[:2000]
    assert reply.json()["source"] == from_pacs["source"]
    np.testing.assert_allclose(_probs(reply.json()), _probs(from_pacs), atol=1e-7)


# ------------------------------------------------------------------------------------- grounding


@pytest.mark.slow
def test_grounding_map_of_a_free_text_prompt_returned_as_a_label(stack, tiny_bundle, tmp_path):
    import nibabel as nib

    from monai_medunic.pretrained import load_inference

    src = pydicom.dcmread(RG1, stop_before_pixels=True)
    series, text = str(src.SeriesInstanceUID), "Derrame pleural izquierdo"
    reply = stack.infer(series, {"text": text}, task=GROUNDING)
    assert reply.status_code == 200, reply.text[:2000]
    answer = reply.json()
    assert answer["text"] == text and answer["kind"] == "contribution" and answer["label"] == "heatmap"
    assert answer["source"]["sop_instance_uid"] == str(src.SOPInstanceUID)
    # the API on the file itself: same score, same map (the server reads the original MONOCHROME1 instance)
    direct = load_inference(tiny_bundle).similarity_map(RG1, text)
    assert answer["score"] == pytest.approx(direct.score, abs=TOL)
    assert answer["map"]["grid_mean"] == pytest.approx(answer["score"], abs=TOL)  # the documented identity
    assert answer["map"]["min"] == pytest.approx(float(direct.map.min()), abs=TOL)
    assert answer["map"]["max"] == pytest.approx(float(direct.map.max()), abs=TOL)
    assert answer["map"]["shape"] == [src.Rows, src.Columns]
    # the label file: the map scaled to 0..255 on the radiograph's rows and columns
    image = stack.infer(series, {"text": text}, task=GROUNDING, query_output="image")
    assert image.status_code == 200 and image.content[:2] == b"\x1f\x8b"  # gzipped NIfTI
    (tmp_path / "heat.nii.gz").write_bytes(image.content)
    heat = np.asarray(nib.load(tmp_path / "heat.nii.gz").dataobj)
    scaled = (direct.map - direct.map.min()) / (direct.map.max() - direct.map.min())
    assert heat.shape == (src.Rows, src.Columns) and heat.dtype == np.uint8
    assert np.abs(heat.astype(int) - np.round(scaled * 255)).max() <= 1
    mask = stack.infer(series, {"text": text, "label": "mask", "threshold": 0.7}, task=GROUNDING, query_output="image")
    (tmp_path / "mask.nii.gz").write_bytes(mask.content)
    binary = np.asarray(nib.load(tmp_path / "mask.nii.gz").dataobj)
    assert set(np.unique(binary)) <= {0, 1} and abs(int(binary.sum()) - int((scaled >= 0.7).sum())) <= 0.001 * binary.size


@pytest.mark.slow
def test_segmentation_masks_from_the_segmentation_bundle_returned_as_a_label(stack, seg_bundle, tmp_path):
    import nibabel as nib

    from monai_medunic.networks.dense import predict_masks
    from monai_medunic.pretrained import load_segmentation_bundle
    from monai_medunic.transforms.radiograph import LoadRadiograph

    src = pydicom.dcmread(RG1, stop_before_pixels=True)
    series = str(src.SeriesInstanceUID)
    reply = stack.infer(series, {}, task=SEGMENTATION)
    assert reply.status_code == 200, reply.text[:2000]
    answer = reply.json()
    assert answer["source"]["sop_instance_uid"] == str(src.SOPInstanceUID) and answer["shape"] == [src.Rows, src.Columns]
    # in-process: the original MONOCHROME1 instance, the training resize, the bundle's network and threshold
    seg = load_segmentation_bundle(seg_bundle)
    image = LoadRadiograph()(RG1)
    x = torch.as_tensor(model_input_transform(seg.image_size)(image))[None].float()
    masks = predict_masks(seg.network, x, seg.threshold, (src.Rows, src.Columns))[0].numpy()
    assert [f["finding"] for f in answer["findings"]] == seg.findings
    assert [f["pixels"] for f in answer["findings"]] == [int(m.sum()) for m in masks]
    assert 0 < sum(f["pixels"] for f in answer["findings"]) < len(seg.findings) * src.Rows * src.Columns  # real masks
    label_file = stack.infer(series, {}, task=SEGMENTATION, query_output="image")
    assert label_file.status_code == 200
    (tmp_path / "seg.nii.gz").write_bytes(label_file.content)
    label = np.asarray(nib.load(tmp_path / "seg.nii.gz").dataobj)
    expected = np.zeros(masks.shape[1:], np.uint8)
    for i, m in enumerate(masks):
        expected[m] = i + 1
    assert label.shape == (src.Rows, src.Columns) and np.array_equal(label, expected)


# ---------------------------------------------------------------------------------- demo studies


@pytest.mark.slow
def test_demo_studies_held_in_the_pacs(stack, tiny_bundle):
    frontal = [(uid, h) for uid, h in stack.series.items() if h["name"].startswith("frontal")]
    lateral = [(uid, h) for uid, h in stack.series.items() if h["name"].startswith("lateral")]
    reports = [(uid, h) for uid, h in stack.series.items() if h["modality"] == "SR"]
    assert len(frontal) == len(lateral) == len(reports) == 3
    for uid, h in frontal:
        reply = stack.infer(uid)
        assert reply.status_code == 200, (h["name"], reply.text[:2000])
        answer = reply.json()
        assert answer["source"]["sop_instance_uid"] == h["sop"] and answer["source"]["study_instance_uid"] == h["study"]
        assert answer["language"] == "en"
        np.testing.assert_allclose(_probs(answer), _direct(tiny_bundle, h["file"], "en"), atol=TOL)
    for uid, _ in lateral:  # lateral views are never scored
        reply = stack.infer(uid)
        assert reply.status_code == 422 and "lateral view" in reply.json()["detail"], reply.text[:500]
    for uid, _ in reports:  # a report series is not an image
        reply = stack.infer(uid)
        assert reply.status_code == 422 and "modality SR is not CR/DX" in reply.json()["detail"], reply.text[:500]


# ----------------------------------------------------------------------------- malformed requests


def _bad_requests(series: str) -> list[tuple[str, dict, int, str]]:
    return [
        ("unknown task", dict(task="segment_everything", image=series), 404, "unknown infer task 'segment_everything'"),
        ("unknown image", dict(image="1.2.826.0.1.3680043.9.7133.999.1"), 404, "PACS holds no series"),
        ("image not a UID", dict(image="not-a-uid"), 422, "must be a DICOM SeriesInstanceUID"),
        ("server path as image", dict(image="/etc"), 422, "must be a DICOM SeriesInstanceUID"),
        ("relative path as image", dict(image="../../etc"), 422, "must be a DICOM SeriesInstanceUID"),
        ("no image", dict(image=None), 422, "no image"),
        ("bad language", dict(image=series, params={"language": "fr"}), 422, "parameter 'language'"),
        ("language not a string", dict(image=series, params={"language": 3}), 422, "parameter 'language'"),
        ("bad device", dict(image=series, params={"device": "tpu"}), 422, "parameter 'device'"),
        ("params not JSON", dict(image=series, params="{language: es"), 422, "params must be a JSON object"),
        ("grounding without text", dict(task=GROUNDING, image=series, params={}), 422, "parameter 'text': is required"),
        ("grounding bad kind", dict(task=GROUNDING, image=series, params={"text": "effusion", "kind": "gradcam"}), 422,
         "parameter 'kind'"),
        ("grounding bad threshold", dict(task=GROUNDING, image=series, params={"text": "effusion", "threshold": 2}), 422,
         "parameter 'threshold'"),
    ]


@pytest.mark.slow
def test_malformed_requests_get_4xx_with_a_message(stack):
    series = str(pydicom.dcmread(RG1, stop_before_pixels=True).SeriesInstanceUID)
    for name, kw, status, message in _bad_requests(series):
        kw = dict(kw)
        t0 = time.perf_counter()
        reply = stack.infer(kw.pop("image"), kw.pop("params", None), **({"task": kw["task"]} if "task" in kw else {}))
        assert reply.status_code == status, (name, reply.status_code, reply.text[:500])
        assert message in reply.json()["detail"], (name, reply.text[:500])
        assert time.perf_counter() - t0 < 30, name
    # the server is still there and answers at once
    t0 = time.perf_counter()
    assert requests.get(f"{stack.label.url}/info/", timeout=10).status_code == 200
    assert stack.infer(series).status_code == 200
    assert time.perf_counter() - t0 < 30
    log = stack.label.log_tail(10**7)
    assert "Traceback" not in log.split("Application startup complete")[-1]
    # no patient identifier in the server's log
    src = pydicom.dcmread(RG1, stop_before_pixels=True)
    for value in {str(src.PatientName), str(src.PatientID)} - {""}:
        assert value not in log


@pytest.mark.slow
def test_a_bundle_path_that_is_not_a_bundle_stops_the_server_with_a_message(stack):
    code, log = stack.bad_start
    assert code != 0
    assert "--conf bundle_path" in log and "no_bundle: not a folder" in log


# ------------------------------------------------------------------------------------------ stop


def _port_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_servers_stop_cleanly_without_leftover_processes(stack):
    label_port, pacs_port, dicom_port = stack.label.port, stack.pacs.http_port, stack.pacs.dicom_port
    t0 = time.perf_counter()
    code = stack.label.stop()
    stack.pacs.stop()
    assert time.perf_counter() - t0 < 60
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: exit status -SIGTERM (or 0)
    assert code in (0, -signal.SIGTERM), stack.label.log_tail()
    assert "Application shutdown complete" in stack.label.log_tail()
    assert not stack.label.session_alive() and not stack.pacs.session_alive()
    assert _port_closed(label_port) and _port_closed(pacs_port) and _port_closed(dicom_port)
    assert "Orthanc has stopped" in stack.pacs.log_tail()
