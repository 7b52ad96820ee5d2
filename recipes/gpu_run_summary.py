"""The summary of a GPU training call (recipes/train_default_v3p_gpu.sh): one JSON from the stages' logs.

The trainer logs its scalars as text lines (``step N train|val key=value ...``, training/trainer.py) beside
TensorBoard; this reads those lines back. Per stage: exit status, wall seconds, the last step, the last
``train`` line (averaged over the log interval), every ``val`` line, and for the teacher the per-scale
validation bit accuracy (``bit_accuracy_HxW``); for the students the per-scale ``bit_gain_HxW`` (how much
more often the student's bits equal the GT's than the LQ's own bits do), averaged over the last
``--last`` train lines.

    python recipes/gpu_run_summary.py --stage teacher=LOG:EXIT:SECONDS ... --extra key=value ... -o summary.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

LINE = re.compile(r"\bstep (\d+) (train|val) (.*)$")


def read_log(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ``train`` and ``val`` scalar lines of a log, each as ``{"step": N, key: value, ...}``."""
    lines: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    if not path.is_file():
        return [], []
    for text in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = LINE.search(text)
        if match is None:
            continue
        values: dict[str, Any] = {"step": int(match.group(1))}
        for pair in match.group(3).split():
            key, _, value = pair.partition("=")
            try:
                values[key] = float(value)
            except ValueError:
                continue
        lines[match.group(2)].append(values)
    return lines["train"], lines["val"]


def per_scale(values: dict[str, Any], prefix: str) -> dict[str, float]:
    """``{"HxW": value}`` of the keys ``prefix + HxW``, coarsest scale first."""
    found = {k.removeprefix(prefix): v for k, v in values.items() if re.fullmatch(re.escape(prefix) + r"\d+x\d+", k)}
    return dict(sorted(found.items(), key=lambda item: int(item[0].split("x")[0])))


def mean_of(rows: list[dict[str, Any]]) -> dict[str, float]:
    keys = sorted({k for row in rows for k in row if k != "step"})
    return {k: sum(row[k] for row in rows if k in row) / sum(k in row for row in rows) for k in keys}


def stage_summary(log: Path, exit_code: int, seconds: float, last: int) -> dict[str, Any]:
    train, val = read_log(log)
    summary: dict[str, Any] = {"exit": exit_code, "seconds": round(seconds, 1), "log": log.name}
    if train:
        summary["steps"] = train[-1]["step"]
        summary["train_last"] = train[-1]
        recent = mean_of(train[-last:])
        gains = per_scale(recent, "bit_gain_")
        if gains:
            summary["bit_gain_per_scale"] = gains
            summary["bit_gain_train_lines"] = min(last, len(train))
    if val:
        summary["val_last"] = val[-1]
        summary["val_history"] = val
        accuracy = per_scale(val[-1], "bit_accuracy_")
        if accuracy:
            summary["val_bit_accuracy_per_scale"] = accuracy
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", action="append", default=[], metavar="NAME=LOG:EXIT:SECONDS")
    parser.add_argument("--extra", action="append", default=[], metavar="KEY=VALUE", help="copied as it is")
    parser.add_argument("--json", action="append", default=[], metavar="KEY=FILE", help="a JSON file, if it exists")
    parser.add_argument("--last", type=int, default=5, help="train lines averaged for the bit gains")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    summary: dict[str, Any] = {"stages": {}}
    for item in args.stage:
        name, _, rest = item.partition("=")
        log, code, seconds = rest.rsplit(":", 2)
        summary["stages"][name] = stage_summary(Path(log), int(code), float(seconds), args.last)
    teacher = summary["stages"].get("teacher", {})
    summary["teacher_val_bit_accuracy_per_scale"] = teacher.get("val_bit_accuracy_per_scale", {})
    for item in args.extra:
        key, _, value = item.partition("=")
        summary[key] = value
    for item in args.json:
        key, _, path = item.partition("=")
        if Path(path).is_file():
            summary[key] = json.loads(Path(path).read_text(encoding="utf-8"))
    tmp = args.output.with_name(f".{args.output.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
