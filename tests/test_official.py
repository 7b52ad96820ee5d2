"""The official VARestorer release: strict loading by the official key names, the one-step pass, the CLI.

Synthetic files at reduced width (tiny transformer, tokenizer and SwinIR) take the same code path as
the 2B release; the 2B key names and shapes are checked on the meta device.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from varestorer.archs.swinir import SwinIR, SwinIRConfig
from varestorer.inference.restorer import Restorer
from varestorer.models.official import OfficialVARestorer, official_key_shapes
from varestorer.models.official_config import OfficialConfig, write_official_config
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.config import tokenizer_preset
from varestorer.transformer.config import transformer_preset
from varestorer.transformer.model import NextScaleTransformer
from varestorer.transformer.text import TextCondition

TINY_SWINIR = SwinIRConfig(embed_dim=12, depths=(2,), num_heads=(2,), window_size=4, upscale=4, unshuffle=4)


def tiny_config(**overrides: object) -> OfficialConfig:
    config = OfficialConfig(
        transformer=transformer_preset("tiny", block_chunks=2),
        tokenizer=tokenizer_preset("tiny"),
        swinir=TINY_SWINIR,
        image_size=64,
        lora_rank=2,
    )
    return dataclasses.replace(config, **overrides)  # type: ignore[arg-type]


def official_transformer_file(path: Path, config: OfficialConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """A ``varestorer.pth`` with the official key names (``.linear.weight``, ``.lora_down/up.weight``)."""
    generator = torch.Generator().manual_seed(seed)
    base = NextScaleTransformer(config.transformer)
    base.reset_parameters(generator)
    plain = base.state_dict()
    state = {}
    for key, shape in official_key_shapes(base, config.lora_rank).items():
        if ".lora_" in key:
            state[key] = torch.randn(shape, generator=generator) * 0.05
        else:
            state[key] = plain[key.replace(".linear.", ".")].clone()
    torch.save(state, path)
    return state


def release_folder(folder: Path, config: OfficialConfig) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    official_transformer_file(folder / "varestorer.pth", config)
    tokenizer = MultiScaleTokenizer(config.tokenizer)
    torch.save({"vae": tokenizer.state_dict()}, folder / "infinity_vae_d32reg.pth")
    torch.manual_seed(0)
    swinir = SwinIR(config.swinir)
    state = {f"module.{k}": v for k, v in swinir.state_dict().items()}
    torch.save({"state_dict": state}, folder / "general_swinir_v1.ckpt")
    write_official_config(folder, config)
    return folder


def test_2b_release_key_names_and_shapes() -> None:
    """varestorer.pth of the 2B release: Infinity-2B's tensors, LoRA-wrapped attention linears."""
    with torch.device("meta"):
        transformer = NextScaleTransformer(transformer_preset("infinity-2b"))
    shapes = official_key_shapes(transformer, 32)
    block = "block_chunks.3.module.2."
    assert shapes[block + "sa.mat_qkv.linear.weight"] == (6144, 2048)
    assert shapes[block + "sa.mat_qkv.lora_down.weight"] == (32, 2048)
    assert shapes[block + "sa.mat_qkv.lora_up.weight"] == (6144, 32)
    assert shapes[block + "ca.mat_kv.lora_up.weight"] == (4096, 32)
    assert shapes[block + "ca.mat_q.linear.bias"] == (2048,)
    assert shapes[block + "sa.q_bias"] == (2048,)
    assert block + "sa.mat_qkv.weight" not in shapes and block + "ffn.fc1.weight" in shapes
    assert "text_proj_for_sos.ca.mat_kv.weight" in shapes  # the pooling is not LoRA-wrapped
    assert sum(".lora_down." in k for k in shapes) == 32 * 5


def test_loads_strictly_and_folds_the_adapters(tmp_path: Path) -> None:
    config = tiny_config()
    folder = release_folder(tmp_path / "release", config)
    raw = torch.load(folder / "varestorer.pth", weights_only=True)
    model = OfficialVARestorer.from_pretrained(folder, dtype=torch.float32)
    name = "block_chunks.1.module.0.sa.mat_qkv"
    expected = raw[f"{name}.linear.weight"] + raw[f"{name}.lora_up.weight"] @ raw[f"{name}.lora_down.weight"]
    torch.testing.assert_close(model.transformer.state_dict()[f"{name}.weight"], expected)
    # The official LoRA-wrapped cross-attention never adds ca.v_bias.
    assert not model.transformer.state_dict()["block_chunks.0.module.0.ca.v_bias"].any()
    assert model.transformer.state_dict()["text_proj_for_sos.ca.v_bias"].shape == (64,)
    assert model.swinir is not None and model.swinir.config == TINY_SWINIR


@pytest.mark.parametrize("problem", ["missing", "unexpected", "shape"])
def test_a_mismatched_transformer_file_is_refused_with_the_names(tmp_path: Path, problem: str) -> None:
    config = tiny_config()
    folder = release_folder(tmp_path / "release", config)
    state = torch.load(folder / "varestorer.pth", weights_only=True)
    key = "block_chunks.1.module.0.ca.proj.lora_up.weight"
    if problem == "missing":
        del state[key]
    elif problem == "unexpected":
        state["block_chunks.1.module.0.ffn.fc1.lora_up.weight"] = torch.zeros(2, 2)
    else:
        state[key] = torch.zeros(3, 3)
    torch.save(state, folder / "varestorer.pth")
    with pytest.raises(ValueError, match="not the official VARestorer transformer") as info:
        OfficialVARestorer.from_pretrained(folder)
    assert ("ffn.fc1.lora_up" if problem == "unexpected" else key) in str(info.value)


def test_without_the_extra_block_the_pass_is_the_full_attention_transformer() -> None:
    """extra_lq_scale=False: exactly our transformer's one-step (mask="full") pass."""
    torch.manual_seed(0)
    model = OfficialVARestorer(tiny_config(extra_lq_scale=False)).eval()
    model.transformer.reset_parameters(torch.Generator().manual_seed(1))
    inputs = model.lq_to_inputs(torch.rand(2, 3, 16, 16))
    text = TextCondition(torch.randn(2, 5, 32), torch.tensor([5, 3]))
    ours = model.logits(inputs, text)
    reference = model.transformer(inputs, model.schedule, text, mask="full")
    torch.testing.assert_close(ours, reference)


def test_the_extra_block_reads_positions_past_the_schedule_on_infinitys_grid() -> None:
    from varestorer.tokenizer.scales import INFINITY_TEMPLATES
    from varestorer.transformer.rope import rope_extent, rope_table, scale_positions

    model = OfficialVARestorer(tiny_config())
    L = sum(h * w for h, w in model.schedule)  # 1 + 4 + 16
    table = model._rope(L + 16, torch.device("cpu"))
    next_scale = INFINITY_TEMPLATES[1.0][len(model.schedule)]  # (6, 6): its first 16 positions
    positions = scale_positions((next_scale,), rope_extent(model.schedule, "infinity"))[:16]
    torch.testing.assert_close(table[:, L:], rope_table(positions, model.transformer.config.head_dim))
    assert model.lq_to_inputs(torch.rand(1, 3, 16, 16)).shape == (1, L - 1 + 16, 8)


def test_forward_restores_and_is_seeded(tmp_path: Path) -> None:
    model = OfficialVARestorer.from_pretrained(release_folder(tmp_path / "r", tiny_config()), dtype=torch.float32)
    lq = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first, second = model(lq), model(lq)
    assert first.shape == (2, 3, 64, 64) and float(first.min()) >= 0 and float(first.max()) <= 1
    assert torch.equal(first, second)  # the bit draw is reseeded per call
    model.config = dataclasses.replace(model.config, seed=1)
    with torch.no_grad():
        assert not torch.equal(model(lq), first)


def test_restorer_and_cli_run_a_release_folder(tmp_path: Path) -> None:
    from PIL import Image

    from varestorer.cli.main import main

    folder = release_folder(tmp_path / "release", tiny_config())
    restorer = Restorer.from_pretrained(folder, device="cpu")
    assert restorer.dtype == torch.bfloat16  # the model's default dtype, also on the CPU
    image = (np.random.default_rng(0).random((20, 28, 3)) * 255).astype(np.uint8)
    out = Restorer.from_pretrained(folder, device="cpu", dtype="float32")(image)
    assert out.shape == (80, 112, 3) and out.dtype == np.uint8
    Image.fromarray(image).save(tmp_path / "in.png")
    code = main(["restore", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--model", str(folder)])
    assert code == 0
    assert Image.open(tmp_path / "out" / "in.png").size == (112, 80)


def test_a_folder_with_the_official_file_is_detected_without_config(tmp_path: Path) -> None:
    folder = tmp_path / "release"
    folder.mkdir()
    (folder / "varestorer.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(FileNotFoundError, match="lacks infinity_vae_d32reg.pth, general_swinir_v1.ckpt"):
        Restorer.from_pretrained(folder)


def test_a_wrapped_transformer_file_loads_too(tmp_path: Path) -> None:
    config = tiny_config()
    folder = release_folder(tmp_path / "release", config)
    state = torch.load(folder / "varestorer.pth", weights_only=True)
    torch.save({"infinity": {f"module.{k}": v for k, v in state.items()}}, folder / "varestorer.pth")
    model = OfficialVARestorer.from_pretrained(folder)
    assert model.transformer.pos_start.dtype == torch.bfloat16  # loaded in bf16 by default


# ------------------------------------------------------------------ passes, precision, streams (issue 30)
def official_tiled_passes(height: int, width: int, scale: int, tile: int) -> int:
    """Passes of the official tiled mode (``run_varestorer.py``, ``tiled=1``) for an LQ of ``height x width``:
    at the output size, the image is reflect-padded by the overlap (a quarter of the 512 px tile) on every
    side and covered by tiles at stride tile - overlap, the last one flush with the padded edge."""

    def per_axis(length: int) -> int:
        overlap = tile // 4
        padded = length + 2 * overlap
        if padded <= tile:
            return 1
        stride = tile - overlap
        starts = list(range(0, padded - tile + 1, stride))
        return len(starts) + (starts[-1] != padded - tile)

    return per_axis(height * scale) * per_axis(width * scale)


def count_passes(model: OfficialVARestorer) -> list[int]:
    """Images through the transformer so far (a forward hook on its input embedding; one per tile)."""
    seen: list[int] = []
    model.transformer.word_embed.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    return seen


def tiny_model(**overrides: object) -> OfficialVARestorer:
    torch.manual_seed(0)
    model = OfficialVARestorer(tiny_config(**overrides)).eval()
    model.transformer.reset_parameters(torch.Generator().manual_seed(1))
    return model


def test_an_lq_of_the_working_size_is_one_pass_and_larger_ones_no_more_than_the_official_tiles() -> None:
    """The official model declares no edge context: a 16 px LQ (the tiny model's 128 px) is one pass,
    not the four overlapping passes 4 px of context made; larger LQs make at most the official tiled count."""
    model = tiny_model()
    restorer = Restorer(model, device="cpu", dtype="float32", batch_size=4)
    assert restorer.edge_context == 0
    seen = count_passes(model)
    restorer.restore_tensor(torch.rand(1, 3, 16, 16))
    assert sum(seen) == 1
    for height, width in [(8, 12), (17, 16), (40, 64), (16, 70)]:
        seen.clear()
        restorer.restore_tensor(torch.rand(1, 3, height, width))
        official = official_tiled_passes(height, width, 4, 64)
        assert 1 <= sum(seen) <= official, (height, width, sum(seen), official)
    assert official_tiled_passes(128, 128, 4, 512) == 4  # the official tiled mode itself pays 4 for 128 px


def test_precision_per_stage_as_the_official_encoder_in_float32_the_rest_under_autocast() -> None:
    model = tiny_model()
    reference = copy.deepcopy(model)  # every stage in float32
    restorer = Restorer(model, device="cpu")  # the default: bfloat16, per stage
    assert restorer.dtype == torch.bfloat16 and model.precision == torch.bfloat16
    assert model.transformer.pos_start.dtype == torch.bfloat16
    assert {p.dtype for m in (model.encoder, model.decoder, model.swinir) for p in m.parameters()} == {torch.float32}
    dtypes: dict[str, torch.dtype] = {}
    for name, module in [
        ("encoder", model.encoder),
        ("block", model.transformer.block_list()[0]),
        ("decoder", model.decoder),
    ]:
        module.register_forward_hook(lambda _m, args, _out, name=name: dtypes.update({name: args[0].dtype}))
    assert model.swinir is not None
    model.swinir.register_forward_hook(lambda _m, _args, out: dtypes.update({"swinir out": out.dtype}))
    lq = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    restorer.restore_tensor(lq)
    assert dtypes == {
        "swinir out": torch.bfloat16,
        "encoder": torch.float32,
        "block": torch.bfloat16,
        "decoder": torch.float32,  # f_hat enters in float32; its convolutions run under autocast
    }
    cleaned = model.clean(lq)
    torch.testing.assert_close(model.encode(cleaned), reference.encode(cleaned), rtol=0, atol=0)  # LQ bits equal
    with torch.no_grad():
        assert model(lq).dtype == torch.float32 and reference(lq).dtype == torch.float32


def test_each_tile_position_draws_its_own_stream_and_a_batch_equals_single_passes() -> None:
    model = tiny_model()
    flat = torch.full((2, 3, 16, 16), 0.5)
    with torch.no_grad():
        same, other = model(flat, streams=[0, 1])
        assert not torch.equal(same, other)  # two tiles of one flat image: no repeated noise pattern
        torch.testing.assert_close(model(flat[:1], streams=[1])[0], other, rtol=0, atol=0)
    streams: list[list[int]] = []
    model.register_forward_pre_hook(lambda _m, _a, kwargs: streams.append(kwargs["streams"]), with_kwargs=True)
    image = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(4))
    one = Restorer(model, device="cpu", dtype="float32").restore_tensor(image)
    assert sorted(s for batch in streams for s in batch) == list(range(9))  # a 3 x 3 grid, one stream each
    batched = Restorer(model, device="cpu", dtype="float32", batch_size=4).restore_tensor(image)
    torch.testing.assert_close(batched, one, rtol=0, atol=2e-6)


@pytest.mark.slow  # importing transformers costs seconds
def test_a_prompt_keeps_the_text_encoder_out_of_the_weights(tmp_path: Path) -> None:
    from conftest import write_tiny_t5

    write_tiny_t5(tmp_path / "t5")
    model = OfficialVARestorer(tiny_config(), text_folder=str(tmp_path / "t5")).eval()
    keys = set(model.state_dict())
    with torch.no_grad():
        assert model(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)  # the default (empty) prompt through T5
    assert model._text_encoder is not None and set(model.state_dict()) == keys


# ---------------------------------------------------------------------------- the bench preset (issue 30)
def test_the_official_bench_preset_has_the_released_shapes_at_any_depth() -> None:
    from varestorer.benchmark.official_bench import OFFICIAL_BENCH_PRESETS, official_bench_model

    model = official_bench_model("official:varestorer-2b", depth=3, device="meta")
    config = model.transformer.config
    assert (config.depth, config.block_chunks, config.width) == (3, 1, 2048)
    assert model.precision == torch.bfloat16 and model.transformer.pos_start.dtype == torch.bfloat16
    assert next(model.encoder.parameters()).dtype == torch.float32
    tokens = sum(h * w for h, w in model.schedule) + model.schedule[-1][0] * model.schedule[-1][1]
    assert tokens == 3545 and model.swinir is not None and model.swinir.config.embed_dim == 180
    assert OFFICIAL_BENCH_PRESETS["official:varestorer-2b"]().transformer.depth == 32


def test_bench_times_every_stage_of_the_official_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from varestorer.cli.main import main

    out = tmp_path / "bench.json"
    args = ["bench", "--model", "official:tiny", "--batch-size", "2", "--runs", "1", "--warmup", "0"]
    assert main([*args, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert list(result["stages_ms"]) == ["clean", "encode", "predict", "to_latent", "decode", "total"]
    assert all(ms > 0 for ms in result["stages_ms"].values())
    assert (result["tokens"], result["batch_size"], result["size"], result["depth"]) == (37, 2, 64, 2)
    assert result["megapixels_per_s"] == pytest.approx(2 * 64 * 64 / 1e6 * 1000 / result["end_to_end_ms"])
    assert main(["bench", "--model", "official:nope"]) != 0
    assert "unknown official preset" in capsys.readouterr().err


@pytest.mark.slow
def test_the_gpu_script_runs_end_to_end_on_the_cpu_with_a_tiny_preset(tmp_path: Path) -> None:
    """benchmarks/gpu_official.py as the GPU call runs it, at a tiny size (compiled with the eager backend)."""
    import json
    import subprocess
    import sys

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_official.py"
    args = ["--model", "official:tiny", "--device", "cpu", "--batches", "1,2", "--runs", "1", "--warmup", "0"]
    done = subprocess.run(
        [sys.executable, str(script), "--out", str(tmp_path), *args, "--compile-backend", "eager"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert not summary["errors"] and summary["sync_check"]["checked"] is False
    best = summary["best_eager_batch"]
    expected = {"official_bf16_b1", "official_bf16_b2", "official_bf16_b1_compiled", f"official_bf16_b{best}_compiled"}
    assert set(summary["results"]) == expected
    assert summary["results"]["official_bf16_b1"]["peers_ms_per_tile"]["realesrgan-x4plus"] > 0
    assert json.loads((tmp_path / "official_bf16_b1_compiled.json").read_text())["compile"] is True


@pytest.mark.slow
def test_a_compiled_official_model_gives_the_eager_output() -> None:
    model = tiny_model()
    lq = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        eager = model(lq, streams=[0, 1])
        model.compile(backend="eager")
        compiled = model(lq, streams=[0, 1])
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-6)
    assert model.transformer.block_list()[0]._compiled_call_impl is not None  # the blocks, not just the wrapper
