"""The query model and the CLI syntax: weights, signs, pictures, items, and every error a person can make."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmsearch.errors import QueryError
from mmsearch.query.cutoff import score_gap_cutoff
from mmsearch.query.embed import combine, fetch_url
from mmsearch.query.model import Filters, Query, Term
from mmsearch.query.parse import parse_terms, picture_term


@pytest.fixture
def picture(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (8, 8), "red").save(tmp_path / "beach.jpg")
    return tmp_path / "beach.jpg"


def test_compound_query_with_weights_signs_and_a_picture(picture):
    terms = parse_terms(["2:red car", "+", "./beach.jpg", "-", "night"])
    assert terms == [
        Term("text", "red car", 2.0),
        Term("image", "beach.jpg", 1.0),
        Term("text", "night", -1.0),
    ]


def test_unquoted_words_join_and_signs_split_them():
    assert parse_terms(["a", "red", "car"]) == [Term("text", "a red car")]
    assert parse_terms(["beach", "-", "0.5:people", "+", "item:12"]) == [
        Term("text", "beach"),
        Term("text", "people", -0.5),
        Term("item", 12),
    ]
    assert parse_terms(["  quoted  words "]) == [Term("text", "quoted  words")]
    assert parse_terms(["https://example.org/cat.jpg"]) == [Term("url", "https://example.org/cat.jpg")]
    assert parse_terms(["10:30 meeting"])[0].weight == 10.0  # documented: N: is a weight


@pytest.mark.parametrize(
    "tokens,message",
    [
        (["+", "-", "cat"], "Two signs"),
        (["cat", "-"], "ends with a sign"),
        ([""], "empty term"),
        (["0:cat"], "weight 0"),
        (["2:"], "not followed by a term"),
        (["1e308:red"], "at most 1e\\+06"),  # the sum overflowed float32 before
        (["./missing.jpg"], "does not exist"),
        (["holiday.png"], "does not exist"),
        (["item:abc"], "item id"),
        (["item:99999999999999999999"], "item id"),
    ],
)
def test_parser_errors_are_clear(tokens, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(QueryError, match=message):
        parse_terms(tokens)


def test_a_folder_is_not_a_picture(tmp_path):
    with pytest.raises(QueryError, match="is a folder"):
        parse_terms([str(tmp_path) + "/"])


def test_query_model_checks_its_fields():
    t = (Term("text", "cat"),)
    with pytest.raises(QueryError, match="Nothing to search"):
        Query(())
    with pytest.raises(QueryError, match="Every term is negative"):
        Query((Term("text", "cat", -1.0),))
    with pytest.raises(QueryError, match="k must be"):
        Query(t, k=0)
    with pytest.raises(QueryError, match="offset"):
        Query(t, offset=-1)
    with pytest.raises(QueryError, match="sort"):
        Query(t, sort="size")
    with pytest.raises(QueryError, match="cut-off"):
        Query(t, cutoff="0.3")
    with pytest.raises(QueryError, match="Unknown result type"):
        Filters(types=frozenset({"pdf"}))
    with pytest.raises(QueryError, match="earlier"):
        Filters(after=10.0, before=5.0)
    with pytest.raises(QueryError, match="empty"):
        Term("text", "   ")
    assert Query((Term("text", "red car", 2.0), Term("text", "night", -1.0))).describe() == "2:red car - night"


def test_vectors_combine_as_documented():
    a, b = np.eye(3, dtype=np.float32)[:2]
    np.testing.assert_allclose(combine([a * 5, b], [1.0, 1.0]), np.array([1, 1, 0]) / np.sqrt(2), atol=1e-6)
    np.testing.assert_allclose(combine([a, b], [2.0, -1.0]), np.array([2, -1, 0]) / np.sqrt(5), atol=1e-6)
    with pytest.raises(QueryError, match="cancel"):
        combine([a, a], [1.0, -1.0])


def test_cutoff_cuts_at_a_standout_gap_and_keeps_smooth_lists():
    assert score_gap_cutoff([0.9, 0.89, 0.88, 0.5, 0.49, 0.48, 0.47]) == 3
    smooth = list(np.linspace(0.9, 0.5, 30))
    assert score_gap_cutoff(smooth) == 30
    assert score_gap_cutoff([0.9]) == 1 and score_gap_cutoff([]) == 0


def test_a_picture_given_as_such_is_never_text(tmp_path, monkeypatch, picture):
    """`--image nothere` (no slash, no extension) read as text ran a text search for "nothere"."""
    monkeypatch.chdir(tmp_path)
    assert picture_term(str(picture)) == Term("image", str(picture), 1.0)
    assert picture_term("https://example.org/x").kind == "url"
    for name, message in (("nothere", "does not exist"), (".", "is a folder"), (" ", "needs a picture")):
        with pytest.raises(QueryError, match=message):
            picture_term(name)


@pytest.mark.parametrize("url", ["http://x:red", "http://[::1", "http://exa mple.org/x.jpg"])
def test_a_malformed_address_is_one_clear_error(url):
    with pytest.raises(QueryError, match="Cannot fetch"):  # not http.client's or urllib's own
        fetch_url(url)


def test_unreachable_url_fails_with_a_clear_error(monkeypatch):
    import urllib.request

    def offline(*_a, **_k):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(QueryError, match="Cannot fetch https://example.org/x.jpg.*give its path"):
        fetch_url("https://example.org/x.jpg")
    with pytest.raises(QueryError, match="Only http"):
        fetch_url("file:///etc/passwd")


def test_url_size_limit(monkeypatch):
    import io
    import urllib.request

    class Response(io.BytesIO):
        headers = {"Content-Length": str(50 * 2**20)}

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: Response(b"x"))
    with pytest.raises(QueryError, match="limited"):
        fetch_url("https://example.org/huge.jpg")


def test_transparent_png_reads_the_same_on_every_face(tmp_path):
    """An HTTP upload and a CLI/Engine query picture both put transparency on white, as indexing does."""
    from mmsearch.query.embed import load_query_image
    from mmsearch.server.media import decode_upload

    picture = Image.new("RGBA", (64, 48), (0, 0, 0, 0))
    picture.paste((255, 0, 0, 255), (10, 10, 30, 30))
    path = tmp_path / "logo.png"
    picture.save(path)
    via_path = np.asarray(load_query_image(path, "logo.png"))
    via_upload = np.asarray(decode_upload(path.read_bytes(), "logo.png"))
    via_pil = np.asarray(load_query_image(Image.open(path), "logo.png"))
    assert via_path[0, 0].tolist() == [255, 255, 255]  # white, not black
    np.testing.assert_array_equal(via_path, via_upload)
    np.testing.assert_array_equal(via_path, via_pil)
