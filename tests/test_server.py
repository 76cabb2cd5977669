"""The HTTP API and page against a real small collection (rendered photos, indexed by the pipeline).

The collection is indexed with `mmsearch-tiny/random`. Random weights are drawn anew each time a
model is loaded, so the app is given the very engine that indexed the photos (same weights);
that is what makes "a picture is its own nearest neighbour" hold.
"""

from __future__ import annotations

import io
import os
import queue
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from mmsearch.engine import Engine
from mmsearch.errors import MissingDependencyError
from mmsearch.server import create_app
from mmsearch.synth.media import write_photo_folder

REPO = Path(__file__).resolve().parent.parent
MODEL = "mmsearch-tiny/random"
LOOPBACK = "http://127.0.0.1"  # the app answers loopback names only, not TestClient's "testserver"
RESULT_FIELDS = {"rank", "score", "path", "kind", "asset_kind", "item_id", "file_url"}


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """(engine, photo folder, home): 12 rendered photos indexed into a fresh home."""
    root = tmp_path_factory.mktemp("server")
    photos = write_photo_folder(root / "photos", 12, seed=5)
    engine = Engine(home=root / "home", model=MODEL, device="cpu")
    summary = engine.index([photos])
    assert not summary.skipped, summary.skipped
    yield engine, photos, root / "home"
    engine.close()


@pytest.fixture(scope="module")
def client(collection):
    engine, _, _ = collection
    with TestClient(
        create_app(engine_factory=lambda: engine, max_upload_bytes=2 * 2**20), base_url=LOOPBACK
    ) as c:
        yield c


def photo_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".jpg", ".png"))


def item_id_of(client: TestClient, path: Path) -> int:
    """The item id of one photo, found through the API itself (search by that photo)."""
    with open(path, "rb") as fh:
        hits = client.post(
            "/api/search/image", files={"file": (path.name, fh)}, params={"k": 1}
        ).json()
    return hits["results"][0]["item_id"]


# ---- search -------------------------------------------------------------------------------------


def test_text_search_returns_ranked_results_with_the_documented_fields(client, collection):
    _, photos, _ = collection
    r = client.get("/api/search", params={"q": "a red circle", "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"] == "a red circle" and body["took_ms"] >= 0
    hits = body["results"]
    assert len(hits) == 5
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    for h in hits:
        assert h.keys() >= RESULT_FIELDS
        assert h["kind"] == h["asset_kind"] == "image"
        assert Path(h["path"]).parent == photos.resolve()
        assert h["thumbnail_url"] == f"/api/items/{h['item_id']}/thumbnail"
        assert "start" not in h and "text" not in h  # photos have no time span or passage


def test_type_filter_is_repeatable_and_checked(client):
    only_av = client.get(
        "/api/search", params=[("q", "a red circle"), ("type", "video"), ("type", "audio")]
    )
    assert only_av.status_code == 200 and only_av.json()["results"] == []
    images = client.get(
        "/api/search", params=[("q", "a red circle"), ("type", "image"), ("k", "3")]
    )
    assert len(images.json()["results"]) == 3
    bad = client.get("/api/search", params={"q": "a red circle", "type": "movies"})
    assert bad.status_code == 400 and "movies" in bad.json()["error"]


@pytest.mark.parametrize(
    "params", [{"q": "   "}, {"q": ""}, {}, {"q": "x", "k": 0}, {"q": "x", "k": "many"}]
)
def test_bad_text_queries_are_400_with_a_message(client, params):
    r = client.get("/api/search", params=params)
    assert r.status_code == 400
    assert r.json()["error"]


@pytest.mark.parametrize("index", [0, 1])  # a PNG and a JPEG
def test_an_uploaded_photo_finds_itself_first(client, collection, index):
    _, photos, _ = collection
    path = photo_files(photos)[index]
    with open(path, "rb") as fh:
        r = client.post(
            "/api/search/image", files={"file": (path.name, fh, "image/*")}, params={"k": 3}
        )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["by"] == "image" and body["query"] == path.name
    assert body["results"][0]["path"] == str(path.resolve())
    assert body["results"][0]["score"] > 0.99


def test_uploading_something_that_is_not_a_picture_is_400(client):
    r = client.post(
        "/api/search/image", files={"file": ("notes.txt", b"just some text", "text/plain")}
    )
    assert r.status_code == 400
    assert "notes.txt is not a picture" in r.json()["error"]
    empty = client.post("/api/search/image", files={"file": ("empty.jpg", b"", "image/jpeg")})
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    missing = client.post("/api/search/image")
    assert missing.status_code == 400


def test_an_upload_over_the_limit_is_413_declared_or_streamed(client):
    big = os.urandom(2 * 2**20 + 1)  # refused by size before anything decodes it
    r = client.post("/api/search/image", files={"file": ("big.png", big, "image/png")})
    assert r.status_code == 413 and "MB" in r.json()["error"]

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(3):
            yield b"\0" * 2**20

    streamed = client.post(
        "/api/search/image",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert streamed.status_code == 413


def test_concurrent_searches_are_serialised_safely(client):
    def one(q: str) -> list[int]:
        r = client.get("/api/search", params={"q": q, "k": 4})
        assert r.status_code == 200, r.text
        return [h["item_id"] for h in r.json()["results"]]

    queries = ["a red circle", "a blue square", "a green star"] * 4
    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(one, queries))
    for q, ids in zip(queries, answers):
        assert ids == answers[queries.index(q)]


# ---- status, thumbnails, files ----------------------------------------------------------------


def test_status_reports_the_collection(client, collection):
    _, photos, home = collection
    r = client.get("/api/status")
    assert r.status_code == 200
    st = r.json()
    assert st["model"] == MODEL and st["home"] == str(home.resolve())
    assert st["assets_by_kind"] == {"image": 12} and st["items_by_kind"] == {"image": 12}
    assert [f["path"] for f in st["folders"]] == [str(photos.resolve())]


def test_thumbnail_is_a_small_cacheable_jpeg(client, collection):
    _, photos, _ = collection
    item_id = item_id_of(client, photo_files(photos)[2])
    r = client.get(f"/api/items/{item_id}/thumbnail")
    assert r.status_code == 200
    assert r.headers["content-type"] == "image/jpeg"
    assert "max-age" in r.headers["cache-control"]
    thumb = Image.open(io.BytesIO(r.content))
    assert thumb.format == "JPEG" and max(thumb.size) <= 320


def test_file_serves_the_catalog_file_with_ranges(client, collection):
    _, photos, _ = collection
    path = photo_files(photos)[3]
    item_id = item_id_of(client, path)
    whole = client.get(f"/api/items/{item_id}/file")
    assert whole.status_code == 200
    assert whole.content == path.read_bytes()
    assert whole.headers["content-type"] in ("image/jpeg", "image/png")
    assert whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/api/items/{item_id}/file", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == path.read_bytes()[10:20]
    assert part.headers["content-range"] == f"bytes 10-19/{path.stat().st_size}"


@pytest.mark.parametrize(
    "url",
    [
        "/api/items/987654/file",
        "/api/items/987654/thumbnail",
    ],
)
def test_unknown_items_are_404(client, url):
    r = client.get(url)
    assert r.status_code == 404 and "987654" in r.json()["error"]


@pytest.mark.parametrize("item", ["..%2F..%2Fetc%2Fpasswd", "-1", "1.5", "%2Fetc%2Fpasswd"])
def test_files_are_only_served_by_item_id(client, item):
    r = client.get(f"/api/items/{item}/file")
    assert r.status_code in (400, 404)
    assert "root:" not in r.text


# ---- the page ---------------------------------------------------------------------------------


def test_the_page_loads_with_the_search_form_and_its_assets(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert '<form id="search-form"' in html and 'name="q"' in html
    assert 'type="file"' in html and 'name="type"' in html
    assert "http://" not in html and "https://" not in html  # no CDN: works offline
    assert "script-src 'self'" in r.headers["content-security-policy"]
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
        got = client.get(asset)
        assert got.status_code == 200, asset
        assert "http://" not in got.text and "https://" not in got.text


# ---- errors without a collection, with another encoder, without fastapi ------------------------


def test_a_home_without_a_collection_is_503_with_the_way_out(tmp_path):
    with TestClient(create_app(home=tmp_path / "nothing-here"), base_url=LOOPBACK) as c:
        for url in ("/api/status", "/api/search?q=a+red+circle", "/api/items/1/file"):
            r = c.get(url)
            assert r.status_code == 503, url
            assert "mmsearch index" in r.json()["error"]
    assert not (tmp_path / "nothing-here").exists()  # looking must not create a home


def test_searching_with_another_encoder_is_409(collection):
    _, _, home = collection
    with TestClient(create_app(home=home, model="ViT-B-32/random"), base_url=LOOPBACK) as c:
        r = c.get("/api/search", params={"q": "a red circle"})
    assert r.status_code == 409
    assert MODEL in r.json()["error"]


def test_without_fastapi_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(MissingDependencyError, match=r"mmsearch\[server\]"):
        create_app(home="unused")


# ---- `mmsearch serve` for real ----------------------------------------------------------------


@pytest.mark.slow
def test_mmsearch_serve_answers_over_http(collection):
    _, _, home = collection
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mmsearch.cli",
            "serve",
            "--home",
            str(home),
            "--port",
            "0",
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    try:
        url = _wait_for_url(lines, proc, deadline=time.monotonic() + 120)
        assert url.startswith("http://127.0.0.1:")  # loopback by default
        status = _wait_for_status(url, proc, deadline=time.monotonic() + 120)
        assert status["assets_by_kind"] == {"image": 12}
        r = httpx.get(url + "api/search", params={"q": "a red circle", "k": 3}, timeout=60)
        assert r.status_code == 200
        assert len(r.json()["results"]) == 3
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_url(lines: queue.Queue[str], proc: subprocess.Popen, deadline: float) -> str:
    seen = []
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.5)
        except queue.Empty:
            assert proc.poll() is None, f"serve exited {proc.returncode}: {''.join(seen)}"
            continue
        seen.append(line)
        found = re.search(r"https?://\S+/", line)
        if found:
            return found.group(0)
    pytest.fail(f"serve printed no URL in time: {''.join(seen)}")


def _wait_for_status(url: str, proc: subprocess.Popen, deadline: float) -> dict:
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"serve exited {proc.returncode}"
        try:
            r = httpx.get(url + "api/status", timeout=5)
            if r.status_code == 200:
                return r.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    pytest.fail("serve did not answer /api/status in time")


def test_the_served_socket_is_tcp_so_replies_are_not_delayed():
    """asyncio sets TCP_NODELAY only on IPPROTO_TCP sockets; without it each reply waits ~40 ms."""
    import socket

    from mmsearch.server import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()


def test_a_busy_port_is_a_config_error_with_the_way_out():
    from mmsearch.errors import ConfigError
    from mmsearch.server import _bind

    first = _bind("127.0.0.1", 0)
    try:
        with pytest.raises(ConfigError, match="--port"):
            _bind("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()


# ---- the query layer through HTTP -------------------------------------------------------------


def test_http_takes_the_same_query_options_as_the_cli(client, collection):
    engine, photos, _ = collection
    files = photo_files(photos)
    target = files[2]
    liked = item_id_of(client, target)
    like = client.get("/api/search", params={"like": liked, "k": 3}).json()
    assert like["by"] == "item" and liked not in [r["item_id"] for r in like["results"]]
    assert [r["item_id"] for r in like["results"]] == [h.item_id for h in engine.search(like=liked, k=3)]
    only_png = client.get("/api/search", params={"q": "a red circle", "path": "*.png", "k": 5}).json()
    assert only_png["results"] and all(r["path"].endswith(".png") for r in only_png["results"])
    page = client.get("/api/search", params={"q": "a shape", "k": 2, "offset": 2, "group": False}).json()
    whole = client.get("/api/search", params={"q": "a shape", "k": 4, "group": False}).json()
    assert [r["item_id"] for r in page["results"]] == [r["item_id"] for r in whole["results"][2:]]
    assert whole["results"][0]["parts"]["clip"]["rank"] == 1
    away = client.get("/api/search", params={"q": "a shape", "not": "red", "k": 4}).json()
    assert away["query"] == "a shape - red"
    counted = client.get("/api/search", params={"q": "a shape", "min_score": -1, "count": True}).json()
    assert counted["count"] == 12
    dated = client.get("/api/search", params={"q": "a shape", "sort": "-date", "k": 5}).json()
    dates = [r["date"] for r in dated["results"]]
    assert dates == sorted(dates, reverse=True)
    bad = client.get("/api/search", params={"q": "x", "after": "yesterday"})
    assert bad.status_code == 400 and "ISO date" in bad.json()["error"]
    huge = client.get("/api/search", params={"like": 2**63})
    assert huge.status_code in (400, 422)
    nothing = client.get("/api/search")
    assert nothing.status_code == 400 and "Nothing to search" in nothing.json()["error"]


def test_an_item_can_be_looked_up_by_id(client, collection):
    _, photos, _ = collection
    path = photo_files(photos)[4]
    item_id = item_id_of(client, path)
    body = client.get(f"/api/items/{item_id}").json()
    assert body["path"] == str(path.resolve()) and body["kind"] == "image"
    assert body["thumbnail_url"].endswith("/thumbnail") and body["date"] > 0
    assert client.get("/api/items/987654321").status_code == 404


def test_feedback_personalises_one_user_only_through_http(collection, tmp_path):
    import shutil

    engine, photos, home = collection
    copy = tmp_path / "home"
    shutil.copytree(home, copy)
    mine = Engine(home=copy, device="cpu")
    mine._encoder = engine.encoder  # the same random weights the photos were indexed with
    with TestClient(create_app(engine_factory=lambda: mine), base_url=LOOPBACK) as c:
        plain = c.get("/api/search", params={"q": "a shape", "k": 12, "user": "ann", "group": False}).json()
        order = [r["item_id"] for r in plain["results"]]
        bob_before = c.get("/api/search", params={"q": "a shape", "k": 12, "user": "bob"}).json()["results"]
        for item in order[-3:]:  # ann likes what came last, and dislikes what came first
            assert c.post("/api/feedback", json={"item_id": item, "good": True, "user": "ann"}).status_code == 200
        r = c.post("/api/feedback", json={"item_id": order[0], "good": False, "user": "ann", "query": "a shape"})
        assert r.status_code == 200 and r.json()["judgements"] == 4
        after = c.get("/api/search", params={"q": "a shape", "k": 12, "user": "ann", "group": False}).json()
        assert [r["item_id"] for r in after["results"]] != order
        assert "personal" in after["results"][0]["parts"]
        off = c.get("/api/search", params={"q": "a shape", "k": 12, "user": "ann", "personal": False, "group": False}).json()
        assert [r["item_id"] for r in off["results"]] == order
        bob_after = c.get("/api/search", params={"q": "a shape", "k": 12, "user": "bob"}).json()["results"]
        assert bob_after == bob_before  # byte for byte
        prof = c.get("/api/profile", params={"user": "ann"}).json()
        assert prof["good"] == 3 and prof["bad"] == 1 and prof["model"]["kind"] == "logistic"
        assert c.delete("/api/profile", params={"user": "ann"}).json()["removed"] == 4
        bad = c.post("/api/feedback", json={"item_id": 10**12, "good": True})
        assert bad.status_code == 404 and "No item" in bad.json()["error"]
        cross = c.post("/api/feedback", json={"item_id": order[0], "good": True}, headers={"Origin": "https://evil.example"})
        assert cross.status_code == 403
    mine.close()


def test_slow_calls_time_out_and_a_full_server_says_busy():
    """Requests run concurrently in bounded slots; a slow one is answered 504, a waiting one 503."""
    from mmsearch.server.app import EngineHost, RequestTimeout, ServerBusy, status_for

    gate = threading.Event()
    host = EngineHost(lambda: object(), slots=1, wait_s=0.3, timeout_s=0.3)

    def slow(_engine):
        gate.wait(5)
        return "done"

    with pytest.raises(RequestTimeout) as timed_out:
        host.call(slow)
    assert status_for(timed_out.value) == 504
    with pytest.raises(ServerBusy) as busy:  # the slow call still holds the only slot
        host.call(lambda _e: "quick")
    assert status_for(busy.value) == 503
    gate.set()
    time.sleep(0.2)
    assert host.call(lambda _e: "quick") == "quick"  # its slot came back when it ended
    both = ThreadPoolExecutor(4)
    wide = EngineHost(lambda: object(), slots=4, wait_s=5, timeout_s=5)
    started = time.perf_counter()
    list(both.map(lambda _i: wide.call(lambda _e: time.sleep(0.3)), range(4)))
    assert time.perf_counter() - started < 1.0  # four at once, not one after another


@pytest.mark.parametrize("port", ["70000", "-5"])
def test_serve_refuses_a_port_out_of_range_in_one_line(tmp_path, port):
    from typer.testing import CliRunner

    from mmsearch.cli import app

    result = CliRunner().invoke(app, ["serve", "--home", str(tmp_path / "h"), "--port", port])
    assert result.exit_code == 2 and "--port" in result.output  # not bind()'s OverflowError
    assert "Traceback" not in result.output
