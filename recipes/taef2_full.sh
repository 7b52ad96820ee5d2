#!/usr/bin/env bash
# The full fine-tuned TAEF2 tokenizer (docs/tokenizer.md, "How it was trained": recipes/tokenizer_taef2.toml,
# 398 CPU steps, fp16): the embedded `default-tokenizer` from c1bc4ed until the lite variant replaced it.
# Default model v2's teacher was trained on its tokens and v2 carries its encoder; the lite tokenizer started
# from it and learned its latent. This writes it to local/taef2_full (or $1) from the repository's history,
# each file checked against its sha256, so those recipes rebuild what they built:
#   bash recipes/taef2_full.sh [OUT_DIR]
# Without the history (a shallow clone, an archive): rebuild it with recipes/tokenizer_taef2.toml and
# `benchmarks/tokenizer_report.py export` (docs/tokenizer.md, "Commands"); that run is not bit-identical.
set -euo pipefail
OUT=${1:-local/taef2_full}
COMMIT=c1bc4ed
SRC=src/varestorer/weights/default-tokenizer
declare -A SHA=(
  [config.json]=f8f0145b76793254dba9bcfa752ae5039d18610005f286d2a0ffc44575f69c93
  [model.safetensors]=93c56ff20c506ac1fc3f500a9da92261792c1d8c435e51b63805b93077576e8b
  [LICENSE-taesd.txt]=261497cf8e9ed613ed1fa5ddf48af32cdf50545b2ccd9edd7eacc91fb9255d6e
)
if ! git cat-file -e "$COMMIT^{commit}" 2>/dev/null; then
  echo "error: commit $COMMIT is not in this clone's history; rebuild the tokenizer with recipes/tokenizer_taef2.toml (docs/tokenizer.md)" >&2
  exit 1
fi
mkdir -p "$OUT"
for name in "${!SHA[@]}"; do
  if [[ -f $OUT/$name ]] && echo "${SHA[$name]}  $OUT/$name" | sha256sum -c --quiet - 2>/dev/null; then
    continue                                # already there and intact
  fi
  if [[ -e $OUT/$name ]]; then
    echo "error: $OUT/$name exists and is not the full TAEF2 tokenizer's file; move it away first" >&2
    exit 1
  fi
  git show "$COMMIT:$SRC/$name" > "$OUT/$name.part"
  if ! echo "${SHA[$name]}  $OUT/$name.part" | sha256sum -c --quiet - ; then
    rm -f "$OUT/$name.part"
    echo "error: $name from $COMMIT does not match its sha256" >&2
    exit 1
  fi
  mv "$OUT/$name.part" "$OUT/$name"
done
echo "wrote $OUT (the full fine-tuned TAEF2 tokenizer of $COMMIT)"
