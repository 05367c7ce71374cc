"""The one-call inference API of monai_medunic.pretrained (PretrainedInference), against hand computations.

The bundles here are tiny Med-UniC networks (ResNet-18 and ViT-tiny image encoders) whose projector
BatchNorm statistics and affine parameters are set to random values before export, so that the
projector of the similarity map is a real ``Linear -> BN -> ReLU -> Linear -> BN`` and not the
identity-like BatchNorm of an untrained network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pydicom.data import get_testdata_file

from conftest import DEMO_FINDING_KEYS, REPO_ROOT, TINY_BERT, make_tiny_tokenizer
from monai_medunic.errors import ConfigurationError, DataError, ShapeMismatchError
from monai_medunic.metrics.zero_shot import ZeroShotClassifier
from monai_medunic.pretrained import SimilarityMap, load_inference
from monai_medunic.text.prompts import build_prompts, translate_finding
from monai_medunic.transforms import LoadDicomImage

RG1 = Path(get_testdata_file("RG1_UNCI.dcm"))
TEXT = "Pleural Effusion"


@pytest.fixture(scope="module")
def small_rg1(tmp_path_factory) -> Path:
    """RG1_UNCI decimated by 8 (245 x 231), still MONOCHROME1 with its window: the LUT semantics at a small cost."""
    ds = pydicom.dcmread(RG1)
    arr = np.ascontiguousarray(ds.pixel_array[::8, ::8])
    ds.Rows, ds.Columns = arr.shape
    ds.PixelData = arr.tobytes()
    path = tmp_path_factory.mktemp("rg1") / "rg1_small.dcm"
    ds.save_as(path)
    return path


def _export(root: Path, encoder: str, img_size: int) -> Path:
    from monai_medunic.networks import MedUniC
    from monai_medunic.pretrained import export_pretrained_bundle

    shutil.copytree(REPO_ROOT / "bundles" / "cxr_medunic_pretrain", root, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    tok = make_tiny_tokenizer(root / "tok_src")
    torch.manual_seed(1)
    model = MedUniC(encoder, text_config=dict(TINY_BERT, vocab_size=len(tok)), img_size=img_size, embed_dim=24, ctr_dim=32)
    g = torch.Generator().manual_seed(2)
    for bn in (m for m in model.image_projection if isinstance(m, torch.nn.BatchNorm1d)):
        bn.running_mean.copy_(torch.randn(bn.num_features, generator=g) * 0.3)
        bn.running_var.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        if bn.affine:
            bn.weight.data.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
            bn.bias.data.copy_(torch.randn(bn.num_features, generator=g) * 0.2)
    export_pretrained_bundle(model.eval(), tok, root, findings=DEMO_FINDING_KEYS, max_length=32)
    shutil.rmtree(root / "tok_src")
    return root


@pytest.fixture(scope="module")
def resnet_api(tmp_path_factory):
    return load_inference(_export(tmp_path_factory.mktemp("api") / "resnet", "resnet18", 64))


@pytest.fixture(scope="module")
def vit_api(tmp_path_factory):
    return load_inference(_export(tmp_path_factory.mktemp("api") / "vit", "vit_tiny", 32))


def _by_hand_input(path: Path, size: int) -> torch.Tensor:
    """LoadDicomImage, then the area resize of training, written out with torch (adaptive average pooling)."""
    image = torch.as_tensor(LoadDicomImage(frame=0)(str(path)))
    return F.adaptive_avg_pool2d(image[None].float(), (size, size))


def _projector_by_hand(head: torch.nn.Sequential, x: torch.Tensor, gate: torch.Tensor | None = None) -> torch.Tensor:
    """``Linear -> BN -> ReLU -> Linear -> BN`` in eval mode from its parameters; ``gate`` replaces the ReLU's pattern."""
    lin1, bn1, _, lin2, bn2 = head
    h = (x @ lin1.weight.T - bn1.running_mean) / torch.sqrt(bn1.running_var + bn1.eps) * bn1.weight + bn1.bias
    h = h * gate if gate is not None else torch.relu(h)
    return (h @ lin2.weight.T - bn2.running_mean) / torch.sqrt(bn2.running_var + bn2.eps)


def _hidden_gate(head: torch.nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    lin1, bn1, *_ = head
    h = (x @ lin1.weight.T - bn1.running_mean) / torch.sqrt(bn1.running_var + bn1.eps) * bn1.weight + bn1.bias
    return (h > 0).float()


# ------------------------------------------------------------------------------------------- score


def test_score_is_the_cosine_of_the_two_embeddings(resnet_api, small_rg1):
    api = resnet_api
    model = api.model
    with torch.no_grad():
        v = model.image_projection(model.image_encoder(_by_hand_input(RG1, 64))["pooled"])[0]
        tok = api.bundle.tokenizer([TEXT], padding=True, truncation=True, max_length=32, return_tensors="pt")
        t = model.text_projection(model.text_encoder(tok["input_ids"], tok["attention_mask"])["pooled"])[0]
    by_hand = float((v * t).sum() / (v.norm() * t.norm()))
    assert api.score(str(RG1), TEXT) == pytest.approx(by_hand, abs=1e-5)
    small = small_rg1
    assert api.score(small, TEXT) == pytest.approx(float(api.embed_image(small) @ api.embed_text(TEXT)), abs=1e-6)
    assert api.embed_image(small).norm() == pytest.approx(1.0, abs=1e-5)
    # lists give the similarity matrix
    texts = [TEXT, "No pleural effusion", "Cardiomegaly"]
    sims = api.score([small, small], texts)
    assert sims.shape == (2, 3) and torch.allclose(sims[0], sims[1])
    assert sims[0, 2] == pytest.approx(api.score(small, "Cardiomegaly"), abs=1e-5)


def test_text_embeddings_are_cached(resnet_api):
    calls = []
    handle = resnet_api.model.text_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        first = resnet_api.embed_text("A small right apical pneumothorax")
        again = resnet_api.embed_text(["A small right apical pneumothorax", "A small right apical pneumothorax"])
        new = resnet_api.embed_text(["A small right apical pneumothorax", "Cardiomegalia"])
    finally:
        handle.remove()
    assert calls == [1, 1]  # the repeated text is encoded once; only the new one afterwards
    assert torch.equal(again[0], first) and torch.equal(new[0], first)


def test_findings_follow_the_bundle_decision_rule(resnet_api, small_rg1):
    api = resnet_api
    clf = ZeroShotClassifier(api.model, api.bundle.tokenizer, DEMO_FINDING_KEYS, ["es"], max_length=32)
    expected = clf(_by_hand_input(small_rg1, 64), "es")
    got = api.findings(small_rg1, "es")
    assert [f["finding"] for f in got] == DEMO_FINDING_KEYS
    assert [f["name"] for f in got] == [translate_finding(k, "es") for k in DEMO_FINDING_KEYS]
    np.testing.assert_allclose([f["probability"] for f in got], expected.probs[0].numpy(), atol=1e-5)
    assert [f["positive"] for f in got] == expected.positive[0].tolist() == [f["probability"] > 0.5 for f in got]
    # by hand for one finding: sigmoid((s_pos - s_neg) / 0.07) with the prompts of the language
    pos, neg = build_prompts(["Pneumothorax"], "es")[0]
    margin = api.score(small_rg1, pos) - api.score(small_rg1, neg)
    assert got[2]["probability"] == pytest.approx(1.0 / (1.0 + np.exp(-margin / 0.07)), abs=1e-4)
    assert api.findings(small_rg1)[0]["name"] == "Cardiomegaly"  # default: the bundle's first prompt language


# --------------------------------------------------------------------------------- similarity map


def test_resnet_contribution_map_mean_is_the_score_and_matches_the_hand_projection(resnet_api):
    api = resnet_api
    smap = api.similarity_map(RG1, TEXT)
    assert isinstance(smap, SimilarityMap) and smap.kind == "contribution"
    header = pydicom.dcmread(RG1, stop_before_pixels=True)
    assert smap.map.shape == (header.Rows, header.Columns) == smap.image.shape
    assert smap.grid.shape == (2, 2)  # ResNet-18 at 64 px: stride 32
    # the documented identity: the mean over the patch grid is the global score
    assert smap.score == pytest.approx(api.score(RG1, TEXT), abs=1e-5)
    assert float(smap.grid.mean()) == pytest.approx(smap.score, abs=1e-6) and abs(smap.offset) < 1e-6
    # by hand: each patch through the projector on the ReLU pattern of the pooled feature, . t / |u|
    head = api.model.image_projection
    with torch.no_grad():
        fmap = api.model.image_encoder(_by_hand_input(RG1, 64))["feature_map"][0]
        feats = fmap.flatten(1).T
        pooled = feats.mean(0, keepdim=True)
        u = _projector_by_hand(head, pooled)[0]
        z = _projector_by_hand(head, feats, gate=_hidden_gate(head, pooled))
    t = api.embed_text(TEXT)
    np.testing.assert_allclose(smap.grid.reshape(-1), (z @ t / u.norm()).numpy(), atol=1e-5)
    # the upsampled map keeps the mean up to the bilinear edge effect, and its range stays within the grid's
    assert abs(float(smap.map.mean()) - smap.score) < 0.25 * float(np.ptp(smap.grid)) + 1e-6
    assert smap.grid.min() - 1e-6 <= smap.map.min() and smap.map.max() <= smap.grid.max() + 1e-6


def test_cosine_map_is_the_cosine_of_each_projected_patch(resnet_api, small_rg1):
    api = resnet_api
    smap = api.similarity_map(small_rg1, TEXT, kind="cosine")
    with torch.no_grad():
        feats = api.model.image_encoder(_by_hand_input(small_rg1, 64))["feature_map"][0].flatten(1).T
        z = _projector_by_hand(api.model.image_projection, feats)
    t = api.embed_text(TEXT)
    np.testing.assert_allclose(smap.grid.reshape(-1), ((z @ t) / z.norm(dim=1)).numpy(), atol=1e-5)
    assert smap.offset == pytest.approx(smap.score - float(smap.grid.mean()), abs=1e-7)


def test_vit_map_mean_misses_the_score_by_the_documented_cls_offset(vit_api):
    api = vit_api
    image = np.linspace(0.0, 1.0, 40 * 48, dtype=np.float32).reshape(40, 48) ** 2  # an array input
    smap = api.similarity_map(image, TEXT)
    assert smap.map.shape == (40, 48) and smap.grid.shape == (2, 2)  # ViT-tiny at 32 px: 16 px patches
    head = api.model.image_projection
    x = F.interpolate(torch.as_tensor(image)[None, None], size=(32, 32), mode="area")
    with torch.no_grad():
        enc = api.model.image_encoder(x)
        cls, feats = enc["pooled"], enc["tokens"][0]
        gate = _hidden_gate(head, cls)
        u = _projector_by_hand(head, cls)[0]
        z = _projector_by_hand(head, feats, gate=gate)
        mean_token = _projector_by_hand(head, feats.mean(0, keepdim=True), gate=gate)[0]
    t = api.embed_text(TEXT)
    assert smap.score == pytest.approx(float(u @ t / u.norm()), abs=1e-5)
    np.testing.assert_allclose(smap.grid.reshape(-1), (z @ t / u.norm()).numpy(), atol=1e-5)
    # offset = t . J (x - mean_p f_p) / |u|, J on the CLS's ReLU pattern
    assert smap.offset == pytest.approx(float((u - mean_token) @ t / u.norm()), abs=1e-5)
    assert abs(smap.offset) > 1e-4  # the CLS is not the mean patch token: the identity really differs
    assert float(smap.grid.mean()) + smap.offset == pytest.approx(smap.score, abs=1e-6)


def test_similarity_map_refuses_an_unknown_kind(resnet_api, small_rg1):
    with pytest.raises(ConfigurationError, match="kind"):
        resnet_api.similarity_map(small_rg1, TEXT, kind="gradcam")


# -------------------------------------------------------------------------------- inputs and LUTs


def _monochrome2_twin(src: Path, out: Path) -> Path:
    """RG1_UNCI (MONOCHROME1, 15 bits, window 15000 / 30000) as MONOCHROME2: stored values inverted,
    ``x' = 2^15 - 1 - x``, the window centre moved with them, ``c' = 2^15 - 1 - c + 1`` (the LINEAR
    window's half-pixel offset), so that ``window'(x') = 1 - window(x)``, the MONOCHROME1 display."""
    ds = pydicom.dcmread(src)
    top = 2 ** int(ds.BitsStored) - 1
    ds.PixelData = (top - ds.pixel_array.astype(np.int32)).astype(np.uint16).tobytes()
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.WindowCenter = top - float(ds.WindowCenter) + 1
    ds.save_as(out)
    return out


def test_monochrome1_and_its_monochrome2_twin_score_the_same(resnet_api, tmp_path):
    twin = _monochrome2_twin(RG1, tmp_path / "rg1_mono2.dcm")
    assert pydicom.dcmread(twin, stop_before_pixels=True).PhotometricInterpretation == "MONOCHROME2"
    np.testing.assert_allclose(resnet_api.load_image(twin), resnet_api.load_image(RG1), atol=1e-6)
    assert resnet_api.score(twin, TEXT) == pytest.approx(resnet_api.score(RG1, TEXT), abs=1e-6)
    twin_findings, mono1_findings = resnet_api.findings(twin), resnet_api.findings(RG1)
    assert [f["positive"] for f in twin_findings] == [f["positive"] for f in mono1_findings]
    np.testing.assert_allclose([f["probability"] for f in twin_findings], [f["probability"] for f in mono1_findings], atol=1e-5)
    # the test can tell: the stored values with only the label changed are another image
    ds = pydicom.dcmread(RG1)
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.save_as(tmp_path / "relabelled.dcm")
    assert abs(resnet_api.score(tmp_path / "relabelled.dcm", TEXT) - resnet_api.score(RG1, TEXT)) > 1e-4


def test_every_input_form_gives_the_same_embedding(resnet_api, small_rg1, tmp_path):
    api = resnet_api
    shown = api.load_image(small_rg1)[0].numpy()
    reference = api.embed_image(small_rg1)
    # a DICOM folder holding the frontal CR and a lateral copy: the frontal one is read
    folder = tmp_path / "study"
    folder.mkdir()
    shutil.copy(small_rg1, folder / "a.dcm")
    lateral = pydicom.dcmread(small_rg1)
    lateral.ViewPosition = "LL"
    lateral.SOPInstanceUID = pydicom.uid.generate_uid()
    lateral.InstanceNumber = 0
    lateral.save_as(folder / "0_lateral.dcm")
    assert torch.allclose(api.embed_image(folder), reference, atol=1e-6)
    assert api.load_image(folder).meta["source_instance"]["view"] == "frontal"
    # the pydicom dataset and the array of the display values
    assert torch.allclose(api.embed_image(pydicom.dcmread(small_rg1)), reference, atol=1e-6)
    assert torch.allclose(api.embed_image(shown), reference, atol=1e-6)
    assert torch.allclose(api.embed_image(torch.as_tensor(shown)[None]), reference, atol=1e-6)
    # a NIfTI of them is mapped from its min..max to [0, 1]
    assert shown.min() > 0.05
    nib.save(nib.Nifti1Image(shown * 40.0 - 3.0, np.eye(4)), tmp_path / "rg1.nii.gz")
    stretched = (shown - shown.min()) / (shown.max() - shown.min())
    assert torch.allclose(api.embed_image(tmp_path / "rg1.nii.gz"), api.embed_image(stretched), atol=1e-5)
    assert not torch.allclose(api.embed_image(stretched), reference, atol=1e-4)
    # a 16-bit PNG of the display values: the same image up to the 1/65535 quantisation
    Image.fromarray(np.round(shown * 65535).astype(np.uint16)).save(tmp_path / "rg1.png")
    assert torch.allclose(api.embed_image(tmp_path / "rg1.png"), reference, atol=1e-3)


def test_bad_inputs_give_typed_errors_naming_the_file(resnet_api, tmp_path):
    api = resnet_api
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    with pytest.raises(DataError, match="notes.txt.*field 'format'.*unsupported image file") as err:
        api.score(text, TEXT)
    assert err.value.path == str(text)
    fake = tmp_path / "scan.png"
    fake.write_bytes(b"\x89PNG\r\n\x1a\n but truncated")
    with pytest.raises(DataError, match="scan.png.*cannot read the PNG"):
        api.embed_image(fake)
    volume = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 9, 10), np.float32), np.eye(4)), volume)
    with pytest.raises(DataError, match=r"ct.nii.gz.*field 'shape'.*\(8, 9, 10\).*2D image") as err:
        api.findings(volume)
    assert err.value.field == "shape"
    with pytest.raises(DataError, match="missing.dcm: file does not exist"):
        api.embed_image(tmp_path / "missing.dcm")
    with pytest.raises(ShapeMismatchError, match=r"image array: shapes \(2, 1, 8, 8\)"):
        api.embed_image(np.zeros((2, 1, 8, 8), np.float32))
    with pytest.raises(ShapeMismatchError, match=r"\(4, 8, 8\)"):
        api.embed_image(np.zeros((4, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"field 'values'.*\[0, 1\].*got \[-1"):
        api.embed_image(np.full((8, 8), -1.0, np.float32))
    with pytest.raises(ConfigurationError, match="non-empty string"):
        api.embed_text(["fine", "  "])
    with pytest.raises(ConfigurationError, match="prompt language 'fr'"):
        api.findings(np.zeros((8, 8), np.float32), "fr")


def test_select_slices_needs_a_unimedi_bundle(resnet_api):
    with pytest.raises(ConfigurationError, match="UniMedI bundle.*'medunic'"):
        resnet_api.select_slices(np.zeros((1, 8, 16, 16), np.float32), TEXT, k=2)


def test_select_slices_of_a_unimedi_bundle_and_its_2d_questions(tmp_path):
    from monai_medunic.networks import UniMedI
    from monai_medunic.pretrained import export_pretrained_bundle, select_slices_from_bundle

    root = tmp_path / "unimedi"
    shutil.copytree(REPO_ROOT / "bundles" / "cxr_ct_unimedi_pretrain", root, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    tok = make_tiny_tokenizer(root / "tok_src")
    torch.manual_seed(0)
    model = UniMedI("vit_tiny", text_config=dict(TINY_BERT, vocab_size=len(tok)), img_size=32, volume_size=(16, 32, 32),
                    embed_dim=16, num_slices=2, distill_dim=16, distill_hidden_dim=16, distill_bottleneck_dim=8).eval()
    export_pretrained_bundle(model, tok, root, DEMO_FINDING_KEYS, max_length=32, method_settings={"volume_window": "lung"})
    shutil.rmtree(root / "tok_src")
    api = load_inference(root)
    g = torch.Generator().manual_seed(3)
    volume = torch.rand(1, 40, 40, 20, generator=g) * 1400 - 1000  # (1, X, Y, Z) in HU
    sel = api.select_slices(volume, "Nodule in the right lower lobe.", k=3)
    ref = select_slices_from_bundle(api.bundle, volume, text="Nodule in the right lower lobe.", k=3)
    assert sel.method == "text" and len(sel.indices) == 3 and sel.scores.shape == (20,)
    assert sel.indices == ref.indices and torch.allclose(sel.scores, ref.scores)
    # the k best slabs by score, one input slice inside each, carrying its slab's score
    assert sel.slab_indices == torch.argsort(sel.slab_scores, descending=True)[:3].tolist()
    for slab, index in zip(sel.slab_indices, sel.indices):
        lo, hi = sel.slab_slices[slab]
        assert lo <= index <= hi and sel.scores[index] == sel.slab_scores[slab]
    assert api.select_slices(volume, k=2).method == "attention"
    # the same bundle answers the 2D questions too (its ViT's CLS pooling: the documented offset)
    image = torch.rand(48, 56, generator=g)
    assert api.score(image, TEXT) == pytest.approx(float(api.embed_image(image) @ api.embed_text(TEXT)), abs=1e-6)
    smap = api.similarity_map(image, TEXT)
    assert smap.map.shape == (48, 56) and float(smap.grid.mean()) + smap.offset == pytest.approx(smap.score, abs=1e-6)


def test_cuda_without_a_gpu_is_a_configuration_error(resnet_api):
    if torch.cuda.is_available():  # this machine has no GPU; on one with a GPU the bundle loads there
        assert load_inference(resnet_api.bundle.bundle_dir, device="cuda").device.type == "cuda"
        return
    with pytest.raises(ConfigurationError, match="CUDA is not available"):
        load_inference(resnet_api.bundle.bundle_dir, device="cuda")


def test_findings_read_the_bundle_calibration_of_the_language(tmp_path, small_rg1):
    """Fails if findings() ignored models/calibration.json or read the thresholds of the other language."""
    from monai_medunic.metrics.calibration import FindingCalibration, ZeroShotCalibration, save_calibration

    root = _export(tmp_path / "calibrated", "resnet18", 64)
    fit = lambda t, b: {f: FindingCalibration(threshold=t, platt_a=1.0, platt_b=b, status="fitted", n=10, positives=5)  # noqa: E731
                        for f in DEMO_FINDING_KEYS}
    save_calibration(root, ZeroShotCalibration({"en": fit(-10.0, 3.0), "es": fit(10.0, -3.0)}))
    api = load_inference(root)
    en, es = api.findings(small_rg1, "en"), api.findings(small_rg1, "es")
    assert all(f["positive"] and f["calibrated"] for f in en) and not any(f["positive"] for f in es)
    assert all(f["probability"] > 0.9 for f in en) and all(f["probability"] < 0.1 for f in es)  # sigmoid(m +- 3), |m| << 1
    assert en[0]["decision_rule"].startswith("margin >= per-finding threshold")
    (root / "models" / "calibration.json").unlink()
    plain = load_inference(root).findings(small_rg1, "en")
    assert not any(f["calibrated"] for f in plain) and plain[0]["decision_rule"] == "s_pos > s_neg (uncalibrated)"
