#!/usr/bin/env bash
# Every GPU figure the performance and scale-out issues ask for, in one command for a lent device
# machine (15 minutes of device time per session, 10 per command). See benchmarks/gpu/README.md.
#
# Here:   bash benchmarks/gpu/pack.sh          # once: .gpu/site.tar.xz (open_clip, faiss, ...)
# There:  device tool `run`, carry [".gpu"], timeout_s 590, command:
#           bash benchmarks/gpu/device_run.sh
# A dry run on a CPU (small, no GPU parts): DEVICE=cpu N=300 bash benchmarks/gpu/device_run.sh
#
# Steps, most wanted first; each is cut (timeout) or skipped so that all end by DEADLINE_S, which
# leaves the 590 s command limit 30 s to write the results:
#   index      `mmsearch index` of N JPEGs end to end on the GPU (the 6,000 images/s goal: the
#              summary's seconds and stage rates, and the whole command), after an untimed run that
#              builds the model, caches its tag vectors and exports its text tower
#   tests      tests/test_jpeg_batch.py with nvjpeg (truncated, progressive, EXIF turns; CMYK to Pillow)
#   jpeg       benchmarks/jpeg_batch.py: nvjpeg decode+letterbox alone, and overlapped with encoding
#   actor      benchmarks/gpu/gpu_actor.py: one Ray encoding actor's images/s (without Ray), with one
#              call at once (as Ray Data runs it) and two (what a threaded actor would give)
#   search     benchmarks/search_latency.py at 1M x 512: torch on the GPU against FAISS flat
#   pillow     the same index run with --jpeg-decoder pillow (CPU decoding), for comparison
#   commit     benchmarks/commit_rate.py: the one writer's pictures/s on this machine's CPU (every
#              run commits on one thread, so it bounds the end-to-end rate)
# Writes $OUT/log.txt and $OUT/results.json (every step's JSON, with the device and the date).
set -u
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/mmsearch_gpu_out}
N=${N:-32000}
DEVICE=${DEVICE:-cuda}
DEADLINE_S=${DEADLINE_S:-560}
MODEL=${MODEL:-ViT-B-32/random}
WORK=${WORK:-/tmp/mmsearch_gpu}
PYTHON=${PYTHON:-python3}
begun=$SECONDS
mkdir -p "$OUT" "$WORK/results"
exec > >(tee -a "$OUT/log.txt") 2>&1
tee_pid=$!
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MMSEARCH_CACHE="$WORK/cache"
SITE_ARCHIVE=${SITE_ARCHIVE:-.gpu/site.tar.xz}  # made by pack.sh
if [ -f "$SITE_ARCHIVE" ]; then
  mkdir -p "$WORK/site" && tar -xJf "$SITE_ARCHIVE" -C "$WORK/site"
  export PYTHONPATH="$WORK/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi

step() {  # step NAME LIMIT_S COMMAND...: run it unless too little time is left; log its status
  local name=$1 limit=$2 left
  shift 2
  left=$((DEADLINE_S - (SECONDS - begun)))
  if [ "$left" -lt 20 ]; then echo "== $name: skipped, ${left}s left"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $(date -u +%H:%M:%S) $name (at most ${limit}s): $*"
  local t0=$SECONDS rc
  if [ "$(type -t "$1")" = function ]; then STEP_LIMIT=$limit "$@"; else timeout -k 10 "$limit" "$@"; fi
  rc=$?
  echo "== $name rc=$rc in $((SECONDS - t0))s"
}

index_json() {  # index_json NAME ARGS...: an index run whose --json summary is kept
  local name=$1
  shift
  rm -rf "$WORK/home_$name"
  local t0 t1
  t0=$(date +%s.%N)
  timeout -k 10 "$STEP_LIMIT" "$PYTHON" -m mmsearch.cli index "$@" --home "$WORK/home_$name" --model "$MODEL" \
    --device "$DEVICE" --json > "$WORK/index_$name.out" || return $?
  t1=$(date +%s.%N)
  sed -n '/^{/,$p' "$WORK/index_$name.out" > "$WORK/results/index_$name.json"
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "{\"whole_command_s\": %.2f}\n", b - a }' > "$WORK/results/index_${name}_command.json"
  cat "$WORK/results/index_$name.json" "$WORK/results/index_${name}_command.json"
}

actor_json() {  # one GPU encoding actor's images/s, as Ray Data calls it and with two calls at once
  local calls
  for calls in 1 2; do
    timeout -k 10 "$STEP_LIMIT" "$PYTHON" benchmarks/gpu/gpu_actor.py --images "$WORK/jpegs" --n 4000 \
      --device "$DEVICE" --model "$MODEL" --calls "$calls" > "$WORK/gpu_actor.out" || return $?
    cp "$WORK/gpu_actor.out" "$WORK/results/gpu_actor_calls$calls.json"
    cat "$WORK/results/gpu_actor_calls$calls.json"
  done
}

echo "== $(date -u '+%Y-%m-%d %H:%M:%S') UTC, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), N=$N, model $MODEL, device $DEVICE"
nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
"$PYTHON" -c "
import torch, torchvision, numpy, PIL, faiss, open_clip, sqlalchemy
print('python', __import__('sys').version.split()[0], '| torch', torch.__version__, '| torchvision', torchvision.__version__,
      '| faiss', faiss.__version__, '| open_clip', open_clip.__version__, '| cuda', torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else '')
from indexer.jpeg_batch import jpeg_backend
backend = jpeg_backend('$DEVICE')
print('JPEGs on $DEVICE decoded by', backend and backend.name, '| turned by it:', backend and backend.turns_by_exif)
" || { echo "the environment is not ready; stopping"; exit 1; }
nproc

step jpegs 100 "$PYTHON" benchmarks/gpu/make_jpegs.py --out "$WORK/jpegs" --n "$N"
mkdir -p "$WORK/warm" && ls "$WORK/jpegs" | head -512 | while read -r f; do cp "$WORK/jpegs/$f" "$WORK/warm/"; done

step index_warm 150 index_json warm "$WORK/warm"
step index 120 index_json device "$WORK/jpegs"
step tests 150 env MMSEARCH_TEST_DEVICE="$DEVICE" "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_jpeg_batch.py
step jpeg 150 "$PYTHON" benchmarks/jpeg_batch.py --images "$WORK/jpegs" --n 4000 --device "$DEVICE" --model "$MODEL" \
  --out "$WORK/results/jpeg_batch.json"
step actor 100 actor_json
step search 150 "$PYTHON" benchmarks/search_latency.py --n "${SEARCH_N:-1000000}" --kinds torch flat --queries 200 --batch 1024 \
  --out "$WORK/results/search_latency.json"
step pillow 100 index_json pillow "$WORK/jpegs" --jpeg-decoder pillow
step commit 60 "$PYTHON" benchmarks/commit_rate.py --out "$WORK/results/commit_rate.json"

"$PYTHON" - "$WORK/results" "$OUT/results.json" <<'EOF'
import json, sys, time
from pathlib import Path
results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
try:
    import torch
    results["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
except Exception as exc:  # the log says why
    results["device"] = f"unknown ({exc})"
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    try:
        results[path.stem] = json.loads(path.read_text())
    except ValueError as exc:
        results[path.stem] = f"unreadable: {exc}"
Path(sys.argv[2]).write_text(json.dumps(results, indent=2, default=str))
print("results:", ", ".join(k for k in results if k not in ("date", "device")))
EOF
echo "== done in $((SECONDS - begun))s"
exec >&- 2>&-  # let tee write the last lines before the command returns
wait "$tee_pid"
