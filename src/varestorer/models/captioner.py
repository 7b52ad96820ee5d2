"""Optional captions for prompt-reading models: any ``transformers`` image-to-text model from a folder.

The official evaluation script captions each LQ image with BLIP when no prompt is given and uses
the caption as the prompt (``tools/run_varestorer.py``, ``gen_one_img_eval``). This does the same
with any model ``transformers`` loads with ``AutoProcessor`` + ``AutoModelForImageTextToText``
(e.g. a local copy of ``Salesforce/blip-image-captioning-large``). Off unless asked for
(``Restorer(captioner=...)``, ``varestorer restore --caption-model DIR``); ``transformers`` is
imported only when one is loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

TEXT_EXTRA_HINT = "pip install 'varestorer[text]'"


class Captioner:
    """Caption images with an image-to-text model.

    Args:
        model: a ``transformers`` model with ``generate`` (BLIP, GIT, ...).
        processor: its processor (images -> ``pixel_values``; ``decode`` for the tokens).
        max_new_tokens: caption length limit.
    """

    def __init__(self, model: Any, processor: Any, *, max_new_tokens: int = 40) -> None:
        self.model, self.processor, self.max_new_tokens = model, processor, max_new_tokens

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
    ) -> Captioner:
        """Load processor and model from a local folder (never the network)."""
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"caption model folder not found: {folder}")
        try:
            import transformers
        except ImportError:
            raise ValueError(f"captioning needs transformers: {TEXT_EXTRA_HINT}") from None
        processor = transformers.AutoProcessor.from_pretrained(str(folder), local_files_only=True)
        model: Any = transformers.AutoModelForImageTextToText.from_pretrained(
            str(folder), local_files_only=True, dtype=dtype
        )
        return cls(model.to(device).eval(), processor)

    @torch.no_grad()
    def __call__(self, images_B3HW: Tensor) -> list[str]:
        """Float RGB (B, 3, H, W) in [0, 1] -> one caption per image."""
        if images_B3HW.ndim != 4 or images_B3HW.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got shape {tuple(images_B3HW.shape)}")
        arrays = (images_B3HW.detach().float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1)).cpu().numpy()
        pictures = [Image.fromarray(np.ascontiguousarray(a)) for a in arrays]
        inputs = self.processor(images=pictures, return_tensors="pt")
        parameter = next(self.model.parameters())
        inputs = {
            k: v.to(parameter.device, parameter.dtype if v.is_floating_point() else v.dtype) for k, v in inputs.items()
        }
        tokens = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens)
        return [self.processor.decode(t, skip_special_tokens=True).strip() for t in tokens]
