"""A memory model of one student distillation step: what a GPU (or CPU) must hold at the peak.

    peak = weights + gradients + optimiser states (+ EMA, DDP buckets)      counted from the parameters
         + activations saved for the backward                                traced (below)
         + the working set on top of them                                    the teacher pass, backward buffers

Everything is read from the training module a run trains, ``StudentDistillation`` with the setup's loss
terms (benchmark/train_setup.py :func:`build_distillation`), built shapes-only on the meta device.
Parameters: frozen weights are float32 (the Trainer keeps them so), trainable ones float32 with a
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
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from varestorer.benchmark.train_setup import DistillSetup, build_distillation, fixed_offsets
from varestorer.training.distillation import StudentDistillation

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


def count_parameters(module: StudentDistillation) -> ParameterCounts:
    """Counts of a (meta-device) training module."""
    student = module.student
    blocks = student.transformer.block_list()
    block_frozen = [sum(p.numel() for p in b.parameters() if not p.requires_grad) for b in blocks]
    frozen = sum(p.numel() for p in student.parameters() if not p.requires_grad)
    teacher = module.teacher.transformer
    teacher_params = [] if teacher is None else list(teacher.parameters())
    encoder = module.teacher.encoder
    return ParameterCounts(
        trainable=sum(p.numel() for p in student.parameters() if p.requires_grad),
        frozen_blocks=sum(block_frozen),
        frozen_other=frozen - sum(block_frozen),
        largest_block=max(block_frozen),
        teacher_transformer=sum(p.numel() for p in teacher_params),
        teacher_itemsize=teacher_params[0].element_size() if teacher_params else 4,
        teacher_encoder=0 if encoder is None else sum(p.numel() for p in encoder.parameters()),
        loss_networks=sum(p.numel() for net in module.loss_networks() for p in net.parameters()),
        depth=len(blocks),
    )


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


def trace_activations(setup: DistillSetup, module: StudentDistillation | None = None) -> ActivationTrace:
    """Run the training module's forward for ``setup`` on fake CPU tensors, counting saved storages."""
    module = module or build_distillation(setup, "meta", crop_offsets=fixed_offsets)
    student = module.student
    blocks = student.transformer.block_list()
    state: dict[str, Any] = {"block": None, "seen": set(), "params": set(), "widest": 0, "alive": []}
    per_block, inputs, other, largest = [0] * len(blocks), [0] * len(blocks), [0], [0]

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
    B, S, s = setup.train.batch_size, setup.student.image_size, setup.student.scale
    dtype = setup.compute_dtype
    autocast = torch.autocast("cpu", dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
    try:
        with _fake_cpu():
            module.to_empty(device="cpu").train()
            state["params"] = {t.untyped_storage()._cdata for t in [*module.parameters(), *module.buffers()]}
            batch = {"gt": torch.rand(B, 3, S, S), "lq": torch.rand(B, 3, S // s, S // s), "caption": [""] * B}
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
                module(batch, 0)
    finally:
        for handle in handles:
            handle.remove()
    tokens = B * sum(h * w for h, w in student.schedule)
    return ActivationTrace(per_block, inputs, other[0], largest[0], tokens, state["logits"], state["widest"])


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


def predict_memory(setup: DistillSetup, trace: ActivationTrace | None = None) -> MemoryEstimate:
    """The peak memory of one process for ``setup`` (see the module docstring)."""
    module = build_distillation(setup, "meta", crop_offsets=fixed_offsets)
    counts = count_parameters(module)  # before the trace makes its tensors fake
    trace = trace or trace_activations(setup, module)
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
    parts = {
        "frozen_weights": _frozen_bytes(counts.frozen_blocks, counts.largest_block, counts.frozen_other, setup, fp32),
        "trainable_states": float(trainable_states),
        "teacher": float(teacher),
        "lpips": float(counts.loss_networks * fp32),
        "activations_blocks": float(block_activations),
        "activations_other": float(trace.other),
        "working_set": float(trace.logits + trace.widest_block_tensor + 2 * trace.largest),
    }
    per_token = max(trace.blocks) / max(1, trace.tokens) / 1024
    return MemoryEstimate(setup, parts, per_token)
