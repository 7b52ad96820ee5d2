"""The tiny student's distillation on 1 and 2 CPU processes (gloo): DDP and FSDP2 sharding match one process
with the same global batch, and a run killed with SIGKILL and resumed ends bitwise where an uninterrupted
run ends."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from varestorer.models.student import Student
from varestorer.models.student_config import StudentConfig
from varestorer.models.teacher import Teacher
from varestorer.nn.lora import lora_parameters
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.config import tokenizer_preset
from varestorer.training import train_student
from varestorer.training.config import TrainConfig
from varestorer.training.loss_terms import KLTerm, MSETerm
from varestorer.training.trainer import Trainer, seed_everything
from varestorer.transformer.config import transformer_preset
from varestorer.transformer.model import NextScaleTransformer

GLOBAL_BATCH, STEPS = 4, 4
TIMEOUT_S = 180  # one run of 4 tiny steps takes ~10 s per process on a loaded 2-core CPU


def _module() -> train_student.StudentDistillation:
    """The tiny student distillation (KL + MSE), identical on every process (seeded)."""
    seed_everything(0)
    tokenizer = MultiScaleTokenizer(tokenizer_preset("tiny")).eval()
    transformer = NextScaleTransformer(transformer_preset("tiny")).eval()
    with torch.no_grad():
        for param in transformer.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    student = Student.from_teacher(
        Teacher(tokenizer, transformer), StudentConfig(image_size=64, lora_rank=2, precleaner=None)
    )
    with torch.no_grad():
        for param in lora_parameters(student.transformer):
            param.normal_(0, 0.1)
    terms = [MSETerm(0.5), KLTerm(1.0)]
    return train_student.StudentDistillation(student, tokenizer, transformer, terms)


def _dataset(count: int = 8) -> list[dict]:
    gt = torch.rand(count, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    lq = F.interpolate(gt, size=(16, 16), mode="area")
    return [{"gt": gt[i], "lq": lq[i], "caption": ""} for i in range(count)]


def _worker(rank: int, world: int, port: int, out: str, sharding: str, kill_at: int, resume: bool) -> None:
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)})
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    config = TrainConfig(
        output_dir=str(Path(out) / "run"),
        max_steps=STEPS,
        batch_size=GLOBAL_BATCH // world,
        learning_rate=1e-2,
        warmup_steps=1,
        ckpt_every=2,
        log_every=1,
        ema_decay=0.9,
        tensorboard=False,
        progress=False,
        device="cpu",
        sharding=sharding,  # type: ignore[arg-type]
    )
    module = _module()
    trainer = Trainer(config, module, resume=resume)
    losses = []
    for batch in trainer.batches(trainer.make_loader(_dataset())):
        with trainer.autocast():
            loss, logs = trainer.model(batch, trainer.step)
        losses.append(loss.detach())
        trainer.backward_step(loss, logs)
        if trainer.step == kill_at:  # after the step-2 checkpoint, in the middle of the run
            os.kill(os.getpid(), signal.SIGKILL)
    trainer.close()
    weights = {k: v.detach().clone() for k, v in module.student.trainable_state_dict().items()}
    torch.save({"weights": weights, "ema": trainer.ema.state_dict(), "losses": losses}, Path(out) / f"rank{rank}.pt")


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(out: Path, world: int, sharding: str = "ddp", *, kill_at: int = -1, resume: bool = False) -> dict:
    args = (world, _port(), str(out), sharding, kill_at, resume)
    context = mp.spawn(_worker, args=args, nprocs=world, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=2):  # raises when a process fails (SIGKILL included)
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"{world} training process(es) still running after {TIMEOUT_S} s")
    return torch.load(out / "rank0.pt", weights_only=True)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], *, exact: bool) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if exact:
            assert torch.equal(a[key], b[key]), key
        else:
            # AdamW moves near-zero gradient components by ~lr whatever their size, so the float noise of
            # a different reduction order shows at 1e-5 on weights that moved by ~4e-2 in these 4 steps
            torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4, msg=key)


@pytest.mark.slow  # three spawned processes: fsdp took 23 s on the idle 2-core CPU, 54 s loaded (1/3 of the tier)
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_processes_match_one_with_the_same_global_batch(tmp_path: Path, sharding: str) -> None:
    one = _run(tmp_path / "one", 1)
    two = _run(tmp_path / "two", 2, sharding)
    other = torch.load(tmp_path / "two" / "rank1.pt", weights_only=True)
    _assert_same(two["weights"], other["weights"], exact=True)  # the ranks agree
    _assert_same(two["weights"], one["weights"], exact=False)  # and equal one process with 2x the batch
    _assert_same(two["ema"], one["ema"], exact=False)
    # each rank's loss is the mean over its half of the batch; their mean is the one-process loss
    halves = torch.stack([torch.stack(two["losses"]), torch.stack(other["losses"])]).mean(0)
    torch.testing.assert_close(halves, torch.stack(one["losses"]), rtol=1e-5, atol=1e-7)
    moved = [k for k in one["weights"] if k.endswith("lora_B")]
    assert moved and not torch.equal(one["weights"][moved[0]], _module().student.trainable_state_dict()[moved[0]])


SLOW = pytest.mark.slow  # three runs each: 0.5-1.3 min on a loaded 2-core machine (-m slow)


@pytest.mark.parametrize(
    ("world", "sharding"),
    [pytest.param(1, "ddp", marks=SLOW), pytest.param(2, "ddp", marks=SLOW), pytest.param(2, "fsdp", marks=SLOW)],
)
def test_sigkill_and_resume_equals_the_uninterrupted_run(tmp_path: Path, world: int, sharding: str) -> None:
    straight = _run(tmp_path / "straight", world, sharding)
    with pytest.raises(mp.ProcessExitedException, match="SIGKILL"):
        _run(tmp_path / "killed", world, sharding, kill_at=3)
    assert not (tmp_path / "killed" / "rank0.pt").exists()
    checkpoints = sorted(p.name for p in (tmp_path / "killed" / "run" / "checkpoints").glob("step_*"))
    assert checkpoints == ["step_00000002"]  # step 3 was done but never saved
    resumed = _run(tmp_path / "killed", world, sharding, resume=True)
    _assert_same(resumed["weights"], straight["weights"], exact=True)
    _assert_same(resumed["ema"], straight["ema"], exact=True)
    assert torch.equal(torch.stack(resumed["losses"]), torch.stack(straight["losses"][2:]))


def test_sharding_needs_a_known_mode() -> None:
    with pytest.raises((ValueError, TypeError)):
        dataclasses.replace(TrainConfig(), sharding="zero9")  # type: ignore[arg-type]


@pytest.mark.slow  # torchrun start-up of two processes: ~1 min on a loaded 2-core CPU
def test_the_student_job_under_torchrun_with_fsdp_and_checkpointing(tmp_path: Path, tiny_image) -> None:
    """``varestorer train student`` itself on 2 gloo processes, frozen weights sharded with FSDP2 and blocks
    checkpointed: it trains, validates on every rank, exports a loadable student, and resumes on 1 process."""
    import subprocess
    import sys

    from PIL import Image

    from conftest import subprocess_env

    Teacher(
        MultiScaleTokenizer(tokenizer_preset("tiny")), NextScaleTransformer(transformer_preset("tiny"))
    ).save_pretrained(tmp_path / "teacher")
    (tmp_path / "hq").mkdir()
    for index in range(4):
        Image.fromarray(tiny_image(80, 96, seed=index)).save(tmp_path / "hq" / f"{index}.png")
    for sub, size in (("gt", 64), ("lq", 16)):
        (tmp_path / "val" / sub).mkdir(parents=True)
        Image.fromarray(tiny_image(size, size, seed=9)).save(tmp_path / "val" / sub / "a.png")
    recipe = Path(__file__).parent / "data" / "student_tiny.toml"
    sets = [
        f"train.output_dir={tmp_path / 'run'}",
        f"model.teacher={tmp_path / 'teacher'}",
        f'data.train_dirs=["{tmp_path / "hq"}"]',
        f"data.val_lq_dir={tmp_path / 'val' / 'lq'}",
        f"data.val_gt_dir={tmp_path / 'val' / 'gt'}",
        "train.batch_size=1",
        "train.sharding=fsdp",
        "train.activation_checkpointing=true",
    ]
    job = ["-m", "varestorer", "train", "student", "--config", str(recipe), "--device", "cpu"]
    job += [arg for item in sets for arg in ("--set", item)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_port())]
    first = subprocess.run(
        [*torchrun, *job, "--set", "train.max_steps=2"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 process(es)" in first.stderr
    resumed = subprocess.run(
        [sys.executable, *job, "--resume"], capture_output=True, text=True, env=subprocess_env(), timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stderr and "from 2 process(es), now 1" in resumed.stderr
    student = Student.from_pretrained(tmp_path / "run" / "model")
    assert student(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)
