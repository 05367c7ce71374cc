"""Property-based fuzzing of the DICOM readers (``hypothesis``), bounded for ``make test``.

Real files (pydicom's test files and the demo generator's CR / DX / CT) are mutated by
``tests/dicom_mutations.py`` (dropped, duplicated, garbled and odd-VR header attributes, wrong transfer
syntaxes, truncated or mismatched pixel data, cut files) and fed to ``LoadDicomImage``, MONAI's
``LoadImage(reader=GrayscaleDicomReader())``, the Deploy app's header screen (and the SDK loader behind
it) and ``LoadDicomSeriesVolume`` (the mutated file as the middle slice of a series). The property: a
correct image, or a typed error naming the file and the field, within 60 s and 3 GiB above the
process's size; never a bare library exception, a hang or an allocation for what a header claims.

The run is derandomised (the same cases every time) and bounded (``FUZZ_EXAMPLES``, 60 by default);
``benchmarks/fuzz_dicom.py`` runs 10,000. The crashes the fuzzer found are kept below as regular tests.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from pydicom.data import get_testdata_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dicom_mutations as dm  # noqa: E402

from monai_medunic.errors import DicomReadError, VolumeReadError  # noqa: E402
from monai_medunic.transforms import LoadDicomImage, LoadDicomSeriesVolume  # noqa: E402
from monai_medunic.transforms.dicom_io import MAX_PIXELS  # noqa: E402

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def fuzz_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    return dm.seed_paths(str(root / "seeds")), dm.Surfaces(), str(root / "work")


def test_mutated_dicom_gives_an_image_or_a_typed_error(fuzz_env) -> None:
    seeds, surfaces, work = fuzz_env
    crashes: list[str] = []
    seen: dict[str, int] = {}

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, derandomize=True, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(dm.cases(list(seeds), max_mutations=3))
    def run(case: dm.Case) -> None:
        for outcome in dm.check_case(case, seeds, work, surfaces):
            seen[outcome.kind] = seen.get(outcome.kind, 0) + 1
            if outcome.kind == "crash":
                crashes.append(f"{case} -> {outcome.surface}: {outcome.detail}")

    run()
    assert not crashes, "\n\n".join(crashes[:5])
    # the cases reach both outcomes: some mutations leave a loadable image, most are refused
    assert seen.get("image", 0) >= 5 and seen.get("typed_error", 0) >= 5, seen


# ---------------------------------------------------------------------- crashes found by the fuzzer


def _write(ds: pydicom.Dataset, path: Path) -> str:
    ds.save_as(path, enforce_file_format=True)
    return str(path)


def _seed(name: str, **changes) -> pydicom.Dataset:
    ds = pydicom.dcmread(get_testdata_file(name))
    for kw, v in changes.items():
        setattr(ds, kw, v)
    return ds


def _case_file(tmp_path: Path, seed: str, *mutations: dm.Mutation, name: str = "case.dcm", overrides=None) -> str:
    return dm.materialise(dm.Case(seed, list(mutations)), {seed: get_testdata_file(seed)}, str(tmp_path / name), overrides)


def test_found_unknown_transfer_syntax_uid(tmp_path) -> None:
    """Was: ``ValueError: UID is not a transfer syntax`` from pydicom inside the decoder check."""
    path = _case_file(tmp_path, "MR_small.dcm", dm.Mutation("tsyntax", "TransferSyntaxUID", "1.2.3.4"))
    with pytest.raises(DicomReadError) as info:
        LoadDicomImage()(path)
    assert info.value.field == "TransferSyntaxUID" and "not a known transfer syntax" in str(info.value)


def test_found_excess_pixel_data_became_extra_frames(tmp_path) -> None:
    """Was: a 3 x 3 RGB image with 2264 trailing bytes loaded as 84 channels (pydicom returns the frames
    the data could hold); now the header's single frame, with a log line."""
    path = _case_file(tmp_path, "SC_rgb_small_odd.dcm", dm.Mutation("pixels_extend", "PixelData", 2264))
    img = LoadDicomImage()(path)
    assert tuple(img.shape) == (1, 3, 3)
    reference = LoadDicomImage()(get_testdata_file("SC_rgb_small_odd.dcm"))
    np.testing.assert_array_equal(img.numpy(), reference.numpy())


def test_found_missing_frames_header_with_multi_frame_data(tmp_path) -> None:
    """Was: a 15-frame dose grid without NumberOfFrames gave a (1, 15, 10, 10) tensor."""
    path = _case_file(tmp_path, "rtdose.dcm", dm.Mutation("drop", "NumberOfFrames"))
    assert tuple(LoadDicomImage()(path).shape) == (1, 10, 10)


def test_found_garbled_columns_in_a_series(tmp_path) -> None:
    """Was: pydicom's ``BytesLengthException`` (9 bytes under VR US) out of the series reader."""
    folder = tmp_path / "series"
    folder.mkdir()
    overrides = dm.series_neighbours(get_testdata_file("CT_small.dcm"), str(folder))
    _case_file(folder, "CT_small.dcm", dm.Mutation("garble", "Columns", b"\x16B\xb45qp\xe3,\xd0"), name="slice_2.dcm",
               overrides=overrides)
    with pytest.raises((VolumeReadError, DicomReadError)) as info:
        LoadDicomSeriesVolume()(str(folder))
    assert info.value.field == "Columns" and info.value.path.endswith("slice_2.dcm")


def test_found_series_slice_without_series_uid(tmp_path) -> None:
    """Was: '2 series found ([\\'\\', ...])' with no field; the slice and the attribute are named now."""
    folder = tmp_path / "series"
    folder.mkdir()
    overrides = dm.series_neighbours(get_testdata_file("CT_small.dcm"), str(folder))
    _case_file(folder, "CT_small.dcm", dm.Mutation("drop", "SeriesInstanceUID"), name="slice_2.dcm", overrides=overrides)
    with pytest.raises(VolumeReadError) as info:
        LoadDicomSeriesVolume()(str(folder))
    assert info.value.field == "SeriesInstanceUID" and info.value.path.endswith("slice_2.dcm")


@pytest.mark.parametrize("keyword, value", [("WindowCenter", "abc"), ("WindowWidth", "1\\2\\x"), ("PixelSpacing", "nan\\1")])
def test_found_unreadable_display_attributes_fall_back(tmp_path, keyword, value) -> None:
    """Was: ``ValueError: could not convert string to float`` from the window / spacing parsing. A window or a
    spacing that cannot be read is a display hint lost, not a wrong image: the VOI fallback applies and the
    meta says what was ignored."""
    path = _case_file(tmp_path, "CT_small.dcm", dm.Mutation("set", keyword, value))
    img = LoadDicomImage()(path)
    assert any(keyword in note for note in img.meta["header_notes"])
    if keyword.startswith("Window"):
        assert img.meta["voi"] == "full_range"
    else:
        assert img.meta["pixel_spacing"] is None


@pytest.mark.parametrize("keyword, value", [("RescaleSlope", "abc"), ("RescaleIntercept", "1e308"), ("BitsStored", 17),
                                            ("Rows", 0), ("PhotometricInterpretation", "HSV"), ("SamplesPerPixel", 2)])
def test_found_pixel_module_values_are_refused_by_name(tmp_path, keyword, value) -> None:
    path = _case_file(tmp_path, "CT_small.dcm", dm.Mutation("set", keyword, value))
    with pytest.raises(DicomReadError) as info:
        LoadDicomImage()(path)
    assert info.value.field == keyword or (keyword == "RescaleIntercept" and info.value.field == "RescaleSlope"), info.value
    assert os.path.basename(path) in str(info.value)


@pytest.mark.parametrize("seed", ["MR_small.dcm", "MR_small_jp2klossless.dcm", "MR_small_RLE.dcm"])
def test_65535_squared_is_refused_before_allocation(tmp_path, seed) -> None:
    """Rows x Columns claiming 65535^2 (8 GiB as 16-bit) is refused from the header, under an address-space
    limit of 1 GiB above the process's size, with the budget named."""
    path = _case_file(tmp_path, seed, dm.Mutation("dims", "", (65535, 65535)))
    result, err, _ = dm.run_guarded(lambda: LoadDicomImage()(path), 60, 1 << 30)
    assert isinstance(err, DicomReadError), err
    assert err.field == "Rows" and f"{MAX_PIXELS:,}" in str(err)


def test_pixel_budget_is_an_option(tmp_path) -> None:
    path = get_testdata_file("CT_small.dcm")
    with pytest.raises(DicomReadError, match="pixel budget"):
        LoadDicomImage(max_pixels=128 * 127)(path)
    assert tuple(LoadDicomImage(max_pixels=128 * 128)(path).shape) == (1, 128, 128)
