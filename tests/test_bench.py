"""varestorer bench: the JSON it writes, FLOP counts, and fast paths (bf16, compiled) vs the reference path."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from varestorer.benchmark.analytic import transformer_flops
from varestorer.benchmark.bench import STAGES as STAGE_ORDER
from varestorer.benchmark.bench import format_table, run_bench, stage_calls
from varestorer.benchmark.presets import bench_presets, bench_student, parse_schedule, preset_schedule
from varestorer.benchmark.timing import count_flops, measure
from varestorer.cli.main import main
from varestorer.foreign.peers import peer_presets
from varestorer.models.student import STUDENT_PRESETS, Student
from varestorer.tokenizer.scales import infinity_schedule, token_count

KEYS = {
    "one_step_ms",
    "multi_step_ms",
    "ratio",
    "stages_ms",
    "peak_mem_mb",
    "gflops",
    "device",
    "torch",
    "dtype",
    "size",
    "batch_size",
    "peers",
    "images_per_s",
    "end_to_end_ms",
}
STAGES = {"preclean", "encode", "predict", "to_latent", "decode", "total"}


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny models on a shared 2-core box: one thread avoids OpenMP barrier stalls.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def test_run_bench_tiny_cpu_result() -> None:
    result = run_bench("tiny", runs=1, warmup=0, peers=["bicubic", "realesr-general-x4v3"], batch_size=2)
    assert set(result) >= KEYS
    json.loads(json.dumps(result))  # JSON-ready
    assert set(result["stages_ms"]) == STAGES and result["stages_ms"]["preclean"] is None  # no pre-cleaner
    assert all(result["stages_ms"][k] > 0 for k in STAGES - {"preclean"})
    assert all(callable(getattr(Student, name)) for name in STAGES - {"total"})  # each stage is a method
    assert result["one_step_ms"] == result["stages_ms"]["predict"]
    assert result["ratio"] == pytest.approx(result["multi_step_ms"] / result["one_step_ms"])
    assert result["images_per_s"] == pytest.approx(2000 / result["end_to_end_ms"])
    assert result["size"] == 64 and result["lq_size"] == 16 and result["batch_size"] == 2
    assert result["device_type"] == "cpu" and result["dtype"] == "fp32" and result["peak_mem_mb"] >= 0
    assert set(result["peers"]) == {"bicubic", "realesr-general-x4v3"}
    assert result["peers"]["realesr-general-x4v3"]["gflops"] > result["peers"]["bicubic"]["gflops"] == 0
    # Counted FLOPs of the transformer pass equal the closed form; generation (CFG = 2 rows, caption) costs more.
    student = bench_student("tiny")
    expected = transformer_flops(student.transformer.config, student.schedule) / 1e9
    assert result["gflops"]["predict"] == pytest.approx(expected, rel=1e-9)
    assert result["gflops"]["multi_step"] > result["gflops"]["predict"]
    assert "predict" in format_table(result) and "realesr-general-x4v3" in format_table(result)


def test_bench_stages_chained_are_the_shipped_pass_with_every_option_on() -> None:
    # The shipped default has a pre-cleaner, lq_bit_skip and fidelity_path; a causal mask makes a wrong mask show.
    config = replace(
        STUDENT_PRESETS["tiny"],
        lq_bit_skip=True,
        fidelity_path=True,
        attention="causal",
        precleaner=peer_presets()["precleaner-1x"][1],
        lora_rank=0,
        merged=True,
    )
    student = Student(config).eval()
    assert student.lq_bit_gain is not None and student.fidelity_weight is not None
    with torch.no_grad():  # trained-looking values, so that dropping either path changes the output
        student.lq_bit_gain.uniform_(-3.0, 3.0, generator=torch.Generator().manual_seed(1))
        student.fidelity_weight.uniform_(0.2, 1.5, generator=torch.Generator().manual_seed(2))
    lq = torch.rand(2, 3, 16, 16)
    outputs: dict = {}
    calls = stage_calls(student, lq, outputs)
    assert tuple(calls) == STAGE_ORDER and all(callable(getattr(Student, name)) for name in calls)
    with torch.inference_mode():
        for name, call in calls.items():
            outputs[name] = call()
        expected = student.restore(lq)
    assert torch.equal(outputs["decode"], expected.sr)
    assert torch.equal(outputs["predict"], expected.logits) and torch.equal(outputs["to_latent"].f_hat, expected.f_hat)


def test_analytic_flops_match_counter_with_caption_and_research_figure() -> None:
    student = bench_student("tiny")
    schedule = student.schedule
    inputs = torch.randn(1, token_count(schedule) - 1, student.transformer.config.token_dim)
    from varestorer.benchmark.bench import random_caption

    caption = random_caption(student, 1, torch.Generator().manual_seed(0))
    with torch.inference_mode():
        counted = count_flops(lambda: student.transformer(inputs, schedule, caption, mask="full"))
    assert counted == transformer_flops(student.transformer.config, schedule, text_tokens=caption.tokens.shape[1])
    # Infinity-2B at 512 px: the linear layers are 4737 GMAC (docs/sources.md: our arithmetic).
    from varestorer.transformer.config import transformer_preset

    config = transformer_preset("infinity-2b")
    linear_flops = 28 * 2521 * config.width**2 * config.depth
    assert linear_flops / 2 / 1e9 == pytest.approx(4737, abs=1)
    assert transformer_flops(config, infinity_schedule(512, 512)) > linear_flops


def test_presets_and_schedules() -> None:
    assert set(bench_presets()) >= {"tiny", "small", "infinity-2b"}
    assert token_count(preset_schedule(bench_presets()["infinity-2b"], 512)) == 2521
    assert parse_schedule("1,2,4,8") == ((1, 1), (2, 2), (4, 4), (8, 8))
    assert parse_schedule("1x1, 2x3") == ((1, 1), (2, 3))
    for bad in ("1,,2", "a", "1x2x3", "0,1"):
        with pytest.raises(ValueError, match="bad schedule"):
            parse_schedule(bad)
    student = bench_student("tiny", size=128, schedule=parse_schedule("1,2,8"))
    assert student.schedule == ((1, 1), (2, 2), (8, 8)) and student.config.image_size == 128
    with pytest.raises(ValueError, match="neither a preset"):
        bench_student("no-such-model")


def test_measure_takes_the_median() -> None:
    calls = []
    timing = measure(lambda: calls.append(1), torch.device("cpu"), warmup=2, runs=3)
    assert len(calls) == 5 and len(timing.runs_ms) == 3 and timing.ms == sorted(timing.runs_ms)[1]
    with pytest.raises(ValueError):
        measure(lambda: None, torch.device("cpu"), runs=0)


# ---------------------------------------------------------------------------------- fast paths
def _tiny_student_and_lq():
    student = bench_student("tiny")
    lq = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return student, lq


def test_bf16_autocast_agrees_with_fp32_stage_by_stage() -> None:
    """Stated tolerances (random weights, bf16 autocast on the CPU): relative L2 error of the encoder
    latent and of the transformer logits < 3e-2; >= 99% identical bits; decoder image relative L2 < 8e-2
    and, end to end, >= 90% identical bits and an output in [0, 1]. Pixel errors are not compared end to end:
    with random weights many bits sit at the decision boundary, and a bit that bf16 flips changes its
    token's whole patch (the fixed-bit decoder comparison above measures the image path)."""
    student, lq = _tiny_student_and_lq()
    with torch.inference_mode():
        x = torch.nn.functional.interpolate(lq, size=64, mode="bicubic") * 2 - 1
        f_ref = student.encoder(x)
        inputs = student.quantizer.quantize(f_ref, student.schedule, with_norms=False).inputs
        logits_ref = student.transformer(inputs, student.schedule, None, mask="full")
        img_ref = student.decoder(student.logits_to_f_hat(logits_ref))
        ref = student.restore(lq)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            f_bf = student.encoder(x)
            logits_bf = student.transformer(inputs, student.schedule, None, mask="full")
            img_bf = student.decoder(student.logits_to_f_hat(logits_ref))
            out = student.restore(lq)
    assert _rel(f_bf, f_ref) < 3e-2
    assert _rel(logits_bf, logits_ref) < 3e-2
    assert ((logits_bf[..., 1] > logits_bf[..., 0]) == (logits_ref[..., 1] > logits_ref[..., 0])).float().mean() > 0.99
    assert _rel(img_bf, img_ref) < 8e-2
    same_bits = (out.logits[..., 1] > out.logits[..., 0]) == (ref.logits[..., 1] > ref.logits[..., 0])
    assert same_bits.float().mean() > 0.9
    assert out.sr.shape == ref.sr.shape and out.sr.min() >= 0 and out.sr.max() <= 1


@pytest.mark.slow  # dynamo tracing of the whole step: ~10 s on the 2-core box
def test_one_step_has_no_graph_break() -> None:
    """The whole one-step forward traces as one graph: no .item()/.tolist()/host copies inside the step."""
    student, lq = _tiny_student_and_lq()
    torch._dynamo.reset()
    traced = torch.compile(student.forward, fullgraph=True, backend="eager")
    with torch.inference_mode():
        ref = student(lq)
        out = traced(lq)
    torch.testing.assert_close(out, ref)


@pytest.mark.slow
@pytest.mark.timeout(900)  # inductor's C++ builds took 189 s on the loaded 2-core box
def test_inductor_compiled_student_matches_eager() -> None:
    """Compiled (inductor, CPU) vs eager: images within 1e-3 absolute, logits within 1e-3 relative."""
    import shutil

    if not any(shutil.which(name) for name in ("c++", "g++", "clang++")):
        pytest.skip("inductor on the CPU needs a C++ compiler (apt-get install g++)")
    student, lq = _tiny_student_and_lq()
    with torch.inference_mode():
        ref = student.restore(lq)
        for module in (student.encoder, student.transformer, student.decoder):
            module.compile()
        out = student.restore(lq)
    assert _rel(out.logits, ref.logits) < 1e-3
    assert (out.sr - ref.sr).abs().max() < 1e-3


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_step_never_synchronises_and_bf16_agrees() -> None:
    student = bench_student("tiny", device="cuda")
    lq = torch.rand(2, 3, 16, 16, device="cuda")
    with torch.inference_mode():
        ref = student.restore(lq)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            student(lq)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = student.restore(lq)
    assert _rel(out.logits, ref.logits) < 3e-2


# ------------------------------------------------------------------------------------------ CLI
def test_cli_bench_writes_json_and_refuses_to_overwrite(tmp_path, capsys) -> None:
    student = bench_student("tiny")
    folder = student.save_pretrained(tmp_path / "student")
    out = tmp_path / "bench.json"
    args = ["bench", "--model", str(folder), "--runs", "1", "--warmup", "0", "--no-multi-step", "--json", str(out)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "to_latent" in table
    result = json.loads(out.read_text())
    assert set(result) >= KEYS and result["multi_step_ms"] is None and result["ratio"] is None
    assert main(args) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["bench", "--model", "nonexistent-preset"]) == 2
    err = capsys.readouterr().err
    assert "neither a preset" in err and err.count("\n") == 1
    assert main(["bench", "--model", "tiny", "--peers", "esrgan9000"]) == 2
    assert "unknown peer" in capsys.readouterr().err


@pytest.mark.slow  # a fresh interpreter running the GPU-check script: ~10 s
def test_gpu_check_entry_runs_on_cpu_without_optional_packages(tmp_path) -> None:
    """benchmarks/gpu_check.py with a tiny preset on the CPU, as on a bare machine: PIL, OpenCV, tqdm,
    scipy and transformers cannot be imported."""
    import subprocess
    import sys
    from pathlib import Path

    from conftest import subprocess_env

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    blocker = (
        "import sys, runpy, importlib.abc, importlib.machinery\n"
        "BLOCKED = {'PIL', 'cv2', 'tqdm', 'scipy', 'transformers', 'tensorboard'}\n"
        "class Block(importlib.abc.MetaPathFinder, importlib.abc.Loader):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED:\n"
        "            return importlib.machinery.ModuleSpec(name, self)\n"
        "    def create_module(self, spec):\n"
        "        raise ModuleNotFoundError(f'No module named {spec.name!r}', name=spec.name)\n"
        "    def exec_module(self, module):\n"
        "        pass\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.argv = [{str(script)!r}] + sys.argv[1:]\n"
        f"runpy.run_path({str(script)!r}, run_name='__main__')\n"
    )
    args = ["--out", str(tmp_path), "--model", "tiny", "--size", "64", "--device", "cpu"]
    args += ["--runs", "1", "--warmup", "0", "--batches", "1", "--no-compile"]
    env = {**subprocess_env(), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", blocker, *args], capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    row = summary["results"]["tiny_64_bf16_b1"]
    assert row["ratio"] == pytest.approx(row["multi_step_ms"] / row["one_step_ms"])
    assert set(row["meets"]) == {"one_step_ms<=25", "end_to_end_ms<=40", "ratio>=7"}
    assert summary["sync_check"]["checked"] is False and not summary["errors"]
    full = json.loads((tmp_path / "tiny_64_bf16_b1.json").read_text())
    assert {"realesrgan-x4plus", "realesrgan-x4plus_fp16", "bicubic"} <= set(full["peers"])


def test_bench_peer_times_the_module_a_user_gets(tmp_path, monkeypatch) -> None:
    from varestorer.archs.srvgg import SRVGGNetCompact
    from varestorer.benchmark.bench import bench_peer, peer_module
    from varestorer.foreign.peers import build_peer, load_peer

    torch.manual_seed(0)
    folder = build_peer("realesr-general-x4v3").save_pretrained(tmp_path / "peer")
    user = load_peer(folder)  # what `varestorer baseline --weights folder` restores with
    for weights in (folder, None):
        net = peer_module("realesr-general-x4v3", weights=weights)
        assert type(net) is type(user) and net.config == user.config and not net.training
        assert all(p.dtype == torch.float32 and p.is_contiguous() for p in net.parameters())
    loaded = peer_module("realesr-general-x4v3", weights=folder)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), user.state_dict().values(), strict=True))
    # The timed calls are the arch's own forward on the bench's LQ batch: one counted call + warm-up + runs.
    calls: list[tuple[int, ...]] = []
    forward = SRVGGNetCompact.forward
    monkeypatch.setattr(SRVGGNetCompact, "forward", lambda self, x: calls.append(tuple(x.shape)) or forward(self, x))
    lq = torch.rand(2, 3, 8, 8)
    result = bench_peer("realesr-general-x4v3", lq, dtype="fp32", warmup=2, runs=3, weights=folder)
    assert calls == [(2, 3, 8, 8)] * (1 + 1 + 3) and result["weights"] == str(folder)
    assert result["gflop_per_s"] == pytest.approx(result["gflops"] * 2 * 1000 / result["ms"])
    with pytest.raises(ValueError, match="bicubic has no weights"):
        bench_peer("bicubic", lq, dtype="fp32", warmup=0, runs=1, weights=folder)


def test_cli_bench_peer_weights_errors_are_one_line(capsys) -> None:
    assert main(["bench", "--model", "tiny", "--peer-weights", "realesr-general-x4v3"]) == 2
    err = capsys.readouterr().err
    assert "NAME=PATH" in err and err.count("\n") == 1
    assert main(["bench", "--model", "tiny", "--peer-weights", "realesr-general-x4v3=/nonexistent.param"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_tokenizer_bench_times_tokenizers_side_by_side(tmp_path, capsys) -> None:
    from varestorer.tokenizer.taef2 import TAEF2_PRESETS, TAEF2Tokenizer

    folder = TAEF2Tokenizer(TAEF2_PRESETS["taef2-tiny"]).save_pretrained(tmp_path / "tok")
    out = tmp_path / "tokenizers.json"
    targets = f"taef2:taef2-tiny,tokenizer:tiny,{folder}"
    assert main(["bench", "--tokenizer", targets, "--size", "64", "--runs", "1", "--json", str(out)]) == 0
    assert "enc+quant" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert result["size"] == 64 and [row["target"] for row in result["tokenizers"]] == targets.split(",")
    stride8, stride16, saved = result["tokenizers"]
    assert (stride8["stride"], stride16["stride"], saved["model_type"]) == (8, 16, "TAEF2Tokenizer")
    assert stride8["tokens"] > stride16["tokens"]  # the 8x8 grid's schedule has more tokens than the 4x4 one
    for row in result["tokenizers"]:
        stages = row["stages"]
        assert all(stages[s]["ms"] > 0 and stages[s]["gflops"] > 0 for s in ("encode_quantize", "decode"))
        assert stages["total"]["ms"] == pytest.approx(stages["encode_quantize"]["ms"] + stages["decode"]["ms"])
    assert saved["stages"]["total"]["gflops"] == pytest.approx(stride8["stages"]["total"]["gflops"])  # same shape


def test_tokenizer_bench_errors_are_one_line(capsys) -> None:
    for argv, message in (
        (["bench", "--tokenizer", "student:tiny"], "not a tokenizer family"),
        (["bench", "--tokenizer", "taef2:huge"], "unknown taef2 preset 'huge'"),
        (["bench", "--tokenizer", "taef2:taef2-tiny", "--model", "tiny"], "leave out --model"),
        (["bench", "--tokenizer", "taef2:taef2-tiny", "--size", "60"], "not a multiple of"),
        (["bench"], "give --model"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
