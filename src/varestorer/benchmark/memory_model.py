"""A memory model of one student distillation step: what a GPU (or CPU) must hold at the peak.

    peak = weights + gradients + optimiser states (+ EMA, DDP buckets)      counted from the parameters
         + activations saved for the backward                                traced (below)
         + the working set on top of them                                    the teacher pass, backward buffers

Parameters are counted on a shapes-only (meta) build of the student, its teacher and LPIPS-VGG:
frozen weights are float32 (the Trainer keeps them so), trainable ones float32 with a float32
gradient, two AdamW moments and optionally an EMA copy. A separate teacher adds its transformer (in
``teacher_dtype``) and encoder; the shared-base teacher (training/teacher_pass.py) adds only the
encoder copy when the student trains its own. Sharding (``train.sharding``) divides the frozen
block weights by the world size and adds the blocks gathered at once (``fsdp``: the running and the
prefetched block; ``fsdp_grad_op``: every block stays gathered from its forward to its backward);
trainable tensors stay whole on every process (see ``shard_frozen_weights``).

Activations are the tensors autograd saves for the backward of the student pass and the losses,
traced by running that forward once on ``FakeTensor``s of the CPU (``torch._subclasses``: shapes and
dtypes, no memory, no arithmetic, a few seconds even for Infinity-2B), under the same autocast and
attention kernel choice as a real run, each storage counted once and attributed to the transformer
block that saved it. Activation checkpointing keeps of each block only its input and recomputes one
block at a time in the backward, so the blocks' share becomes ``depth x input + one block``.
``per_token_per_layer_kb`` reports a block's saved bytes per token.

The working set on top is the teacher pass (no gradients: its logits and the widest layer of one
block) and, in the backward, two buffers the size of the largest saved tensor. The model is checked
against live-tensor peaks measured on the CPU (tests/test_memory_model.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import torch
from torch import nn

from varestorer.archs.srvgg import SRVGGConfig
from varestorer.benchmark.presets import bench_presets, preset_schedule
from varestorer.models.student import Student
from varestorer.models.student_config import StudentConfig
from varestorer.nn.lora import LORA_MARKER
from varestorer.training.losses import token_kl

GB = 2**30
Precision = Literal["fp32", "bf16"]
COMPUTE_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class TrainSetting:
    """One distillation step to predict or measure (the ``varestorer bench --train`` options)."""

    model: str = "infinity-2b"
    """A ``bench_presets()`` name (the student family's presets)."""
    size: int | None = None
    """HQ working size in px (LQ = size / 4); None: the preset's."""
    batch_size: int = 1
    """Micro-batch per process."""
    lora_rank: int = 32
    precision: Precision = "fp32"
    """Autocast of the forward (weights stay float32)."""
    activation_checkpointing: bool = False
    shared_teacher: bool = True
    teacher_dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights of a separate teacher transformer (ignored when shared)."""
    sharding: Literal["ddp", "fsdp", "fsdp_grad_op"] = "ddp"
    world_size: int = 1
    train_encoder: bool = True
    precleaner: bool = True
    lambda_kl: float = 0.1
    lambda_perceptual: float = 0.25
    perceptual_crop: int | None = None
    ema: bool = False

    def __post_init__(self) -> None:
        if self.model not in bench_presets():
            raise ValueError(f"unknown preset {self.model!r}; choose from {', '.join(bench_presets())}")
        if self.batch_size < 1 or self.world_size < 1 or self.lora_rank < 1:
            raise ValueError("batch_size, world_size and lora_rank must be >= 1")
        if self.precision not in COMPUTE_DTYPES:
            raise ValueError(f"precision must be fp32 or bf16, got {self.precision!r}")

    @property
    def image_size(self) -> int:
        return self.size or bench_presets()[self.model].image_size


def student_config(setting: TrainSetting) -> StudentConfig:
    """The student a distillation run of ``setting`` trains (preset shape, LoRA, pre-cleaner of the recipes)."""
    preset = bench_presets()[setting.model]
    return replace(
        preset,
        image_size=setting.image_size,
        schedule=preset_schedule(preset, setting.image_size),
        lora_rank=setting.lora_rank,
        lora_alpha=float(setting.lora_rank),
        train_encoder=setting.train_encoder,
        precleaner=SRVGGConfig(num_feat=32, num_conv=8, upscale=1) if setting.precleaner else None,
    )


@dataclass
class ParameterCounts:
    """Element counts of the step's parameters."""

    trainable: int
    frozen_blocks: int
    """Frozen weights inside the transformer blocks (what sharding divides)."""
    frozen_other: int
    largest_block: int
    teacher_transformer: int
    """A separate teacher's transformer (0 when shared)."""
    teacher_encoder: int
    lpips: int
    depth: int


def count_parameters(setting: TrainSetting) -> ParameterCounts:
    """Counts from a meta-device build (no memory)."""
    with torch.device("meta"):
        student = Student(student_config(setting))
        lpips = _lpips() if setting.lambda_perceptual > 0 else None
    blocks = student.transformer.block_list()
    block_frozen = [sum(p.numel() for p in b.parameters() if not p.requires_grad) for b in blocks]
    frozen = sum(p.numel() for p in student.parameters() if not p.requires_grad)
    base_transformer = sum(
        p.numel() for n, p in student.transformer.named_parameters() if LORA_MARKER not in n.rsplit(".", 1)[-1]
    )
    encoder = sum(p.numel() for p in student.encoder.parameters())
    return ParameterCounts(
        trainable=sum(p.numel() for p in student.parameters() if p.requires_grad),
        frozen_blocks=sum(block_frozen),
        frozen_other=frozen - sum(block_frozen),
        largest_block=max(block_frozen),
        teacher_transformer=0 if setting.shared_teacher else base_transformer,
        teacher_encoder=encoder if (setting.train_encoder or not setting.shared_teacher) else 0,
        lpips=sum(p.numel() for p in lpips.parameters()) if lpips is not None else 0,
        depth=len(blocks),
    )


def _lpips() -> nn.Module:
    from varestorer.metrics.lpips import LPIPS

    return LPIPS(net="vgg", pretrained=False)


@dataclass
class ActivationTrace:
    """Bytes saved for the backward of one student pass + losses (see the module docstring)."""

    blocks: list[int]
    """Saved by each transformer block."""
    block_inputs: list[int]
    """Each block's input (B, L, C): what checkpointing keeps."""
    other: int
    """Saved outside the blocks (encoder, decoder, pre-cleaner, LPIPS, head, losses)."""
    largest: int
    """The largest single saved storage."""
    tokens: int
    """B x L."""
    logits: int
    """Bytes of the (B, L, d, 2) float32 logits (the teacher's are the same size)."""
    widest_block_tensor: int
    """The largest tensor a block creates (the teacher pass's working set)."""


@contextlib.contextmanager
def _fake_cpu() -> Any:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        yield mode


def trace_activations(setting: TrainSetting) -> ActivationTrace:
    """Run the student pass and the losses of ``setting`` on fake CPU tensors, counting saved storages."""
    config = student_config(setting)
    with torch.device("meta"):
        student = Student(config).train()
        lpips = _lpips() if setting.lambda_perceptual > 0 else None
    blocks = student.transformer.block_list()
    state: dict[str, Any] = {"block": None, "seen": set(), "params": set(), "widest": 0}
    per_block, inputs, other, largest = [0] * len(blocks), [0] * len(blocks), [0], [0]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in state["seen"] or key in state["params"]:
            return tensor
        state["seen"].add(key)
        size = storage.nbytes()
        largest[0] = max(largest[0], size)
        if state["block"] is None:
            other[0] += size
        else:
            per_block[state["block"]] += size
        return tensor

    def enter(index: int) -> Any:
        def hook(module: nn.Module, args: tuple) -> None:
            state["block"] = index
            inputs[index] = args[0].untyped_storage().nbytes()

        return hook

    def leave(module: nn.Module, args: tuple, output: Any) -> None:
        state["block"] = None
        state["widest"] = max(state["widest"], output[0].untyped_storage().nbytes() * 4)  # the FFN hidden

    handles = [b.register_forward_pre_hook(enter(i)) for i, b in enumerate(blocks)]
    handles += [b.register_forward_hook(leave) for b in blocks]
    B, S, s = setting.batch_size, setting.image_size, config.scale
    dtype = COMPUTE_DTYPES[setting.precision]
    autocast = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    try:
        with _fake_cpu():
            student.to_empty(device="cpu")
            if lpips is not None:
                lpips.to_empty(device="cpu")
            modules = [student] + ([lpips] if lpips is not None else [])
            state["params"] = {t.untyped_storage()._cdata for m in modules for t in [*m.parameters(), *m.buffers()]}
            gt, lq = torch.rand(B, 3, S, S), torch.rand(B, 3, S // s, S // s)
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
                out = student.restore(lq)
                sr = out.sr.float()
                loss = (sr - gt).pow(2).mean()
                if setting.lambda_kl > 0:
                    loss = loss + token_kl(torch.randn_like(out.logits), out.logits)
                if lpips is not None:
                    crop = setting.perceptual_crop or S
                    loss = loss + lpips(sr[..., :crop, :crop] * 2 - 1, gt[..., :crop, :crop] * 2 - 1).mean()
            logits = out.logits.untyped_storage().nbytes()
    finally:
        for handle in handles:
            handle.remove()
    tokens = B * sum(h * w for h, w in student.schedule)
    return ActivationTrace(per_block, inputs, other[0], largest[0], tokens, logits, state["widest"])


@dataclass
class MemoryEstimate:
    """Predicted peak bytes of one process, and its parts (GB in :meth:`as_dict`)."""

    setting: TrainSetting
    parts: dict[str, float] = field(default_factory=dict)
    """Bytes per part: frozen_weights, trainable_states, teacher, lpips, activations_blocks (the transformer's),
    activations_other (pre-cleaner, encoder, decoder, LPIPS, losses), working_set."""
    per_token_per_layer_kb: float = 0.0

    @property
    def peak_bytes(self) -> float:
        return sum(self.parts.values())

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / GB

    def as_dict(self) -> dict[str, Any]:
        return {
            "predicted_peak_mem_gb": round(self.peak_gb, 3),
            "predicted_parts_gb": {k: round(v / GB, 3) for k, v in self.parts.items()},
            "activations_per_token_per_layer_kb": round(self.per_token_per_layer_kb, 2),
            "setting": asdict(self.setting),
        }


def _frozen_bytes(blocks: int, largest_block: int, other: int, setting: TrainSetting, itemsize: int) -> float:
    """Frozen weights held by one process under ``setting.sharding``."""
    world = setting.world_size
    if world == 1 or setting.sharding == "ddp":
        return (blocks + other) * itemsize
    gathered = 2 * largest_block if setting.sharding == "fsdp" else blocks
    # The root unit (everything outside the blocks) is gathered whole for the forward and the backward.
    return (blocks / world + gathered + other + other / world) * itemsize


def predict_memory(setting: TrainSetting, trace: ActivationTrace | None = None) -> MemoryEstimate:
    """The peak memory of one process for ``setting`` (see the module docstring)."""
    counts = count_parameters(setting)
    trace = trace or trace_activations(setting)
    fp32 = 4
    teacher_itemsize = 2 if setting.teacher_dtype == "bfloat16" else 4
    trainable_states = counts.trainable * fp32 * (1 + 1 + 2 + (1 if setting.ema else 0))  # weight, grad, Adam
    if setting.sharding == "ddp" and setting.world_size > 1:
        trainable_states += counts.trainable * fp32  # DDP's gradient buckets
    teacher = 0.0
    if counts.teacher_transformer:  # its blocks hold exactly the student's frozen block weights
        rest = counts.teacher_transformer - counts.frozen_blocks
        teacher = _frozen_bytes(counts.frozen_blocks, counts.largest_block, rest, setting, teacher_itemsize)
    teacher += counts.teacher_encoder * fp32
    blocks = sum(trace.blocks)
    if setting.activation_checkpointing:
        block_activations = sum(trace.block_inputs) + max(trace.blocks)
    else:
        block_activations = blocks
    parts = {
        "frozen_weights": _frozen_bytes(counts.frozen_blocks, counts.largest_block, counts.frozen_other, setting, fp32),
        "trainable_states": float(trainable_states),
        "teacher": float(teacher),
        "lpips": float(counts.lpips * fp32),
        "activations_blocks": float(block_activations),
        "activations_other": float(trace.other),
        "working_set": float(trace.logits + trace.widest_block_tensor + 2 * trace.largest),
    }
    per_token = max(trace.blocks) / max(1, trace.tokens) / 1024
    return MemoryEstimate(setting, parts, per_token)
