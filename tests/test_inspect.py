from __future__ import annotations

import json

import pytest
import torch

from varestorer.cli.inspect import resolve_preset
from varestorer.cli.main import main
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer


def test_preset_json_matches_the_model(capsys) -> None:
    assert main(["inspect", "tokenizer:tiny", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    model = MultiScaleTokenizer.from_preset("tiny")
    assert set(report) == {"params", "trainable", "tensors"}
    assert report["params"] == report["trainable"] == sum(p.numel() for p in model.parameters())
    assert report["tensors"] == {k: list(v.shape) for k, v in model.state_dict().items()}


def test_big_preset_is_instant_and_unqualified_names_resolve(capsys) -> None:
    assert main(["inspect", "infinity-d32", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["params"] == 110_118_051
    assert report["tensors"]["quantize.lfq.mask"] == [32] and report["tensors"]["quantizer.lfq.mask"] == [32]
    assert main(["inspect", "tokenizer:small", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    assert "architecture:" in out and "encoder: Encoder" in out and "decoder.conv_out.conv.weight  (3, 16, 3, 3)" in out


def test_bad_preset_names_are_one_line_errors(capsys) -> None:
    assert main(["inspect", "no-such-thing"]) == 2
    assert "neither a file/folder nor a preset" in capsys.readouterr().err
    assert main(["inspect", "tokenizer:huge"]) == 2
    assert "unknown tokenizer preset 'huge'" in capsys.readouterr().err
    assert main(["inspect", "vae:tiny"]) == 2
    assert "unknown model family 'vae'" in capsys.readouterr().err
    assert resolve_preset("tokenizer:infinity-d16") == ("tokenizer", "infinity-d16")
    assert resolve_preset("realesrgan-x4plus") == ("rrdbnet", "realesrgan-x4plus")  # peer presets too


def test_checkpoint_folder_and_foreign_file(tmp_path, capsys) -> None:
    model = MultiScaleTokenizer.from_preset("tiny")
    model.save_pretrained(tmp_path / "tok")
    assert main(["inspect", str(tmp_path / "tok"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["tensors"] == {k: list(v.shape) for k, v in model.state_dict().items()}
    assert report["params"] == sum(p.numel() for p in model.parameters())
    assert main(["inspect", str(tmp_path / "tok")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("MultiScaleTokenizer:") and "architecture:" in out
    torch.save({"vae": {"encoder.conv_in.weight": torch.zeros(4, 3, 3, 3)}}, tmp_path / "foreign.pth")
    assert main(["inspect", str(tmp_path / "foreign.pth"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tensors"] == {"vae.encoder.conv_in.weight": [4, 3, 3, 3]}
    (tmp_path / "bad.pth").write_bytes(b"nope")
    assert main(["inspect", str(tmp_path / "bad.pth")]) == 2
    err = capsys.readouterr().err
    assert "bad.pth" in err and "unreadable" in err and err.count("\n") == 1


@pytest.mark.timeout(60)
def test_help_documents_preset_names(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["inspect", "--help"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and "FAMILY:NAME" in out and "tokenizer:small" in out


def test_student_summary_names_the_trainable_parts(capsys) -> None:
    assert main(["inspect", "student:tiny", "--depth", "0"]) == 0
    line = next(s for s in capsys.readouterr().out.splitlines() if s.startswith("student: "))
    assert "LoRA" in line and "other trainable parts (encoder, precleaner" not in line
    assert "other trainable parts (encoder) " in line  # the tiny preset trains its encoder, no pre-cleaner
