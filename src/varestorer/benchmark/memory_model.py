"""A memory model of one student distillation step: what a GPU (or CPU) must hold at the peak.

    peak = weights + gradients + optimiser states (+ EMA, DDP buckets)      counted from the parameters
         + activations saved for the backward                                traced (below)
         + the working set on top of them                                    the teacher pass, backward buffers

Everything is read from the training module a run trains, ``StudentDistillation`` with the setup's loss
terms (benchmark/train_setup.py :func:`build_distillation`), built shapes-only on the meta device.
Parameters: frozen weights as stored (float32, or bf16 for linear/conv layers with ``train.frozen_weights_dtype``,
as training/frozen_precision.py stores them, applied here too), trainable ones float32 with a
float32 gradient, two AdamW moments and optionally an EMA copy. A separate teacher adds its transformer
(in ``teacher_dtype``) and encoder; the shared-base teacher (training/teacher_pass.py) adds only the
encoder copy when the student trains its own; the loss terms add their frozen networks (LPIPS-VGG...).
Sharding (``train.sharding``) divides the frozen block weights by the world size and adds the blocks
gathered at once (``fsdp``: the running and the prefetched block; ``fsdp_grad_op``: every block stays
gathered from its forward to its backward); trainable tensors stay whole on every process (see
``shard_frozen_weights``).

Activations are the tensors autograd saves for the backward of the module's forward (the student pass,
the teacher pass, the loss terms), traced by running that forward once on ``FakeTensor``s of the CPU
(``torch._subclasses``: shapes and dtypes, no memory, no arithmetic, a few seconds even for Infinity-2B),
under the same autocast and attention kernel choice as a real run, each storage counted once and
attributed to the transformer block that saved it. Activation checkpointing keeps of each block only its
input and recomputes one block at a time in the backward, so the blocks' share becomes
``depth x input + one block``. ``per_token_per_layer_kb`` reports a block's saved bytes per token.

The working set on top is the teacher pass (no gradients: its logits and the widest layer of one
block) and, in the backward, two buffers the size of the largest saved tensor. The model is checked
against live-tensor peaks measured on the CPU (tests/test_memory_model.py).

On CUDA (``target="cuda"``, the default) two things are added. Derived: CUDA autocast runs more ops in
float32 than CPU autocast (GroupNorm, the norms and reductions of :data:`CUDA_FLOAT32_OPS`), so the trace,
which runs on the CPU, casts their inputs as CUDA would: at Infinity-2B 512 px this adds 2.96 GiB per image,
most in the tokenizer's GroupNorm + SiLU pairs. Fitted: ``cuda_backward``, what the traced tensors still
miss (:data:`CUDA_BACKWARD_PER_IMAGE_GB`), fitted to the three peaks measured on an H200 (issue 29).
``train.conv_checkpointing`` (training/conv_checkpointing.py) is traced like block checkpointing: each
unit of the tokenizer's encoder and decoder keeps its input, and one unit is recomputed at a time.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from varestorer.benchmark.train_setup import DistillSetup, build_distillation, fixed_offsets
from varestorer.training.conv_checkpointing import conv_units
from varestorer.training.distillation import StudentDistillation
from varestorer.training.frozen_precision import store_frozen_weights

GB = 2**30


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
    teacher_itemsize: int
    """Bytes per element of the separate teacher's weights."""
    teacher_encoder: int
    loss_networks: int
    """The loss terms' frozen networks (LPIPS-VGG, DISTS, a latent teacher)."""
    depth: int
    frozen_blocks_bytes: int = 0
    frozen_other_bytes: int = 0
    largest_block_bytes: int = 0
    loss_networks_bytes: int = 0
    """Bytes of the four counts above as stored (``train.frozen_weights_dtype`` stores some in bf16)."""


def count_parameters(module: StudentDistillation) -> ParameterCounts:
    """Counts of a (meta-device) training module."""
    student = module.student
    blocks = student.transformer.block_list()
    block_frozen = [sum(p.numel() for p in b.parameters() if not p.requires_grad) for b in blocks]
    frozen = sum(p.numel() for p in student.parameters() if not p.requires_grad)
    block_bytes = [sum(_nbytes(p) for p in b.parameters() if not p.requires_grad) for b in blocks]
    frozen_bytes = sum(_nbytes(p) for p in student.parameters() if not p.requires_grad)
    networks = [p for net in module.loss_networks() for p in net.parameters()]
    teacher = None if module.teacher is None else module.teacher.transformer
    teacher_params = [] if teacher is None else list(teacher.parameters())
    encoder = None if module.teacher is None else module.teacher.encoder
    return ParameterCounts(
        trainable=sum(p.numel() for p in module.parameters() if p.requires_grad),  # a discriminator's too
        frozen_blocks=sum(block_frozen),
        frozen_other=frozen - sum(block_frozen),
        largest_block=max(block_frozen),
        teacher_transformer=sum(p.numel() for p in teacher_params),
        teacher_itemsize=teacher_params[0].element_size() if teacher_params else 4,
        teacher_encoder=0 if encoder is None else sum(p.numel() for p in encoder.parameters()),
        loss_networks=sum(p.numel() for p in networks),
        depth=len(blocks),
        frozen_blocks_bytes=sum(block_bytes),
        frozen_other_bytes=frozen_bytes - sum(block_bytes),
        largest_block_bytes=max(block_bytes),
        loss_networks_bytes=sum(_nbytes(p) for p in networks),
    )


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


@dataclass
class ActivationTrace:
    """Bytes saved for the backward of one student pass + losses (see the module docstring)."""

    blocks: list[int]
    """Saved by each transformer block."""
    block_inputs: list[int]
    """Each block's input (B, L, C): what checkpointing keeps."""
    other: int
    """Saved outside the blocks (encoder, decoder, pre-cleaner, head, loss terms)."""
    largest: int
    """The largest single saved storage."""
    tokens: int
    """B x L of the student's blocks (fewer than the schedule's with ``predicted_scales``)."""
    logits: int
    """Bytes of the (B, L, d, 2) float32 logits (the teacher's are the same size)."""
    widest_block_tensor: int
    """The largest tensor a block creates (the teacher pass's working set)."""
    other_by_part: dict[str, int] = field(default_factory=dict)
    """``other`` by the part that saved it (precleaner, encoder, decoder, a loss network...; ``losses``: the
    loss terms' own arithmetic)."""
    conv_units: list[int] = field(default_factory=list)
    """Saved by each unit of ``training/conv_checkpointing.py`` (part of ``other``)."""
    conv_unit_inputs: list[int] = field(default_factory=list)
    """Each such unit's input: what ``train.conv_checkpointing`` keeps."""


CUDA_FLOAT32_OPS: tuple[Any, ...] = (
    F.group_norm, F.layer_norm, F.softmax, F.log_softmax, F.normalize, F.mse_loss, F.kl_div,
    torch.pow, torch.Tensor.pow, torch.Tensor.__pow__, torch.sum, torch.Tensor.sum,
    torch.exp, torch.Tensor.exp, torch.log, torch.Tensor.log, torch.rsqrt, torch.Tensor.rsqrt,
    torch.softmax, torch.Tensor.softmax, torch.log_softmax, torch.Tensor.log_softmax, torch.cumsum,
)  # fmt: skip
"""Ops that CUDA autocast runs in float32 and CPU autocast leaves in the input's dtype (the ones this code
calls; torch's "CUDA Ops that can autocast to float32" list). The trace runs on the CPU, so under a CUDA target
it casts their bf16 inputs to float32 first, as CUDA autocast would: a GroupNorm then saves a float32 copy of
its input and returns float32, which the following SiLU saves too (CPU autocast keeps both in bf16)."""


class _CudaAutocastRules(TorchFunctionMode):
    """During a CPU trace under bf16 autocast: run :data:`CUDA_FLOAT32_OPS` in float32, as CUDA does."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in CUDA_FLOAT32_OPS and torch.is_autocast_enabled("cpu"):
            args, kwargs = tree_map(_to_float32, (args, kwargs or {}))
        return func(*args, **(kwargs or {}))


def _to_float32(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype in (torch.bfloat16, torch.float16):
        return value.float()
    return value


@contextlib.contextmanager
def _fake_cpu() -> Any:
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True) as mode:
        yield mode


def trace_activations(
    setup: DistillSetup, module: StudentDistillation | None = None, *, target: str = "cuda"
) -> ActivationTrace:
    """Run the training module's forward for ``setup`` on fake CPU tensors, counting saved storages.

    ``target`` ``cuda`` applies CUDA autocast's float32 ops (:data:`CUDA_FLOAT32_OPS`); ``cpu`` traces CPU's."""
    module = module or build_distillation(setup, "meta", crop_offsets=fixed_offsets)
    student = module.student
    blocks = student.transformer.block_list()
    state: dict[str, Any] = {"block": None, "seen": set(), "params": set(), "widest": 0, "alive": [], "part": []}
    per_block, inputs, other, largest = [0] * len(blocks), [0] * len(blocks), [0], [0]
    by_part: dict[str, int] = {}
    units = conv_units(module)
    unit_saved, unit_inputs = [0] * len(units), [0] * len(units)

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in state["seen"] or key in state["params"]:
            return tensor
        state["seen"].add(key)
        state["alive"].append(storage)  # held to the end: a freed storage's key could be another's later
        size = storage.nbytes()
        largest[0] = max(largest[0], size)
        if state["block"] is None:
            other[0] += size
            part = state["part"][-1] if state["part"] else "losses"
            by_part[part] = by_part.get(part, 0) + size
            if state.get("unit") is not None:
                unit_saved[state["unit"]] += size
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

    def logits(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        state["logits"] = max(state.get("logits", 0), output.untyped_storage().nbytes())

    handles = [b.register_forward_pre_hook(enter(i)) for i, b in enumerate(blocks)]
    handles += [b.register_forward_hook(leave) for b in blocks]
    handles.append(student.transformer.register_forward_hook(logits))

    def enter_part(name: str) -> Any:
        return lambda *_: state["part"].append(name)  # returns None: the input is kept

    def leave_part(*_: Any) -> None:
        state["part"].pop()

    def enter_unit(index: int) -> Any:
        def hook(module: nn.Module, args: tuple) -> None:
            state["unit"] = index
            unit_inputs[index] = args[0].untyped_storage().nbytes()

        return hook

    def leave_unit(*_: Any) -> None:
        state["unit"] = None

    for index, unit in enumerate(units):
        handles.append(unit.register_forward_pre_hook(enter_unit(index)))
        handles.append(unit.register_forward_hook(leave_unit))
    for name, part in _parts(module).items():
        handles.append(part.register_forward_pre_hook(enter_part(name)))
        handles.append(part.register_forward_hook(leave_part))
    B, S, s = setup.train.batch_size, setup.student.image_size, setup.student.scale
    dtype = setup.compute_dtype
    mixed = dtype != torch.float32
    autocast = torch.autocast("cpu", dtype=dtype) if mixed else contextlib.nullcontext()
    rules = _CudaAutocastRules() if mixed and target == "cuda" else contextlib.nullcontext()
    try:
        with _fake_cpu():
            module.to_empty(device="cpu").train()
            state["params"] = {t.untyped_storage()._cdata for t in [*module.parameters(), *module.buffers()]}
            batch = {"gt": torch.rand(B, 3, S, S), "lq": torch.rand(B, 3, S // s, S // s), "caption": [""] * B}
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast, rules:
                module(batch, 0)
    finally:
        for handle in handles:
            handle.remove()
    tokens = B * sum(h * w for h, w in getattr(student, "base", student).predicted_schedule)
    widest = state["widest"]
    return ActivationTrace(
        per_block, inputs, other[0], largest[0], tokens, state["logits"], widest, by_part, unit_saved, unit_inputs
    )


def _parts(module: StudentDistillation) -> dict[str, nn.Module]:
    """The named parts whose saved bytes outside the blocks the trace reports (``other_by_part``)."""
    student = module.student
    parts = {name: getattr(student, name, None) for name in ("precleaner", "encoder", "quantizer", "decoder")}
    parts["transformer (outside blocks)"] = student.transformer
    parts["teacher"] = module.teacher
    parts.update({name: module.get_submodule(name) for name in module.network_names})
    return {name: part for name, part in parts.items() if isinstance(part, nn.Module)}


@dataclass
class MemoryEstimate:
    """Predicted peak bytes of one process, and its parts (GB in :meth:`as_dict`)."""

    setup: DistillSetup
    parts: dict[str, float] = field(default_factory=dict)
    """Bytes per part: frozen_weights, trainable_states, teacher, lpips (the loss terms' frozen networks: LPIPS,
    DISTS...), activations_blocks (the transformer's), activations_other (pre-cleaner, encoder, decoder, loss
    terms), working_set."""
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
        }


def _frozen_bytes(blocks: int, largest_block: int, other: int, setup: DistillSetup, itemsize: int) -> float:
    """Frozen weights held by one process under ``setup.train.sharding``."""
    world, sharding = setup.world_size, setup.train.sharding
    if world == 1 or sharding == "ddp":
        return (blocks + other) * itemsize
    gathered = 2 * largest_block if sharding == "fsdp" else blocks
    # The root unit (everything outside the blocks) is gathered whole for the forward and the backward.
    return (blocks / world + gathered + other + other / world) * itemsize


CUDA_BACKWARD_PER_IMAGE_GB = 1.106
"""Fitted (not derived): what a CUDA step holds beyond the traced tensors (the backward's temporaries, cuDNN
workspaces), per 512 x 512 output image. Least squares over issue 29's three measured rows (H200, Infinity-2B
student at 512 px, LoRA 32, bf16: batch 1 and 4 with block checkpointing, batch 4 without; measured
19.80 / 49.64 / 75.65 GiB, traced 18.998 / 45.689 / 70.677, gaps 0.802 / 3.951 / 4.973), with the constant
held at 0; left free it fits -0.42 GiB and 1.22 per image, within 1% of the same rows either way."""
CUDA_BACKWARD_CONSTANT_GB = 0.0
"""Fitted with the per-image term (see there): held at 0."""


def _cuda_backward_bytes(setup: DistillSetup) -> float:
    """The fitted CUDA-only part (:data:`CUDA_BACKWARD_PER_IMAGE_GB`, scaled by output pixels, + a constant)."""
    images = setup.train.batch_size * (setup.student.image_size / 512) ** 2
    return (CUDA_BACKWARD_PER_IMAGE_GB * images + CUDA_BACKWARD_CONSTANT_GB) * GB


def predict_memory(
    setup: DistillSetup, trace: ActivationTrace | None = None, *, target: str = "cuda"
) -> MemoryEstimate:
    """The peak memory of one process for ``setup`` on a ``target`` device (``cuda`` or ``cpu``; see the module
    docstring: ``cuda`` traces CUDA autocast's float32 ops and adds the fitted ``cuda_backward`` part)."""
    if target not in ("cuda", "cpu"):
        raise ValueError(f"target must be cuda or cpu, got {target!r}")
    module = build_distillation(setup, "meta", crop_offsets=fixed_offsets)
    if setup.train.frozen_weights_dtype != "float32":  # as the Trainer stores them
        store_frozen_weights(module, getattr(torch, setup.train.frozen_weights_dtype))
    counts = count_parameters(module)  # before the trace makes its tensors fake
    trace = trace or trace_activations(setup, module, target=target)
    fp32 = 4
    ema = setup.train.ema_decay is not None
    trainable_states = counts.trainable * fp32 * (1 + 1 + 2 + (1 if ema else 0))  # weight, grad, Adam
    if setup.train.sharding == "ddp" and setup.world_size > 1:
        trainable_states += counts.trainable * fp32  # DDP's gradient buckets
    teacher = 0.0
    if counts.teacher_transformer:  # its blocks hold exactly the student's frozen block weights
        rest = counts.teacher_transformer - counts.frozen_blocks
        teacher = _frozen_bytes(counts.frozen_blocks, counts.largest_block, rest, setup, counts.teacher_itemsize)
    teacher += counts.teacher_encoder * fp32
    blocks = sum(trace.blocks)
    if setup.train.activation_checkpointing:
        block_activations = sum(trace.block_inputs) + max(trace.blocks)
    else:
        block_activations = blocks
    other = trace.other
    if setup.train.conv_checkpointing and trace.conv_units:
        # Each unit keeps its input; in the backward one unit is recomputed at a time (never beside a block).
        recomputed = max(trace.blocks) if setup.train.activation_checkpointing else 0
        other += sum(trace.conv_unit_inputs) - sum(trace.conv_units) + max(0, max(trace.conv_units) - recomputed)
    parts = {
        "frozen_weights": _frozen_bytes(
            counts.frozen_blocks_bytes, counts.largest_block_bytes, counts.frozen_other_bytes, setup, 1
        ),
        "trainable_states": float(trainable_states),
        "teacher": float(teacher),
        "lpips": float(counts.loss_networks_bytes),
        "activations_blocks": float(block_activations),
        "activations_other": float(other),
        "working_set": float(trace.logits + trace.widest_block_tensor + 2 * trace.largest),
    }
    if target == "cuda":
        parts["cuda_backward"] = _cuda_backward_bytes(setup)
    per_token = max(trace.blocks) / max(1, trace.tokens) / 1024
    return MemoryEstimate(setup, parts, per_token)
