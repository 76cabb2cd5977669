"""The index pipeline: first runs, incremental runs, bad input, mixed media, crashing decoders."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from crashy_reader import EXTENSION as CRASHY
from crashy_reader import READER as CRASHY_READER
from crashy_reader import write_crashy
from fixtures_media import jpeg_bytes, run_unprivileged, unprivileged_tmp_dir, write_bad_corpus
from helpers_index import RecordingProgress, assert_index_matches_catalog, tiny_encoder
from PIL import Image

from indexer import pipeline, sources
from indexer.pipeline import (
    ExpectedEncoder,
    IndexOptions,
    encode_files,
    encoder_batch,
    run_index,
    set_aside_companion_subtitles,
)
from indexer.scan import ChangePlan, FileEntry
from indexer.sources import SourceSpec
from indexer.sources.base import ASSET_IMAGE, SourceResult
from indexer.sources.image import read_image
from indexer.workers import (
    DecodeJob,
    Failed,
    ProcessDecoder,
    WorkerConfig,
    decode,
)
from mmsearch.errors import (
    ConfigError,
    EncoderMismatchError,
    MissingDependencyError,
    MmsearchError,
)
from mmsearch.store import Collection
from mmsearch.synth import single_object_scene
from mmsearch.synth.media import speak, write_note, write_photo_folder, write_video

INLINE = IndexOptions(in_process=True, batch_size=8)  # most tests: no process start-up
PROCESSES = IndexOptions(workers=2, batch_size=8)


@pytest.fixture(scope="module")
def encoder():
    return tiny_encoder()


def index(home: Path, roots, options: IndexOptions = INLINE, progress=None):
    with Collection(home) as collection, collection.writer() as writer:
        summary = run_index(writer, tiny_encoder, roots, options, progress)
    assert_index_matches_catalog(home)
    return summary


def item_ids_by_path(home: Path) -> dict[str, list[int]]:
    with Collection(home, create=False) as collection:
        ids = collection.catalog.item_ids()
        records = collection.catalog.items_by_ids(ids)
    out: dict[str, list[int]] = {}
    for r in records:
        out.setdefault(r.path, []).append(r.id)
    return out


def search_paths(home: Path, vector: np.ndarray, k: int = 5) -> list[str]:
    with Collection(home, create=False) as collection:
        _, ids = collection.vectors.search(vector[None, :], k)
        return [r.path for r in collection.catalog.items_by_ids(ids[0])]


def stored_vector(home: Path, item_id: int) -> np.ndarray:
    with Collection(home, create=False) as collection:
        _, vectors = collection.catalog.vectors_for([item_id])
    return vectors[0]


def noise_jpeg(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(path, quality=90)
    return path


# ---- first run ---------------------------------------------------------------------------------


def test_first_index_of_a_photo_folder_in_worker_processes(tmp_path: Path, encoder) -> None:
    photos = write_photo_folder(tmp_path / "photos", 20, seed=1)
    progress = RecordingProgress()
    summary = index(tmp_path / "home", [photos], PROCESSES, progress)

    assert (summary.new, summary.changed, summary.skipped) == (20, 0, [])
    assert summary.per_kind == {"image": 20} and summary.items_added == 20
    assert progress.starts == [(20, "Indexing")] and progress.advanced == 20
    assert summary.files_per_second() > 0
    with Collection(tmp_path / "home", create=False) as collection:
        assert [f.path for f in collection.catalog.list_folders()] == [str(photos.resolve())]
        first = sorted(photos.glob("*.jpg"))[0]
        asset = collection.catalog.asset_by_path(first)
        assert asset.kind == "image" and asset.folder_id is not None
        assert (asset.width, asset.height) == Image.open(first).size
        assert asset.size == first.stat().st_size and asset.mtime_ns == first.stat().st_mtime_ns
        assert len(asset.content_hash) == 64
        assert collection.encoder_name() == encoder.name
    # each stored vector is the picture's own embedding, so it finds its own file first
    ids = item_ids_by_path(tmp_path / "home")[str(first)]
    picture = read_image(first, target_size=encoder.image_size).items[0].image
    expected = encoder.encode_images([picture])[0]
    np.testing.assert_allclose(stored_vector(tmp_path / "home", ids[0]), expected, atol=1e-5)
    assert search_paths(tmp_path / "home", expected)[0] == str(first)


def _decoders_running() -> list[str]:
    children = multiprocessing.active_children()
    return sorted(p.name for p in children if p.name.startswith("mmsearch-decode"))


def test_the_batch_size_is_chosen_for_the_encoders_device(tmp_path: Path, monkeypatch) -> None:
    assert (encoder_batch("cpu"), encoder_batch("cuda:1"), encoder_batch("cpu", 8)) == (32, 64, 8)
    sizes: list[int] = []

    def recording(encoder, files, batch_size, store_patches):
        sizes.append(len(files))
        return encode_files(encoder, files, batch_size, store_patches)

    monkeypatch.setattr(pipeline, "encode_files", recording)
    photos = write_photo_folder(tmp_path / "photos", 70, seed=6)
    summary = index(tmp_path / "home", [photos], IndexOptions(in_process=True))  # auto, on the CPU
    assert summary.new == 70 and sizes == [32, 32, 6]


def test_decoding_starts_while_the_model_loads_when_its_input_is_known(tmp_path: Path, encoder) -> None:
    """With the encoder's input known beforehand, worker processes decode while the model loads
    (one core is left to the loading), then all of them run; the stored vectors are those of a
    plain run."""
    photos = write_photo_folder(tmp_path / "photos", 12, seed=4)
    seen_while_loading: list[list[str]] = []

    def load_slowly():
        time.sleep(0.5)  # torch's import, the weights
        seen_while_loading.append(_decoders_running())
        return tiny_encoder()

    options = IndexOptions(workers=3, batch_size=4)
    with Collection(tmp_path / "early") as collection, collection.writer() as writer:
        summary = run_index(writer, load_slowly, [photos], options, expected=ExpectedEncoder.of(encoder))
    assert seen_while_loading[0] == ["mmsearch-decode-1", "mmsearch-decode-2"]  # (tagging loads again)
    assert summary.new == 12 and summary.stages["decode"].workers == 3
    index(tmp_path / "plain", [photos], INLINE)
    early, plain = item_ids_by_path(tmp_path / "early"), item_ids_by_path(tmp_path / "plain")
    assert early.keys() == plain.keys()
    for path in early:
        np.testing.assert_allclose(
            stored_vector(tmp_path / "early", early[path][0]),
            stored_vector(tmp_path / "plain", plain[path][0]),
            atol=1e-6,
        )


def test_a_wrong_expected_input_is_caught_and_the_files_decoded_again(
    tmp_path: Path, encoder, caplog
) -> None:
    photos = write_photo_folder(tmp_path / "photos", 5, seed=5)
    wrong = dataclasses.replace(encoder.preprocess, size=(32, 32))
    with Collection(tmp_path / "home") as collection, collection.writer() as writer:
        expected = ExpectedEncoder(encoder.spec, preprocess=wrong)
        summary = run_index(writer, tiny_encoder, [photos], PROCESSES, expected=expected)
    assert summary.new == 5 and summary.skipped == []
    assert "not the one expected" in caplog.text
    index(tmp_path / "plain", [photos], INLINE)
    ids, plain = item_ids_by_path(tmp_path / "home"), item_ids_by_path(tmp_path / "plain")
    first = sorted(ids)[0]
    np.testing.assert_allclose(
        stored_vector(tmp_path / "home", ids[first][0]),
        stored_vector(tmp_path / "plain", plain[first][0]),
        atol=1e-6,
    )


def test_worker_processes_and_in_process_decoding_store_the_same_vectors(tmp_path: Path) -> None:
    photos = write_photo_folder(tmp_path / "photos", 6, seed=2)
    index(tmp_path / "a", [photos], PROCESSES)
    index(tmp_path / "b", [photos], INLINE)
    a, b = item_ids_by_path(tmp_path / "a"), item_ids_by_path(tmp_path / "b")
    assert a.keys() == b.keys()
    for path in a:
        va, vb = (
            stored_vector(tmp_path / "a", a[path][0]),
            stored_vector(tmp_path / "b", b[path][0]),
        )
        np.testing.assert_allclose(va, vb, atol=1e-5)


# ---- incremental runs --------------------------------------------------------------------------


def test_incremental_runs_add_modify_move_touch_and_delete(tmp_path: Path) -> None:
    photos = write_photo_folder(tmp_path / "photos", 8, seed=3)
    home = tmp_path / "home"
    index(home, [photos])
    before = item_ids_by_path(home)

    progress = RecordingProgress()
    again = index(home, [photos], progress=progress)
    assert (again.unchanged, again.new, again.changed, again.items_added) == (8, 0, 0, 0)
    assert progress.total == 0  # nothing was decoded

    files = sorted(p for p in photos.iterdir() if p.suffix in (".jpg", ".png"))
    modified, renamed, deleted, touched = files[:4]
    noise_jpeg(photos / "added_1.jpg", 1)
    noise_jpeg(photos / "added_2.jpg", 2)
    Image.new("RGB", (50, 40), (200, 10, 10)).save(modified)  # same name, new picture
    (photos / "sub").mkdir()
    moved_to = renamed.rename(photos / "sub" / ("renamed" + renamed.suffix))
    deleted.unlink()
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # same bytes, new mtime

    progress = RecordingProgress()
    summary = index(home, [photos], progress=progress)
    assert (summary.new, summary.changed, summary.moved) == (2, 1, 1)
    assert (summary.deleted, summary.touched, summary.unchanged) == (1, 1, 4)
    assert progress.total == 3  # the moved and touched files were not decoded
    assert (summary.items_added, summary.items_removed) == (3, 2)

    after = item_ids_by_path(home)
    assert after[str(moved_to)] == before[str(renamed)]  # the moved file kept its vector id
    assert str(renamed) not in after and str(deleted) not in after
    assert after[str(touched)] == before[str(touched)]
    assert after[str(modified)] != before[str(modified)]  # re-encoded under a fresh id
    all_ids = {i for ids in after.values() for i in ids}
    assert not all_ids & set(before[str(modified)] + before[str(deleted)])
    with Collection(home, create=False) as collection:
        assert collection.catalog.asset_by_path(touched).mtime_ns == touched.stat().st_mtime_ns
        moved = collection.catalog.asset_by_path(moved_to)
        assert moved.mtime_ns == moved_to.stat().st_mtime_ns
    # and the next run finds nothing to do
    progress = RecordingProgress()
    assert index(home, [photos], progress=progress).unchanged == 9 and progress.total == 0


def test_a_changed_file_that_no_longer_decodes_loses_its_old_items(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    good, other = noise_jpeg(photos / "a.jpg", 1), noise_jpeg(photos / "b.jpg", 2)
    home = tmp_path / "home"
    index(home, [photos])
    good.write_bytes(good.read_bytes()[:200])  # truncated in place
    summary = index(home, [photos])
    assert [(s.path, s.reason.split(":")[0]) for s in summary.skipped] == [
        (str(good), "truncated or corrupt image")
    ]
    assert summary.items_removed == 1
    assert list(item_ids_by_path(home)) == [str(other)]


def test_an_index_file_left_behind_by_a_killed_run_is_brought_level_and_saved(
    tmp_path: Path,
) -> None:
    photos = write_photo_folder(tmp_path / "photos", 4, seed=10)
    home = tmp_path / "home"
    index(home, [photos])
    saved = {p.name: p.read_bytes() for p in (home / "index").iterdir()}
    Image.new("RGB", (40, 30), (5, 200, 5)).save(sorted(photos.glob("*.jpg"))[0])
    assert index(home, [photos]).changed == 1
    for name, data in saved.items():  # as if killed after the commit, before the index save
        (home / "index" / name).write_bytes(data)
    summary = index(home, [photos])  # checks the saved file against the catalog
    assert (summary.unchanged, summary.items_added) == (4, 0)


def test_indexing_a_second_folder_or_one_kind_leaves_the_rest_alone(tmp_path: Path) -> None:
    first = write_photo_folder(tmp_path / "first", 3, seed=4)
    second = write_photo_folder(tmp_path / "second", 2, seed=5)
    write_note(first / "note.txt", [single_object_scene("red", "circle")])
    home = tmp_path / "home"
    only_images = IndexOptions(in_process=True, kinds=frozenset({"image"}))
    assert index(home, [first], only_images).per_kind == {"image": 3}
    assert index(home, [second]).per_kind == {"image": 2}
    summary = index(home, [first])  # all kinds now: the note is new, the photos unchanged
    assert (summary.per_kind, summary.unchanged, summary.deleted) == ({"text": 1}, 3, 0)
    (first / "note.txt").unlink()
    summary = index(home, [first], only_images)  # out of scope: the note is not judged
    assert (summary.deleted, summary.unchanged) == (0, 3)
    assert index(home, [first]).deleted == 1
    assert len(item_ids_by_path(home)) == 5


def test_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sound"):
        IndexOptions(kinds=frozenset({"sound"}))
    with pytest.raises(ConfigError, match="batch_size"):
        IndexOptions(batch_size=-1)
    with Collection(tmp_path / "home") as c, pytest.raises(ConfigError), c.writer() as writer:
        run_index(writer, tiny_encoder, [])


def test_another_encoder_is_refused(tmp_path: Path) -> None:
    photos = write_photo_folder(tmp_path / "photos", 2, seed=6)
    index(tmp_path / "home", [photos])

    class Other:
        name, dim = "ViT-B-32/laion2b_s34b_b79k", 512

    noise_jpeg(photos / "new.jpg", 99)  # something to encode, so the encoder is asked for
    with (
        Collection(tmp_path / "home") as c,
        pytest.raises(EncoderMismatchError),
        c.writer() as writer,
    ):
        run_index(writer, Other, [photos], INLINE)


# ---- bad input ---------------------------------------------------------------------------------


def test_bad_input_is_skipped_with_reasons_and_good_files_stay_searchable(tmp_path: Path) -> None:
    photos = write_photo_folder(tmp_path / "photos", 5, seed=7)
    bad = write_bad_corpus(photos / "bad")
    big = photos / "bad" / "big.png"
    Image.new("RGB", (1200, 1000), (0, 90, 0)).save(big)
    options = IndexOptions(workers=2, batch_size=4, max_image_pixels=1_000_000)
    summary = index(tmp_path / "home", [photos, tmp_path / "missing"], options)

    reasons = {Path(s.path).name: s.reason for s in summary.skipped}
    assert reasons["empty.jpg"] == "empty file"
    assert reasons["truncated.jpg"].startswith("truncated or corrupt image")
    assert reasons["notes.png"].startswith("not an image")
    assert reasons["bomb.png"].startswith("image too large")
    assert reasons["big.png"].startswith("image too large: 1.2 megapixels > limit 1")
    assert reasons["missing"] == "folder not found"
    assert len(summary.skipped) == len(bad) + 2
    assert summary.new == 5
    good = sorted(str(p) for p in photos.iterdir() if p.suffix in (".jpg", ".png"))
    assert sorted(item_ids_by_path(tmp_path / "home")) == good


def test_unreadable_files_are_reported(tmp_path: Path, monkeypatch) -> None:
    """Tests run as root, who reads everything: the image source's open() refuses one file."""
    folder = tmp_path / "photos"
    folder.mkdir()
    readable, locked = noise_jpeg(folder / "ok.jpg", 1), noise_jpeg(folder / "locked.jpg", 2)

    def guarded_open(path, *args, **kwargs):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr("indexer.sources.image.open", guarded_open, raising=False)
    summary = index(tmp_path / "home", [folder])
    assert [(s.path, s.reason) for s in summary.skipped] == [(str(locked), "permission denied")]
    assert list(item_ids_by_path(tmp_path / "home")) == [str(readable)]


def test_a_worker_cannot_read_what_its_user_may_not(tmp_path: Path) -> None:
    """The real thing, as an unprivileged user: the worker's decode reports, never raises."""
    config = WorkerConfig(preprocess=tiny_encoder().preprocess, image_size=64)
    with unprivileged_tmp_dir() as shared:
        locked = noise_jpeg(shared / "locked.jpg", 1)
        locked.chmod(0)
        job = DecodeJob(str(locked), ASSET_IMAGE, "indexer.sources.image:read_image")
        reason = run_unprivileged(lambda: decode(job, config).reason)
    assert reason == "permission denied"


def _needs_a_package(path: Path, *args, **kwargs) -> SourceResult:
    FANCY_CALLS.append(path)
    raise MissingDependencyError("Reading .fancy files needs 'fancylib': pip install fancy")


FANCY_CALLS: list[Path] = []


def test_missing_package_skips_that_kind_with_the_hint_logged_once(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    monkeypatch.setitem(
        sources.SOURCES, ".fancy", SourceSpec(ASSET_IMAGE, "test_pipeline:_needs_a_package")
    )
    FANCY_CALLS.clear()
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(4):
        (folder / f"f{i}.fancy").write_bytes(b"x")
    noise_jpeg(folder / "photo.jpg", 1)
    with caplog.at_level(logging.WARNING, logger="indexer"):
        summary = index(tmp_path / "home", [folder])
    assert summary.new == 1 and len(summary.skipped) == 4
    assert {s.reason for s in summary.skipped} == {
        "Reading .fancy files needs 'fancylib': pip install fancy"
    }
    assert len(FANCY_CALLS) == 1  # the others were not tried
    assert len([r for r in caplog.records if "fancylib" in r.getMessage()]) == 1


# ---- crashing decoders -------------------------------------------------------------------------


@pytest.fixture
def crashy(monkeypatch):
    monkeypatch.setitem(sources.SOURCES, CRASHY, SourceSpec(ASSET_IMAGE, CRASHY_READER))


def test_a_decoder_crash_skips_that_file_and_the_run_goes_on(
    tmp_path: Path, crashy, caplog
) -> None:
    folder = tmp_path / "files"
    folder.mkdir()
    good = [write_crashy(folder / f"good{i:02d}{CRASHY}", bytes([i * 20, 0, 0])) for i in range(10)]
    write_crashy(folder / f"a_dies{CRASHY}", b"CRASH")
    write_crashy(folder / f"m_segfaults{CRASHY}", b"SEGV")
    photos = [noise_jpeg(folder / f"p{i}.jpg", i) for i in range(3)]
    with caplog.at_level(logging.WARNING):
        summary = index(tmp_path / "home", [folder], IndexOptions(workers=2, batch_size=4))
    reasons = {Path(s.path).name: s.reason for s in summary.skipped}
    assert reasons == {
        f"a_dies{CRASHY}": "decoder crashed (exit code 3)",
        f"m_segfaults{CRASHY}": "decoder crashed (killed by SIGSEGV)",
    }
    assert summary.new == len(good) + len(photos)
    assert sorted(item_ids_by_path(tmp_path / "home")) == sorted(map(str, good + photos))
    # what the workers logged reached this process's loggers
    replayed = [r for r in caplog.records if r.name == "crashy_reader"]
    assert len(replayed) == len(good)
    assert all(r.process == os.getpid() for r in replayed)


class _CountedJobs:
    """Decode jobs for quick files, counting how many the decoder has taken so far."""

    def __init__(self, tmp_path: Path, n: int) -> None:
        self.files = [write_crashy(tmp_path / f"f{i:03d}{CRASHY}", bytes([i, i, i])) for i in range(n)]
        self.config = WorkerConfig(preprocess=tiny_encoder().preprocess, image_size=64)
        self.pulled = 0

    def __iter__(self):
        for f in self.files:
            self.pulled += 1
            yield DecodeJob(str(f), ASSET_IMAGE, CRASHY_READER)


def test_look_ahead_is_bounded(tmp_path: Path, crashy) -> None:
    jobs = _CountedJobs(tmp_path, 40)
    files = jobs.files
    consumed, ahead, outcomes = 0, [], []
    with ProcessDecoder(jobs.config, workers=2, max_ahead=8) as decoder:
        for outcome in decoder.run(jobs):
            if outcome is None:
                continue
            outcomes.append(outcome)
            consumed += 1
            ahead.append(jobs.pulled - consumed)
            time.sleep(0.02)  # a slow encoder: the workers must wait, not run ahead
    assert sorted(o.job.path for o in outcomes) == sorted(map(str, files))
    assert max(ahead) <= 8 + 2
    assert max(ahead) >= 4  # and they did decode ahead


def test_one_decoder_runs_batch_after_batch_on_the_same_workers(tmp_path: Path, crashy) -> None:
    """A Ray decode actor keeps its decoder between calls: each `run` ends when its jobs are done,
    and the next one starts on the same worker processes."""
    all_jobs = _CountedJobs(tmp_path, 6)
    files = all_jobs.files
    with ProcessDecoder(all_jobs.config, workers=1, max_ahead=8) as decoder:
        for batch in (files[:3], files[3:]):
            jobs = [DecodeJob(str(f), ASSET_IMAGE, CRASHY_READER) for f in batch]
            outcomes = [o for o in decoder.run(jobs) if o is not None]
            assert sorted(o.job.path for o in outcomes) == sorted(map(str, batch))
        assert decoder._started == 1


def test_paused_workers_take_no_new_files_until_the_pause_ends(tmp_path: Path, crashy) -> None:
    """While the consumer encodes on the CPU no file is handed out (each worker finishes the few
    it holds); when the pause ends, the rest are decoded and every file arrives once."""
    jobs = _CountedJobs(tmp_path, 30)
    with ProcessDecoder(jobs.config, workers=2, max_ahead=40) as decoder:
        outcomes = decoder.run(jobs)
        first = next(o for o in outcomes if o is not None)
        with decoder.paused():
            time.sleep(0.1)  # a job the dispatcher was already sending gets there
            at_pause = jobs.pulled
            time.sleep(0.5)  # unpaused workers would decode all 30 files in this time
            assert jobs.pulled == at_pause < len(jobs.files)
        rest = [o for o in outcomes if o is not None]
    assert sorted(o.job.path for o in [first, *rest]) == sorted(map(str, jobs.files))


class _DiesWhenUnpickled:
    """Kills the worker that unpickles it: a worker that cannot even start."""

    def __reduce__(self):
        return (os._exit, (7,))


def test_workers_that_cannot_start_end_the_run_with_a_clear_error(tmp_path: Path) -> None:
    config = WorkerConfig(preprocess=_DiesWhenUnpickled(), image_size=64)  # type: ignore[arg-type]
    jobs = [DecodeJob(str(tmp_path / f"{i}.jpg"), ASSET_IMAGE, "x:y") for i in range(3)]
    outcomes = []
    error = pytest.raises(MmsearchError, match="exiting while starting \\(exit code 7\\)")
    with error, ProcessDecoder(config, workers=1, max_ahead=4) as decoder:
        outcomes.extend(o for o in decoder.run(jobs) if o is not None)
    assert outcomes == []  # no file was blamed for it


def test_decode_reports_instead_of_raising(tmp_path: Path) -> None:
    config = WorkerConfig(preprocess=tiny_encoder().preprocess, image_size=64)
    empty = tmp_path / "x.jpg"
    empty.write_bytes(b"")
    outcome = decode(DecodeJob(str(empty), ASSET_IMAGE, "indexer.sources.image:read_image"), config)
    assert isinstance(outcome, Failed) and outcome.reason == "empty file"
    outcome = decode(DecodeJob(str(empty), ASSET_IMAGE, "test_pipeline:_broken_reader"), config)
    assert isinstance(outcome, Failed) and outcome.reason == "unexpected error: KeyError: 'oops'"


def _broken_reader(path, **kwargs) -> SourceResult:
    raise KeyError("oops")


def test_workers_send_encoder_ready_pixels(tmp_path: Path, encoder) -> None:
    path = tmp_path / "p.jpg"
    path.write_bytes(jpeg_bytes((300, 200)))
    config = WorkerConfig(preprocess=encoder.preprocess, image_size=encoder.image_size)
    outcome = decode(DecodeJob(str(path), ASSET_IMAGE, "indexer.sources.image:read_image"), config)
    pixels = outcome.items[0].pixels
    assert pixels.dtype == np.uint8 and pixels.shape == (64, 64, 3)
    image = Image.fromarray(pixels)
    np.testing.assert_allclose(
        encoder.preprocess.normalise(pixels[None])[0].numpy(),
        encoder.preprocess.to_array(image),
        atol=1e-6,
    )


# ---- mixed media -------------------------------------------------------------------------------


def test_companion_subtitles_are_set_aside_quietly(tmp_path: Path) -> None:
    (tmp_path / "clip.mp4").write_bytes(b"x")
    entries = {
        name: FileEntry(tmp_path / name, 1, 1) for name in ("clip.srt", "clip.en.vtt", "alone.srt")
    }
    for e in entries.values():
        e.path.write_text("1\n00:00:00,000 --> 00:00:01,000\nhi\n")
    plan = ChangePlan(
        new=[entries["clip.srt"], entries["alone.srt"]],
        unchanged=[entries["clip.en.vtt"]],
        moved=[(str(tmp_path / "old.srt"), FileEntry(tmp_path / "clip.srt", 1, 1))],
    )
    set_aside_companion_subtitles(plan)
    assert plan.new == [entries["alone.srt"]] and plan.unchanged == [] and plan.moved == []
    assert sorted(plan.deleted) == sorted(
        [str(tmp_path / "clip.en.vtt"), str(tmp_path / "old.srt")]
    )


@pytest.mark.slow
def test_photos_videos_recordings_and_notes_in_one_run(tmp_path: Path) -> None:
    folder = write_photo_folder(tmp_path / "media", 3, seed=8)
    red, blue = single_object_scene("red", "circle"), single_object_scene("blue", "square")
    write_video(folder / "clip.mp4", [(red, 2.0), (blue, 2.0)], size=(160, 120))
    (folder / "clip.srt").write_text(
        "1\n00:00:00,500 --> 00:00:02,000\na red circle on white\n\n"
        "2\n00:00:02,500 --> 00:00:03,500\nnow a blue square\n"
    )
    speak("a large green triangle on the left of the picture", folder / "speech.wav")
    write_note(folder / "note.txt", [red, blue])
    summary = index(tmp_path / "home", [folder], IndexOptions(workers=2, batch_size=8))

    assert summary.skipped == []  # clip.srt is read with the video, not reported
    assert summary.per_kind == {"image": 3, "video": 1, "audio": 1, "text": 1}
    with Collection(tmp_path / "home", create=False) as collection:
        counts = collection.catalog.item_counts()
        video = collection.catalog.asset_by_path(folder / "clip.mp4")
        records = collection.catalog.items_by_ids(collection.catalog.item_ids())
    assert counts["image"] == 3 and counts["keyframe"] >= 2
    assert counts["transcript"] >= 2 and counts["text"] >= 1
    assert video.duration_s == pytest.approx(4.0, abs=0.3) and video.transcript_backend == "sidecar"
    with Collection(tmp_path / "home", create=False) as collection:
        for r in records:
            assert (collection.catalog.thumbnail(r.id) is not None) == (r.kind == "keyframe")
    spoken = " ".join(r.text for r in records if r.path.endswith("speech.wav"))
    assert "triangle" in spoken or "green" in spoken
    assert not any(r.path.endswith(".srt") for r in records)
    # a re-run reads nothing, and the subtitles stay quiet
    progress = RecordingProgress()
    again = index(tmp_path / "home", [folder], progress=progress)
    assert again.unchanged == 6 and again.skipped == [] and progress.total == 0


def test_copies_in_two_homes_do_not_interfere(tmp_path: Path) -> None:
    photos = write_photo_folder(tmp_path / "photos", 3, seed=9)
    copy = tmp_path / "copy"
    shutil.copytree(photos, copy)
    index(tmp_path / "home", [photos, copy])
    assert len(item_ids_by_path(tmp_path / "home")) == 6


def test_a_second_writer_on_the_same_home_is_refused_with_a_message(tmp_path):
    """Two `index` runs on one home would race on the index file; the second is told to wait."""
    import subprocess
    import sys

    from mmsearch.errors import ConfigError
    from mmsearch.store import Collection

    home = tmp_path / "home"
    with Collection(home) as collection, collection.writer():
        with Collection(home) as other, pytest.raises(ConfigError, match="is writing to"), other.writer():
            pass
        holder = (
            "import sys; from mmsearch.store import Collection\n"
            "with Collection(sys.argv[1]) as c, c.writer(): pass\n"
        )
        busy = subprocess.run([sys.executable, "-c", holder, str(home)], capture_output=True, text=True)
        assert busy.returncode != 0 and "is writing to" in busy.stderr
    with Collection(home) as again, again.writer():  # released when the holder is done
        pass


def test_vectors_are_validated_before_anything_is_committed(tmp_path: Path) -> None:
    """NaN, infinity and a wrong shape are refused with a typed error; nothing half-committed."""
    from mmsearch.catalog import AssetInfo, ItemData
    from mmsearch.errors import InvalidVectorError

    home = tmp_path / "home"
    with Collection(home) as c, c.writer() as w:
        w.bind_encoder("test", 4)
        good = np.array([1, 0, 0, 0], np.float32)
        w.write(AssetInfo(path=str(tmp_path / "ok.jpg"), kind="image", size=1, mtime_ns=1, content_hash="a"),
                [ItemData("image", None, None, None, good)])
        for bad in (np.array([np.nan, 0, 0, 1], np.float32), np.array([np.inf, 0, 0, 0], np.float32),
                    np.array([1, 0, 0], np.float32)):
            asset = AssetInfo(path=str(tmp_path / "bad.jpg"), kind="image", size=1, mtime_ns=1, content_hash="b")
            with pytest.raises(InvalidVectorError):
                w.write(asset, [ItemData("image", None, None, None, good), ItemData("image", None, None, None, bad)])
        assert c.catalog.asset_by_path(tmp_path / "bad.jpg") is None
        assert c.catalog.item_ids().tolist() == [1] and w.vectors.count == 1


def _odd_metadata(path: Path, *args, **kwargs) -> SourceResult:
    """A picture whose reader reports a date the catalog cannot store."""
    result = read_image(path.with_suffix(".jpg"), *args, **kwargs)
    return SourceResult(result.asset_kind, result.items, {**result.meta, "taken_at": "the day after tomorrow"})


def test_a_file_the_catalog_refuses_costs_only_that_file_of_its_batch(
    tmp_path: Path, monkeypatch
) -> None:
    """Files are committed a batch per transaction; one refused row must not take the rest of
    its batch with it."""
    monkeypatch.setitem(
        sources.SOURCES, ".odd", SourceSpec(ASSET_IMAGE, "test_pipeline:_odd_metadata")
    )
    folder = write_photo_folder(tmp_path / "photos", 5, seed=7)
    first = sorted(folder.glob("*.jpg"))[0]
    (folder / first.with_suffix(".odd").name).write_bytes(b"x")  # read from its .jpg twin
    summary = index(tmp_path / "home", [folder], IndexOptions(in_process=True, batch_size=64))
    assert summary.new == 5 and summary.items_added == 5
    assert [(Path(s.path).suffix, s.reason.split(":")[0]) for s in summary.skipped] == [
        (".odd", "cannot store its metadata")
    ]
    with Collection(tmp_path / "home", create=False) as collection:
        assert collection.catalog.asset_by_path(first.with_suffix(".odd")) is None
        assert len(collection.catalog.item_ids()) == 5


def test_the_summary_times_each_stage(tmp_path: Path) -> None:
    photos = write_photo_folder(tmp_path / "photos", 12, seed=8)
    summary = index(tmp_path / "home", [photos], PROCESSES)
    stages = summary.stages
    assert {"scan", "model load", "decode", "encode", "commit"} <= set(stages)
    assert stages["scan"].items == 12  # the photos (captions.jsonl is not an indexed kind)
    assert stages["decode"].items == stages["encode"].items == stages["commit"].items == 12
    assert stages["decode"].workers == 2
    assert all(t.seconds > 0 for t in stages.values())
    rates = summary.stage_rates()
    assert set(rates) == {"scan", "decode", "encode", "commit", "tag"} - (
        set() if summary.tagged else {"tag"}
    )
    assert all(r > 0 for r in rates.values())
    # a run with nothing to decode loads no model and times only the scan
    again = index(tmp_path / "home", [photos], PROCESSES)
    assert set(again.stages) == {"scan"}
