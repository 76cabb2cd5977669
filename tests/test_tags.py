"""Zero-shot tags: vocabularies, the per-group choice, tagging at index time from stored vectors,
re-tagging on a new vocabulary without re-encoding, and the faces (Engine, CLI, HTTP)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from indexer.pipeline import IndexOptions
from mmsearch.cli import app
from mmsearch.engine import Engine
from mmsearch.errors import ConfigError
from mmsearch.models.encoder import Encoder
from mmsearch.query.model import Filters
from mmsearch.server import create_app
from mmsearch.synth.media import write_photo_folder
from mmsearch.tags.vocabulary import (
    PROMPT_TEMPLATES,
    Vocabulary,
    default_vocabulary,
    make_tag,
    parse_vocabulary,
)
from mmsearch.tags.zero_shot import choose_tags

runner = CliRunner()


def test_vocabulary_files_read_groups_prompts_and_comments():
    vocab = parse_vocabulary(
        "# scenes\n[scene]\nBeach\ncity  street = a busy street | a road in a city  # own prompts\n"
        "\n[subject]\ndog\n"
    )
    assert vocab.names == ["beach", "city street", "dog"]
    assert vocab.groups == {"scene": [0, 1], "subject": [2]}
    assert vocab.tags[0].texts() == tuple(t.format("beach") for t in PROMPT_TEMPLATES)
    assert vocab.tags[1].texts() == ("a busy street", "a road in a city")
    assert parse_vocabulary(vocab.to_text()) == vocab
    more = vocab.extended(parse_vocabulary("[scene]\nforest\ndog = a puppy"))
    assert more.names == ["beach", "city street", "dog", "forest"]
    assert more.tags[2].prompts == ("a puppy",) and more.digest() != vocab.digest()
    assert more.without(["dog"]).names == ["beach", "city street", "forest"]
    with pytest.raises(ConfigError, match="line 2"):
        parse_vocabulary("beach\nno/slashes")
    with pytest.raises(ConfigError, match="more than once"):
        parse_vocabulary("dog\nDog")
    with pytest.raises(ConfigError, match="no tags"):
        parse_vocabulary("# nothing\n")
    with pytest.raises(ConfigError, match="No tag cat"):
        vocab.without(["cat"])
    with pytest.raises(ConfigError, match="without tags"):  # it could not be read back
        vocab.without(["beach", "city street", "dog"])
    assert make_tag("海滩").name == "海滩"  # tags in any script
    assert {"red", "circle"} <= set(default_vocabulary("tiny").names)
    assert "beach" in default_vocabulary("ViT-B-32/openai").names


def test_tags_are_chosen_per_group_against_a_background():
    vocab = Vocabulary((make_tag("red", "colour"), make_tag("blue", "colour"), make_tag("lonely", "other")))
    e = np.eye(4, dtype=np.float32)
    matrix = np.stack([e[0], e[1], e[2], e[3]])  # red, blue, lonely, background
    # every picture is somewhat "a photo." (the background), as real embeddings are
    pictures = np.stack([e[0] + 0.2 * e[3], e[0] + e[1] + 0.2 * e[3], e[3]])
    pictures /= np.linalg.norm(pictures, axis=1, keepdims=True)
    chosen = choose_tags(pictures, matrix, vocab)
    assert [t for t, _ in chosen[0]] == [0]  # red only
    assert sorted(t for t, _ in chosen[1]) == [0, 1]  # both colours share the group
    assert chosen[2] == []  # the background wins: a lone tag is not forced on every picture
    assert all(0.1 <= share <= 1 for row in chosen for _, share in row)


@pytest.fixture(scope="module")
def tagged(tmp_path_factory):
    root = tmp_path_factory.mktemp("tags")
    photos = write_photo_folder(root / "photos", 60, seed=21)
    labels = {
        str((photos / row["path"]).resolve()): row["labels"]["objects"]
        for row in map(json.loads, (photos / "captions.jsonl").read_text().splitlines())
    }
    with Engine(root / "home", "tiny") as e:
        summary = e.index([photos], options=IndexOptions(in_process=True))
    assert summary.tagged == 60
    return root / "home", photos, labels


def _truth(objects, tag):
    return any(tag in (o["colour"], o["shape"]) for o in objects)


def test_index_tags_pictures_well_on_the_shapes_world(tagged):
    home, _, labels = tagged
    with Engine(home) as e:
        catalog = e.collection.catalog
        ids = catalog.item_ids()
        records = {r.id: r.path for r in catalog.items_by_ids(ids)}
        tags = catalog.tags_of(ids)
    predicted = {(records[i], t) for i, row in tags.items() for t, _ in row}
    vocab = default_vocabulary("tiny").names
    truth = {(p, t) for p, objects in labels.items() for t in vocab if _truth(objects, t)}
    precision = len(predicted & truth) / len(predicted)
    recall = len(predicted & truth) / len(truth)
    assert precision >= 0.8 and recall >= 0.7, (precision, recall)


def test_the_tag_filter_keeps_only_tagged_pictures(tagged):
    home, _, _ = tagged
    with Engine(home) as e:
        counts = dict(e.tags())
        tag = max(counts, key=counts.get)
        hits = e.search("a shape", k=100, filters=Filters(tags=(tag.upper(),)), user=None)
        assert len(hits) == counts[tag] and all(tag in h.tags for h in hits)
        both = e.search("a shape", k=100, filters=Filters(tags=(tag, "no such tag")), user=None)
        assert len(both) == 0


def test_a_new_vocabulary_retags_from_stored_vectors_without_encoding(tagged, tmp_path, monkeypatch):
    home, photos, _ = tagged
    import shutil

    copy = tmp_path / "home"
    shutil.copytree(home, copy)

    def no_pixels(*a, **k):
        raise AssertionError("a picture was encoded again")

    monkeypatch.setattr(Encoder, "encode_images", no_pixels)
    with Engine(copy) as e:
        before = dict(e.tags())
        assert e.add_tags(["hexagon"], group="shape", prompts=["a red hexagon", "a blue hexagon"]) == 60
        assert "hexagon" in e.tag_vocabulary().names
        assert e.remove_tags(["red", "hexagon"]) == 60
        kept = e.tag_vocabulary()
        with pytest.raises(ConfigError, match="without tags"):
            e.remove_tags(kept.names)
        assert e.tag_vocabulary() == kept  # nothing saved: the home still tags and indexes
        after = dict(e.tags())
        assert "red" not in after and "hexagon" not in after
        shapes = set(default_vocabulary("tiny").names[-6:])
        # the shape group is as it was; the colours share red's part of their group now
        assert {t: n for t, n in before.items() if t in shapes} == {
            t: n for t, n in after.items() if t in shapes
        }
        file = tmp_path / "mine.txt"
        file.write_text("[colour]\nred\nblue\n")
        assert e.use_tag_vocabulary(file) == 60
        assert e.tag_vocabulary().names == ["red", "blue"]
        assert set(dict(e.tags())) <= {"red", "blue"}


def test_new_and_deleted_pictures_keep_tags_level(tmp_path):
    photos = write_photo_folder(tmp_path / "photos", 8, seed=4)
    with Engine(tmp_path / "home", "tiny") as e:
        assert e.index([photos], options=IndexOptions(in_process=True)).tagged == 8
        assert e.index([photos], options=IndexOptions(in_process=True)).tagged == 0
        write_photo_folder(tmp_path / "photos" / "more", 3, seed=5)
        assert e.index([photos], options=IndexOptions(in_process=True)).tagged == 3
        gone = sorted(photos.glob("*.jpg"))[0]
        ids = e.collection.catalog.item_ids_of_paths([gone])[str(gone.resolve())]
        assert e.collection.catalog.tags_of(ids)
        gone.unlink()
        e.index([photos], options=IndexOptions(in_process=True))
        assert e.collection.catalog.tags_of(ids) == {}  # went with the item


def test_cli_and_http_faces(tagged, tmp_path):
    home, _, _ = tagged

    def cli(*args):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False, env={"COLUMNS": "200"})

    listed = cli("tags", "--home", home, "--json")
    assert listed.exit_code == 0, listed.output
    counts = [json.loads(line) for line in listed.output.splitlines() if line.startswith("{")]
    top = counts[0]["tag"]
    assert counts[0]["count"] >= counts[-1]["count"] > 0
    found = cli("query", "a shape", "--home", home, "--tag", top, "-k", "5", "--json")
    rows = [json.loads(line) for line in found.output.splitlines() if line.startswith("{")]
    assert rows and all(top in row["tags"] for row in rows)
    assert "[colour]" in cli("tags", "vocabulary", "--home", home).output
    bad = cli("tags", "add", "a/b", "--home", home)
    assert bad.exit_code != 0 and "not a tag name" in bad.output
    engine = Engine(home)
    with TestClient(create_app(engine_factory=lambda: engine), base_url="http://127.0.0.1") as c:
        body = c.get("/api/tags").json()
        assert body["tags"][0] == {"tag": top, "count": counts[0]["count"]}
        hits = c.get("/api/search", params={"q": "a shape", "tag": top, "k": 5}).json()["results"]
        assert hits and all(top in h["tags"] for h in hits)
    engine.close()


def test_the_tag_matrix_is_cached_per_checkpoint_precision_and_prompts(tmp_path, monkeypatch):
    """Each index run that adds pictures tags them; the prompts' embeddings are kept in the model
    cache, so a second run (or another home with the same model) does not embed them again. The
    key covers every prompt: another vocabulary is embedded anew; a torn file is recomputed."""
    from mmsearch.models import load_encoder
    from mmsearch.tags import zero_shot

    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "cache"))
    encoder = load_encoder("tiny", device="cpu", precision="fp32")
    vocabulary = default_vocabulary("tiny")
    first = zero_shot.cached_tag_matrix(encoder, vocabulary)
    np.testing.assert_array_equal(first, zero_shot.tag_matrix(encoder, vocabulary))
    files = list((tmp_path / "cache" / "tags").glob("*.npy"))
    assert len(files) == 1

    calls = []
    real = Encoder.encode_texts
    monkeypatch.setattr(Encoder, "encode_texts", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    np.testing.assert_array_equal(zero_shot.cached_tag_matrix(encoder, vocabulary), first)
    assert calls == []  # from the cache
    wider = vocabulary.extended(Vocabulary((make_tag("hexagon", "shape"),)))
    assert zero_shot.cached_tag_matrix(encoder, wider).shape[0] == len(vocabulary) + 2
    assert calls == [1] and len(list((tmp_path / "cache" / "tags").glob("*.npy"))) == 2
    files[0].write_bytes(files[0].read_bytes()[:40])  # torn
    np.testing.assert_array_equal(zero_shot.cached_tag_matrix(encoder, vocabulary), first)
    assert calls == [1, 1]
    bf16 = load_encoder("tiny", device="cpu", precision="bf16")
    zero_shot.cached_tag_matrix(bf16, vocabulary)  # another precision: its own entry
    assert calls == [1, 1, 1]
