"""Captioned image folders: the layout users have for Flickr30k/COCO (images + CSV or JSONL)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from mmsearch.errors import ConfigError


def read_captions(path: str | Path) -> list[dict]:
    """Rows of {path, caption[, captions]} from a CSV (`path,caption` header) or a JSONL file."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"Captions file {path} does not exist.")
    try:
        if path.suffix.lower() == ".csv":
            with open(path, newline="") as f:
                rows = [{"path": r["path"], "caption": r["caption"]} for r in csv.DictReader(f)]
        else:
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (KeyError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"Cannot read captions from {path}: expected a CSV with 'path,caption' columns or JSONL "
            f"objects with 'path' and 'caption' ({exc})."
        ) from exc
    bad = [r for r in rows if not r.get("path") or not r.get("caption")]
    if bad:
        raise ConfigError(f"{path}: {len(bad)} rows lack a path or a caption, e.g. {bad[0]}")
    return rows
