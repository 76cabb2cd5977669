"""The read path end to end with the bundled `tiny` on rendered folders: filters (against brute
force), compound queries, "more like this", paging, date sort, the cut-off, counting, duplicates,
and the CLI's output modes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from indexer.pipeline import IndexOptions
from mmsearch.cli import app
from mmsearch.engine import Engine
from mmsearch.errors import QueryError
from mmsearch.query.model import Filters, Term
from mmsearch.synth.media import write_photo_folder

pytestmark = pytest.mark.slow
DAY = 86400.0
T0 = 1_700_000_000.0  # 2023-11-14


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    root = tmp_path_factory.mktemp("lib")
    a = write_photo_folder(root / "photos" / "a", 40, seed=11)
    b = write_photo_folder(root / "photos" / "b", 40, seed=12)
    files = sorted(p for p in (root / "photos").rglob("*") if p.suffix in (".jpg", ".png"))
    for i, f in enumerate(files):  # one file a day, in name order
        os.utime(f, (T0 + i * DAY, T0 + i * DAY))
    dup = files[0].with_name("burst_copy.png")
    Image.open(files[0]).convert("RGB").resize((300, 225)).save(dup)  # a resized copy
    os.utime(dup, (T0 - DAY, T0 - DAY))
    home = root / "home"
    with Engine(home, "tiny") as engine:
        engine.index([root / "photos"], options=IndexOptions(in_process=True))
    captions = {}
    for folder in (a, b):
        for line in (folder / "captions.jsonl").read_text().splitlines():
            row = json.loads(line)
            captions[str((folder / row["path"]).resolve())] = row
    return root, home, files, dup


@pytest.fixture
def engine(library):
    with Engine(library[1]) as e:
        yield e


def brute_force(engine: Engine, vector: np.ndarray, allowed: np.ndarray, k: int) -> list[int]:
    ids, vecs = engine.collection.catalog.vectors_for(allowed.tolist())
    order = np.argsort(-(vecs @ vector), kind="stable")[:k]
    return ids[order].tolist()


@pytest.mark.parametrize(
    "filters",
    [
        Filters(paths=("*/photos/b/*",)),
        Filters(paths=("shapes_011_0000[0-3].*",)),  # 4 files: a selective filter
        Filters(after=T0 + 10 * DAY, before=T0 + 20 * DAY),
        Filters(min_width=400),
        Filters(types=frozenset({"image"}), paths=("*.png",)),
    ],
)
def test_filtered_results_equal_exact_search_restricted_to_the_filter(engine, filters):
    vector = engine.encoder.encode_texts(["a red circle"])[0]
    allowed = engine.collection.catalog.filtered_item_ids(filters)
    assert allowed is not None and len(allowed)
    k = min(10, len(allowed))
    hits = engine.search("a red circle", k=k, filters=filters, rerank=("none",))  # retrieval alone
    assert len(hits) == k, "a filter that keeps enough items returns k results"
    assert [h.item_id for h in hits] == brute_force(engine, vector, allowed, k)


def test_selective_filter_on_an_hnsw_index_still_returns_k(library, tmp_path):
    root, home, _files, _dup = library
    other = tmp_path / "home"
    shutil.copytree(home, other)
    with Engine(other, index_kind="hnsw") as e:
        e.rebuild("hnsw")
        assert e.status().index_kind == "hnsw"
        f = Filters(paths=("*/photos/a/*",))
        hits = e.search("a blue square", k=10, filters=f, rerank=("none",))
        allowed = e.collection.catalog.filtered_item_ids(f)
        vector = e.encoder.encode_texts(["a blue square"])[0]
        assert [h.item_id for h in hits] == brute_force(e, vector, allowed, 10)
    with Engine(other) as e:  # the chosen kind is saved in the home
        assert e.collection.index_kind == "hnsw"


def test_rebuilding_as_another_kind_leaves_no_file_of_the_old_store(library, tmp_path):
    """An IVF-PQ store keeps its re-scoring rows in a float16 file beside the index; rebuilding
    the collection as HNSW must not leave that file behind."""
    _, home, _files, _dup = library
    other = tmp_path / "home"
    shutil.copytree(home, other)
    with Engine(other) as e:
        e.rebuild("ivfpq")
        assert list((other / "index").glob("*.f16")), "IVF-PQ keeps its rows in a row file"
        top = [h.item_id for h in e.search("a red circle", k=5, rerank=("none",))]
        e.rebuild("hnsw")
        assert not list((other / "index").glob("*.f16"))
        assert [h.item_id for h in e.search("a red circle", k=5, rerank=("none",))] == top


def test_the_python_api_takes_dates_and_single_strings_as_a_person_writes_them(engine):
    """`Filters(after="2023-11-20")` searched nothing (a string compared with seconds), and one
    string where a list goes was read letter by letter (types="image": "Unknown type a, e, g")."""
    from datetime import date, datetime

    from mmsearch.errors import ConfigError, QueryError

    start, end = T0 + 5 * DAY, T0 + 18 * DAY
    by_seconds = [h.item_id for h in engine.search("a red circle", k=5, filters=Filters(after=start, before=end))]
    assert by_seconds
    for after, before in (
        (datetime.fromtimestamp(start).isoformat(), datetime.fromtimestamp(end).isoformat()),
        (datetime.fromtimestamp(start), datetime.fromtimestamp(end)),
    ):
        got = engine.search("a red circle", k=5, filters=Filters(after=after, before=before))
        assert [h.item_id for h in got] == by_seconds
    day = date.fromtimestamp(start)
    assert Filters(after=day).after == datetime(day.year, day.month, day.day).timestamp()
    with pytest.raises(QueryError, match="ISO date"):
        Filters(after="yesterday")
    assert {h.kind for h in engine.search("a red circle", k=3, types="image", rerank="mmr")} == {"image"}
    assert Filters(paths="*.png").paths == ("*.png",) and Filters(tags="red").tags == ("red",)
    for call, message in (
        (lambda: engine.search("x", k="5"), "whole number"),
        (lambda: engine.search(42), "not int"),
        (lambda: engine.search("x", colour="red"), "Unknown search option colour"),
        (lambda: engine.duplicates("high"), "a number"),
    ):
        with pytest.raises(QueryError, match=message):
            call()
    with pytest.raises(ConfigError, match="IndexOptions"):
        engine.index(["/nonexistent"], options={"in_process": True})


def test_compound_query_moves_results_toward_and_away_from_terms(engine):
    red = engine.search("a red circle", k=10)
    blend = engine.search([Term("text", "a red circle"), Term("text", "red", -1.0)], k=10)
    assert [h.item_id for h in red] != [h.item_id for h in blend]
    double = engine.search([Term("text", "a red circle", 2.0)], k=10)
    assert [h.item_id for h in double] == [h.item_id for h in red]  # one term: weight is scale only
    assert blend.query.describe() == "a red circle - red"


def test_more_like_this_uses_the_stored_vector_and_excludes_the_item(engine, library):
    _, _, files, dup = library
    (item_id,) = engine.collection.catalog.item_ids_of_paths([files[0]]).popitem()[1]
    liked = engine.search(like=item_id, k=5)
    assert item_id not in [h.item_id for h in liked]
    assert engine.search(image=files[0], k=5) == liked  # an indexed path: its stored vector
    by_path = engine.search(like=str(files[0]), k=5)
    assert [h.item_id for h in by_path] == [h.item_id for h in liked]
    assert liked[0].path == str(dup.resolve())  # the resized copy is its nearest neighbour
    with pytest.raises(QueryError, match="No item 999999"):
        engine.search(like=999999)


def test_paging_is_consistent(engine):
    whole = engine.search("a green triangle", k=12, group=False)
    page2 = engine.search("a green triangle", k=4, offset=4, group=False)
    assert [h.item_id for h in page2] == [h.item_id for h in whole[4:8]]
    assert [h.rank for h in page2] == [5, 6, 7, 8]


def test_sort_by_date_orders_the_most_relevant(engine):
    relevant = engine.search("a yellow star", k=10)
    newest = engine.search("a yellow star", k=10, sort="-date", pool=10)
    assert {h.item_id for h in newest} == {h.item_id for h in relevant}
    dates = [h.date for h in newest]
    assert dates == sorted(dates, reverse=True)


def test_cutoff_is_asked_for_and_k_is_honoured_without_it(engine):
    plain = engine.search("a red circle", k=50)
    assert len(plain) == 50  # an explicit k returns k when the collection has them
    cut = engine.search("a red circle", k=50, cutoff="auto")
    assert 1 <= len(cut) <= 50
    kept = {h.item_id for h in cut}
    # the cut keeps the results above the score gap of their CLIP cosines, in the page's order
    # (rerankers may have placed a lower cosine first, so the cut need not be a prefix)
    assert [h.item_id for h in cut] == [h.item_id for h in plain if h.item_id in kept]
    lowest_kept = min(h.part("clip").score for h in cut)
    assert all(h.part("clip").score < lowest_kept for h in plain if h.item_id not in kept)


def test_counting_and_min_score(engine):
    hits = engine.search("a red circle", k=100, group=False)
    threshold = hits[9].score
    assert engine.count("a red circle", threshold) == sum(h.score >= threshold for h in hits)
    above = engine.search("a red circle", k=100, min_score=threshold)
    assert all(h.score >= threshold for h in above) and len(above) >= 10


def test_near_duplicates_find_the_resized_copy(engine, library):
    _, _, files, dup = library
    groups = engine.duplicates(0.95)
    assert any({str(files[0].resolve()), str(dup.resolve())} <= set(g.paths) for g in groups)
    assert all(len(g.paths) >= 2 and g.similarity >= 0.95 for g in groups)


def test_score_parts_are_typed(engine):
    hit = engine.search("a red circle", k=1)[0]
    assert hit.part("clip").score == pytest.approx(hit.score) and hit.part("clip").rank == 1
    assert hit.to_dict()["parts"]["clip"]["rank"] == 1


def test_queries_see_new_commits_by_generation(library, tmp_path):
    _, home, files, _ = library
    other = tmp_path / "home"
    shutil.copytree(home, other)
    with Engine(other) as reader:
        before = reader.collection.refresh()
        assert reader.collection.refresh() == before  # nothing changed: one row read
        extra = tmp_path / "extra"
        write_photo_folder(extra, 2, seed=99)
        with Engine(other) as writer:
            writer.index([extra], options=IndexOptions(in_process=True))
        assert reader.collection.refresh() > before
        assert reader.collection.vectors.count == 83


def test_unchanged_reindex_does_not_load_the_model(library, monkeypatch):
    _, home, _, _ = library
    import mmsearch.models as models

    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded for a re-scan with nothing to encode")

    monkeypatch.setattr(models, "load_encoder", refuse)
    with Engine(home) as e:
        summary = e.index([library[0] / "photos"])
    assert summary.new == 0 and summary.unchanged == 81


# ------------------------------------------------------------------------- the CLI


runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200"})


def test_cli_filters_paging_explain_and_paths_only(library):
    root, home, files, _ = library
    result = cli("query", "a", "red", "circle", "--home", home, "--path", "*/photos/b/*", "-k", "5", "-f")
    assert result.exit_code == 0, result.output
    paths = result.output.splitlines()
    assert len(paths) == 5 and all("/photos/b/" in p for p in paths)
    nul = cli("query", "a", "red", "circle", "--home", home, "--path", "*/photos/b/*", "-k", "5", "-f", "-0")
    assert nul.exit_code == 0 and nul.stdout_bytes.split(b"\0") == [p.encode() for p in paths] + [b""]
    explained = cli("query", "a red circle", "--home", home, "-k", "3", "--explain")
    assert "Why these results" in explained.output and "clip" in explained.output
    dated = cli("query", "a red circle", "--home", home, "--after", "2023-11-20", "--before", "2023-12-01", "--json")
    assert dated.exit_code == 0 and dated.output.strip()
    for line in dated.output.splitlines():
        assert T0 + 5 * DAY <= json.loads(line)["date"] < T0 + 18 * DAY
    bad = cli("query", "a red circle", "--home", home, "--after", "yesterday")
    assert bad.exit_code == 2 and "ISO date" in bad.output
    count = cli("query", "a red circle", "--home", home, "--count", "--min-score", "0.3")
    assert count.exit_code == 0 and count.output.strip().isdigit()


def test_cli_compound_query_and_like(library, tmp_path):
    root, home, files, dup = library
    result = cli("query", "2:a red circle", "+", files[3], "-", "blue", "--home", home, "--json", "-k", "3")
    assert result.exit_code == 0, result.output
    assert str(files[3].resolve()) not in result.output  # the query picture is not its own result
    liked = cli("query", "--like", str(files[0]), "--home", home, "--json", "-k", "1")
    assert json.loads(liked.output)["path"] == str(dup.resolve())
    missing = cli("query", "./nowhere.jpg", "--home", home)
    assert missing.exit_code == 2 and "does not exist" in missing.output


def test_cli_duplicates(library):
    _, home, files, dup = library
    result = cli("duplicates", "--home", home, "--json")
    groups = [json.loads(line) for line in result.output.splitlines()]
    assert any(str(dup.resolve()) in g["paths"] for g in groups)


def test_paths_are_printed_literally(tmp_path):
    folder = tmp_path / "[bold]x[/b]"
    photos = write_photo_folder(folder, 2, seed=5)
    evil = photos / "a\x1b[31mred.png"
    shutil.copy(next(photos.glob("*.png")), evil)
    home = tmp_path / "home"
    assert cli("index", photos, "--home", home, "--model", "tiny", "--workers", "1").exit_code == 0
    table = cli("query", "a red circle", "--home", home)
    assert table.exit_code == 0, table.output
    assert "[bold]x[/b]" in table.output and "\x1b[31m" not in table.output
    assert "\\x1b[31m" in table.output
    status = cli("status", "--home", home)
    assert status.exit_code == 0 and "[bold]x[/b]" in status.output


def test_an_index_copied_from_another_home_is_not_trusted(library, tmp_path):
    """Item ids overlap between homes; the sidecar's collection id tells the files apart."""
    _, home, _, _ = library
    other = tmp_path / "other"
    photos = write_photo_folder(tmp_path / "p", 81, seed=77)
    with Engine(other, "tiny") as e:
        e.index([photos], options=IndexOptions(in_process=True))
    shutil.copy(other / "index" / "vectors.idx", tmp_path / "foreign.idx")
    mine = Engine(home).search("a red circle", k=5)
    victim = tmp_path / "victim"
    shutil.copytree(home, victim)
    shutil.copy(other / "index" / "vectors.idx", victim / "index" / "vectors.idx")
    shutil.copy(other / "index" / "vectors.idx.json", victim / "index" / "vectors.idx.json")
    with Engine(victim) as e:
        assert [h.item_id for h in e.search("a red circle", k=5)] == [h.item_id for h in mine]
        e.index([library[0] / "photos"])  # the writer replaces the foreign file
    from mmsearch.vectors import read_sidecar

    with Engine(victim) as e:
        owner = read_sidecar(victim / "index" / "vectors.idx")["owner"]["collection"]
        assert owner == e.collection.catalog.collection_id() != ""


def test_cutoff_and_min_score_judge_clip_cosines_when_passages_are_fused(tmp_path):
    """With passages, results are ordered by fused ranks, whose scores fall smoothly: the cut-off
    and min_score must still judge the CLIP cosine, the same score `count` counts."""
    import random

    from mmsearch.synth import sample_scene
    from mmsearch.synth.media import write_note

    photos = write_photo_folder(tmp_path / "lib", 40, seed=31)
    rng = random.Random(3)
    write_note(photos / "note.txt", [sample_scene(rng) for _ in range(6)])
    with Engine(tmp_path / "home", "tiny") as e:
        e.index([photos], options=IndexOptions(in_process=True))
        fused = e.search("a large green triangle", k=20)
        assert any(h.part("rrf") for h in fused)
        cut = e.search("a large green triangle", k=20, cutoff="auto")
        assert len(cut) < 20
        threshold = sorted((h.part("clip").score for h in fused if h.kind == "image"), reverse=True)[4]
        above = e.search("a large green triangle", k=40, min_score=threshold, group=False)
        assert all(h.part("clip").score >= threshold for h in above)
        assert len(above) == e.count("a large green triangle", threshold)


def test_auto_index_becomes_hnsw_past_the_threshold_and_a_chosen_kind_is_kept(tmp_path, monkeypatch):
    import mmsearch.vectors.factory as factory

    monkeypatch.setattr(factory, "AUTO_EXACT_MAX_VECTORS", 10)
    photos = write_photo_folder(tmp_path / "p", 8, seed=41)
    with Engine(tmp_path / "home", "tiny") as e:
        e.index([photos], options=IndexOptions(in_process=True))
        assert e.status().index_kind == "flat"  # 8 vectors: exact search
        more = write_photo_folder(tmp_path / "q", 6, seed=42)
        e.index([more], options=IndexOptions(in_process=True))
        assert e.status().index_kind == "hnsw"  # 14 > 10: the saved index follows the size
    with Engine(tmp_path / "home2", "tiny", index_kind="flat") as e:
        e.index([photos, more], options=IndexOptions(in_process=True))
        assert e.status().index_kind == "flat"  # chosen, so kept past the threshold
    with Engine(tmp_path / "home2") as e:
        e.index([photos])
        assert e.status().index_kind == "flat" and e.collection.index_kind == "flat"


def test_an_unchanged_collection_is_checked_with_one_row_read(library, monkeypatch):
    _, home, _, _ = library
    with Engine(home) as e:
        e.search("a red circle", k=3)
        catalog = e.collection.catalog

        def scan(*_a, **_k):
            raise AssertionError("an O(N) read when nothing changed")

        monkeypatch.setattr(catalog, "item_ids", scan)
        monkeypatch.setattr(catalog, "item_counts", scan)
        for _ in range(3):
            assert len(e.search("a blue square", k=3)) == 3


def test_searches_ask_the_catalog_once_per_write_for_what_they_all_need(library, tmp_path, monkeypatch):
    """Whether there are passages, and the encoder, are asked once per catalog write, not once
    per search (a SQL round trip each); a write that adds passages is seen by the next search."""
    from mmsearch.catalog.reader import CatalogReader
    from mmsearch.catalog.store import Catalog

    _, home, _, _ = library
    other = tmp_path / "home"
    shutil.copytree(home, other)
    asked: list[str] = []
    for cls in (Catalog, CatalogReader):  # a reading Engine asks the reader, a writer the Catalog
        for name in ("passage_count", "encoder"):
            real = getattr(cls, name)

            def counted(self, *args, _real=real, _name=name, **kwargs):
                asked.append(_name)
                return _real(self, *args, **kwargs)

            monkeypatch.setattr(cls, name, counted)
    with Engine(other) as reader:
        reader.search("a red circle", k=5)
        asked.clear()
        for _ in range(3):
            reader.search("a blue square", k=5)
        assert asked == []
        notes = tmp_path / "notes"
        notes.mkdir()
        (notes / "zoo.txt").write_text("The zebracorn sleeps under the old bridge at noon.\n")
        with Engine(other) as writer:
            writer.index([notes], options=IndexOptions(in_process=True))
        hits = reader.search("zebracorn", k=5)
        assert "passage_count" in asked
        assert any(h.path.endswith("zoo.txt") for h in hits), [h.path for h in hits]


def test_the_duplicates_table_puts_each_file_on_its_own_line():
    """The newline between a group's files was escaped with the names (shown as \\x0a)."""
    from types import SimpleNamespace

    from rich.console import Console

    from mmsearch.cli_output import duplicates_table

    group = SimpleNamespace(similarity=0.99, paths=["/p/a.jpg", "/p/new\nline.png"])
    console = Console(width=200, record=True)
    console.print(duplicates_table([group]))
    lines = console.export_text().splitlines()
    assert any("/p/a.jpg" in line and "\\x0a" not in line for line in lines)
    assert any("/p/new\\x0aline.png" in line for line in lines)  # a newline in a name stays escaped


def test_an_unrelated_note_does_not_tie_the_best_picture(tmp_path):
    """The sentence model ranks every passage, so in a collection of a few notes an unrelated
    one was its first and, fused, tied the best picture: a shopping list came first for "red".
    Only passages it scores at `TEXT_MIN_SCORE` or more count as its choices now."""
    photos = write_photo_folder(tmp_path / "photos", 12, seed=9)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.md").write_text("Todo buy milk fix the bicycle tyre call the dentist about the appointment\n")
    (notes / "budget.txt").write_text("The quarterly budget review moved to Thursday.\n")
    with Engine(tmp_path / "home", "tiny") as engine:
        engine.index([photos, notes], options=IndexOptions(in_process=True))
        for words in ("red", "a red circle"):
            top = engine.search(words, k=3, rerank=("none",), user=None)
            assert [h.kind for h in top] == ["image"] * 3, [(h.kind, h.path) for h in top]
        found = engine.search("dentist appointment", k=3, rerank=("none",), user=None)
        assert "todo.md" in [Path(h.path).name for h in found]
