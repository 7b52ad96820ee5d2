from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from conftest import write_tiny_t5
from varestorer.models.student import Student
from varestorer.models.teacher import Teacher
from varestorer.models.teacher_config import TeacherConfig
from varestorer.tokenizer.autoencoder import MultiScaleTokenizer
from varestorer.tokenizer.config import tokenizer_preset
from varestorer.training import train_student
from varestorer.training.student_recipe import JobConfig
from varestorer.transformer.config import TextEncoderConfig, transformer_preset
from varestorer.transformer.model import NextScaleTransformer

RECIPE = Path(__file__).parent / "data" / "student_tiny.toml"


@pytest.fixture
def setup(tmp_path, tiny_image):
    write_tiny_t5(tmp_path / "t5")
    tokenizer = MultiScaleTokenizer(tokenizer_preset("tiny"))
    transformer = NextScaleTransformer(transformer_preset("tiny"))  # text_dim 32 = the tiny T5's width
    Teacher(tokenizer, transformer).save_pretrained(tmp_path / "teacher")
    text = TeacherConfig(text_encoder=TextEncoderConfig(kind="transformers", path=str(tmp_path / "t5")))
    Teacher(tokenizer, transformer, text).save_pretrained(tmp_path / "teacher_t5")
    for index in range(4):
        (tmp_path / "hq").mkdir(exist_ok=True)
        Image.fromarray(tiny_image(80, 96, seed=index)).save(tmp_path / "hq" / f"{index}.png")
        (tmp_path / "hq" / f"{index}.txt").write_text("a photo of a cat" if index % 2 else "dog on grass")
    for sub, size in (("gt", 64), ("lq", 16)):
        (tmp_path / "val" / sub).mkdir(parents=True)
        Image.fromarray(tiny_image(size, size, seed=9)).save(tmp_path / "val" / sub / "a.png")
    return tmp_path


def _overrides(root: Path, out: str, *extra: str) -> list[str]:
    return [
        f"train.output_dir={root / out}",
        f"model.teacher={root / 'teacher'}",
        f'data.train_dirs=["{root / "hq"}"]',
        f"data.val_lq_dir={root / 'val' / 'lq'}",
        f"data.val_gt_dir={root / 'val' / 'gt'}",
        *extra,
    ]


def _trainable(directory: Path) -> dict[str, torch.Tensor]:
    return Student.from_pretrained(directory).trainable_state_dict()


def test_distillation_runs_exports_and_resumes_continuously(setup) -> None:
    root = setup
    assert train_student.main(RECIPE, overrides=_overrides(root, "straight")) == 0
    straight = _trainable(root / "straight" / "model")
    student = Student.from_pretrained(root / "straight" / "model")
    assert student(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)
    # the adapters moved away from the teacher (B starts at zero)
    assert any(v.abs().sum() > 0 for k, v in straight.items() if k.endswith("lora_B"))

    assert train_student.main(RECIPE, overrides=_overrides(root, "halves", "train.max_steps=2")) == 0
    assert train_student.main(RECIPE, resume=True, overrides=_overrides(root, "halves")) == 0
    halves = _trainable(root / "halves" / "model")
    assert straight.keys() == halves.keys()
    for key in straight:
        assert torch.allclose(straight[key], halves[key], atol=1e-5), key


@pytest.mark.parametrize(
    "variant",
    ["train.max_steps=1 loss.lambda_kl=0.0", "train.max_steps=1 model.attention=causal model.precleaner=false"],
)
def test_ablation_variants_run(setup, variant) -> None:
    assert train_student.main(RECIPE, overrides=_overrides(setup, "v", *variant.split())) == 0
    student = Student.from_pretrained(setup / "v" / "model")
    if "causal" in variant:
        assert student.config.attention == "causal" and student.precleaner is None


def test_missing_teacher_is_a_clear_error(setup) -> None:
    with pytest.raises((ValueError, FileNotFoundError)):
        train_student.main(RECIPE, overrides=_overrides(setup, "x", f"model.teacher={setup / 'nothing'}"))


def test_captions_condition_teacher_and_student(setup) -> None:
    root = setup
    overrides = _overrides(root, "t5", "train.max_steps=1", f"model.teacher={root / 'teacher_t5'}")
    assert train_student.main(RECIPE, overrides=overrides) == 0
    student = Student.from_pretrained(root / "t5" / "model")
    assert student.config.text_encoder.kind == "transformers"
    lq = torch.rand(1, 3, 16, 16)
    keys = set(student.state_dict())
    with torch.no_grad():
        cat = student.restore(lq, student.encode_prompts(["a photo of a cat"])).logits
        dog = student.restore(lq, student.encode_prompts(["dog on grass"])).logits
    assert not torch.allclose(cat, dog)
    assert set(student.state_dict()) == keys  # the loaded text encoder is never part of the weights


def test_no_distill_variant_trains_with_cross_entropy_and_samples_scale_by_scale(setup) -> None:
    from varestorer.models.lq_conditioned import LQConditionedVAR

    overrides = _overrides(setup, "nd", "train.max_steps=2", "model.kind=lq_conditioned_var")
    assert train_student.main(RECIPE, overrides=overrides) == 0
    model = LQConditionedVAR.from_pretrained(setup / "nd" / "model")
    lq = torch.rand(1, 3, 16, 16)
    out = model.restore(lq)
    assert out.sr.shape == (1, 3, 64, 64) and torch.equal(out.sr, model(lq))  # greedy: deterministic
    # the control branch starts at zero; training moved it, so the LQ changes the first scale's logits
    assert any(p.abs().sum() > 0 for p in model.control.zero.parameters())


@pytest.mark.slow  # two torchrun workers importing torch: ~20-35 s on the 2-core box
def test_two_processes_on_cpu_with_torchrun(setup) -> None:
    """The distillation job under torchrun (gloo): DDP over the student's adapters/encoder/pre-cleaner works
    (every trainable tensor receives a gradient, else DDP would fail) and rank 0 exports a loadable model.
    That the ranks end with identical weights is checked on the same Trainer in tests/test_trainer.py."""
    import socket
    import subprocess
    import sys

    from conftest import subprocess_env

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    overrides = _overrides(setup, "ddp", "train.max_steps=2", "train.batch_size=1")
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", port]
    command += ["-m", "varestorer", "train", "student", "--config", str(RECIPE), "--device", "cpu"]
    command += [arg for override in overrides for arg in ("--set", override)]
    out = subprocess.run(command, capture_output=True, text=True, env=subprocess_env(), timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "2 process(es)" in out.stderr
    student = Student.from_pretrained(setup / "ddp" / "model")
    assert student(torch.rand(1, 3, 16, 16)).shape == (1, 3, 64, 64)


def test_dists_term_reaches_the_student(setup) -> None:
    """[loss.dists] adds DISTS(sr, gt) on the perceptual crop, and its gradient reaches the trainables.
    DISTS with random VGG weights keeps the test free of fetched assets; the computation is the real one."""
    from varestorer.training.loss_terms import LossTermConfig, build_loss_terms
    from varestorer.training.student_recipe import JobConfig

    model = {
        "image_size": 64,
        "lora_rank": 2,
        "lora_alpha": 2.0,
        "precleaner": {"num_feat": 8, "num_conv": 2, "upscale": 1},
    }
    student, tokenizer, transformer = train_student.build_student(JobConfig(teacher=str(setup / "teacher")), model)
    terms = build_loss_terms((LossTermConfig("dists", 1.0),), student, pretrained=False)
    module = train_student.StudentDistillation(student, tokenizer, transformer, terms)
    gt = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    lq = torch.nn.functional.interpolate(gt, size=(16, 16), mode="area")
    loss, logs = module({"gt": gt, "lq": lq, "caption": ["", ""]}, 0)
    assert set(logs) == {"mse", "dists"} and 0 < logs["dists"].item() < 1
    assert torch.allclose(loss, logs["dists"])
    loss.backward()
    moved = [n for n, p in student.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any("precleaner" in name for name in moved) and any("lora" in name for name in moved)


def test_real_camera_pairs_join_the_training_items(setup, monkeypatch, tiny_image) -> None:
    from varestorer.data.real_pairs import MixedPairDataset

    root = setup
    lq = tiny_image(20, 24, seed=3)
    for sub, array in (("lq", lq), ("gt", lq.repeat(4, axis=0).repeat(4, axis=1))):
        (root / "pairs" / sub).mkdir(parents=True)
        Image.fromarray(array).save(root / "pairs" / sub / "a.png")
    seen = []
    fit = train_student.Trainer.fit

    def recording_fit(self, dataset) -> None:
        seen.append(dataset)
        fit(self, dataset)

    monkeypatch.setattr(train_student.Trainer, "fit", recording_fit)
    real = [f'data.real_pairs=["{root / "pairs"}"]', "data.real_pair_fraction=0.5", "train.max_steps=1"]
    assert train_student.main(RECIPE, overrides=_overrides(root, "real", *real)) == 0
    (dataset,) = seen
    assert isinstance(dataset, MixedPairDataset) and len(dataset) == 8  # 4 photos + as many real crops
    item = dataset[7]
    assert item["lq"].shape == (3, 16, 16) and item["path"].endswith("a.png")
    assert (root / "real" / "model" / "config.json").is_file()


def _merged_student(root: Path) -> Path:
    """A merged tiny student whose adapters moved (so merging changed its transformer), saved in ``root/merged``."""
    model = {"image_size": 64, "lora_rank": 2, "lora_alpha": 2.0, "lq_residual_control": True,
             "precleaner": {"num_feat": 8, "num_conv": 2, "upscale": 1}}  # fmt: skip
    student, _, _ = train_student.build_student(JobConfig(teacher=str(root / "teacher")), model)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in student.named_parameters():
            if "lora_B" in name or name.startswith("lq_control"):
                param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    student.merged().save_pretrained(root / "merged")
    return root / "merged"


def test_a_merged_student_is_fine_tuned_without_its_teacher(setup) -> None:
    """[job] init_from a merged student and no teacher: the run starts as exactly that model (adapters at zero over
    its weights), trains, and writes a self-contained checkpoint that loads without any teacher folder."""
    merged_dir = _merged_student(setup)
    merged = Student.from_pretrained(merged_dir)
    job = JobConfig(init_from=str(merged_dir))
    start, tokenizer, transformer = train_student.build_student(job, {"lora_rank": 2, "lora_alpha": 2.0})
    assert tokenizer is None and transformer is None
    assert start.config.teacher is None and not start.config.merged
    assert start.config.lq_residual_control and start.config.precleaner == merged.config.precleaner  # its own settings
    lq = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.equal(start.eval()(lq), merged(lq))

    overrides = [
        f"train.output_dir={setup / 'tuned'}",
        'job.teacher=""',
        f'job.init_from="{merged_dir}"',
        "loss.kl.weight=0",
        "train.max_steps=2",
        f'data.train_dirs=["{setup / "hq"}"]',
        f"data.val_lq_dir={setup / 'val' / 'lq'}",
        f"data.val_gt_dir={setup / 'val' / 'gt'}",
    ]
    assert train_student.main(RECIPE, overrides=overrides) == 0
    (setup / "teacher").rename(setup / "teacher_gone")  # the checkpoint must not need it
    tuned = Student.from_pretrained(setup / "tuned" / "model")
    assert tuned.config.teacher is None
    moved = [k for k, v in tuned.state_dict().items() if k.endswith("lora_B") and v.abs().sum() > 0]
    assert moved, "the adapters did not train"
    with torch.no_grad():
        assert not torch.equal(tuned(lq), merged(lq))
    assert tuned.merged()(lq).shape == (2, 3, 64, 64)


def test_fine_tuning_without_a_teacher_refuses_what_needs_one(setup) -> None:
    merged_dir = _merged_student(setup)
    base = [f"train.output_dir={setup / 'out'}", 'job.teacher=""', f'data.train_dirs=["{setup / "hq"}"]']
    with pytest.raises(ValueError, match="kl needs the teacher"):
        train_student.main(RECIPE, overrides=[*base, f'job.init_from="{merged_dir}"'])
    with pytest.raises(ValueError, match="or \\[job\\] init_from a merged student"):
        train_student.main(RECIPE, overrides=[*base, "loss.kl.weight=0"])
    adapter = setup / "adapter"
    student, _, _ = train_student.build_student(JobConfig(teacher=str(setup / "teacher")), {"image_size": 64})
    student.save_pretrained(adapter)
    with pytest.raises(ValueError, match="is an adapter checkpoint: name its teacher"):
        train_student.build_student(JobConfig(init_from=str(adapter)), {})
    with pytest.raises(ValueError, match="does not fit the merged student"):
        train_student.build_student(JobConfig(init_from=str(merged_dir)), {"lq_residual_control": False})
    assert not (setup / "out").exists()


def test_the_fine_tune_recipe_trains_the_embedded_default(tmp_path, monkeypatch, tiny_image) -> None:
    """recipes/finetune_default.toml as a user runs it (one step, tiny photos, random-weight LPIPS/DISTS assets):
    it starts from the shipped default, keeps its settings, and exports a model that restores."""
    from conftest import write_fake_perceptual_assets
    from varestorer.families import embedded_folder

    write_fake_perceptual_assets(tmp_path / "cache")
    monkeypatch.setenv("VARESTORER_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(Path(__file__).parents[1])  # the recipe's degradation file is relative to the repository
    for index in range(2):
        (tmp_path / "photos").mkdir(exist_ok=True)
        Image.fromarray(tiny_image(272, 288, seed=index)).save(tmp_path / "photos" / f"{index}.png")
    recipe = Path("recipes/finetune_default.toml")
    overrides = [
        f"train.output_dir={tmp_path / 'run'}",
        f'data.train_dirs=["{tmp_path / "photos"}"]',
        "train.max_steps=1",
        "train.batch_size=1",
        "train.num_workers=0",
        "train.warmup_steps=0",
    ]
    assert train_student.main(recipe, overrides=overrides) == 0
    tuned = Student.from_pretrained(tmp_path / "run" / "model")
    shipped = Student.from_pretrained(embedded_folder("default"))
    assert tuned.config.teacher is None and tuned.config.train_decoder is False
    for field in ("predicted_scales", "color_fix", "color_fix_levels", "encoder_skip_blocks", "lq_residual_control"):
        assert getattr(tuned.config, field) == getattr(shipped.config, field), field
    assert any(v.abs().sum() > 0 for k, v in tuned.state_dict().items() if k.endswith("lora_B"))
    lq = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert tuned.merged().eval()(lq).shape == (1, 3, 256, 256)


def test_bench_counts_and_times_a_fine_tune_without_a_teacher(setup, capsys) -> None:
    """`varestorer bench --train --recipe` on a teacher-free recipe: the student is init_from's (its shapes from its
    config.json), no teacher pass is counted or run, and --model is refused beside it."""
    import json

    from varestorer.cli.main import main

    merged_dir = _merged_student(setup)
    out = setup / "bench.json"
    recipe = ["--recipe", str(RECIPE), "--set", 'job.teacher=""', "--set", f'job.init_from="{merged_dir}"']
    args = ["bench", "--train", *recipe, "--set", "loss.kl.weight=0", "--set", "model.lora_rank=2"]
    assert main([*args, "--runs", "1", "--warmup", "0", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["teacher"] is False and result["model"] == str(merged_dir)
    assert result["predicted_parts_gb"]["teacher"] == 0 and result["stages_ms"]["teacher_ms"] == 0
    assert result["size"] == 64 and result["lora_rank"] == 2 and result["measured_peak_mem_gb"] > 0
    student, _, _ = train_student.build_student(JobConfig(init_from=str(merged_dir)), {"lora_rank": 2})
    trainable = sum(p.numel() for p in student.parameters() if p.requires_grad)
    assert result["trainable_params_m"] == pytest.approx(trainable / 1e6)  # the fine-tune trains exactly these

    capsys.readouterr()
    assert main([*args, "--predict-only", "--model", "tiny"]) == 2  # the recipe's student is init_from's
    assert "the recipe has no teacher" in capsys.readouterr().err
    assert main(["bench", "--train", "--predict-only", "--recipe", str(RECIPE)]) == 2  # a teacher needs --model
    assert "give --model" in capsys.readouterr().err
