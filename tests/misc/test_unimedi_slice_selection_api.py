"""Slice selection from a trained UniMedI bundle (select_slices_from_bundle) on a DICOM series, a NIfTI file
and a tensor, with and without a report; and bad input through it and through the bundle's training
pipelines: missing / duplicated slices, mixed orientations, inconsistent spacing, a 2D image given as a
volume and the reverse, a volume thinner than k, each error naming the file."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import pydicom
import pytest
import torch

from monai_medunic.errors import ConfigurationError, DataError, DicomReadError, ShapeMismatchError, VolumeReadError
from monai_medunic.networks import UniMedI, UnifiedViT
from monai_medunic.pretrained import export_pretrained_bundle, load_pretrained_bundle, select_slices_from_bundle
from monai_medunic.transforms.volume import LoadVolume

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "cxr_ct_unimedi_pretrain"
FINDINGS = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Nodule", "Consolidation", "Edema"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from monai_medunic.data.demo import generate_demo_dataset

    out = tmp_path_factory.mktemp("demo") / "data"
    generate_demo_dataset(out, num_studies=3, num_ct_studies=2, ct_shape=(16, 48, 48), seed=1)
    return out


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    from tests.conftest import TINY_BERT, make_tiny_tokenizer

    root = tmp_path_factory.mktemp("bundle") / "cxr_ct_unimedi_pretrain"
    shutil.copytree(BUNDLE, root, ignore=shutil.ignore_patterns("models", "eval", "logs"))
    tok = make_tiny_tokenizer(root / "tok_src")
    torch.manual_seed(0)
    model = UniMedI("vit_tiny", text_config=dict(TINY_BERT, vocab_size=len(tok)), img_size=32, volume_size=(16, 32, 32),
                    embed_dim=16, num_slices=2, distill_dim=16, distill_hidden_dim=16, distill_bottleneck_dim=8).eval()
    export_pretrained_bundle(model, tok, root, FINDINGS, max_length=32, method_settings={"volume_window": "lung"})
    shutil.rmtree(root / "tok_src")
    return root


def _typed(err: BaseException) -> BaseException | None:
    """The package's typed error inside MONAI's chain of "applying transform" RuntimeErrors."""
    from monai_medunic.errors import MedUniCError

    while err is not None and not isinstance(err, MedUniCError):
        err = err.__cause__
    return err


def _series(demo: Path) -> Path:
    return demo / "ct" / "study_00001"


def _copy_series(demo: Path, dest: Path) -> list[Path]:
    shutil.copytree(_series(demo), dest)
    return sorted(dest.iterdir())


def test_export_describes_the_2d_and_3d_inputs(bundle: Path) -> None:
    b = load_pretrained_bundle(bundle)
    assert b.method == "unimedi" and b.image_size == 32
    assert b.settings["unimedi"]["volume_size"] == [16, 32, 32] and b.settings["unimedi"]["volume_window"] == "lung"
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    inputs = meta["network_data_format"]["inputs"]
    assert inputs["image"]["spatial_shape"] == [32, 32] and inputs["volume"]["spatial_shape"] == [16, 32, 32]
    with torch.no_grad():  # network_def takes both
        assert b.network(torch.rand(2, 1, 32, 32)).shape == b.network(torch.rand(2, 1, 16, 32, 32)).shape == (2, 16)


def test_select_from_series_nifti_and_tensor_agree(bundle: Path, demo: Path, tmp_path: Path) -> None:
    b = load_pretrained_bundle(bundle)
    series = select_slices_from_bundle(b, _series(demo))
    assert series.method == "attention" and series.name == str(_series(demo))
    assert series.scores.shape == (16,) and series.slab_scores.shape == (4,) and len(series.indices) == 2
    assert series.slab_slices == [(0, 3), (4, 7), (8, 11), (12, 15)]  # 16 input slices -> 16 network slices -> slabs of 4
    for slab, z in zip(series.slab_indices, series.indices):
        lo, hi = series.slab_slices[slab]
        assert lo <= z <= hi and series.scores[z] == series.slab_scores[slab]
    assert series.slab_scores[series.slab_indices[0]] == series.slab_scores.max()
    vol = LoadVolume()(str(_series(demo)))
    nifti = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(vol[0].numpy(), vol.affine.numpy()), str(nifti))
    for other in (select_slices_from_bundle(str(bundle), nifti), select_slices_from_bundle(b, vol), select_slices_from_bundle(b, vol[0].numpy(), name="a")):
        assert torch.allclose(other.slab_scores, series.slab_scores, atol=1e-5) and other.indices == series.indices
    guided = select_slices_from_bundle(b, vol, text="Nodule in the right lower lobe.", k=3)
    assert guided.method == "text" and len(guided.indices) == 3 and torch.equal(guided.attention_scores, series.slab_scores)
    assert not torch.allclose(guided.slab_scores, series.slab_scores)


@pytest.mark.parametrize("case,field,message", [
    ("missing", "ImagePositionPatient", "missing slices"),
    ("duplicated", "ImagePositionPatient", "duplicated slices"),
    ("orientation", "ImageOrientationPatient", "mixes 2 slice orientations"),
    ("spacing", "PixelSpacing", "different pixel spacings"),
])
def test_bad_series_through_the_api_and_the_training_pipeline(bundle: Path, demo: Path, tmp_path: Path, case, field, message) -> None:
    folder = tmp_path / case
    files = _copy_series(demo, folder)
    if case == "missing":
        os.remove(files[7])
    else:
        ds = pydicom.dcmread(files[5])
        if case == "duplicated":
            ds.ImagePositionPatient = pydicom.dcmread(files[4]).ImagePositionPatient
        elif case == "orientation":
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        else:
            ds.PixelSpacing = [0.5, 0.5]
        ds.save_as(files[5], enforce_file_format=True)
    with pytest.raises(VolumeReadError, match=message) as err:
        select_slices_from_bundle(bundle, folder)
    assert err.value.path == str(folder) and err.value.field == field
    with pytest.raises(RuntimeError) as wrapped:  # the bundle's 3D training pipeline (a MONAI Compose)
        _pipeline_3d(bundle)({"image": str(folder), "report": "Nodule."})
    assert isinstance(_typed(wrapped.value), VolumeReadError) and str(folder) in str(_typed(wrapped.value))


def _pipeline_3d(bundle: Path, key: str = "train#preprocessing_3d", **overrides):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "train.json"))
    parser.update({"bundle_root": str(bundle), "text_model_dir": str(bundle / "models" / "text"), "volume_size": [16, 32, 32],
                   "image_size": 32, "num_slices": 2, "max_length": 32, **overrides})
    return parser.get_parsed_content(key)


def test_dimension_mixups_and_thin_volumes_name_the_file(bundle: Path, demo: Path, tmp_path: Path) -> None:
    b = load_pretrained_bundle(bundle)
    radiograph = next(p for p in (demo / "dicom").rglob("frontal_1.dcm"))
    # a 2D radiograph given as a volume: one slice, refused naming the file (API and training pipeline)
    with pytest.raises(DataError, match=r"frontal_1.dcm.*1 slice") as err:
        select_slices_from_bundle(b, radiograph)
    assert err.value.path == str(radiograph)
    with pytest.raises(RuntimeError) as wrapped:
        _pipeline_3d(bundle)({"image": str(radiograph), "report": "Normal."})
    assert isinstance(_typed(wrapped.value), DataError) and "single 2D image" in str(_typed(wrapped.value))
    with pytest.raises(DataError, match="chest.*2D image given as a volume"):
        select_slices_from_bundle(b, torch.rand(48, 48), name="chest")
    # a CT series given as a 2D image (the radiograph pipeline), and a NIfTI volume as one
    with pytest.raises(RuntimeError) as wrapped:
        _pipeline_3d(bundle, key="train#preprocessing")({"image": str(_series(demo)), "report": "Nodule."})
    assert isinstance(_typed(wrapped.value), DicomReadError) and str(_series(demo)) in str(_typed(wrapped.value))
    mask = next((demo / "truth" / "ct").rglob("mask.nii.gz"))
    with pytest.raises(RuntimeError) as wrapped:
        _pipeline_3d(bundle, key="train#preprocessing")({"image": str(mask), "report": "Nodule."})
    assert isinstance(_typed(wrapped.value), DicomReadError) and "mask.nii.gz" in str(_typed(wrapped.value))
    # and at the network: a 2D image to the 3D tokenizer and the reverse
    vit = UnifiedViT("vit_tiny", img_size=32, volume_size=(16, 32, 32))
    with pytest.raises(ShapeMismatchError, match="2D image.*3D tokenizer"):
        vit.tokenize_3d(torch.rand(1, 1, 32, 32))
    with pytest.raises(ShapeMismatchError, match="3D volume.*2D tokenizer"):
        vit.tokenize_2d(torch.rand(1, 1, 16, 32, 32))
    # a volume thinner than k: 3 slices, k = 4 (API) / min_slices 4 (pipeline)
    thin = tmp_path / "thin"
    for f in _copy_series(demo, thin)[3:]:
        os.remove(f)
    with pytest.raises(DataError, match="thin.*3 slice.*k=4") as err:
        select_slices_from_bundle(b, thin, k=4)
    assert err.value.path == str(thin) and err.value.field == "slices"
    with pytest.raises(RuntimeError) as wrapped:
        _pipeline_3d(bundle, num_slices=4)({"image": str(thin), "report": "Nodule."})
    assert isinstance(_typed(wrapped.value), DataError) and "fewer than the 4 needed" in str(_typed(wrapped.value))
    with pytest.raises(ConfigurationError, match=r"k must be in \[1, 4\]"):
        select_slices_from_bundle(b, _series(demo), k=5)


def test_a_medunic_bundle_has_no_slice_selection(tiny_bundle) -> None:
    with pytest.raises(ConfigurationError, match="UniMedI bundle"):
        select_slices_from_bundle(tiny_bundle, torch.zeros(8, 8, 8))
