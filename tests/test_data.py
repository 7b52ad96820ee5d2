"""Image-folder datasets and crop/flip transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from varestorer.data.datasets import HQFolderDataset, PairedFolderDataset
from varestorer.data.transforms import center_crop, mod_crop, pad_reflect, random_crop, random_flip, to_tensor


def _save(path, array, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def test_pad_reflect_mirrors_and_handles_one_pixel() -> None:
    row = np.arange(3, dtype=np.uint8).reshape(1, 3, 1)
    padded = pad_reflect(row, 1, 6)
    assert padded[0, :, 0].tolist() == [0, 1, 2, 1, 0, 1]
    single = np.full((1, 1, 3), 7, np.uint8)
    assert pad_reflect(single, 4, 5).shape == (4, 5, 3)
    assert (pad_reflect(single, 4, 5) == 7).all()


def test_crops_and_flips(tiny_image) -> None:
    image = tiny_image(20, 30)
    g = torch.Generator().manual_seed(0)
    assert random_crop(image, 16, g).shape == (16, 16, 3)
    assert random_crop(image, 40, g).shape == (40, 40, 3)  # padded
    assert np.array_equal(center_crop(image, 10), image[5:15, 10:20])
    assert mod_crop(image, 4).shape == (20, 28, 3)
    with pytest.raises(ValueError, match="smaller than the scale"):
        mod_crop(image[:3], 4)
    a = random_flip(image, torch.Generator().manual_seed(1), hflip=True)
    b = random_flip(image, torch.Generator().manual_seed(1), hflip=True)
    assert np.array_equal(a, b)
    flipped = {random_flip(image, torch.Generator().manual_seed(s)).tobytes() for s in range(8)}
    assert flipped == {image.tobytes(), image[:, ::-1].tobytes()}


def test_to_tensor_ranges() -> None:
    assert to_tensor(np.full((2, 2, 3), 255, np.uint8)).max() == 1.0
    assert to_tensor(np.full((2, 2, 3), 65535, np.uint16)).max() == 1.0
    with pytest.raises(ValueError, match="uint8 or uint16"):
        to_tensor(np.zeros((2, 2, 3), np.float32))


def test_hq_folder_dataset_modes_captions_and_bad_files(tmp_path, tiny_image) -> None:
    rgb = tiny_image(40, 48)
    _save(tmp_path / "a" / "rgb.png", rgb)
    (tmp_path / "a" / "rgb.txt").write_text("  a red house \n", encoding="utf-8")
    _save(tmp_path / "a" / "b" / "gray.jpg", rgb[..., 0])
    _save(tmp_path / "rgba.webp", np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), lossless=True)
    _save(tmp_path / "small.bmp", rgb[:5, :7])
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(tmp_path / "deep.tiff")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG not really")
    dataset = HQFolderDataset(tmp_path, crop_size=32, seed=3)
    assert len(dataset) == 6
    with pytest.warns(UserWarning, match="skipping unreadable image"):
        items = [dataset[i] for i in range(len(dataset))]
    assert len(dataset.skipped) == 1 and next(iter(dataset.skipped)).name == "corrupt.png"
    for item in items:
        assert item["gt"].shape == (3, 32, 32) and item["gt"].dtype == torch.float32
        assert item["gt"].min() >= 0.0 and item["gt"].max() <= 1.0
    by_name = {item["path"].rsplit("/", 1)[-1]: item for item in items}
    assert by_name["rgb.png"]["caption"] == "a red house"
    assert by_name["gray.jpg"]["caption"] == ""
    gray = by_name["gray.jpg"]["gt"]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    # Seeded: same item twice is identical; another epoch moves the crop.
    assert torch.equal(dataset[0]["gt"], HQFolderDataset(tmp_path, crop_size=32, seed=3)[0]["gt"])
    dataset.set_epoch(1)
    assert not torch.equal(dataset[0]["gt"], items[0]["gt"])
    batch = torch.utils.data.default_collate([items[0], items[1]])
    assert batch["gt"].shape == (2, 3, 32, 32) and len(batch["caption"]) == 2


def test_hq_folder_dataset_exif_orientation(tmp_path) -> None:
    array = np.zeros((10, 20, 3), np.uint8)
    array[:, :5] = 255  # white band on the left
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    image.save(tmp_path / "rot.jpg", exif=exif, quality=100)
    item = HQFolderDataset(tmp_path, crop_size=None, hflip=False)[0]
    assert item["gt"].shape == (3, 20, 10)
    assert item["gt"][:, :5].mean() > 0.9 and item["gt"][:, -5:].mean() < 0.1  # band now on top


def test_hq_folder_dataset_repeat_gives_each_image_own_crops(tmp_path, tiny_image) -> None:
    _save(tmp_path / "a.png", tiny_image(64, 64))
    _save(tmp_path / "b.png", tiny_image(64, 64))
    dataset = HQFolderDataset(tmp_path, crop_size=16, hflip=False, seed=5, repeat=3)
    assert len(dataset) == 6
    items = [dataset[i] for i in range(6)]
    assert [item["path"] for item in items] == [str(tmp_path / n) for n in ("a.png", "b.png") * 3]
    assert not torch.equal(items[0]["gt"], items[2]["gt"])  # same image, another crop
    with pytest.raises(ValueError, match="repeat"):
        HQFolderDataset(tmp_path, repeat=0)


def test_hq_folder_dataset_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        HQFolderDataset(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        HQFolderDataset(tmp_path / "empty")


def test_paired_folder_dataset(tmp_path, tiny_image) -> None:
    for name in ("x", "y"):
        _save(tmp_path / "gt" / f"{name}.png", tiny_image(32, 32))
        _save(tmp_path / "lq" / f"{name}.jpg", tiny_image(8, 8))
    _save(tmp_path / "gt" / "orphan.png", tiny_image(32, 32))
    dataset = PairedFolderDataset(tmp_path / "lq", tmp_path / "gt")
    assert dataset.names == ["x", "y"]
    item = dataset[1]
    assert item["lq"].shape == (3, 8, 8) and item["gt"].shape == (3, 32, 32) and item["name"] == "y"
    with pytest.raises(FileNotFoundError, match="no such folder"):
        PairedFolderDataset(tmp_path / "gt", tmp_path / "nothing")


def test_degraded_pairs_in_workers_and_batched_collate(tmp_path, tiny_image) -> None:
    from varestorer.data.pairs import DegradeCollate, DegradedPairDataset

    for i in range(4):
        _save(tmp_path / f"{i}.png", tiny_image(40, 40, seed=i))
    hq = HQFolderDataset(tmp_path, crop_size=32, seed=0)
    pairs = DegradedPairDataset(hq, "mild", seed=1, return_params=True)
    loader = torch.utils.data.DataLoader(pairs, batch_size=2, num_workers=2)
    batches = list(loader)
    assert batches[0]["lq"].shape == (2, 3, 8, 8) and batches[0]["gt"].shape == (2, 3, 32, 32)
    assert '"stage1"' in batches[0]["params"][0]
    again = list(torch.utils.data.DataLoader(pairs, batch_size=2, num_workers=0))
    assert torch.equal(batches[1]["lq"], again[1]["lq"])  # per-item seeds: worker count does not matter
    collate = DegradeCollate("realesrgan", generator=torch.Generator().manual_seed(0))
    batch = next(iter(torch.utils.data.DataLoader(hq, batch_size=4, collate_fn=collate)))
    assert batch["lq"].shape == (4, 3, 8, 8) and len(batch["params"]) == 4 and len(batch["caption"]) == 4


def test_degraded_pairs_mix_presets_per_item(tmp_path, tiny_image) -> None:
    from varestorer.data.pairs import DegradedPairDataset
    from varestorer.degradation.pipeline import DegradationPipeline, degrade

    for i in range(6):
        _save(tmp_path / f"{i}.png", tiny_image(40, 40, seed=i))
    hq = HQFolderDataset(tmp_path, crop_size=32, seed=0)
    pairs = DegradedPairDataset(hq, "bicubic, mild", seed=3)
    configs = [DegradationPipeline.from_preset(name).config for name in ("bicubic", "mild")]
    used = set()
    for index in range(len(pairs)):
        item = pairs[index]
        which = item["seed"] % 2
        used.add(which)
        expected, _ = degrade(item["gt"], configs[which], torch.Generator().manual_seed(item["seed"]))
        assert torch.equal(item["lq"], expected)
    assert used == {0, 1}  # both presets drawn over six items
    with pytest.raises(ValueError, match="empty degradation preset"):
        DegradedPairDataset(hq, "mild,")


def test_degraded_pairs_read_a_pipeline_file(tmp_path, tiny_image) -> None:
    from varestorer.data.pairs import DegradedPairDataset
    from varestorer.degradation.config import DEGRADATION_PRESETS
    from varestorer.degradation.pipeline import degrade

    (tmp_path / "hq").mkdir()
    for i in range(2):
        _save(tmp_path / "hq" / f"{i}.png", tiny_image(40, 40, seed=i))
    pipeline = tmp_path / "camera.toml"
    pipeline.write_text('base = "mild"\nfinal_sinc_prob = 0.0\n[stage1.noise]\ngaussian_sigma_range = [0.5, 2.0]\n')
    hq = HQFolderDataset(tmp_path / "hq", crop_size=32, seed=0)
    pairs = DegradedPairDataset(hq, f"bicubic,{pipeline}", seed=3)
    assert pairs.configs[0] == DEGRADATION_PRESETS["bicubic"]
    assert pairs.configs[1].final_sinc_prob == 0.0 and pairs.configs[1].stage1.noise.gaussian_sigma_range == (0.5, 2.0)
    assert pairs.configs[1].stage2 == DEGRADATION_PRESETS["mild"].stage2  # the rest from its base
    item = pairs[0]
    expected, _ = degrade(item["gt"], pairs.configs[item["seed"] % 2], torch.Generator().manual_seed(item["seed"]))
    assert torch.equal(item["lq"], expected)
    with pytest.raises(ValueError, match="unknown degradation preset 'camera'"):
        DegradedPairDataset(hq, "camera")


def test_pair_pool_mixes_batches() -> None:
    from varestorer.data.pairs import PairPool

    pool = PairPool(capacity=6, generator=torch.Generator().manual_seed(0))
    seen = []
    for step in range(6):
        gt = torch.full((2, 1, 4, 4), float(step))
        lq, gt_out = pool(gt[:, :, :2, :2], gt)
        assert torch.equal(lq, gt_out[:, :, :2, :2])  # pairs stay paired
        seen.append(gt_out[:, 0, 0, 0].tolist())
    assert seen[:3] == [[0, 0], [1, 1], [2, 2]]  # filling: returned unchanged
    later = {v for row in seen[3:] for v in row}
    assert later <= {0.0, 1.0, 2.0, 3.0, 4.0} and later != {3.0, 4.0, 5.0}
    with pytest.raises(ValueError, match="multiple of the batch size"):
        pool(torch.zeros(4, 1, 2, 2), torch.zeros(4, 1, 4, 4))
