"""Prior checks on a tiny random student: bit agreement per scale and the restore pass cut at each stage."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varestorer.benchmark.prior_checks import (
    BitAgreement,
    StudentStage,
    aligned_tiles,
    bit_agreement,
    bit_agreement_batch,
    oracle_decodes,
)
from varestorer.inference.restorer import Restorer
from varestorer.models.student import Student
from varestorer.models.student_config import STUDENT_PRESETS


@pytest.fixture(scope="module")
def student() -> Student:
    torch.manual_seed(0)
    config = replace(STUDENT_PRESETS["tiny"], lq_bit_skip=True, lq_bit_gain_init=0.0, fidelity_path=True)
    return Student(config).eval()


def test_gt_equal_to_the_encoders_input_gives_the_lq_bits_at_every_scale(student: Student) -> None:
    lq = torch.rand(2, 3, 16, 16)
    gt = F.interpolate(lq, size=(64, 64), mode="bicubic", align_corners=False)  # what encode() feeds the encoder
    agreement = BitAgreement([tuple(hw) for hw in student.schedule])
    bit_agreement_batch(student, lq, gt, agreement)
    assert agreement.tiles == 2 and agreement.lq_rate == [1.0] * len(student.schedule)
    assert agreement.total[-1] == 2 * 4 * 4 * student.config.tokenizer.token_dim
    assert min(agreement.student_rate) < 1.0  # a random transformer with no LQ-bit gain does not copy them
    assert all(c > 0 for c in agreement.changed[1:])
    # the flips over margin 0 are the changed bits, and they alone make the student's agreement differ from the LQ's
    assert [row[0] for row in agreement.flipped_over] == agreement.changed
    for k, total in enumerate(agreement.total):
        shift = (agreement.student_equal[k] - agreement.lq_equal[k]) / total
        assert agreement.gain_over(k, 0) == pytest.approx(shift)
        assert agreement.flipped_over[k] == sorted(agreement.flipped_over[k], reverse=True)  # fewer over larger margins
        assert all(r <= f for r, f in zip(agreement.right_over[k], agreement.flipped_over[k]))
    student.lq_bit_gain.data.fill_(1e4)  # the LQ's bits win every logit: the student copies them
    try:
        copied = BitAgreement([tuple(hw) for hw in student.schedule])
        bit_agreement_batch(student, lq, torch.rand(2, 3, 64, 64), copied)
        assert copied.student_rate == copied.lq_rate and copied.changed == [0] * len(student.schedule)
        assert not any(any(row) for row in copied.flipped_over)
        assert torch.equal(StudentStage(student, "identity")(lq), StudentStage(student, "full")(lq))
    finally:
        student.lq_bit_gain.data.fill_(0.0)
    assert "| 1x1 |" in agreement.to_markdown() and agreement.to_json_dict()["scales"][-1]["lq"] == 1.0
    assert "by logit margin" in agreement.to_markdown()
    over = agreement.to_json_dict()["scales"][-1]["flips_over"]
    assert [row["margin"] for row in over] == list(agreement.margins) and over[0]["flipped"] > 0


def test_stages_are_wired_to_the_students_own_steps(student: Student) -> None:
    lq = torch.rand(1, 3, 16, 16)
    stages = {name: StudentStage(student, name)(lq) for name in ("autoencoder", "quantised", "identity")}
    # fidelity weight 1 (its initial value): f_hat_LQ + 1 * (f_LQ - f_hat_LQ) = f_LQ, the unquantised latent
    assert torch.allclose(stages["identity"], stages["autoencoder"], atol=1e-5)
    assert not torch.allclose(stages["quantised"], stages["autoencoder"], atol=1e-3)
    student.fidelity_weight.data.zero_()  # no residual: the LQ's bits alone, and the student's bits alone
    try:
        assert torch.allclose(StudentStage(student, "identity")(lq), stages["quantised"], atol=1e-5)
        assert torch.allclose(StudentStage(student, "predicted")(lq), StudentStage(student, "full")(lq), atol=1e-5)
    finally:
        student.fidelity_weight.data.fill_(1.0)
    pre = StudentStage(student, "precleaner")(lq)  # no pre-cleaner in the tiny preset: the bicubic-resized LQ
    assert torch.allclose(pre, F.interpolate(lq, size=(64, 64), mode="bicubic", align_corners=False).clamp(0, 1))
    with pytest.raises(ValueError, match="stage"):
        StudentStage(student, "decoder")  # type: ignore[arg-type]


def test_a_stage_restores_whole_images_through_the_restorer(student: Student) -> None:
    restorer = Restorer(StudentStage(student, "quantised"), device="cpu", dtype=torch.float32)
    assert restorer.tile_overlap == student.restore_spec.default_tile_overlap
    out = restorer(np.random.default_rng(0).integers(0, 256, (20, 28, 3), dtype=np.uint8))
    assert out.shape == (80, 112, 3) and out.dtype == np.uint8


def test_bit_agreement_over_pairs_counts_aligned_tiles(student: Student) -> None:
    rng = np.random.default_rng(1)
    lq = rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)  # 2 x 2 tiles of 16 px, the remainder left out
    gt = rng.integers(0, 256, (160, 144, 3), dtype=np.uint8)
    tiles = list(aligned_tiles(lq, gt, 16, 4))
    assert len(tiles) == 4 and tiles[3][0].shape == (16, 16, 3) and tiles[3][1].shape == (64, 64, 3)
    assert np.array_equal(tiles[3][1], gt[64:128, 64:128])
    agreement = bit_agreement(student, [(lq, gt)], batch_size=3)
    assert agreement.tiles == 4
    one_by_one = BitAgreement([tuple(hw) for hw in student.schedule])
    for lq_tile, gt_tile in tiles:
        as_tensor = [torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255 for a in (lq_tile, gt_tile)]
        bit_agreement_batch(student, *as_tensor, one_by_one)
    assert agreement.total == one_by_one.total and agreement.lq_equal == one_by_one.lq_equal
    assert agreement.student_equal == one_by_one.student_equal and agreement.changed == one_by_one.changed
    assert agreement.flipped_over == one_by_one.flipped_over and agreement.right_over == one_by_one.right_over
    with pytest.raises(ValueError, match="x4"):
        list(aligned_tiles(lq, gt[:-1], 16, 4))


def test_the_bit_oracle_swaps_in_the_gt_bits_scale_by_scale(student: Student) -> None:
    lq, gt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 64, 64)
    decoded = oracle_decodes(student, lq, gt)
    scales = len(student.schedule)
    assert list(decoded) == [
        "identity",
        "student",
        *[f"gt_upto_{k}" for k in range(1, scales)],
        "gt_bits",
        "gt_bits_alone",
        "gt_latent",
    ]
    assert torch.allclose(decoded["student"], StudentStage(student, "full")(lq), atol=1e-5)
    assert torch.allclose(decoded["identity"], StudentStage(student, "identity")(lq), atol=1e-5)
    # the GT's own bits and latent: its autoencoder and quantised stages (the GT as the encoder's input)
    assert torch.allclose(decoded["gt_latent"], student.decode(student.encode(gt).f_lq).clamp(0, 1), atol=1e-5)
    assert torch.allclose(decoded["gt_bits_alone"], student.decode(student.encode(gt).tokens.f_hat), atol=1e-5)
    # the GT's bits at the first scale only: neither the student's decode nor the all-GT one
    assert not torch.allclose(decoded["gt_upto_1"], decoded["gt_bits"], atol=1e-4)
    assert not torch.allclose(decoded["gt_upto_1"], decoded["student"], atol=1e-4)
    student.fidelity_weight.data.zero_()  # without the residual gt_bits is the GT's bits alone
    try:
        assert torch.allclose(oracle_decodes(student, lq, gt)["gt_bits"], decoded["gt_bits_alone"], atol=1e-5)
    finally:
        student.fidelity_weight.data.fill_(1.0)
