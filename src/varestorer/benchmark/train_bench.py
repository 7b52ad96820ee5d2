"""``varestorer bench --train``: a few distillation steps of a preset, timed and measured, beside the memory model.

The step is the real one: ``StudentDistillation`` (student pass, shared-base or separate teacher pass, the
setup's loss terms, e.g. MSE + KL + LPIPS-VGG), built by :func:`~varestorer.benchmark.train_setup.build_distillation`
as the memory model builds it, driven by the shared ``Trainer`` (AdamW, clipping, autocast, activation
checkpointing). Weights are random (speed and memory do not depend on their values; LPIPS too), the
batch is random HQ crops and their area-downsampled LQ, without captions. Stages are timed with
forward hooks (synchronised on CUDA): ``student_ms`` from the start of the forward to the end of the
decoder, ``teacher_ms`` the teacher pass, ``losses_ms`` the rest of the forward, ``backward_step_ms``
the backward and optimiser step. Peak memory: CUDA ``max_memory_allocated``; on a CPU the live-tensor
peak of :class:`~varestorer.benchmark.tensor_memory.LiveTensorPeak` (the same quantity).

Result keys: ``predicted_peak_mem_gb``, ``predicted_parts_gb``, ``activations_per_token_per_layer_kb``,
``measured_peak_mem_gb`` (None when not run), ``samples_per_s``, ``step_ms``, ``stages_ms``, the
settings (``model``, ``size``, ``batch_size``, ``lora_rank``, ``precision``, ``activation_checkpointing``,
``shared_teacher``, ``teacher`` (false: no teacher pass), ``sharding``, ``world_size``), ``device``, ``torch``,
``trainable_params_m``, ``steps``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from varestorer.benchmark.memory_model import GB, predict_memory
from varestorer.benchmark.tensor_memory import LiveTensorPeak, module_tensors, top_allocations_at_peak
from varestorer.benchmark.timing import synchronize
from varestorer.benchmark.train_setup import DistillSetup, build_distillation
from varestorer.training.trainer import Trainer, seed_everything


class RandomPairs(Dataset):
    """``count`` random HQ crops (3, S, S) and their area-downsampled LQ, no captions."""

    def __init__(self, size: int, scale: int, count: int) -> None:
        self.size, self.scale, self.count = size, scale, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, Any]:
        gt = torch.rand(3, self.size, self.size, generator=torch.Generator().manual_seed(index))
        lq = F.interpolate(gt[None], scale_factor=1 / self.scale, mode="area")[0]
        return {"gt": gt, "lq": lq, "caption": ""}


class StageClock:
    """Forward hooks that time the student pass, the teacher pass and the losses of each forward."""

    def __init__(self, module: Any, device: torch.device) -> None:
        self.device = device
        self.records: list[dict[str, float]] = []
        self._marks: dict[str, float] = {}
        self._handles = [
            module.register_forward_pre_hook(lambda *_: self._mark("start")),
            module.register_forward_hook(lambda *_: self._finish()),
            module.student.decoder.register_forward_hook(lambda *_: self._mark("student_end")),
        ]
        if module.teacher is not None:  # a student fine-tuned without its teacher runs no teacher pass
            self._handles += [
                module.teacher.register_forward_pre_hook(lambda *_: self._mark("teacher_start")),
                module.teacher.register_forward_hook(lambda *_: self._mark("teacher_end")),
            ]

    def _mark(self, name: str) -> None:
        synchronize(self.device)
        self._marks[name] = time.perf_counter()

    def _finish(self) -> None:
        self._mark("end")
        m = self._marks
        teacher = m.get("teacher_end", 0.0) - m.get("teacher_start", 0.0)
        student = m["student_end"] - m["start"]
        losses = m["end"] - m["start"] - student - teacher
        self.records.append({"student_ms": student * 1e3, "teacher_ms": teacher * 1e3, "losses_ms": losses * 1e3})
        self._marks = {}

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()


@contextlib.contextmanager
def _peak(device: torch.device, module: nn.Module) -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        synchronize(device)
        out["bytes"] = float(torch.cuda.max_memory_allocated(device))
        return
    with LiveTensorPeak(module_tensors(module)) as peak:
        yield out
    out["bytes"] = float(peak.peak_bytes)


def run_train_bench(
    setup: DistillSetup,
    *,
    device: str = "cpu",
    steps: int = 3,
    warmup: int = 1,
    predict_only: bool = False,
    memory_snapshot: bool = False,
) -> dict[str, Any]:
    """Predict, and unless ``predict_only``, run ``warmup + steps`` steps of ``setup`` and measure them.

    ``memory_snapshot`` (CUDA): record torch's memory history over the last step and report the largest
    allocation sites alive at its peak (``top_allocations``, see ``tensor_memory.top_allocations_at_peak``)."""
    # A measured CPU run is checked against CPU autocast's trace; a prediction is for a GPU unless told cpu.
    target = "cpu" if torch.device(device).type == "cpu" and not predict_only else "cuda"
    estimate = predict_memory(setup, target=target)
    train, student = setup.train, setup.student
    result: dict[str, Any] = {
        **estimate.as_dict(),
        "model": setup.name,
        "batch_size": train.batch_size,
        "lora_rank": student.lora_rank,
        "precision": "bf16" if train.mixed_precision == "bf16" else "fp32",
        "size": student.image_size,
        "activation_checkpointing": train.activation_checkpointing,
        "conv_checkpointing": train.conv_checkpointing,
        "predicted_for": target,
        "shared_teacher": setup.shared_teacher,
        "teacher": setup.with_teacher,
        "sharding": train.sharding,
        "world_size": setup.world_size,
        "loss": {term.name: term.weight for term in setup.loss if term.weight > 0},
        "device": device,
        "torch": torch.__version__,
        "measured_peak_mem_gb": None,
        "samples_per_s": None,
        "step_ms": None,
        "stages_ms": None,
        "steps": 0,
    }
    if predict_only:
        return result
    if setup.world_size != 1:
        raise ValueError("a measured run is one process; pass --predict-only for --world-size > 1")
    torch_device = torch.device(device)
    seed_everything(0)
    module = build_distillation(setup, torch_device)
    result["trainable_params_m"] = sum(p.numel() for p in module.parameters() if p.requires_grad) / 1e6
    with tempfile.TemporaryDirectory() as folder:
        config = dataclasses.replace(
            train,
            output_dir=folder,
            max_steps=warmup + steps + 1,  # never reaches the final step: no checkpoint is written
            ckpt_every=10**9,
            log_every=10**9,
            val_every=0,
            time_budget_minutes=None,
            tensorboard=False,
            progress=False,
            num_workers=0,
            device=device,
        )
        trainer = Trainer(config, module)
        loader = trainer.make_loader(
            RandomPairs(student.image_size, student.scale, train.batch_size * (warmup + steps))
        )
        clock = StageClock(module, torch_device)
        step_times: list[float] = []
        recording = memory_snapshot and torch_device.type == "cuda"
        with _peak(torch_device, module) as peak:
            for index, batch in enumerate(trainer.batches(loader)):
                if recording and index + 1 == warmup + steps:  # the last step only: the median time stays clean
                    torch.cuda.memory._record_memory_history(max_entries=200_000, stacks="python")
                start = time.perf_counter()
                with trainer.autocast():
                    loss, logs = trainer.model(batch, trainer.step)
                backward = time.perf_counter()
                trainer.backward_step(loss, logs)
                synchronize(torch_device)
                end = time.perf_counter()
                clock.records[-1]["backward_step_ms"] = (end - backward) * 1e3
                step_times.append(end - start)
                if index + 1 == warmup + steps:
                    break
        clock.close()
        if recording:
            result["top_allocations"] = top_allocations_at_peak(torch.cuda.memory._snapshot())
            torch.cuda.memory._record_memory_history(enabled=None)
        elif memory_snapshot:
            result["top_allocations"] = None  # CUDA only
    timed = clock.records[warmup:] or clock.records
    times = step_times[warmup:] or step_times
    result["stages_ms"] = {k: statistics.median(r[k] for r in timed) for k in timed[0]}
    result["step_ms"] = statistics.median(times) * 1e3
    result["samples_per_s"] = train.batch_size / statistics.median(times)
    result["measured_peak_mem_gb"] = peak["bytes"] / GB
    result["steps"] = len(times)
    return result


def _teacher(result: dict[str, Any]) -> str:
    if not result.get("teacher", True):
        return "none (fine-tuning a merged student)"
    return "shared" if result["shared_teacher"] else "separate"


def format_train_table(result: dict[str, Any]) -> str:
    """A short human-readable summary of :func:`run_train_bench`'s result."""
    lines = [
        f"{result['model']} at {result['size']} px, batch {result['batch_size']}, LoRA {result['lora_rank']}, "
        f"{result['precision']}, checkpointing {'on' if result['activation_checkpointing'] else 'off'}"
        f"{' (+ convs)' if result['conv_checkpointing'] else ''}, "
        f"teacher {_teacher(result)}, "
        f"{result['sharding']} x {result['world_size']}",
        f"predicted peak  {result['predicted_peak_mem_gb']:.3f} GB  "
        + ", ".join(f"{k} {v:.3f}" for k, v in result["predicted_parts_gb"].items()),
        f"activations per token per layer  {result['activations_per_token_per_layer_kb']:.1f} KB",
    ]
    if result["measured_peak_mem_gb"] is not None:
        stages = ", ".join(f"{k.removesuffix('_ms')} {v:.1f} ms" for k, v in result["stages_ms"].items())
        lines += [
            f"measured peak   {result['measured_peak_mem_gb']:.3f} GB on {result['device']}",
            f"step {result['step_ms']:.1f} ms ({result['samples_per_s']:.2f} samples/s): {stages}",
        ]
    return "\n".join(lines)
