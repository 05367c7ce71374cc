"""The label-efficiency command's tables and variant selection (``python -m monai_medunic.demo_dense``); its runs
are the dense bundles' workflows, tested in tests/bundles/test_cxr_{segmentation,detection}_bundle.py."""

from __future__ import annotations

import pytest

from monai_medunic.demo_dense import DETECTION_VARIANTS, SEGMENTATION_VARIANTS, cli_main, gain_table, select_variants
from monai_medunic.errors import ConfigurationError
from monai_medunic.metrics.dense import efficiency_table

SUMMARY = {
    "metric": "test_dice",
    "fractions": [0.01, 0.1, 1.0],
    "table": {"medunic_frozen": {"0.01": 0.30, "0.1": 0.40, "1": 0.50},
              "random_frozen": {"0.01": 0.10, "0.1": 0.35, "1": None},
              "linear_probe": {"0.01": 0.20, "0.1": 0.45, "1": 0.50}},
}


def test_tables_show_every_variant_and_the_gain_of_pretraining_per_fraction() -> None:
    table = efficiency_table(SUMMARY).splitlines()
    assert table[0] == "test_dice" and "| 1 % labels | 10 % labels | 100 % labels |" in table[2]
    assert "| random_frozen | 0.100 | 0.350 | n/a |" in table
    gains = gain_table(SUMMARY).splitlines()
    assert gains[0] == "| medunic_frozen minus | 1 % | 10 % | 100 % |"
    assert gains[2:] == ["| random_frozen | +0.200 | +0.050 | n/a |", "| linear_probe | +0.100 | -0.050 | +0.000 |"]


def test_variant_selection_per_task() -> None:
    assert select_variants("segmentation") == SEGMENTATION_VARIANTS and "linear_probe" not in DETECTION_VARIANTS
    chosen = select_variants("detection", ["medunic_frozen", "linear_probe", "random_frozen"])
    assert list(chosen) == ["medunic_frozen", "random_frozen"]  # the linear probe has no detection variant
    assert chosen["random_frozen"] == {"encoder_init": "random"}
    with pytest.raises(ConfigurationError, match="unknown variants"):
        select_variants("segmentation", ["medunic_frozen", "imagenet"])
    with pytest.raises(ConfigurationError, match="must include medunic_frozen"):
        select_variants("segmentation", ["random_frozen"])


def test_command_line_refuses_bad_settings_before_any_work(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        cli_main(["--out", str(tmp_path / "o"), "--fractions", "0", "1"])
    assert "fraction in (0, 1]" in capsys.readouterr().err
    with pytest.raises(ConfigurationError, match="must include medunic_frozen"):
        cli_main(["--out", str(tmp_path / "o"), "--variants", "random_frozen"])
    assert not (tmp_path / "o").exists()
