"""The MONAI Label app with a trained UniMedI bundle: CT slice selection over HTTP for a CT series held in
a private Orthanc (uploaded with STOW-RS), against the inference API on the same series folder; 422 for a
bad ``k`` or ``text``; clean stop. One server for the module (the Med-UniC app's tests are in
``test_monailabel_app.py``)."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pydicom
import pytest
import requests
import torch

from conftest import DEMO_FINDING_KEYS, REPO_ROOT, TINY_BERT, make_tiny_tokenizer
from label_server import LabelServer
from orthanc import OrthancServer

TASK = "ct_slice_selection"
HTTP_TIMEOUT = 120
TEXT = "Nodule in the right lower lobe."


@pytest.fixture(scope="module")
def unimedi_bundle(tmp_path_factory) -> Path:
    from monai_medunic.networks import UniMedI
    from monai_medunic.pretrained import export_pretrained_bundle

    root = tmp_path_factory.mktemp("label_ct") / "cxr_ct_unimedi_pretrain"
    shutil.copytree(REPO_ROOT / "bundles" / "cxr_ct_unimedi_pretrain", root, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    tok = make_tiny_tokenizer(root / "tok_src")
    torch.manual_seed(0)
    model = UniMedI("vit_tiny", text_config=dict(TINY_BERT, vocab_size=len(tok)), img_size=32, volume_size=(16, 32, 32),
                    embed_dim=16, num_slices=2, distill_dim=16, distill_hidden_dim=16, distill_bottleneck_dim=8).eval()
    export_pretrained_bundle(model, tok, root, DEMO_FINDING_KEYS, max_length=32, method_settings={"volume_window": "lung"})
    shutil.rmtree(root / "tok_src")
    return root


@pytest.fixture(scope="module")
def ct_stack(unimedi_bundle, tmp_path_factory):
    from monai_medunic.data.demo import generate_demo_dataset

    root = tmp_path_factory.mktemp("label_ct_stack")
    generate_demo_dataset(root / "demo", num_studies=1, num_ct_studies=1, ct_shape=(16, 48, 48), seed=3)
    series_dir = next(p for p in sorted((root / "demo" / "ct").iterdir()) if p.is_dir())
    files = sorted(series_dir.rglob("*.dcm"))
    pacs = OrthancServer(root / "pacs").start()
    label = None
    try:
        pacs.store_files(files)  # STOW-RS
        conf = {"bundle_path": str(unimedi_bundle), "dicomweb_search_filter": '{"Modality": "CT"}'}
        label = LabelServer(root / "label", pacs.dicomweb_url, conf).start()
    except BaseException:
        if label is not None:
            label.stop()
        pacs.stop()
        raise
    header = pydicom.dcmread(files[0], stop_before_pixels=True)
    yield {"pacs": pacs, "label": label, "series_dir": series_dir, "series": str(header.SeriesInstanceUID),
           "study": str(header.StudyInstanceUID), "num_files": len(files)}
    label.stop()
    pacs.stop()


def _infer(stack, params: dict, image: str | None = None) -> requests.Response:
    import json

    return requests.post(f"{stack['label'].url}/infer/{TASK}", params={"image": image or stack["series"], "output": "json"},
                         data={"params": json.dumps(params)}, timeout=HTTP_TIMEOUT)


@pytest.mark.slow
def test_info_lists_slice_selection_and_the_datastore_lists_the_ct_series(ct_stack):
    info = requests.get(f"{ct_stack['label'].url}/info/", timeout=HTTP_TIMEOUT).json()
    assert TASK in info["models"] and {"zero_shot_findings", "grounding"} <= set(info["models"])
    task = info["models"][TASK]
    assert task["dimension"] == 3 and task["config"]["k"] == 2 and "not a diagnosis" in task["description"]
    assert info["datastore"]["total"] == 1


@pytest.mark.slow
def test_slices_of_a_ct_series_in_the_pacs_match_the_api_on_the_folder(ct_stack, unimedi_bundle):
    from monai_medunic.pretrained import load_inference

    api = load_inference(unimedi_bundle)
    for params, method in (({"text": TEXT, "k": 2}, "text"), ({}, "attention")):
        reply = _infer(ct_stack, params)
        assert reply.status_code == 200, reply.text[:2000]
        answer = reply.json()
        direct = api.select_slices(ct_stack["series_dir"], params.get("text"), k=params.get("k"))
        assert answer["method"] == method == direct.method and answer["num_slices"] == ct_stack["num_files"]
        assert [s["slice"] for s in answer["selected"]] == direct.indices and len(direct.indices) == 2
        assert answer["scores"] == pytest.approx(direct.scores.tolist(), abs=1e-5)
        assert answer["source"] == {"study_instance_uid": ct_stack["study"], "series_instance_uid": ct_stack["series"], "modality": "CT"}


@pytest.mark.slow
def test_bad_slice_selection_requests_get_422(ct_stack):
    for params, needle in (({"k": 0}, "parameter 'k'"), ({"k": 5}, "token slabs"), ({"k": "2"}, "parameter 'k'"),
                           ({"text": 5}, "parameter 'text'")):
        reply = _infer(ct_stack, params)
        assert reply.status_code == 422 and needle in reply.text, (params, reply.status_code, reply.text[:500])


@pytest.mark.slow
def test_ct_servers_stop_cleanly(ct_stack):
    code = ct_stack["label"].stop()
    ct_stack["pacs"].stop()
    assert code in (0, -signal.SIGTERM), ct_stack["label"].log_tail()
    assert not ct_stack["label"].session_alive() and not ct_stack["pacs"].session_alive()
