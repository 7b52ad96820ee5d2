"""Shared fixtures: one autouse seed + single-thread fixture, tiny-image and tiny-T5 factories."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    """Seed every global generator; run torch on one thread (tiny ops are faster and timings steadier)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_image():
    """Factory for a smooth, seeded RGB ``uint8`` image of a given size (H, W, 3)."""

    def make(height: int = 32, width: int = 32, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng(seed)
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        base = np.stack([np.sin(xx / 5 + c) * np.cos(yy / 7 - c) for c in range(3)], axis=-1)
        noise = rng.normal(0, 0.05, size=(height, width, 3))
        return np.clip((base * 0.4 + 0.5 + noise) * 255, 0, 255).astype(np.uint8)

    return make


SRC_DIR = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "src")


def subprocess_env() -> dict[str, str]:
    """Environment for child processes that must import this checkout's ``src`` (not an installed copy)."""
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = SRC_DIR + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


TINY_T5_WORDS = ["<pad>", "</s>", "<unk>", "a", "photo", "of", "cat", "dog", "on", "grass", "sharp", "blurry"]


def write_tiny_t5(folder) -> None:
    """A 2-layer, 32-wide randomly initialised T5 encoder and a word-level tokenizer (no downloads)."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {w: i for i, w in enumerate(TINY_T5_WORDS)}
    core = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    core.post_processor = tokenizers.processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.save_pretrained(folder)
    config = transformers.T5Config(
        vocab_size=len(TINY_T5_WORDS), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0
    )
    torch.manual_seed(0)
    transformers.T5EncoderModel(config).save_pretrained(folder)


def train_job_args(job: str, recipe, output_dir, folders, *extra: str) -> list[str]:
    """``varestorer train JOB`` arguments for a recipe, pointed at tmp output and (train, val) image folders."""
    train, val = folders
    return [
        "train",
        job,
        "--config",
        str(recipe),
        "--set",
        f'train.output_dir="{output_dir}"',
        "--set",
        f'data.train_dirs=["{train}"]',
        "--set",
        f'data.val_dir="{val}"',
        *extra,
    ]


def write_fake_perceptual_assets(cache) -> None:
    """vgg16-imagenet, lpips-vgg-v0.1 and dists-weights with random weights, in the asset cache layout under
    ``cache`` (point ``VARESTORER_CACHE`` at it): the LPIPS and DISTS terms run their real code, offline."""
    import json

    from safetensors.torch import save_file

    from varestorer.metrics.backbones import vgg16_features

    assets = cache / "assets"
    assets.mkdir(parents=True)
    torch.manual_seed(0)
    features = vgg16_features()
    vgg = {k.replace("convs.", "conv"): v.contiguous() for k, v in features.state_dict().items()}
    heads = {f"lin{i}.weight": torch.rand(1, c, 1, 1) for i, c in enumerate(features.channels)}
    total = 3 + sum(features.channels)
    dists = {"alpha": torch.rand(1, total, 1, 1), "beta": torch.rand(1, total, 1, 1)}
    for name, state in (("vgg16-imagenet", vgg), ("lpips-vgg-v0.1", heads), ("dists-weights", dists)):
        save_file(state, str(assets / f"{name}.safetensors"))
        (assets / f"{name}.json").write_text(json.dumps({"name": name}), encoding="utf-8")
