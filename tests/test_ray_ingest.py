"""`index --ray`: decoding and encoding on a real local Ray cluster, the driver committing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers_index import assert_index_matches_catalog, tiny_encoder, vectors_by_path

from indexer import sources
from indexer.pipeline import ExpectedEncoder, IndexOptions, encode_files, run_index
from indexer.ray_ingest import RayDecoder, RayPlan, plan_for
from indexer.sources import SourceSpec
from indexer.sources.base import ASSET_IMAGE, SourceResult
from indexer.sources.image import read_image
from indexer.workers import Decoded, DecodeJob, Failed, WorkerConfig, decode
from mmsearch.errors import ConfigError
from mmsearch.store import Collection
from mmsearch.synth.media import write_photo_folder

ray = pytest.importorskip("ray", reason="CI installs mmsearch[ray]; this only guards odd setups")

TESTS = Path(__file__).resolve().parent
SLOW_S = 0.25  # per file in the slow reader: a run long enough to kill an actor in the middle


ACTOR_ALONE = """
import pickle, sys
from indexer.ray_ingest import IngestActor
from indexer.workers import DecodeJob, WorkerConfig
from mmsearch.models import Encoder
from mmsearch.models.registry import resolve

spec = resolve("tiny")
preprocess = Encoder(spec, device="cpu", precision="fp32").load_image_tower().preprocess
actor = IngestActor(WorkerConfig(preprocess, max(preprocess.size)), spec, "cpu", "fp32", 1, 4, False)
jobs = [DecodeJob(path, "image", READER) for path in sys.argv[1:]]
(row,) = actor({"batch": [pickle.dumps(jobs)]})["batch"]
actor.decoder.close()
print(len([o for o in pickle.loads(row) if o.items[0].vector is not None]))
print(sorted(m for m in sys.modules if m.split(".")[0] == "sqlalchemy"
             or m in ("indexer.pipeline", "mmsearch.catalog")))
"""


def test_an_actor_imports_neither_the_pipeline_nor_the_catalog(tmp_path: Path):
    """An actor, in a process of its own as on Ray, encodes its row without importing the
    pipeline or SQLAlchemy: every actor imports what it runs at each run's start, and those cost
    it ~0.3 s there, for nothing (the driver commits)."""
    photos = sorted(write_photo_folder(tmp_path / "photos", 3, seed=5).glob("*.jpg"))
    code = ACTOR_ALONE.replace("READER", repr(sources.SOURCES[".jpg"].reader))
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, photos)], capture_output=True, text=True,
        cwd=TESTS.parent, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == [str(len(photos)), "[]"]


def test_a_cluster_address_nothing_answers_at_is_refused_at_once(monkeypatch):
    """Ray retries such an address for minutes, printing its retries; a port that answers (or
    no address at all: Ray looks on this machine) goes on to Ray. A Ray Client address is
    refused with what to do instead: Ray Data does not run over Ray Client."""
    import socket

    from indexer.ray_ingest import _check_reachable, connect

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # a test's cluster may be up
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        _check_reachable(f"127.0.0.1:{port}")
        with pytest.raises(ConfigError, match=r"Ray Client address.*ray start --address"):
            connect(f"ray://127.0.0.1:{port}")  # even where something answers
    for address in (f"127.0.0.1:{port}", "nosuchhost.invalid:6379"):
        started = time.monotonic()
        with pytest.raises(ConfigError, match="Cannot reach a Ray cluster"):
            connect(address)
        assert time.monotonic() - started < 10
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")  # `--ray auto` goes where it says
    with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
        connect("auto")
    monkeypatch.setenv("RAY_ADDRESS", f"ray://127.0.0.1:{port}")
    with pytest.raises(ConfigError, match="Ray Client"):
        connect("auto")
    _check_reachable("")  # auto without $RAY_ADDRESS
    from indexer.ray_ingest import _host_and_port

    assert _host_and_port("head:6380") == ("head", 6380) and _host_and_port("head") == ("head", 6379)
    assert _host_and_port("[::1]:6380") == ("::1", 6380) and _host_and_port("[::1]") == ("::1", 6379)
    assert _host_and_port("fe80::1") == ("fe80::1", 6379)
    with pytest.raises(ConfigError, match="Not a Ray cluster address"):
        _host_and_port(":6379")


def test_a_cluster_that_wants_its_token_is_named_as_such():
    """Ray 2.60 says only "Failed to connect" when a cluster with token authentication (on by
    default for `ray start` since Ray 2.59) is given by address without RAY_AUTH_MODE=token; the
    reason is in the text of the error it chains (as raised by ray.init there)."""
    from indexer.ray_ingest import _refused_for_token

    try:
        try:
            raise RuntimeError("Failed to connect to GCS. ... RPC error: InvalidAuthToken: ...")
        except RuntimeError as inner:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from inner
    except ConnectionError as exc:
        assert _refused_for_token(exc)
    assert not _refused_for_token(ConnectionError("Failed to connect to Ray cluster"))


def test_the_plan_takes_one_actor_per_gpu_else_one_per_cpu():
    two = plan_for({"CPU": 2})  # two actors, each decoding and encoding in turn on its own CPU
    assert two == RayPlan(2, 1, 0, "cpu", decoders=0) and two.threads == 1
    wide = plan_for({"CPU": 64})
    assert wide == RayPlan(64, 1, 0, "cpu", decoders=0) and wide.threads == 1
    gpus = plan_for({"CPU": 16, "GPU": 2})  # the CPUs the encoders leave all decode
    assert gpus == RayPlan(2, 1, 1, "cuda", decoders=14, cpus_per_decoder=1) and gpus.threads == 1
    assert plan_for({"CPU": 16, "GPU": 2}, device="cpu").decoders == 0
    with pytest.raises(ConfigError, match="no GPU"):
        plan_for({"CPU": 8}, device="cuda")


@pytest.fixture(scope="module")
def local_cluster():
    """A real two-CPU Ray instance on this machine; workers can import the test readers."""
    path = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    ray.init(
        address="local",  # its own, even beside a developer's `ray start` cluster
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_WAIT_POLICY": "PASSIVE"}},
    )
    yield
    ray.shutdown()


def _index(home: Path, roots: list[Path], options: IndexOptions, progress=None):
    with Collection(home) as collection, collection.writer() as writer:
        summary = run_index(writer, tiny_encoder, roots, options, progress)
    assert_index_matches_catalog(home)
    return summary


@pytest.mark.slow
def test_a_ray_run_gives_the_same_collection_as_a_plain_run(tmp_path: Path, local_cluster):
    photos = write_photo_folder(tmp_path / "photos", 16, seed=21)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    plain = _index(tmp_path / "plain", [photos], IndexOptions(batch_size=8, patches=True))
    on_ray = _index(tmp_path / "ray", [photos], IndexOptions(batch_size=8, patches=True, ray="auto"))
    assert (on_ray.new, on_ray.items_added) == (plain.new, plain.items_added) == (16, 16)
    assert on_ray.stages["encode"].items == 16 and on_ray.stages["encode"].seconds > 0  # actors'
    assert [s.path for s in on_ray.skipped] == [str(photos / "broken.jpg")]
    assert on_ray.skipped[0].reason == plain.skipped[0].reason
    a, b = vectors_by_path(tmp_path / "plain"), vectors_by_path(tmp_path / "ray")
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_allclose(a[path], b[path], atol=1e-5)
    with Collection(tmp_path / "ray", create=False) as collection:  # patches came back too
        assert collection.catalog.patch_counts()[0] == 16
    # incremental: nothing new, nothing sent to the cluster
    again = _index(tmp_path / "ray", [photos], IndexOptions(batch_size=8, ray="auto"))
    assert (again.new, again.unchanged, again.items_added) == (0, 16, 0)


@pytest.mark.slow
def test_the_actors_load_their_model_while_the_driver_loads_its_own(tmp_path: Path, local_cluster):
    """With the encoder known beforehand, the run starts on Ray at once: the encoding actor is up
    (importing torch, loading the weights) before the driver's model has loaded."""
    photos = write_photo_folder(tmp_path / "photos", 6, seed=23)
    actors_while_loading: list[list[int]] = []

    def load_slowly():
        deadline = time.monotonic() + 60
        while not _actor_processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        actors_while_loading.append(_actor_processes())
        return tiny_encoder()

    expected = ExpectedEncoder.of(tiny_encoder())
    with Collection(tmp_path / "home") as collection, collection.writer() as writer:
        summary = run_index(
            writer, load_slowly, [photos], IndexOptions(batch_size=4, ray="auto"), expected=expected
        )
    assert actors_while_loading[0], "no encoding actor started while the driver's model loaded"
    assert summary.new == 6 and summary.items_added == 6
    assert_index_matches_catalog(tmp_path / "home")


def _run_two_pools(encoder, jobs: list[DecodeJob], jpeg_decoder: str = "auto"):
    """The GPU plan's shape (a decoding pool feeding an encoding pool) on CPUs: the decoder and
    every outcome it gave."""
    decoder = RayDecoder(
        "auto", model=encoder.spec, precision=encoder.requested_precision, batch_size=4,
        config=WorkerConfig(encoder.preprocess, max(encoder.preprocess.size)),
        store_patches=False, plan=RayPlan(1, 1, 0, "cpu", decoders=1, cpus_per_decoder=1),
        jpeg_decoder=jpeg_decoder,
    )  # fmt: skip
    with decoder:
        return decoder, [o for o in decoder.run(jobs) if o is not None]


@pytest.mark.slow
def test_two_pools_decode_then_encode_as_on_a_cluster_with_gpus(tmp_path: Path, local_cluster):
    """The GPU plan's shape (decoding actors feeding encoding actors), run on CPUs: every file
    comes back once, encoded as the encoder itself encodes it, and a broken one as a failure."""
    photos = write_photo_folder(tmp_path / "photos", 10, seed=24)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    encoder = tiny_encoder()
    reader = sources.SOURCES[".jpg"].reader
    jobs = [DecodeJob(str(p), ASSET_IMAGE, reader) for p in sorted(photos.glob("*.jpg"))]
    decoder, outcomes = _run_two_pools(encoder, jobs)
    assert sorted(o.job.path for o in outcomes) == sorted(j.path for j in jobs)
    failed = [o for o in outcomes if isinstance(o, Failed)]
    assert [f.job.path for f in failed] == [str(photos / "broken.jpg")]
    decoded = [o for o in outcomes if isinstance(o, Decoded)]
    expected = encode_files(encoder, [decode(d.job, decoder.config) for d in decoded], 4, False)
    for d, want in zip(decoded, expected, strict=True):
        assert d.items[0].pixels is None  # the driver gets vectors, not pictures
        np.testing.assert_allclose(d.items[0].vector, want[0][0], atol=1e-5)


@pytest.mark.slow
def test_encoding_actors_decode_jpegs_on_their_device(tmp_path: Path, local_cluster):
    """The GPU plan with JPEGs decoded by the encoding actors themselves (`--jpeg-decoder`; on a
    GPU, nvjpeg), run here on CPUs: JPEG rows skip the decoding actors, other files go through
    them, every file comes back once, and the vectors are the encoder's own within what the two
    JPEG decoders differ by."""
    photos = write_photo_folder(tmp_path / "photos", 10, seed=26)  # JPEGs and PNGs
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    encoder = tiny_encoder()
    jobs = [
        DecodeJob(str(p), ASSET_IMAGE, sources.SOURCES[p.suffix].reader)
        for p in sorted(photos.iterdir())
        if p.suffix in (".jpg", ".png")
    ]
    assert {Path(j.path).suffix for j in jobs} == {".jpg", ".png"}
    decoder, outcomes = _run_two_pools(encoder, jobs, jpeg_decoder="device")
    assert sorted(o.job.path for o in outcomes) == sorted(j.path for j in jobs)
    failed = [o for o in outcomes if isinstance(o, Failed)]
    assert [f.job.path for f in failed] == [str(photos / "broken.jpg")]
    assert "not really" not in failed[0].reason and failed[0].reason  # Pillow's own words
    decoded = [o for o in outcomes if isinstance(o, Decoded)]
    pillow = encode_files(encoder, [decode(d.job, decoder.config) for d in decoded], 4, False)
    for d, want in zip(decoded, pillow, strict=True):
        jpeg = d.job.path.endswith(".jpg")
        assert d.on_device == jpeg, d.job.path  # JPEGs by the encoding actor, PNGs by a decoder
        similarity = float(d.items[0].vector @ want[0][0])
        assert similarity > (0.98 if jpeg else 0.99999), d.job.path


@pytest.mark.slow
def test_files_that_failed_beforehand_never_block_the_start(tmp_path: Path, local_cluster):
    """More failed files than the driver's queue holds: `start` returns at once and every file
    comes back (they used to be queued by the caller, which waited for itself)."""
    photos = write_photo_folder(tmp_path / "photos", 2, seed=25)
    encoder = tiny_encoder()
    reader = sources.SOURCES[".jpg"].reader
    good = [DecodeJob(str(p), ASSET_IMAGE, reader) for p in sorted(photos.glob("*.jpg"))]
    failed = [Failed(DecodeJob(str(tmp_path / f"{i}.xyz"), ASSET_IMAGE, reader), "no reader") for i in range(5)]
    decoder = RayDecoder(
        "auto", model=encoder.spec, precision=encoder.requested_precision, batch_size=4,
        config=WorkerConfig(encoder.preprocess, max(encoder.preprocess.size)),
        store_patches=False, max_ahead=2,
    )  # fmt: skip
    with decoder:
        started = threading.Thread(target=decoder.start, args=(failed + good,), daemon=True)
        started.start()
        started.join(timeout=30)
        assert not started.is_alive(), "start waited for a consumer that had not begun"
        outcomes = [o for o in decoder.outcomes() if o is not None]
    assert sorted(o.job.path for o in outcomes) == sorted([f.job.path for f in failed] + [j.path for j in good])
    assert sum(isinstance(o, Failed) for o in outcomes) == len(failed)


@pytest.mark.slow
def test_the_cli_with_ray_local_starts_its_own_ray_and_keeps_ray_chatter_off_the_terminal(tmp_path: Path):
    """`mmsearch index --ray local` starts a Ray instance of its own even where RAY_ADDRESS names
    another cluster (here one nobody runs: it used to connect there, and fail); a run of one batch
    starts one actor (Ray Data used to warn that the second had nothing to do); Ray's INFO lines
    and notices stay off stderr."""
    import json
    import subprocess
    import sys

    photos = write_photo_folder(tmp_path / "photos", 3, seed=31)
    command = [sys.executable, "-m", "mmsearch.cli", "index", str(photos), "--home", str(tmp_path / "home")]
    command += ["--model", "tiny", "--ray", "local", "--json"]
    env = {**os.environ, "RAY_ADDRESS": "127.0.0.1:1", "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout[done.stdout.index("{") :])
    assert summary["skipped"] == [] and summary["items_added"] >= 3
    for chatter in ("Connecting to", "Started a local Ray instance", "Progress bars", "Token authentication", "concurrent actors"):
        assert chatter not in done.stderr, done.stderr
    with Collection(tmp_path / "home", create=False) as collection:
        assert sum(collection.catalog.item_counts().values()) == summary["items_added"]
        assert collection.vectors.count == summary["items_added"]


def _slow_picture(path: Path, *args, **kwargs) -> SourceResult:
    """Reads the .jpg twin of a .slow file, slowly."""
    time.sleep(SLOW_S)
    return read_image(path.with_suffix(".jpg"), *args, **kwargs)


def _actor_processes() -> list[int]:
    """PIDs of this machine's encoding actors (Ray titles them ray::MapWorker(...IngestActor),
    or ...EncodeActor on a cluster with GPUs)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if b"ray::" in title and (b"IngestActor" in title or b"EncodeActor" in title):
                pids.append(int(entry.name))
    return sorted(pids)


class _KillAnActor:
    """A progress reporter that kills the encoding actor once the first files are committed."""

    def __init__(self) -> None:
        self.killed: int | None = None
        self.advanced = 0

    def start(self, total: int, description: str) -> None:
        self.total = total

    def advance(self, n: int = 1) -> None:
        self.advanced += n
        if self.killed is None:
            actors = _actor_processes()
            assert actors, "no encoding actor is alive while files are still coming"
            self.killed = actors[0]
            self.left_when_killed = self.total - self.advanced
            os.kill(self.killed, signal.SIGKILL)

    def finish(self) -> None:
        pass


@pytest.mark.slow
def test_an_actor_killed_mid_run_is_replaced_and_nothing_is_lost_or_doubled(
    tmp_path: Path, local_cluster, monkeypatch
):
    monkeypatch.setitem(sources.SOURCES, ".slow", SourceSpec(ASSET_IMAGE, "test_ray_ingest:_slow_picture"))
    twins = write_photo_folder(tmp_path / "twins", 24, seed=22)
    folder = tmp_path / "slow"
    folder.mkdir()
    for jpg in sorted(twins.glob("*.jpg")):
        (folder / jpg.with_suffix(".slow").name).write_bytes(b"x")
        os.link(jpg, folder / jpg.name)  # the .slow reader reads its .jpg twin
    files = sorted(folder.glob("*.slow"))
    progress = _KillAnActor()
    summary = _index(
        tmp_path / "home", [folder], IndexOptions(batch_size=4, ray="auto", kinds=None), progress
    )
    assert progress.killed is not None and progress.left_when_killed > 0
    assert progress.killed not in _actor_processes()  # a new actor did the rest
    indexed = files + sorted(folder.glob("*.jpg"))
    assert summary.new == len(indexed) and summary.skipped == []
    assert summary.items_added == len(indexed)  # none twice
    with Collection(tmp_path / "home", create=False) as collection:
        assert len(collection.catalog.item_ids()) == len(indexed)
    assert progress.advanced == len(indexed)


@pytest.mark.slow
def test_a_driver_with_a_traced_tower_on_record_loads_no_model(tmp_path: Path, local_cluster, monkeypatch):
    """After a run that traced the image tower, a Ray run's driver binds the collection and tags
    from the trace's record and the cached tag vectors: its own model is never loaded."""
    from mmsearch.engine import Engine
    from mmsearch.models import resolve
    from mmsearch.models.openclip_loader import expected_preprocess

    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "cache"))
    photos = write_photo_folder(tmp_path / "photos", 8, seed=25)
    with Engine(tmp_path / "first", "tiny", device="cpu") as engine:  # traces, caches tag vectors
        engine.index([photos], options=IndexOptions(in_process=True, patches=False))
        weights_id = engine.encoder.weights_id

    def never():
        raise AssertionError("the driver loaded its model")

    spec = resolve("tiny")
    expected = ExpectedEncoder(spec, "auto", expected_preprocess(spec), "cpu")
    options = IndexOptions(batch_size=4, patches=False, ray="auto")
    with Collection(tmp_path / "ray") as collection, collection.writer() as writer:
        summary = run_index(writer, never, [photos], options, expected=expected)
        assert collection.catalog.encoder_weights() == weights_id
    assert (summary.new, summary.tagged) == (8, 8)
    assert_index_matches_catalog(tmp_path / "ray")
    a, b = vectors_by_path(tmp_path / "first"), vectors_by_path(tmp_path / "ray")
    assert a.keys() == b.keys()
    for path in a:
        np.testing.assert_allclose(a[path], b[path], atol=1e-5)
    with Collection(tmp_path / "first", create=False) as one, Collection(tmp_path / "ray", create=False) as two:
        assert one.catalog.tag_counts() == two.catalog.tag_counts()


def test_a_file_the_cluster_never_answers_for_is_reported_not_dropped(tmp_path: Path, monkeypatch):
    """Unit level, no Ray: results that never mention a file make it a skipped file with a
    reason (the next run indexes it), never a silent gap."""
    import pickle

    from indexer import ray_ingest

    jobs = [DecodeJob(str(tmp_path / f"{i}.jpg"), ASSET_IMAGE, "r:r") for i in range(3)]
    answered = [Decoded(jobs[0], "h0", {}, []), Failed(jobs[2], "broken")]

    class Rows:  # what Ray Data's dataset gives back: rows of pickled outcomes
        def iter_rows(self):
            yield {"batch": pickle.dumps(answered)}

    monkeypatch.setattr(RayDecoder, "_dataset", lambda self, todo: Rows())
    decoder = RayDecoder(
        "auto", model=tiny_encoder().spec, precision="auto", batch_size=2, store_patches=False,
        config=WorkerConfig(tiny_encoder().preprocess, 64), plan=RayPlan(1, 2, 0, "cpu"),
    )  # fmt: skip
    outcomes = [o for o in decoder.run(jobs) if o is not None]
    assert [o.job.path for o in outcomes] == [j.path for j in jobs[:3:2]] + [jobs[1].path]
    assert isinstance(outcomes[-1], Failed) and outcomes[-1].reason == ray_ingest.LOST
