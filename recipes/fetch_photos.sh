#!/usr/bin/env bash
# More high-quality training photos, from Debian packages only (no other network): the files listed in
# recipes/photos.tsv (real photographs, >= 512 px on the short side, each picture once at its largest size),
# copied to DEST/<package>/ with DEST/MANIFEST.tsv (file, package, version, licence, size, sha256).
#
#   bash recipes/fetch_photos.sh [DEST]        # default local/data/photos (git-ignored); ~180 MB of .deb fetched
#
# Needs apt-get and dpkg-deb (Debian/Ubuntu; no root: `apt-get download` writes to the current folder, but the
# package lists must exist, so run `sudo apt-get update` once on a fresh machine; as root apt warns that it
# downloads unsandboxed, which is harmless). Versions are pinned and each
# file's sha256 is checked, so a rerun gives the same set or stops at the first file that changed.
# Then add DEST to a recipe: --set 'data.train_dirs=["local/data/train", "local/data/photos"]'.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
DEST=$(realpath -m "${1:-$HERE/local/data/photos}")  # a relative DEST is taken from where you are
LIST=$(realpath "${LIST:-$HERE/recipes/photos.tsv}")
PYTHON=${PYTHON:-python}
cd "$HERE"

if [[ -e $DEST && -n $(ls -A "$DEST" 2>/dev/null) ]]; then
  echo "error: $DEST is not empty (remove it to fetch again)" >&2
  exit 2
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# package=version for each package the list names, once each.
mapfile -t PACKAGES < <(grep -v '^#' "$LIST" | tail -n +2 | awk -F'\t' 'NF {print $1 "=" $2}' | sort -u)
echo "downloading ${#PACKAGES[@]} packages: ${PACKAGES[*]}"
(cd "$WORK" && apt-get download "${PACKAGES[@]}") || {
  echo "error: apt-get download failed (on a fresh machine run 'sudo apt-get update' first)" >&2
  exit 1
}
for deb in "$WORK"/*.deb; do
  package=$(dpkg-deb --field "$deb" Package)
  mkdir -p "$WORK/unpacked/$package"
  dpkg-deb -x "$deb" "$WORK/unpacked/$package"
done
mkdir -p "$DEST"
PYTHONPATH="$HERE/src${PYTHONPATH:+:$PYTHONPATH}" \
  nice "$PYTHON" recipes/photo_set.py build --list "$LIST" --unpacked "$WORK/unpacked" --dest "$DEST"
