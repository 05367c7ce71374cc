"""The Deploy apps' study loader emits the input a few studies at a time (issue 14: flat peak memory).

A real holoscan application (the SDK's runtime, on CPU) runs the screened loader on demo studies with
a lateral view and an SR each, plus a corrupt file, and a collecting operator records every message.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from monai_medunic.errors import ConfigurationError


def _run_loader(folder: Path, studies_per_batch: int):
    from monai.deploy.core import Application, Operator, OperatorSpec

    from monai_medunic.deploy.loader import ScreenedDICOMDataLoaderOperator

    class Collect(Operator):
        def __init__(self, fragment, *args, **kwargs):
            self.messages: list[list[tuple[str, dict[str, int]]]] = []
            super().__init__(fragment, *args, **kwargs)

        def setup(self, spec: OperatorSpec):
            spec.input("dicom_study_list")

        def compute(self, op_input, op_output, context):
            studies = op_input.receive("dicom_study_list")
            self.messages.append([
                (str(s.StudyInstanceUID), {str(x.SeriesInstanceUID): len(x.get_sop_instances()) for x in s.get_all_series()})
                for s in studies
            ])

    class LoaderOnly(Application):
        def compose(self):
            self.loader = ScreenedDICOMDataLoaderOperator(self, input_folder=folder, studies_per_batch=studies_per_batch,
                                                          name="loader")
            self.collect = Collect(self, name="collect")
            self.add_flow(self.loader, self.collect, {("dicom_study_list", "dicom_study_list")})

    app = LoaderOnly()
    app.run()
    return app


@pytest.fixture(scope="module")
def studies(tmp_path_factory) -> tuple[Path, dict[str, dict[str, int]]]:
    """Five demo studies (frontal, lateral, report SR) and a truncated file; the instances per study and series."""
    from monai_medunic.data.demo import generate_demo_dataset

    root = tmp_path_factory.mktemp("batches")
    generate_demo_dataset(root, num_studies=5, seed=3, image_size=64, lateral_fraction=1.0, sr_fraction=1.0,
                          jpeg2000_fraction=0.0)
    folder = root / "dicom"
    expected: dict[str, dict[str, int]] = {}
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for f in files:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        series = expected.setdefault(str(ds.StudyInstanceUID), {})
        series[str(ds.SeriesInstanceUID)] = series.get(str(ds.SeriesInstanceUID), 0) + 1
    (folder / "truncated.dcm").write_bytes(files[0].read_bytes()[:300])
    assert len(expected) == 5
    return folder, expected


@pytest.mark.parametrize("per_batch, sizes", [(2, [2, 2, 1]), (5, [5]), (8, [5])])
def test_every_study_arrives_whole_and_once_in_batches(studies, per_batch, sizes) -> None:
    folder, expected = studies
    app = _run_loader(folder, per_batch)
    messages = app.collect.messages
    assert [len(m) for m in messages] == sizes
    received = [uid for m in messages for uid, _ in m]
    assert sorted(received) == sorted(expected) and len(set(received)) == len(received)
    # no study is split: each message holds all of a study's series and instances (SRs are ignored by the SDK)
    for m in messages:
        for uid, series in m:
            want = expected[uid]
            assert set(series) <= set(want) and len(series) >= 2, uid  # frontal + lateral series at least
            assert all(series[s] == want[s] for s in series)
    assert app.loader.batches_emitted == len(sizes) and app.loader.studies_emitted == 5
    assert [Path(f).name for f, _ in app.loader.skipped] == ["truncated.dcm"]


def test_an_input_without_a_study_is_the_sdks_no_study_error(tmp_path) -> None:
    from monai.deploy.exceptions import ItemNotExistsError

    (tmp_path / "notes.txt").write_text("not DICOM")
    with pytest.raises(ItemNotExistsError):
        _run_loader(tmp_path, 2)


def test_studies_per_batch_must_be_positive(tmp_path) -> None:
    with pytest.raises(ConfigurationError, match="studies_per_batch"):
        _run_loader(tmp_path, 0)


def test_a_folder_of_symlinked_studies_is_read(studies, tmp_path) -> None:
    """Symlinked study folders (a usual way to feed an app) pass the input check and reach the loader whole."""
    import os

    from monai_medunic.deploy.app_support import check_input_folder
    from monai_medunic.errors import DataError

    folder, _ = studies
    linked = tmp_path / "linked"
    linked.mkdir()
    for study in sorted(p for p in folder.iterdir() if p.is_dir())[:3]:
        os.symlink(study, linked / study.name)
    os.symlink(linked, linked / "loop")  # a link back up must not recurse forever
    check_input_folder(linked)
    app = _run_loader(linked, 2)
    assert [len(m) for m in app.collect.messages] == [2, 1]
    empty = tmp_path / "empty"
    empty.mkdir()
    os.symlink(tmp_path / "nowhere", empty / "dangling")
    with pytest.raises(DataError, match="empty"):
        check_input_folder(empty)
