"""The benchmark scripts run and measure what they claim (small sizes)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
pytestmark = pytest.mark.slow


def test_recall_benchmark_engine_loses_no_recall(tmp_path):
    import recall_at_k

    result = recall_at_k.main(
        ["--render", "40", "--model", "tiny", "--out", str(tmp_path / "r.json")]
    )
    assert result["engine_index"] == "hnsw"  # measured on an approximate index, not exact search
    assert result["engine_matches_brute_force_top10"] == 1.0
    assert all(loss == 0 for loss in result["engine_recall_loss"].values())
    assert result["brute_force"]["text_to_image"][10] > 0.5  # the trained model, not chance
    assert json.loads((tmp_path / "r.json").read_text())[-1]["images"] == 40


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
    result = recall_at_k.main(
        [
            "--images",
            str(photos),
            "--captions",
            str(tmp_path / "captions.csv"),
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    assert result["images"] == 12 and result["engine_matches_brute_force_top10"] == 1.0


def test_search_latency_benchmark_reports_recall_against_exact(tmp_path):
    import search_latency

    rows = search_latency.main(
        [
            "--n",
            "3000",
            "--dim",
            "32",
            "--queries",
            "20",
            "--kinds",
            "flat",
            "torch",
            "--out",
            str(tmp_path / "s.json"),
        ]
    )
    assert {r["kind"] for r in rows} == {"flat", "torch"}
    assert all(r["recall_at_10_vs_exact"] == 1.0 for r in rows)
    assert all(r["device"]["cores"] >= 1 and r["device"]["cpu"] for r in rows)


def test_results_are_appended_with_the_measured_device(tmp_path):
    from _common import append_results, device, stamp

    out = tmp_path / "x.json"
    out.write_text(json.dumps({"old": "single object"}))  # a results file written before appending
    append_results(out, [stamp({"n": 1})])
    append_results(out, [stamp({"n": 2})])
    runs = json.loads(out.read_text())
    assert [r.get("n") for r in runs] == [None, 1, 2]
    info = device()
    assert (
        info["cores"] >= 1
        and isinstance(info["avx512_bf16"], bool)
        and isinstance(info["amx"], bool)
    )
    assert runs[-1]["device"] == info


def test_query_latency_benchmark_filters_keep_k_results(tmp_path):
    import query_latency

    rows = query_latency.main([
        "--sizes", "500,1000", "--writer-max", "500", "--queries", "4", "-k", "5",
        "--work", str(tmp_path), "--out", str(tmp_path / "q.json"),
    ])  # fmt: skip
    assert {(r["items"], r["build"]) for r in rows} == {(500, "writer"), (1000, "bulk")}
    assert {r["filter"] for r in rows} == {"none", "path", "date", "type"}
    assert all(r["k_results_every_query"] and r["count"] == r["items"] for r in rows)
    assert all(0 < r["p50_ms"] <= r["p95_ms"] for r in rows)
    assert len(json.loads((tmp_path / "q.json").read_text())) == len(rows)


def test_query_latency_filters_keep_one_percent(tmp_path):
    import query_latency

    from mmsearch import Engine

    query_latency.build_home(tmp_path / "h", 1000, index_kind="auto", writer_max=0)
    with Engine(home=tmp_path / "h", model="tiny", device="cpu") as engine:
        for case, kwargs in query_latency.filter_cases(1000, 2).items():
            if case == "none":
                continue
            hits = engine.search("a red circle", 50, group=False, **kwargs[0])
            assert len(hits) == 10, case  # 1% of 1000


@pytest.mark.parametrize("first", ["real", "direct"])
def test_rescan_benchmark_unchanged_files_load_no_model(tmp_path, first):
    import rescan

    result = rescan.main([
        "--files", "40", "--first-index", first, "--runs", "1",
        "--work", str(tmp_path), "--out", str(tmp_path / "s.json"),
    ])  # fmt: skip
    run = result["runs"][0]
    assert (run["unchanged"], run["new"], run["changed"]) == (40, 0, 0)
    assert result["model_loaded"] is False


def test_video_decode_benchmark_appends(tmp_path):
    import video_decode

    result = video_decode.main([
        "--seconds", "4", "--width", "160", "--height", "96", "--out", str(tmp_path / "v.json"),
    ])  # fmt: skip
    assert result["keyframes"]["decord"] >= 1 and result["codec_only_pyav"]["wall_s"] > 0
    assert json.loads((tmp_path / "v.json").read_text())[-1]["device"]["cores"] >= 1


def test_benchmark_entry_point_runs_suites_and_draws_plots(tmp_path):
    """benchmarks/run.py at a tiny size: results appended with the device, three PNG plots."""
    import run

    peers, other = tmp_path / "peers.json", tmp_path / "other.json"
    peers.write_text(json.dumps({"rclip": 23.7, "mmsearch index": 22.6}))
    other.write_text(json.dumps({"_machine": "another CPU", "rclip": 8.3, "mmsearch index": 6.2}))
    drawn = run.main(
        ["--suite", "query,ann", "--sizes", "3000", "--dim", "32", "--kinds", "flat", "ivfpq",
         "--queries", "10", "--results", str(tmp_path), "--plots", str(tmp_path / "plots"),
         "--peers", str(peers), str(other)]
    )  # fmt: skip
    assert sorted(p.name for p in drawn) == [
        "images_per_s.png", "latency_vs_size.png", "recall_vs_latency.png",
    ]  # fmt: skip
    assert all(
        p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000 for p in drawn
    )
    rows = json.loads((tmp_path / "ann_scale.json").read_text())
    assert {r["kind"] for r in rows} == {"flat", "ivfpq"} and all(r["device"]["cpu"] for r in rows)
    flat = [r for r in rows if r["kind"] == "flat"]
    assert all(r["in_distribution"]["recall_at_10"] == 1.0 for r in flat)  # exact is exact
    assert all(r["bytes_per_vector"]["disk"] > 0 for r in rows)


def test_peers_table_is_read_from_the_harness_readme(tmp_path):
    import run

    readme = tmp_path / "README.md"
    readme.write_text(
        "## Last runs\n\n| what | images/s |\n| --- | --- |\n| rclip whole run: 42 s | 22.8-23.8 |\n"
        "| `mmsearch index` (x) | 22.6 |\n| decode only, 1 process | 234 |\n\nafter\n"
    )
    assert run.peers_from_readme(readme) == {"rclip whole run": 22.8, "mmsearch index": 22.6}


def test_decode_draft_benchmark_measures_the_draft_against_a_full_decode(tmp_path):
    import decode_draft

    result = decode_draft.main(["--n", "12", "--out", str(tmp_path / "d.json")])
    assert result["source_size"] == [640, 480] and result["pictures"] == 12
    ms, diff = result["cpu_ms_per_picture"], result["against_full_decode"]
    assert set(ms) == {"full", "draft_2x_target", "draft_target"} and all(v > 0 for v in ms.values())
    assert 0 < diff["draft_target"]["mean_abs_grey_levels"] < 5  # it really decodes reduced
    assert json.loads((tmp_path / "d.json").read_text())[-1]["target_size"] == 224


def test_int8_benchmarks_compare_with_fp32(tmp_path):
    """precision_agreement says int8 does not apply to tiny; int8_trained_vit trains a small ViT
    and reports both precisions and their agreement."""
    import int8_trained_vit
    import precision_agreement

    tiny = precision_agreement.main(["--photos", "12", "--precisions", "int8", "--out", str(tmp_path / "p.json")])
    assert tiny["against_fp32"] == {} and "transformer" in tiny["not_applicable"]["int8"]
    vit = int8_trained_vit.main(["--scenes", "200", "--epochs", "1", "--eval", "30", "--out", str(tmp_path / "v.json")])
    assert set(vit["held_out"]["augmented_scenes"]) == {"fp32", "int8"}
    assert 0 < vit["int8_vs_fp32"]["top10_mean_overlap"] <= 1 and vit["int8_vs_fp32"]["picture_cosine_min"] > 0.99


def test_the_device_runs_scripts_work_on_the_cpu(tmp_path):
    """benchmarks/gpu: the JPEG renderer (whole files, kept on a rerun) and one encoding actor's
    rate, here on the CPU with `tiny`; the device run calls them with CUDA and ViT-B-32."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "gpu"))
    import gpu_actor
    import make_jpegs
    from PIL import Image

    folder = tmp_path / "jpegs"
    assert make_jpegs.main(["--out", str(folder), "--n", "6"]) == 0
    files = sorted(folder.glob("*.jpg"))
    assert len(files) == 6 and not list(folder.glob("*.part"))
    assert all(Image.open(f).size == (640, 480) for f in files)
    first, stamp = files[0].read_bytes(), files[1].stat().st_mtime_ns
    files[0].unlink()
    make_jpegs.main(["--out", str(folder), "--n", "6"])
    assert files[0].read_bytes() == first  # the same seed draws the same picture again
    assert files[1].stat().st_mtime_ns == stamp  # a file already there is kept
    result = gpu_actor.main(
        ["--images", str(folder), "--n", "6", "--device", "cpu", "--model", "tiny", "--batch-size", "4", "--calls", "2"]
    )
    assert result["files"] == result["encoded"] == 6 and result["calls_at_once"] == 2
    assert result["images_per_s"] > 0 and result["rows_of"] == 4


def test_commit_rate_benchmark_commits_every_picture(tmp_path):
    import commit_rate

    row = commit_rate.main(["--n", "40", "--batches", "8", "32", "--repeat", "1", "--patches", "--out", str(tmp_path / "c.json")])
    assert set(row["pictures_per_s_by_batch"]) == {"8", "32"} and row["best_pictures_per_s"] > 0
    assert json.loads((tmp_path / "c.json").read_text())[-1]["pictures"] == 40
