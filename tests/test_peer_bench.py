"""``varestorer bench --peers ...`` without a model: the peers alone."""

from __future__ import annotations

import json

import pytest

from varestorer.benchmark.peer_bench import format_peer_table, run_peer_bench
from varestorer.cli.main import main
from varestorer.foreign.peers import peer_weights


def test_peers_alone_time_the_embedded_weights(tmp_path, capsys) -> None:
    out = tmp_path / "peers.json"
    args = ["bench", "--peers", "bicubic,realesr-general-x4v3", "--size", "16", "--runs", "1", "--warmup", "0"]
    assert main([*args, "--threads", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert list(result["peers"]) == ["bicubic", "realesr-general-x4v3"] and result["lq_size"] == 4
    assert result["peers"]["realesr-general-x4v3"]["weights"] == str(peer_weights("realesr-general-x4v3"))
    assert result["peers"]["realesr-general-x4v3"]["gflops"] > result["peers"]["bicubic"]["gflops"] == 0
    assert "realesr-general-x4v3" in capsys.readouterr().out and result["threads"] == 1


def test_peers_alone_errors() -> None:
    with pytest.raises(ValueError, match="unknown peer"):
        run_peer_bench(["esrgan9000"])
    with pytest.raises(ValueError, match="multiple of 4"):
        run_peer_bench(["bicubic"], size=10)
    result = run_peer_bench(["bicubic"], size=8, runs=1, warmup=0)
    assert "bicubic" in format_peer_table(result)


def test_cli_bench_without_model_or_peers_is_one_line(capsys) -> None:
    assert main(["bench"]) == 2
    assert "give --model" in capsys.readouterr().err
