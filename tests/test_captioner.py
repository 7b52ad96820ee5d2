"""Optional captions: a tiny random BLIP from a local folder; the Restorer prompts with its caption."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from test_official import tiny_config  # noqa: E402
from varestorer.inference.restorer import Restorer  # noqa: E402
from varestorer.models.captioner import Captioner  # noqa: E402
from varestorer.models.official import OfficialVARestorer  # noqa: E402
from varestorer.transformer.text import TextCondition  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "dog", "cat", "on", "grass", "photo", "of"]


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("blip")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    tokenizer = transformers.BertTokenizer(str(folder / "vocab.txt"))
    images = transformers.BlipImageProcessor(size={"height": 32, "width": 32})
    text = dict(vocab_size=len(VOCAB), hidden_size=16, intermediate_size=32, num_hidden_layers=1)
    text |= dict(num_attention_heads=2, max_position_embeddings=32, bos_token_id=2, sep_token_id=3, pad_token_id=0)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32)
    config = transformers.BlipConfig(text_config=text, vision_config=vision | {"patch_size": 16}, projection_dim=16)
    torch.manual_seed(0)
    transformers.BlipForConditionalGeneration(config).save_pretrained(folder)
    transformers.BlipProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def test_a_local_blip_captions_every_image(blip_folder: Path) -> None:
    captioner = Captioner.from_pretrained(blip_folder)
    captions = captioner(torch.rand(2, 3, 40, 30, generator=torch.Generator().manual_seed(0)))
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    assert captions == captioner(torch.rand(2, 3, 40, 30, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(FileNotFoundError, match="caption model folder not found"):
        Captioner.from_pretrained(blip_folder / "missing")


def test_without_a_prompt_each_image_is_prompted_with_its_caption(monkeypatch: pytest.MonkeyPatch) -> None:
    model = OfficialVARestorer(tiny_config()).eval()
    prompts: list[list[str]] = []

    def encode(batch: list[str]) -> TextCondition:
        prompts.append(batch)
        return TextCondition(torch.ones(len(batch), 2, 32), torch.full((len(batch),), 2))

    monkeypatch.setattr(model, "encode_prompts", encode)
    restorer = Restorer(model, device="cpu", dtype="float32", captioner=lambda x: [f"mean {float(x.mean()):.1f}"])
    out = restorer.restore_tensor(torch.stack([torch.zeros(3, 16, 16), torch.ones(3, 16, 16)]))
    assert out.shape == (2, 3, 64, 64)
    assert prompts == [["mean 0.0"], ["mean 1.0"]]
    restorer.restore_tensor(torch.zeros(1, 3, 16, 16), prompt="given")
    assert prompts[-1] == ["given"]  # a prompt wins over the caption
    with pytest.raises(ValueError, match="takes no text prompt"):
        from varestorer.archs.srvgg import SRVGGConfig, SRVGGNetCompact

        Restorer(SRVGGNetCompact(SRVGGConfig(num_feat=4, num_conv=1)), captioner=lambda x: ["x"])
