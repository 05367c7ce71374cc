"""medunic build-base-model: an offline BERT masked-LM from a report corpus, from the command line."""

from __future__ import annotations

import json

from transformers import AutoModelForMaskedLM, AutoTokenizer

from monai_medunic.cli import main


def test_build_base_model_from_the_command_line(tmp_path, capsys) -> None:
    corpus = tmp_path / "reports.jsonl"
    texts = [f"Heart size is normal. No pleural effusion number {i}." for i in range(40)] + ["Small left effusion."] * 10
    corpus.write_text("".join(json.dumps({"report": t}) + "\n" for t in texts))
    out = tmp_path / "base"
    assert main(["build-base-model", "--corpus", str(corpus), "--out", str(out), "--vocab-size", "120",
                 "--hidden-size", "32", "--max-length", "64"]) == 0
    assert "base model written to" in capsys.readouterr().out
    tok = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    model = AutoModelForMaskedLM.from_pretrained(str(out), local_files_only=True)
    assert 20 < len(tok) <= 120 and model.config.hidden_size == 32 and model.config.max_position_embeddings == 64
    assert "effusion" in tok.get_vocab()
    assert main(["build-base-model", "--corpus", str(corpus), "--out", str(out)]) == 1  # exists: a one-line error, not a traceback
