#!/usr/bin/env bash
# The main job end to end, offline: render sample photos (if missing), index them with the bundled
# `tiny` model, and run a few queries. Safe to run again: re-indexing is incremental.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/mmsearch demo --data data/sample/photos --home data/sample/home "$@"
