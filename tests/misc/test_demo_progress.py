"""The demo's live progress line, read from a bundle run's StatsHandler output as it streams."""

from __future__ import annotations

from monai_medunic.demo import _BundleProgress


def test_progress_lines_follow_the_bundle_output(capsys) -> None:
    progress = _BundleProgress("cxr_medunic", every_s=0.0)
    # tqdm's carriage returns and a line split across two reads, as a pipe delivers them
    progress.feed(b"INFO - Epoch: 1/24, Iter: 3/16 -- loss: 6.4343 loss_ctr: 0.59\rEpoch [1/24]: [3/16] 19%|")
    progress.feed(b"\nINFO - Epoch: 2/24, Iter: 1")
    progress.feed(b"6/16 -- loss: 2.5e+00 loss_cvl: 1.9\n")
    progress.close()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("    [cxr_medunic] epoch 1/24, iteration 3/16, loss 6.4343;") and "ETA" in out[0]
    assert out[1].startswith("    [cxr_medunic] epoch 2/24, iteration 16/16, loss 2.5e+00;")
    assert len(out) == 2
