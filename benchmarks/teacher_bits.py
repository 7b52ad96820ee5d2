"""A trained teacher's bit accuracy, per scale, teacher-forced on the centre crops of a folder of photos.

    python benchmarks/teacher_bits.py local/runs/teacher_default/model ../shared/data/val [--crop 256] [--json OUT]

The same numbers the teacher's validation logs (``bit_accuracy`` and ``bit_accuracy_HxW``; training/train_teacher.py
``validate_teacher``) for a teacher folder after the fact, e.g. one trained before the per-scale figures were
logged. Chance is 0.5 at every scale. Unconditional teachers only (no captions are read).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from varestorer.data.datasets import HQFolderDataset
from varestorer.io.atomic import atomic_path
from varestorer.models.teacher import Teacher
from varestorer.training.train_teacher import LossConfig, TeacherTraining, validate_teacher


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("teacher", help="a Teacher folder (tokenizer/ and transformer/)")
    parser.add_argument("images", help="a folder of photos (searched recursively)")
    parser.add_argument("--crop", type=int, default=256, help="centre crop side (the teacher's working size)")
    parser.add_argument("--limit", type=int, default=1000, help="at most this many photos")
    parser.add_argument("--json", type=Path, help="write the figures here as well")
    args = parser.parse_args()
    torch.manual_seed(0)
    teacher = Teacher.from_pretrained(args.teacher).eval()
    dataset = HQFolderDataset(args.images, crop_size=args.crop, random_crop=False, hflip=False)
    module = TeacherTraining(teacher, LossConfig(num_samples=0), None).eval()
    results = {"teacher": str(args.teacher), "images": min(args.limit, len(dataset)), "crop": args.crop}
    results |= validate_teacher(module, dataset, limit=args.limit)
    for key, value in results.items():
        print(f"{key}: {value:.4f}" if isinstance(value, float) else f"{key}: {value}")
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
