"""The server against hostile requests: files swapped for links, foreign Host names and origins,
missing tokens, picture bombs and out-of-range ids (issue 9, "Security (server)").

Each test here failed before the fix it guards. The collection is real (rendered photos indexed
with `mmsearch-tiny/random`); files are swapped after indexing, as an attacker with write access
to an indexed folder would.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from starlette.applications import Starlette
from starlette.routing import Route

from indexer.pipeline import IndexOptions
from mmsearch.engine import Engine
from mmsearch.errors import ConfigError
from mmsearch.server import create_app, media, security
from mmsearch.server.app import OpenedFileResponse
from mmsearch.synth.media import write_photo_folder

REPO = Path(__file__).resolve().parent.parent
MODEL = "mmsearch-tiny/random"
LOOPBACK = "http://127.0.0.1"
SECRET = b"root:x:0:0:this is what must never be served\n"
TOKEN = "a-test-token-0123456789"


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """(engine, photo folder, outside folder): 8 photos and a link to a picture outside the folder."""
    root = tmp_path_factory.mktemp("security")
    photos = write_photo_folder(root / "photos", 8, seed=11)
    outside = root / "outside"
    outside.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(outside / "elsewhere.png")
    (outside / "secret.txt").write_bytes(SECRET)
    (photos / "link-out.png").symlink_to(outside / "elsewhere.png")
    engine = Engine(home=root / "home", model=MODEL, device="cpu")
    # Follow every link, so the server's own refusal is what the link tests exercise.
    summary = engine.index([photos], options=IndexOptions(follow_symlinks="all"))
    assert not summary.skipped, summary.skipped
    yield engine, photos, outside
    engine.close()


@pytest.fixture(scope="module")
def client(collection):
    engine, _, _ = collection
    with TestClient(create_app(engine_factory=lambda: engine), base_url=LOOPBACK) as c:
        yield c


def photo(folder: Path, index: int) -> Path:
    return sorted(
        p for p in folder.iterdir() if p.suffix in (".jpg", ".png") and p.name != "link-out.png"
    )[index]


def item_id_of(client: TestClient, path: Path) -> int:
    """The item id of a picture, found through the API itself (search by that picture)."""
    with open(path, "rb") as fh:
        r = client.post("/api/search/image", files={"file": (path.name, fh)}, params={"k": 1})
    assert r.status_code == 200, r.text
    return r.json()["results"][0]["item_id"]


def swap_for_link(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


# ---- 1. only the indexed regular files, inside the registered folders -------------------------


@pytest.mark.parametrize("target", ["secret", "/etc/passwd"])
def test_a_file_swapped_for_a_link_out_of_the_folder_is_not_served(client, collection, target):
    _, photos, outside = collection
    path = photo(photos, 0 if target == "secret" else 1)
    item_id = item_id_of(client, path)
    swap_for_link(path, outside / "secret.txt" if target == "secret" else Path(target))
    for headers in ({}, {"Range": "bytes=0-9"}, {"Range": "bytes=0-3,5-9"}):
        r = client.get(f"/api/items/{item_id}/file", headers=headers)
        assert r.status_code in (403, 404), (headers, r.status_code)
        assert b"root:" not in r.content
        assert "outside the indexed folders" in r.json()["error"]
    thumb = client.get(f"/api/items/{item_id}/thumbnail")
    assert thumb.status_code in (403, 404)


def test_a_link_in_the_folder_that_points_out_of_it_is_not_served(client, collection):
    """Indexed with follow_symlinks="all", the link's picture is searchable; the server still refuses it."""
    _, _, outside = collection
    item_id = item_id_of(client, outside / "elsewhere.png")
    assert client.get(f"/api/items/{item_id}/file").status_code == 403
    assert client.get(f"/api/items/{item_id}/thumbnail").status_code == 403


def test_a_picture_swapped_for_a_link_to_another_picture_gets_no_thumbnail(client, collection):
    _, photos, outside = collection
    path = photo(photos, 2)
    item_id = item_id_of(client, path)
    swap_for_link(path, outside / "elsewhere.png")
    r = client.get(f"/api/items/{item_id}/thumbnail")
    assert r.status_code == 403 and r.headers["content-type"] == "application/json"


def test_a_file_changed_since_indexing_is_not_served(client, collection):
    _, photos, _ = collection
    path = photo(photos, 3)
    item_id = item_id_of(client, path)
    original = path.read_bytes()
    assert client.get(f"/api/items/{item_id}/file").content == original
    path.write_bytes(b"x" * len(original))  # same size, new mtime
    r = client.get(f"/api/items/{item_id}/file")
    assert r.status_code == 404 and "re-index" in r.json()["error"]
    path.write_bytes(original[:-1])  # other size
    assert client.get(f"/api/items/{item_id}/file").status_code == 404


def test_a_fifo_in_place_of_a_file_is_refused_at_once(client, collection):
    _, photos, _ = collection
    path = photo(photos, 4)
    item_id = item_id_of(client, path)
    path.unlink()
    os.mkfifo(path)
    started = time.monotonic()
    r = client.get(f"/api/items/{item_id}/file")
    assert r.status_code == 403
    assert time.monotonic() - started < 5  # opening a FIFO for reading would block forever


def test_the_checked_file_is_sent_even_if_its_name_is_swapped_afterwards(tmp_path):
    """The response streams the descriptor that was checked, not the path's new target."""
    root = tmp_path / "root"
    root.mkdir()
    good = root / "a.bin"
    good.write_bytes(b"the indexed bytes " * 100)
    (tmp_path / "secret.txt").write_bytes(SECRET)
    st = good.stat()
    opened = media.open_indexed(
        media.IndexedFile(str(good), (str(root),), st.st_size, st.st_mtime_ns)
    )
    swap_for_link(good, tmp_path / "secret.txt")

    def endpoint(_request):
        return OpenedFileResponse(opened, media_type="application/octet-stream")

    with TestClient(Starlette(routes=[Route("/f", endpoint)])) as c:
        r = c.get("/f", headers={"Range": "bytes=0-17"})
    assert r.status_code == 206 and r.content == b"the indexed bytes "
    with pytest.raises(OSError):
        os.fstat(opened.fd)  # closed once the response ended


# ---- 2. Host allow-list, same-origin writes, the token ----------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1.evil.example"])
def test_a_foreign_host_name_is_refused_dns_rebinding(client, host):
    for url in ("/api/status", "/api/items/1/file", "/"):
        r = client.get(url, headers={"Host": host})
        assert r.status_code == 400, (url, r.status_code)
        assert "--allow-host" in r.json()["error"]


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "LOCALHOST", "[::1]:8765"])
def test_loopback_names_are_answered(client, host):
    assert client.get("/api/status", headers={"Host": host}).status_code == 200


def test_allowed_hosts_follow_the_bind_address_and_allow_host():
    policy = security.policy_for("192.168.1.5", ["search.lan"])
    assert security.host_allowed(policy, "192.168.1.5:8765")
    assert security.host_allowed(policy, "search.lan.")
    assert not security.host_allowed(policy, "10.0.0.9:8765")
    assert not security.host_allowed(policy, "evil.example")
    assert not security.host_allowed(policy, None)
    wildcard = security.policy_for("0.0.0.0")
    assert security.host_allowed(wildcard, "10.0.0.9:8765")  # IP literals cannot be rebound
    assert not security.host_allowed(wildcard, "evil.example")


def picture_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (0, 0, 255)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:9999"},  # another port is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_cross_origin_post_is_refused(client, headers):
    files = {"file": ("q.png", picture_bytes(), "image/png")}
    r = client.post("/api/search/image", files=files, headers=headers)
    assert r.status_code == 403 and "refused" in r.json()["error"]


def test_a_same_origin_post_and_a_script_post_pass(client):
    files = {"file": ("q.png", picture_bytes(), "image/png")}
    same = {"Origin": LOOPBACK, "Sec-Fetch-Site": "same-origin"}
    assert client.post("/api/search/image", files=files, headers=same).status_code == 200
    assert client.post("/api/search/image", files=files).status_code == 200  # curl sends neither


def test_a_cross_site_api_read_is_refused(client):
    r = client.get("/api/items/1/thumbnail", headers={"Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403


@pytest.fixture(scope="module")
def guarded(collection):
    """The app with a token, as `serve --host 0.0.0.0` builds it."""
    engine, _, _ = collection
    app = create_app(engine_factory=lambda: engine, token=TOKEN, bind_host="0.0.0.0")
    with TestClient(app, base_url=LOOPBACK) as c:
        yield c


def test_with_a_token_the_api_needs_it_and_status_reveals_no_paths(guarded, collection):
    engine, photos, _ = collection
    for url in ("/api/status", "/api/search?q=red", "/api/items/1/file", "/openapi.json"):
        r = guarded.get(url)
        assert r.status_code == 401, url
        assert str(photos) not in r.text and str(engine.home) not in r.text
        assert "token" in r.json()["error"]
    assert (
        guarded.get(
            "/api/status", headers={"Authorization": "Bearer wrong-token-000000"}
        ).status_code
        == 401
    )
    ok = guarded.get("/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["folders"]
    files = {"file": ("q.png", picture_bytes(), "image/png")}
    assert guarded.post("/api/search/image", files=files).status_code == 401


def test_the_token_in_the_page_url_sets_a_strict_cookie_once(collection):
    engine, _, _ = collection
    app = create_app(engine_factory=lambda: engine, token=TOKEN, bind_host="0.0.0.0")
    with TestClient(app, base_url=LOOPBACK, follow_redirects=False) as c:
        assert c.get("/").status_code == 200  # the page itself is public: it says what to do
        wrong = c.get("/?token=not-the-token-0000")
        assert wrong.status_code == 200 and "set-cookie" not in wrong.headers
        login = c.get(f"/?token={TOKEN}")
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert c.get("/api/status").status_code == 200  # the client kept the cookie


def test_tokens_are_resolved_from_the_option_the_environment_or_generated(monkeypatch):
    monkeypatch.delenv(security.TOKEN_ENV, raising=False)
    assert security.resolve_token(None, "127.0.0.1") is None  # loopback keeps working without
    generated = security.resolve_token(None, "0.0.0.0")
    assert generated and len(generated) >= 16 and generated != security.resolve_token(None, "::")
    assert security.resolve_token(TOKEN, "0.0.0.0") == TOKEN
    monkeypatch.setenv(security.TOKEN_ENV, "from-the-environment-1234")
    assert security.resolve_token(None, "0.0.0.0") == "from-the-environment-1234"
    assert security.resolve_token(None, "127.0.0.1") == "from-the-environment-1234"
    for bad in ("short", "has;semicolon-0123456789", "has space 0123456789"):
        with pytest.raises(ConfigError, match="token"):
            security.resolve_token(bad, "0.0.0.0")


@pytest.mark.slow
def test_serve_beyond_loopback_prints_a_token_url_and_requires_it(collection):
    engine, photos, _ = collection
    env = {k: v for k, v in os.environ.items() if k != security.TOKEN_ENV}
    env.update(
        PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    )
    cmd = [sys.executable, "-m", "mmsearch.cli", "serve", "--home", str(engine.home)]
    proc = subprocess.Popen(
        [*cmd, "--host", "0.0.0.0", "--port", "0", "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        url = _announced(proc, deadline=time.monotonic() + 120)
        found = re.fullmatch(r"http://0\.0\.0\.0:(\d+)/\?token=([A-Za-z0-9_-]{16,})", url)
        assert found, url
        base, token = f"http://127.0.0.1:{found.group(1)}/", found.group(2)
        bare = httpx.get(base + "api/status", timeout=60)
        assert bare.status_code == 401 and str(photos) not in bare.text
        ok = httpx.get(
            base + "api/status", headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        assert ok.status_code == 200
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _announced(proc: subprocess.Popen, deadline: float) -> str:
    seen: list[str] = []
    box: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            seen.append(line)
            found = re.search(r"https?://\S+", line)
            if found:
                box.append(found.group(0))
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(max(0.0, deadline - time.monotonic()))
    if not box:
        pytest.fail(f"serve printed no URL in time: {''.join(seen)}")
    return box[0]


# ---- 3. query pictures: pixel cap from the header, reduced decoding, bounded decodes ----------


def png_declaring(width: int, height: int) -> bytes:
    """A valid grey PNG of width x height black pixels: ~100 KB for 100 MP, streamed, never held."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    packer = zlib.compressobj(9)
    row = b"\0" * (width + 1)  # filter byte + pixels
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "100mp.png"
    path.write_bytes(png_declaring(10_000, 10_000))
    assert path.stat().st_size < 500_000
    return path


def test_a_100_megapixel_png_is_refused_quickly(client, bomb):
    started = time.monotonic()
    r = client.post(
        "/api/search/image", files={"file": ("bomb.png", bomb.read_bytes(), "image/png")}
    )
    assert r.status_code == 400 and "10000x10000" in r.json()["error"]
    assert time.monotonic() - started < 3


RSS_SCRIPT = """
import json, resource, sys
from concurrent.futures import ThreadPoolExecutor
from fastapi.testclient import TestClient
from mmsearch.server import create_app

def no_engine():
    raise RuntimeError("a refused picture must not reach the engine")

bomb = open(sys.argv[1], "rb").read()
tiny = open(sys.argv[2], "rb").read()
app = create_app(engine_factory=no_engine)
with TestClient(app, base_url="http://127.0.0.1", raise_server_exceptions=False) as c:
    c.post("/api/search/image", files={"file": ("tiny.png", tiny, "image/png")})  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    send = lambda _: c.post("/api/search/image", files={"file": ("b.png", bomb, "image/png")})
    with ThreadPoolExecutor(8) as pool:
        codes = [r.status_code for r in pool.map(send, range(8))]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
print(json.dumps({"codes": codes, "grew_mb": (after - before) * scale / 2**20}))
"""


def test_eight_picture_bombs_at_once_leave_memory_bounded(bomb, tmp_path):
    """A fresh process, so its peak RSS says what the bombs cost (before the fix: gigabytes)."""
    tiny = tmp_path / "tiny.png"
    tiny.write_bytes(picture_bytes())
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT, str(bomb), str(tiny)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["grew_mb"] < 100, got
    assert got["codes"] == [400] * 8


def test_a_large_jpeg_is_decoded_reduced_not_refused(client):
    """42 MP of JPEG decodes at 1/4 scale (draft) and is searched; the same PNG would be refused."""
    buf = io.BytesIO()
    Image.new("L", (7000, 6000), 90).save(buf, format="JPEG")
    r = client.post("/api/search/image", files={"file": ("big.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200, r.text
    image = media.decode_upload(buf.getvalue(), "big.jpg")
    assert max(image.size) <= media.QUERY_SIDE and image.mode == "RGB"


def test_at_most_two_pictures_are_decoded_at_once(monkeypatch):
    running, peak, lock = 0, 0, threading.Lock()
    real_load = Image.Image.load

    def slow_load(self):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        try:
            return real_load(self)
        finally:
            with lock:
                running -= 1

    monkeypatch.setattr(Image.Image, "load", slow_load)
    data = picture_bytes()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: media.decode_upload(data, "q.png"), range(16)))
    assert peak == media.MAX_CONCURRENT_DECODES == 2


def test_a_decode_that_waits_too_long_is_busy_503(client, monkeypatch):
    monkeypatch.setattr(media, "DECODE_WAIT_S", 0.01)
    held = [media._DECODE_SLOTS.acquire(timeout=5) for _ in range(media.MAX_CONCURRENT_DECODES)]
    try:
        files = {"file": ("q.png", picture_bytes(), "image/png")}
        r = client.post("/api/search/image", files=files)
    finally:
        for _ in held:
            media._DECODE_SLOTS.release()
    assert r.status_code == 503 and "busy" in r.json()["error"]


# ---- 4. item ids beyond SQLite's integers ----------------------------------------------------


@pytest.mark.parametrize("item", [str(2**63), str(2**64 + 5), "9" * 40])
@pytest.mark.parametrize("what", ["file", "thumbnail"])
def test_item_ids_beyond_int64_are_400(client, item, what):
    r = client.get(f"/api/items/{item}/{what}")
    assert r.status_code == 400 and r.json()["error"]


def test_the_largest_int64_id_is_just_unknown(client):
    assert client.get(f"/api/items/{2**63 - 1}/file").status_code == 404


def test_no_copy_of_a_refused_file_is_left_open(client, collection):
    """Refusals close what they opened (a leak would exhaust descriptors under a scan)."""
    _, photos, _ = collection
    item_id = item_id_of(client, photo(photos, 5))
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    shutil.copystat(photo(photos, 6), photo(photos, 5))  # another mtime: changed since indexing
    for _ in range(20):
        assert client.get(f"/api/items/{item_id}/file").status_code == 404
    if before is not None:
        assert len(os.listdir("/proc/self/fd")) <= before + 5


def test_a_picture_claiming_too_many_pixels_is_called_too_large(client):
    """A PNG whose header claims 10,000 MP: refused as too large (as the CLI says), not as a
    file mmsearch cannot read."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    r = client.post("/api/search/image", files={"file": ("huge.png", png, "image/png")})
    assert r.status_code == 400 and "too large" in r.json()["error"], r.text
