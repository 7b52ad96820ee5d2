"""The shared Trainer: LR schedule, EMA, resume continuity, atomic checkpoints, 2-process gloo DDP."""

from __future__ import annotations

import dataclasses
import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

from varestorer.training import checkpoints as ckpt
from varestorer.training.config import TrainConfig, load_recipe, parse_override
from varestorer.training.ema import ExponentialMovingAverage
from varestorer.training.optim import learning_rate_at
from varestorer.training.trainer import Trainer, image_grid, pick_device, seed_everything


class TinyRegression(nn.Module):
    """A two-layer MLP regression with optional input noise (exercises the global RNG)."""

    def __init__(self, noise: float = 0.01) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.LayerNorm(16), nn.Tanh(), nn.Linear(16, 1))
        self.frozen = nn.Linear(4, 4).requires_grad_(False)
        self.noise = noise

    def forward(self, batch, step: int):
        x, y = batch
        x = self.frozen(x) + self.noise * torch.randn_like(x)
        loss = nn.functional.mse_loss(self.net(x), y)
        return loss, {"step_seen": float(step)}


def _dataset(count: int = 64) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(count, 4, generator=g)
    return TensorDataset(x, x.sum(dim=1, keepdim=True).sin())


def _config(tmp_path: Path, **changes) -> TrainConfig:
    base = TrainConfig(
        output_dir=str(tmp_path / "run"),
        max_steps=8,
        batch_size=4,
        learning_rate=1e-2,
        weight_decay=0.01,
        warmup_steps=2,
        grad_accum_steps=2,
        ema_decay=0.9,
        log_every=2,
        ckpt_every=4,
        keep_last=2,
        tensorboard=False,
        progress=False,
        device="cpu",
    )
    return dataclasses.replace(base, **changes)


def _train(config: TrainConfig, *, resume: bool = False, stop_after: int | None = None, noise: float = 0.01):
    """Run the standard job loop; returns (trainer, losses per micro-batch, module)."""
    seed_everything(config.seed)
    module = TinyRegression(noise)
    trainer = Trainer(config, module, resume=resume)
    losses = []
    for batch in trainer.batches(trainer.make_loader(_dataset())):
        with trainer.autocast():
            loss, logs = trainer.model(batch, trainer.step)
        losses.append(loss.item())
        trainer.backward_step(loss, logs)
        if stop_after is not None and trainer.step == stop_after and trainer._micro == 0:
            return trainer, losses, module  # simulated kill: no close()
    trainer.close()
    return trainer, losses, module


def test_learning_rate_schedule_values() -> None:
    config = TrainConfig(max_steps=110, learning_rate=1.0, warmup_steps=10, min_learning_rate_ratio=0.1)
    assert learning_rate_at(config, 0) == pytest.approx(0.1)
    assert learning_rate_at(config, 9) == pytest.approx(1.0)
    assert learning_rate_at(config, 10) == pytest.approx(1.0)
    assert learning_rate_at(config, 60) == pytest.approx(0.55)  # halfway down the cosine
    assert learning_rate_at(config, 110) == pytest.approx(0.1)
    constant = dataclasses.replace(config, schedule="constant")
    assert learning_rate_at(constant, 100) == 1.0


def test_ema_math() -> None:
    module = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(1.0)
    ema = ExponentialMovingAverage(module, decay=0.99)
    expected = 1.0
    for t, value in enumerate([3.0, -2.0, 5.0]):
        with torch.no_grad():
            module.weight.fill_(value)
        decay = min(0.99, (1 + t) / (10 + t))
        expected = decay * expected + (1 - decay) * value
        ema.update(module)
        assert ema.shadow["weight"].item() == pytest.approx(expected)
    with ema.applied(module):
        assert module.weight.item() == pytest.approx(expected)
    assert module.weight.item() == 5.0


def test_resume_continuity(tmp_path: Path) -> None:
    straight, losses_straight, module_straight = _train(_config(tmp_path / "a"))
    _, losses_first, _ = _train(_config(tmp_path / "b"), stop_after=4)
    resumed, losses_second, module_resumed = _train(_config(tmp_path / "b"), resume=True)
    assert resumed.step == straight.step == 8
    assert losses_first + losses_second == pytest.approx(losses_straight, rel=1e-6, abs=1e-7)
    for (name, a), b in zip(module_straight.state_dict().items(), module_resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=name)
    ema_a, ema_b = straight.ema.state_dict(), resumed.ema.state_dict()
    assert all(torch.allclose(ema_a[k], ema_b[k], atol=1e-7) for k in ema_a)
    assert losses_straight[-1] < losses_straight[0]


def test_existing_run_needs_resume(tmp_path: Path) -> None:
    _train(_config(tmp_path, max_steps=2, ckpt_every=2))
    with pytest.raises(FileExistsError, match="--resume"):
        _train(_config(tmp_path, max_steps=2, ckpt_every=2))


def test_checkpoint_layout_pruning_and_weights_only_state(tmp_path: Path) -> None:
    config = _config(tmp_path, max_steps=6, ckpt_every=1, keep_last=2)
    _train(config)
    root = Path(config.output_dir) / "checkpoints"
    assert [p.name for p in ckpt.list_checkpoints(root)] == ["step_00000005", "step_00000006"]
    assert (root / "latest").read_text().strip() == "step_00000006"
    tensors, state = ckpt.load_checkpoint(root / "step_00000006")
    assert state["step"] == 6 and set(tensors) == {"trainable", "ema"}
    assert "frozen.weight" not in tensors["trainable"] and "net.0.weight" in tensors["trainable"]
    # A stale pointer falls back to the newest complete folder.
    (root / "latest").write_text("step_00000099\n")
    assert ckpt.find_latest(root) == root / "step_00000006"


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _config(tmp_path, max_steps=4, ckpt_every=2, grad_accum_steps=1)
    seed_everything(0)
    trainer = Trainer(config, TinyRegression())
    real_save = torch.save

    def crashing_save(obj, path, *args, **kwargs):
        Path(path).write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        for batch in trainer.batches(trainer.make_loader(_dataset())):
            loss, logs = trainer.model(batch, trainer.step)
            trainer.backward_step(loss, logs)
            if trainer.step == 2:
                monkeypatch.setattr(ckpt.torch, "save", crashing_save)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    root = Path(config.output_dir) / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step_00000002"]  # no half-written folder
    assert ckpt.find_latest(root) == root / "step_00000002"
    seed_everything(0)
    resumed = Trainer(config, TinyRegression(), resume=True)
    assert resumed.step == 2


def test_recipe_loader_is_strict(tmp_path: Path) -> None:
    recipe = tmp_path / "r.toml"
    recipe.write_text('[train]\nmax_steps = 5\noutput_dir = "x"\n')
    loaded = load_recipe(recipe, {"train": TrainConfig}, ["train.learning_rate=3e-4", "train.betas=[0.5, 0.6]"])
    assert loaded["train"].max_steps == 5 and loaded["train"].learning_rate == 3e-4
    assert loaded["train"].betas == (0.5, 0.6)
    assert parse_override("data.root=some/path") == ("data", "root", "some/path")
    with pytest.raises(ValueError, match="unknown key"):
        load_recipe(recipe, {"train": TrainConfig}, ["train.max_step=3"])
    recipe.write_text("[trian]\n")
    with pytest.raises(ValueError, match="unknown section"):
        load_recipe(recipe, {"train": TrainConfig})
    with pytest.raises(ValueError, match="max_steps"):
        TrainConfig(max_steps=0)


def test_image_grid_shape() -> None:
    grid = image_grid(torch.zeros(5, 3, 8, 8), columns=4, pad=2)
    assert grid.shape == (3, 2 * 10 + 2, 4 * 10 + 2)
    assert grid[:, 2:10, 2:10].max() == 0 and grid[:, 0, :].min() == 1


def _ddp_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(
        {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world_size)}
        | {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    )
    torch.set_num_threads(1)
    config = _config(Path(out_dir), max_steps=4, batch_size=4, ema_decay=None, ckpt_every=4)
    trainer, _, module = _train(config, noise=0.0)
    torch.save(module.state_dict(), Path(out_dir) / f"rank{rank}.pt")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # two gloo processes: ~15-25 s on the 2-core box
def test_two_process_gloo_ranks_match_single_process(tmp_path: Path) -> None:
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key
    # Two processes with 4 samples each = one process with 8 samples (gradients are averaged).
    single = _config(tmp_path / "single", max_steps=4, batch_size=8, ema_decay=None, ckpt_every=4)
    _, _, module = _train(single, noise=0.0)
    initial = (seed_everything(0), TinyRegression(0.0))[1].state_dict()
    for key, value in module.state_dict().items():
        torch.testing.assert_close(rank0[key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert not math.isclose(float((rank0["net.0.weight"] - initial["net.0.weight"]).abs().sum()), 0.0)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs_and_checkpoints_the_scaler(tmp_path: Path, precision: str) -> None:
    config = _config(tmp_path, max_steps=2, ckpt_every=2, mixed_precision=precision)
    trainer, losses, module = _train(config)
    assert trainer.step == 2 and all(math.isfinite(v) for v in losses)
    assert all(p.dtype == torch.float32 for p in module.parameters())
    _, state = ckpt.load_checkpoint(Path(config.output_dir) / "checkpoints" / "step_00000002")
    assert bool(state["scaler"]) == (precision == "fp16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA present")
def test_cuda_request_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="CUDA is not available"):
        pick_device("cuda")


def test_custom_param_groups_scale_the_schedule(tmp_path: Path) -> None:
    module = TinyRegression()
    groups = [
        {"params": module.net[0].parameters(), "lr_scale": 0.5, "weight_decay": 0.0},
        {"params": list(module.net[1].parameters()) + list(module.net[3].parameters())},
    ]
    trainer = Trainer(_config(tmp_path, warmup_steps=0, schedule="constant"), module, param_groups=groups)
    first, second = trainer.optimizer.param_groups
    assert first["lr"] == pytest.approx(5e-3) and second["lr"] == pytest.approx(1e-2)
    assert first["weight_decay"] == 0.0 and second["weight_decay"] == 0.01


def test_a_group_clipped_apart_does_not_scale_the_models_gradients(tmp_path: Path) -> None:
    """A discriminator's large gradients are clipped on their own: the model's norm and clipping are its own."""
    module = TinyRegression(noise=0.0)
    groups = [
        {"params": list(module.net[0].parameters()) + list(module.net[1].parameters())},
        {"params": module.net[3].parameters(), "clip_apart": True},
    ]
    config = _config(tmp_path, grad_accum_steps=1, grad_clip=1e-3, log_every=1)
    trainer = Trainer(config, module, param_groups=groups)
    model_params = list(trainer.optimizer.param_groups[0]["params"])
    apart = trainer.optimizer.param_groups[1]["params"]
    x, y = _dataset()[:4]
    loss, _ = module((x, y), 0)
    loss.backward()
    model_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model_params])))
    apart_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in apart])))
    for p in module.parameters():
        p.grad = None
    loss, logs = module((x, y), 0)
    clipped = {}
    trainer.optimizer.step = lambda *a, **k: clipped.update({id(p): p.grad.norm() for p in apart + model_params})
    trainer.backward_step(loss, logs)
    assert model_norm > 1e-3 and apart_norm > 1e-3  # both clipped: together they would share one 1e-3
    model_after = float(torch.linalg.vector_norm(torch.stack([clipped[id(p)] for p in model_params])))
    apart_after = float(torch.linalg.vector_norm(torch.stack([clipped[id(p)] for p in apart])))
    assert model_after == pytest.approx(1e-3, rel=1e-3) and apart_after == pytest.approx(1e-3, rel=1e-3)


def test_time_fraction_drives_the_cosine() -> None:
    config = TrainConfig(max_steps=1000, learning_rate=1.0, warmup_steps=0, min_learning_rate_ratio=0.1)
    assert learning_rate_at(config, 10, time_fraction=0.5) == pytest.approx(0.55)  # time is further along
    assert learning_rate_at(config, 500, time_fraction=0.1) == pytest.approx(0.55)  # steps are further along
    assert learning_rate_at(config, 10, time_fraction=2.0) == pytest.approx(0.1)


class _FakeClock:
    """perf_counter that advances ``tick`` seconds per call: time spent grows with work, deterministically."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def test_time_budget_stops_training_and_resumes_the_budget(tmp_path: Path, monkeypatch) -> None:
    from varestorer.training import trainer as trainer_module

    clock = _FakeClock(tick=0.5)
    monkeypatch.setattr(trainer_module.time, "perf_counter", clock)
    config = _config(tmp_path, max_steps=10_000, time_budget_minutes=0.5, ckpt_every=1000)
    first, _, _ = _train(config)
    assert 0 < first.step < 10_000  # the budget, not max_steps, ended it
    assert first.time_spent >= 30
    assert first.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3, rel=0.05)  # the cosine ran to its end
    state = ckpt.load_checkpoint(ckpt.find_latest(first.checkpoint_root))[1]
    assert state["step"] == first.step and state["time_spent"] >= 30
    # Resuming with the same budget does no more work; a larger budget continues where it left off.
    again, losses, _ = _train(config, resume=True)
    assert again.step == first.step and losses == []
    longer, losses, _ = _train(dataclasses.replace(config, time_budget_minutes=1.0), resume=True)
    assert longer.step > first.step and losses


def test_time_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="time_budget_minutes"):
        TrainConfig(time_budget_minutes=0)
