"""Real camera pairs mixed into the synthetic training pairs (data/real_pairs.py, ``[data] real_pairs``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from varestorer.data.datasets import HQFolderDataset
from varestorer.data.pairs import DegradedPairDataset
from varestorer.data.real_pairs import MixedPairDataset, RealPairDataset, real_item_count
from varestorer.training.loader import make_loader
from varestorer.training.student_recipe import DataConfig


def _pair_folder(root: Path, sizes: dict[str, tuple[int, int]], seed: int = 0) -> Path:
    """``root/{lq,gt}/NAME.png`` with each GT the exact x4 nearest-neighbour upscale of its random LQ."""
    rng = np.random.default_rng(seed)
    for name, (height, width) in sizes.items():
        lq = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        gt = lq.repeat(4, axis=0).repeat(4, axis=1)
        for sub, array in (("lq", lq), ("gt", gt)):
            (root / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / sub / f"{name}.png")
    return root


def _hq(root: Path, tiny_image, count: int = 6) -> HQFolderDataset:
    root.mkdir()
    for index in range(count):
        Image.fromarray(tiny_image(40, 40, seed=index)).save(root / f"{index}.png")
    return HQFolderDataset(root, crop_size=32, seed=5)


def _nearest_x4(lq_3hw: torch.Tensor) -> torch.Tensor:
    return lq_3hw.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)


def test_crops_stay_aligned_through_crop_and_every_flip(tmp_path) -> None:
    root = _pair_folder(tmp_path / "pairs", {"a": (20, 24), "b": (14, 30)})
    real = RealPairDataset(root, crop_size=32, scale=4, items=24, hflip=True, vflip=True, rot90=True, seed=1)
    crops = set()
    for index in range(len(real)):
        item = real[index]
        assert item["lq"].shape == (3, 8, 8) and item["gt"].shape == (3, 32, 32)
        assert torch.equal(item["gt"], _nearest_x4(item["lq"])), index
        crops.add(item["lq"].numpy().tobytes())
    assert len(crops) >= 20  # items draw their own crop positions and flips, though there are only two pairs


def test_items_depend_only_on_seed_epoch_and_index(tmp_path) -> None:
    root = _pair_folder(tmp_path / "pairs", {"a": (20, 24)})
    first = RealPairDataset(root, crop_size=32, items=4, seed=3)
    again = RealPairDataset(root, crop_size=32, items=4, seed=3)
    reversed_items = [again[i] for i in reversed(range(4))][::-1]  # order of access does not matter
    for index in range(4):
        assert torch.equal(first[index]["lq"], reversed_items[index]["lq"])
        assert first[index]["seed"] == reversed_items[index]["seed"]
    before = first[0]["lq"]
    first.set_epoch(1)
    assert not torch.equal(first[0]["lq"], before)  # a new epoch, new crops
    other_seed = RealPairDataset(root, crop_size=32, items=4, seed=4)
    assert not torch.equal(other_seed[0]["lq"], before)


def test_the_mix_keeps_synthetic_items_and_gives_the_fraction(tmp_path, tiny_image) -> None:
    hq = _hq(tmp_path / "hq", tiny_image)
    root = _pair_folder(tmp_path / "pairs", {"a": (12, 12), "b": (10, 16)})
    synthetic = DegradedPairDataset(hq, "bicubic", seed=2)
    real = RealPairDataset(root, crop_size=32, items=real_item_count(len(synthetic), 0.25), seed=2)
    mixed = MixedPairDataset(synthetic, real)
    assert len(real) == 2 and len(mixed) == 8  # 2 of 8 items: the fraction, exactly, per epoch
    reference = DegradedPairDataset(hq, "bicubic", seed=2)
    for index in range(len(synthetic)):
        assert torch.equal(mixed[index]["lq"], reference[index]["lq"])  # the synthetic part is unchanged
    loader = make_loader(mixed, batch_size=4, rank=0, world_size=1, seed=0)
    real_items = 0
    for batch in loader:
        assert batch["lq"].shape == (4, 3, 8, 8) and batch["gt"].shape == (4, 3, 32, 32)  # both kinds batch
        real_items += sum(str(tmp_path / "pairs") in path for path in batch["path"])
    assert real_items == 2
    mixed.set_epoch(3)
    assert synthetic.epoch == 3 and real.epoch == 3
    assert real_item_count(450, 0.25) == 150 and real_item_count(3, 0.1) == 1
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\)"):
        real_item_count(10, 1.0)


def test_default_data_config_gives_todays_batches_byte_for_byte(tmp_path, tiny_image) -> None:
    hq = _hq(tmp_path / "hq", tiny_image)
    data = DataConfig(degradation="mild,bicubic")
    today = DegradedPairDataset(hq, "mild,bicubic", seed=7)  # what train student built before real_pairs
    ours = data.pair_set(hq, 4, seed=7)
    for epoch in (0, 1):
        today.set_epoch(epoch)
        ours.set_epoch(epoch)  # type: ignore[attr-defined]
        old = list(make_loader(today, batch_size=3, rank=0, world_size=1, seed=7))
        new = list(make_loader(ours, batch_size=3, rank=0, world_size=1, seed=7))
        assert len(old) == len(new) == 2
        for a, b in zip(old, new, strict=True):
            assert a.keys() == b.keys()
            for key in ("lq", "gt", "seed"):
                assert torch.equal(a[key], b[key])
            assert a["path"] == b["path"]


def test_data_config_mixes_real_pairs_with_the_recipe_fraction(tmp_path, tiny_image) -> None:
    hq = _hq(tmp_path / "hq", tiny_image)
    root = _pair_folder(tmp_path / "pairs", {"a": (12, 12)})
    data = DataConfig(degradation="bicubic", real_pairs=(str(root),), real_pair_fraction=0.5)
    mixed = data.pair_set(hq, 4, seed=0)
    assert isinstance(mixed, MixedPairDataset) and len(mixed) == 12
    assert torch.equal(mixed[11]["gt"], _nearest_x4(mixed[11]["lq"]))
    with pytest.raises(ValueError, match="real_pair_fraction"):
        DataConfig(real_pairs=(str(root),), real_pair_fraction=0.0)


def test_pair_folder_errors_are_one_line(tmp_path) -> None:
    root = _pair_folder(tmp_path / "pairs", {"a": (12, 12), "b": (12, 12)})
    (root / "gt" / "b.png").rename(root / "gt" / "c.png")
    with pytest.raises(ValueError, match=r"2 image stem\(s\) in only one of lq/ and gt/ \(e\.g\. 'b'\)") as error:
        RealPairDataset(root, crop_size=32)
    assert "\n" not in str(error.value)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        RealPairDataset(tmp_path / "nothing", crop_size=32)
    small = _pair_folder(tmp_path / "small", {"a": (6, 12)})
    with pytest.raises(ValueError, match="smaller than the 8 px LQ crop"):
        RealPairDataset(small, crop_size=32)
    wrong = _pair_folder(tmp_path / "wrong", {"a": (12, 12)})
    Image.new("RGB", (40, 48)).save(wrong / "gt" / "a.png")
    with pytest.raises(ValueError, match="GT 40x48 is not 4x its LQ 12x12"):
        RealPairDataset(wrong, crop_size=32)
    with pytest.raises(ValueError, match="multiple of the scale"):
        RealPairDataset(root, crop_size=30)
