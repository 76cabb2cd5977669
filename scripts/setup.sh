#!/usr/bin/env bash
# Installs everything mmsearch's demo and tests need, idempotently: system packages (ffmpeg, flite,
# chromium for the browser tests, tesseract for OCR, the PostgreSQL server for the catalog tests),
# a virtual environment in .venv with the pinned torch pair, and mmsearch itself (editable, all extras).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v flite >/dev/null 2>&1 || need_apt+=(flite)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
# OCR (index --ocr): Tesseract with English and Simplified Chinese; the tests render text with
# DejaVu and WenQuanYi fonts.
command -v tesseract >/dev/null 2>&1 || need_apt+=(tesseract-ocr)
for pkg in tesseract-ocr-eng tesseract-ocr-chi-sim fonts-dejavu-core fonts-wqy-microhei; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# The PostgreSQL catalog tests start a throwaway cluster with initdb/pg_ctl (tests/pg_cluster.py);
# Debian's postgresql package brings them (and pg_trgm) under /usr/lib/postgresql/VERSION/bin.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi

# Reinstall only when the dependency declarations changed.
stamp=.venv/.mmsearch-installed
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages (torch pinned in constraints.txt)"
  .venv/bin/python -m pip install -q --upgrade pip setuptools wheel
  .venv/bin/python -m pip install -q -c constraints.txt -e ".[dev]"
  echo "$want" > "$stamp"
fi
