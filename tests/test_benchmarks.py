"""The benchmark scripts run and measure what they claim (small sizes)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
pytestmark = pytest.mark.slow


def test_recall_benchmark_engine_loses_no_recall(tmp_path):
    import recall_at_k

    result = recall_at_k.main(["--render", "40", "--model", "tiny", "--out", str(tmp_path / "r.json")])
    assert result["engine_matches_brute_force_top10"] == 1.0
    assert all(loss == 0 for loss in result["engine_recall_loss"].values())
    assert result["brute_force"]["text_to_image"][10] > 0.5  # the trained model, not chance
    assert json.loads((tmp_path / "r.json").read_text())["images"] == 40


def test_recall_benchmark_reads_a_users_csv_layout(tmp_path):
    import recall_at_k

    from mmsearch.synth.media import write_photo_folder

    photos = write_photo_folder(tmp_path / "photos", 12, seed=8)
    rows = [json.loads(line) for line in (photos / "captions.jsonl").read_text().splitlines()]
    import csv

    with open(tmp_path / "captions.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "caption"])
        writer.writerows([r["path"], r["caption"]] for r in rows)
    result = recall_at_k.main(["--images", str(photos), "--captions", str(tmp_path / "captions.csv"), "--out", str(tmp_path / "r.json")])
    assert result["images"] == 12 and result["engine_matches_brute_force_top10"] == 1.0


def test_search_latency_benchmark_reports_recall_against_exact(tmp_path):
    import search_latency

    rows = search_latency.main(["--n", "3000", "--dim", "32", "--queries", "20", "--kinds", "flat", "torch", "--out", str(tmp_path / "s.json")])
    assert {r["kind"] for r in rows} == {"flat", "torch"}
    assert all(r["recall_at_10_vs_exact"] == 1.0 for r in rows)
