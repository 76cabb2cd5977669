"""A text query without torch: the ported tokenizer, the ONNX text tower and ITM reranker, and
the search path that uses them (same results as torch, and torch never imported)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer.pipeline import IndexOptions
from mmsearch.engine import Engine
from mmsearch.models import onnx_runtime as rt
from mmsearch.models.clip_bpe import ClipBpe
from mmsearch.synth.media import write_photo_folder

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "open_clip", "transformers", "sentence_transformers")
QUERIES = (
    "a red circle", "a small blue square", "a large yellow star on the left", "a green triangle",
    "a purple diamond on the right", "two shapes", "a red car", "红色的圆",
)  # fmt: skip

TEXTS = [
    "", " ", "a red car", "A RED CAR", "a  red\tcar\n", "don't stop, it's 3.14 o'clock!!",
    "red-green/blue_yellow", "x" * 300, " ".join(["many words"] * 60), "https://example.org/a?b=c",
    "Crème brûlée", "naïve café", "“curly quotes” and ‘single’", "emoji 🚗🚙🏎️", "红色的圆形和蓝色的方块",
    "明天的会议取消了", "日本語のテキスト", "한국어 텍스트", "Ελληνικά κείμενα", "русский текст",
    "fish &amp; chips", "&lt;b&gt;bold&lt;/b&gt;", "&amp;amp;amp;", "tab\there", "bell\x07char",
    "ﬁne ligature", "ＦＵＬＬＷＩＤＴＨ", "mojibake: Ã©tÃ©", "<start_of_text> inside", "<end_of_text>",
    "numbers 1234567890 and 3rd 2nd", "\u00a0non-breaking\u00a0space", "zero\u200bwidth",
]  # fmt: skip


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A fresh model cache for this module: every export is made here, from scratch."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMSEARCH_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="module")
def home(cache, tmp_path_factory):
    """A small photo folder indexed with `tiny` (which exports the text tower and tiny-itm)."""
    root = tmp_path_factory.mktemp("textrt")
    photos = write_photo_folder(root / "photos", 60, seed=21)
    with Engine(root / "home", "tiny") as engine:
        engine.index([photos], options=IndexOptions(in_process=True))
    return root / "home"


# ------------------------------------------------------------------ tokenizer


@pytest.mark.parametrize("context", [32, 77])
def test_the_ported_tokenizer_gives_open_clips_ids(context):
    from open_clip.tokenizer import SimpleTokenizer

    theirs = SimpleTokenizer(context_length=context)(TEXTS).numpy()
    ours = ClipBpe(context)(TEXTS)
    assert ours.dtype == np.int64
    for text, a, b in zip(TEXTS, ours, theirs):
        assert a.tolist() == b.tolist(), text


def test_the_ported_tokenizer_on_random_strings():
    from open_clip.tokenizer import SimpleTokenizer

    rng = np.random.default_rng(3)
    alphabet = list("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789.,!?'&;-_/()[]") + list(
        "éüßçñ中文字圆形😀\u00a0\t"
    )
    texts = ["".join(rng.choice(alphabet, size=int(rng.integers(1, 80)))) for _ in range(300)]
    assert ClipBpe(77)(texts).tolist() == SimpleTokenizer(context_length=77)(texts).tolist()


# ------------------------------------------------------------------ the text tower


def test_the_exported_tower_matches_torch(home, cache):
    from mmsearch.models import load_encoder
    from mmsearch.models.text_onnx import open_text_tower

    encoder = load_encoder("tiny", device="cpu", precision="fp32")
    tower = open_text_tower("tiny", encoder.weights_id)
    assert tower is not None and tower.prefix and tower.dim == encoder.dim
    assert str(tower.folder).startswith(str(cache))
    texts = [*QUERIES, *TEXTS]
    cosine = (tower.encode_texts(texts) * encoder.encode_texts(texts)).sum(axis=1)
    assert cosine.min() > 0.9999
    # batched texts of different lengths give each its own vector
    alone = np.stack([tower.encode_texts([t])[0] for t in texts])
    assert np.abs(alone - tower.encode_texts(texts)).max() < 1e-5
    assert tower.encode_texts([]).shape == (0, tower.dim)


def test_an_export_of_a_replaced_checkpoint_is_not_used(home, cache, tmp_path, monkeypatch):
    from mmsearch.models import load_encoder
    from mmsearch.models.text_onnx import KIND, open_text_tower

    weights_id = load_encoder("tiny", device="cpu").weights_id
    source = rt.export_dir(KIND, "tiny", weights_id)
    meta = rt.read_meta(source)
    assert meta is not None and meta["weights_file"]["path"].endswith("tiny.safetensors")
    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "cache"))
    target = rt.export_dir(KIND, "tiny", weights_id)
    shutil.copytree(source, target)
    checkpoint = tmp_path / "tiny.safetensors"
    shutil.copy(meta["weights_file"]["path"], checkpoint)
    meta["weights_file"] = rt.file_stamp(checkpoint)
    rt.write_meta(target, {k: v for k, v in meta.items() if k != "format"})
    assert open_text_tower("tiny", weights_id) is not None
    os.utime(checkpoint, ns=(0, 0))  # the checkpoint replaced (retrained) after the export
    assert open_text_tower("tiny", weights_id) is None
    assert open_text_tower("tiny", "0123456789abcdef") is None  # another checkpoint's digest


def test_an_export_of_a_checkpoint_only_touched_is_stamped_again_not_made_again(
    home, cache, tmp_path, monkeypatch
):
    """A copied or touched checkpoint (a reinstall, a copy to another disk) has the digest of the
    weights exported: the export is stamped with the file as it is now, in milliseconds, and
    text searches use it again (it was re-made at every index run, and never used, before)."""
    from mmsearch.models import load_encoder
    from mmsearch.models.text_onnx import KIND, MODEL_FILE, export_text_tower, open_text_tower

    encoder = load_encoder("tiny", device="cpu")
    source = rt.export_dir(KIND, "tiny", encoder.weights_id)
    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "cache"))
    target = rt.export_dir(KIND, "tiny", encoder.weights_id)
    shutil.copytree(source, target)
    checkpoint = tmp_path / "tiny.safetensors"
    meta = rt.read_meta(source)
    shutil.copy(meta["weights_file"]["path"], checkpoint)
    meta["weights_file"] = rt.file_stamp(checkpoint)
    rt.write_meta(target, {k: v for k, v in meta.items() if k != "format"})
    os.utime(checkpoint, ns=(1, 1))  # touched, the same weights
    made = (target / MODEL_FILE).stat().st_mtime_ns
    assert open_text_tower("tiny", encoder.weights_id) is None
    tower = export_text_tower(encoder, weights_file=checkpoint)
    assert tower is not None and (target / MODEL_FILE).stat().st_mtime_ns == made
    assert rt.read_meta(target)["weights_file"] == rt.file_stamp(checkpoint)


def test_an_export_is_replaced_by_a_new_one(tmp_path):
    """A stale or damaged export in the way of a new one gives way (the new one used to be
    dropped, the old one staying unusable for good)."""
    folder = tmp_path / "clip-text" / "tiny-0123"
    folder.mkdir(parents=True)
    rt.write_meta(folder, {"model": "tiny"})
    (folder / "text.onnx").write_bytes(b"damaged")
    with rt.writing(folder) as scratch:
        rt.write_meta(scratch, {"model": "tiny", "new": True})
    assert rt.read_meta(folder)["new"] and not (folder / "text.onnx").exists()
    assert sorted(p.name for p in folder.parent.iterdir()) == ["tiny-0123"]  # nothing left over


# ------------------------------------------------------------------ the ITM reranker


def test_the_exported_itm_matches_torch(home, cache):
    from mmsearch.models.itm import TINY_ITM, load_itm
    from mmsearch.models.itm_onnx import OnnxItmModel, load_itm_for_search

    exported, torch_model = load_itm_for_search(TINY_ITM), load_itm(TINY_ITM)
    assert isinstance(exported, OnnxItmModel)
    patches = (
        np.random.default_rng(5).normal(size=(50, *torch_model.patch_shape)).astype(np.float32)
    )
    for text in QUERIES:
        assert exported.understands(text) == torch_model.understands(text), text
        got, want = exported.score_one(text, patches), torch_model.score_one(text, patches)
        assert np.abs(got - want).max() < 1e-4, text
    pairs = list(QUERIES[:4])
    assert (
        np.abs(exported.score(pairs, patches[:4]) - torch_model.score(pairs, patches[:4])).max()
        < 1e-4
    )


def test_an_itm_export_of_weights_only_touched_is_stamped_again(home, cache, tmp_path, monkeypatch):
    from mmsearch.models.itm import TINY_ITM_DIR
    from mmsearch.models.itm_onnx import MODEL_FILE, OnnxItmModel, load_itm_for_search

    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "cache"))
    folder = shutil.copytree(TINY_ITM_DIR, tmp_path / "itm")
    name = f"local-dir:{folder}"
    assert isinstance(load_itm_for_search(name), OnnxItmModel)  # exported now
    (exported,) = (tmp_path / "cache").rglob(MODEL_FILE)
    made = exported.stat().st_mtime_ns
    weights = next(folder.glob("*.safetensors"))
    os.utime(weights, ns=(1, 1))
    assert isinstance(load_itm_for_search(name), OnnxItmModel)
    assert exported.stat().st_mtime_ns == made  # stamped again, not exported again


# ------------------------------------------------------------------ searches


def test_text_searches_give_torchs_top_10(home, cache, monkeypatch):
    with Engine(home) as engine:
        assert engine._query_encoder().text_tower() is not None
        fast = {q: engine.search(q, k=10) for q in QUERIES}
    monkeypatch.setattr(rt, "available", lambda: False)  # as without onnxruntime: torch throughout
    with Engine(home) as engine:
        assert engine._query_encoder().text_tower() is None
        assert type(engine._reranker("itm").model).__name__ == "ItmModel"
        slow = {q: engine.search(q, k=10) for q in QUERIES}
    for q in QUERIES:
        assert [h.item_id for h in fast[q]] == [h.item_id for h in slow[q]], q
        assert np.allclose([h.score for h in fast[q]], [h.score for h in slow[q]], atol=1e-4), q
    assert any("itm" in {p.source for p in h.parts} for h in fast["a red circle"])


def test_a_home_without_an_export_makes_one_on_the_first_text_search(home, tmp_path, monkeypatch):
    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "empty-cache"))
    with Engine(home) as engine:
        hits = engine.search("a red circle", k=5)
        assert engine._query_encoder().text_tower() is not None
    assert len(hits) == 5 and any((tmp_path / "empty-cache" / "onnx").rglob("text.onnx"))


def _run_python(code: str, cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MMSEARCH_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, *args, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )


def _heavy_imports(importtime: str) -> set[str]:
    names = {
        line.rsplit("|", 1)[-1].strip()
        for line in importtime.splitlines()
        if line.startswith("import time:")
    }
    return {n for n in names if n.split(".")[0] in HEAVY}


def test_a_text_query_from_the_shell_never_imports_torch(home, cache):
    code = f"from mmsearch.cli import app; app(['query', '--home', {str(home)!r}, 'a red circle', '--json'])"
    done = _run_python(code, cache, "-X", "importtime")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 10 and "itm" in rows[0]["parts"]
    assert _heavy_imports(done.stderr) == set()
    assert "onnxruntime" in {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}


def test_a_personalised_text_query_never_imports_torch(home, cache):
    """A user with good and bad judgements gets a preference model whose concept words are
    embedded by the exported text tower too, not by the torch encoder."""
    with Engine(home) as engine:
        hits = engine.search("a red circle", k=10, user="pat")
        for hit in hits[:3]:
            engine.feedback(hit.item_id, True, user="pat", query="a red circle")
        for hit in hits[-3:]:
            engine.feedback(hit.item_id, False, user="pat", query="a red circle")
    code = f"from mmsearch.cli import app; app(['query', '--home', {str(home)!r}, 'a blue square', '--user', 'pat', '--json'])"
    done = _run_python(code, cache, "-X", "importtime")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 10 and any("personal" in row["parts"] for row in rows)
    assert _heavy_imports(done.stderr) == set()


def test_engine_and_server_text_searches_never_import_torch(home, cache):
    code = f"""
import json, sys
from mmsearch.engine import Engine
with Engine({str(home)!r}) as engine:
    ids = [h.item_id for h in engine.search("a red circle", k=10)]
    engine.count("a blue square", min_score=0.3)
from fastapi.testclient import TestClient
from mmsearch.server import create_app
with TestClient(create_app({str(home)!r}, warm=True), base_url="http://127.0.0.1") as client:
    served = [h["item_id"] for h in client.get("/api/search", params={{"q": "a red circle"}}).json()["results"]]
print(json.dumps({{"ids": ids, "served": served, "heavy": sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})}}))
"""
    done = _run_python(code, cache)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [] and len(out["ids"]) == 10 and out["served"] == out["ids"]


def test_a_picture_query_still_works(home, cache):
    photo = next((home.parent / "photos").glob("*.jpg"))
    with Engine(home) as engine:
        hits = engine.search(image=photo.read_bytes(), k=3)
    assert hits[0].path == str(photo)


@pytest.mark.slow
def test_the_cold_query_benchmark_runs_and_finds_torchs_results(cache, tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    import query_cold

    row = query_cold.main(
        ["--n", "2000", "--runs", "1", "--torch-runs", "1", "--server-queries", "5", "--no-rclip",
         "--work", str(tmp_path / "work"), "--out", str(tmp_path / "r.json")]
    )  # fmt: skip
    assert row["home"]["count"] == 2000 and row["home"]["exported"]
    assert row["same_results"]["identical_top10"] == row["same_results"]["queries"]
    assert row["cli_onnx"]["cpu_median_s"] < row["cli_torch"]["cpu_median_s"]  # no torch import
    assert (
        row["server"]["p50_ms"] > 0
        and json.loads((tmp_path / "r.json").read_text())[-1]["n"] == 2000
    )
