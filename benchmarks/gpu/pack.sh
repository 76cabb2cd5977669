#!/usr/bin/env bash
# Packs what a lent GPU machine lacks for mmsearch into .gpu/site.tar.xz (ignored by git), to be
# carried there by the device tool (`carry: [".gpu"]`) and unpacked by device_run.sh.
#
#     bash benchmarks/gpu/pack.sh
#     PYVER=3.11 ARCHIVE=/tmp/site311.tar.xz bash benchmarks/gpu/pack.sh   # the same set for a dry run here
#
# The device image (see ../.library/device/KINDS.md) is Python 3.12 with torch, torchvision, numpy,
# Pillow, timm, huggingface_hub, safetensors, regex, onnx, onnxruntime, rich and typer, but not
# open_clip, faiss, SQLAlchemy or platformdirs. The working tree travels too (about 44 MB, most of
# it the bundled models) and a call may send 64 MiB in all: faiss-cpu's wheel alone is 18.8 MB,
# so the wheels are unpacked and sent as one xz archive (about 15 MB). Same versions as setup.sh
# installs here. Ray's wheel (~70 MB) cannot travel: benchmarks/gpu/gpu_actor.py measures the
# GPU actor's code without it.
set -euo pipefail
cd "$(dirname "$0")/../.."
PYVER=${PYVER:-3.12}
ARCHIVE=${ARCHIVE:-.gpu/site.tar.xz}
WHEELS=(
  open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
  faiss-cpu==1.15.1
  sqlalchemy==2.1.9 greenlet==3.5.6
  platformdirs==4.14.9
)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$work/wheels" "${WHEELS[@]}" 2>&1 | grep -v "^WARNING: Location" || true
[ "$(ls "$work/wheels" | wc -l)" -eq "${#WHEELS[@]}" ] || { echo "missing wheels: $(ls "$work/wheels")" >&2; exit 1; }
mkdir -p "$work/site" "$(dirname "$ARCHIVE")"
for wheel in "$work"/wheels/*.whl; do
  python3 -m zipfile -e "$wheel" "$work/site"
done
tar -C "$work/site" -cf - . | xz -9 -T0 > "$ARCHIVE"
tree=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
packed=$(stat -c %s "$ARCHIVE")
echo "packed ${#WHEELS[@]} wheels for Python $PYVER into $ARCHIVE: $((packed / 1000000)) MB; with the tracked tree $(((packed + tree) / 1000000)) MB of the 67 MB (64 MiB) a call may send"
