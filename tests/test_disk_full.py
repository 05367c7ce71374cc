"""A full disk while writing a checkpoint, a DICOM SR and the extended vocabulary.

Each test mounts a small tmpfs (the machine and CI run as root), writes a first output that fits, fills
the file system, and writes again: the result must be :class:`~monai_medunic.errors.OutputWriteError`
naming the output and the cause, the earlier output must be intact (same bytes, still loadable), and no
temporary file may be left. The tmpfs is unmounted at the end, also when a test fails.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
from pathlib import Path

import pydicom
import pytest
import torch
from pydicom.data import get_testdata_file

from monai_medunic.errors import OutputWriteError


@contextlib.contextmanager
def small_disk(path: Path, size_kb: int):
    """A tmpfs of ``size_kb`` KiB mounted at ``path`` (unmounted on exit)."""
    path.mkdir(parents=True, exist_ok=True)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(path)],
                           capture_output=True, text=True)
    assert mount.returncode == 0, f"cannot mount a tmpfs (the test needs root): {mount.stderr.strip()}"
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(disk: Path, leave: int = 0) -> Path:
    """Fill ``disk`` until at most ``leave`` bytes are free (a filler file)."""
    filler = disk / "filler.bin"
    with open(filler, "ab") as fh:
        chunk = b"\0" * 65536
        while True:
            st = os.statvfs(disk)
            free = st.f_bavail * st.f_frsize
            if free <= leave:
                break
            try:
                fh.write(chunk[: max(1, min(len(chunk), free - leave))])
                fh.flush()
            except OSError as err:
                assert err.errno == errno.ENOSPC
                break
    return filler


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


# ---------------------------------------------------------------------------------------------- checkpoint


@pytest.mark.parametrize("n_saved", [1, 2])
def test_disk_full_while_writing_a_checkpoint(tmp_path, n_saved) -> None:
    """With ``n_saved=1`` too: ignite removes the retired checkpoint before it writes the new one; the saver
    defers that removal until the new file is complete, so the last good checkpoint survives the failed write."""
    from ignite.engine import Engine, Events

    from monai_medunic.engines.handlers import AtomicCheckpointSaver

    with small_disk(tmp_path / "disk", 2048) as disk:
        net = torch.nn.Linear(64, 64)
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)

        def step(engine, batch):
            opt.zero_grad()
            loss = net(batch).square().mean()
            loss.backward()
            opt.step()
            return float(loss)

        trainer = Engine(step)
        states: dict[int, dict] = {}

        @trainer.on(Events.ITERATION_COMPLETED)
        def _remember(engine):  # registered before the saver: runs first at each iteration
            states[engine.state.iteration] = {k: v.clone() for k, v in net.state_dict().items()}
            if engine.state.iteration == 3:
                fill(disk, leave=4096)  # the disk fills up before checkpoint_3 is written

        ckpt = disk / "checkpoints"
        AtomicCheckpointSaver(ckpt, {"network": net, "optimizer": opt}, every_n_epochs=0, every_n_iterations=1,
                              n_saved=n_saved).attach(trainer)
        with pytest.raises(OutputWriteError) as info:
            trainer.run([torch.randn(8, 64) for _ in range(5)], max_epochs=1)
        err = info.value
        assert err.path == str(ckpt / "checkpoint_3.pt") and err.errno == errno.ENOSPC
        assert "no space left on the device" in str(err) and "checkpoint_3.pt" in str(err)
        assert trainer.state.iteration == 3  # training stopped at the failed save
        # the earlier checkpoints are complete and hold the state of their iteration; no temporary file left
        kept = (1, 2)[-n_saved:]
        assert sorted(p.name for p in ckpt.iterdir()) == [f"checkpoint_{it}.pt" for it in kept]
        for it in kept:
            saved = torch.load(ckpt / f"checkpoint_{it}.pt", weights_only=True)
            assert saved["trainer"]["iteration"] == it
            for k, v in states[it].items():
                assert torch.equal(saved["network"][k], v), (it, k)


# ------------------------------------------------------------------------------------------------- DICOM SR


def _study_findings(language: str):
    from monai_medunic.deploy.results import PreparedImage, StudyFindings

    ds = pydicom.dcmread(get_testdata_file("RG1_UNCI.dcm"), stop_before_pixels=True)
    findings = ["Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Nodule", "Consolidation", "Edema"]
    return StudyFindings(PreparedImage(ds, torch.zeros(1, 8, 8)), findings, [0.1, 0.7, 0.2, 0.9, 0.4, 0.3],
                         [False, True, False, True, False, False], language, "cxr_medunic_pretrain", "0.2.0")


def test_disk_full_while_writing_an_sr(tmp_path) -> None:
    from monai_medunic.deploy import read_findings_sr, write_study_outputs
    from monai_medunic.deploy.results import RESULT_JSON_NAME, SR_FILE_NAME

    with small_disk(tmp_path / "disk", 1024) as disk:
        out = disk / "output"
        sr_path, json_path = write_study_outputs(_study_findings("en"), out)
        before = {p: _digest(p) for p in (sr_path, json_path)}
        fill(disk, leave=2048)  # an SR of six findings needs ~10 KiB
        with pytest.raises(OutputWriteError) as info:
            write_study_outputs(_study_findings("es"), out)  # the Spanish SR of the same study
        err = info.value
        assert err.path == str(sr_path) and "DICOM SR" in str(err) and "no space left on the device" in str(err)
        assert {p: _digest(p) for p in (sr_path, json_path)} == before  # the English SR and JSON are intact
        assert [r["meaning"] for r in read_findings_sr(sr_path)][0] == "Cardiomegaly"
        assert sorted(p.name for p in sr_path.parent.iterdir()) == sorted([SR_FILE_NAME, RESULT_JSON_NAME])


# ---------------------------------------------------------------------------------------------- vocabulary


def _tiny_base(root: Path) -> Path:
    from monai_medunic.text.vocab import build_base_model

    texts = ["No pleural effusion. Heart size is normal. No pneumothorax.", "Small nodule in the right lung. Edema."] * 20
    base = root / "base"
    build_base_model(base, texts, vocab_size=120, hidden_size=16, num_layers=1, num_heads=2, max_position_embeddings=32)
    return base


SPANISH = ["Sin derrame pleural. Cardiomegalia leve. Neumotórax apical derecho. Nódulo pulmonar.",
           "Consolidación basal izquierda. Edema intersticial. Silueta cardiaca normal."] * 10


def test_disk_full_while_extending_the_vocabulary(tmp_path) -> None:
    from monai_medunic.text.vocab import extend_vocabulary

    base = _tiny_base(tmp_path)
    with small_disk(tmp_path / "disk", 8192) as disk:
        first = disk / "extended"
        extend_vocabulary(base, SPANISH, first, num_tokens=4, min_df=1)
        before = {p: _digest(p) for p in first.rglob("*") if p.is_file()}
        assert any(p.name == "vocab.txt" for p in before)
        fill(disk, leave=16 * 1024)  # the model weights need more than that
        with pytest.raises(OutputWriteError) as info:
            extend_vocabulary(base, SPANISH, first, num_tokens=6, min_df=1, overwrite=True)
        err = info.value
        assert err.path == str(first) and "no space left on the device" in str(err)
        assert {p: _digest(p) for p in first.rglob("*") if p.is_file()} == before  # the earlier vocabulary is intact
        assert _listing(disk) == {"filler.bin", "extended"} | {f"extended/{p.relative_to(first)}" for p in first.rglob("*")}
