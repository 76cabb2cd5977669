"""JPEGs decoded in batches on the encoder's device (`indexer.jpeg_batch`), run here on the CPU:
the same pixels, metadata, vectors and skip reasons as the Pillow path, and every other file still
through the worker processes.

`MMSEARCH_TEST_DEVICE=cuda` runs the same tests with nvjpeg on a GPU (`benchmarks/gpu/device_run.sh`
does, on a lent device machine); CI has none and runs them on the CPU, where the same code decodes
with libjpeg."""

from __future__ import annotations

import io
import os
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures_media import jpeg_bytes, make_exif, write_image, write_truncated_jpeg
from helpers_index import assert_index_matches_catalog
from PIL import Image, ImageFilter

from indexer.jpeg_batch import BatchJpegDecoder, _orient
from indexer.pipeline import IndexOptions, decodes_jpegs_on_device
from indexer.sources.image import read_image
from indexer.workers import Decoded, DecodeJob, Failed, InlineDecoder, ProcessDecoder, WorkerConfig
from mmsearch import Engine
from mmsearch.errors import ConfigError
from mmsearch.models.preprocess import ImagePreprocess, stack_uint8
from mmsearch.store import Collection
from mmsearch.synth.media import write_photo_folder

PRE = ImagePreprocess((64, 64), (0.5, 0.4, 0.3), (0.2, 0.2, 0.2))
CONFIG = WorkerConfig(preprocess=PRE, image_size=64)
READER = "indexer.sources.image:read_image"
DEVICE = os.environ.get("MMSEARCH_TEST_DEVICE", "cpu")


def four_corners(size: tuple[int, int] = (96, 64)) -> Image.Image:
    """Red, green, blue and white quarters: every turn and mirror moves a colour to another corner."""
    w, h = size
    img = Image.new("RGB", size, (255, 0, 0))
    img.paste((0, 200, 0), (w // 2, 0, w, h // 2))
    img.paste((0, 0, 255), (0, h // 2, w // 2, h))
    img.paste((255, 255, 255), (w // 2, h // 2, w, h))
    return img


def pillow_pixels(path: Path, pre: ImagePreprocess = PRE) -> np.ndarray:
    picture = read_image(path, target_size=max(pre.size)).items[0].image
    return pre.to_uint8(picture)


def decode_all(paths: list[Path], decoder_fallback=None, config: WorkerConfig = CONFIG):
    jobs = [DecodeJob(str(p), "image", READER) for p in paths]
    fallback = decoder_fallback or InlineDecoder(config)
    with BatchJpegDecoder(config, DEVICE, fallback, max_ahead=64, batch_files=4) as decoder:
        outcomes = [o for o in decoder.run(jobs) if o is not None]
    return {o.job.path: o for o in outcomes}, decoder


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_as_pillow_does(tmp_path, orientation):
    path = write_image(
        tmp_path / f"o{orientation}.jpg",
        four_corners(),
        exif=make_exif(orientation=orientation),
        quality=95,
    )
    outcomes, decoder = decode_all([path])
    got = outcomes[str(path)]
    assert isinstance(got, Decoded) and decoder.on_device == 1
    pixels = got.items[0].pixels.cpu().numpy()
    want = pillow_pixels(path)
    # JPEG's blocks at the colour edges differ between decoders; the corners must not
    assert np.abs(pixels.astype(int) - want.astype(int)).mean() < 3
    assert (got.meta["width"], got.meta["height"]) == (
        read_image(path).meta["width"],
        read_image(path).meta["height"],
    )


def test_progressive_and_restart_interval_jpegs_decode_on_the_device_as_pillow_does(tmp_path):
    """Progressive scans and restart markers, as phones and web exports write them: decoded on
    the device (where nvjpeg takes them) with Pillow's pixels, never refused or half-decoded."""
    scene = Image.effect_noise((320, 240), 50).convert("RGB").filter(ImageFilter.GaussianBlur(2))
    scene.paste(four_corners((160, 120)), (80, 60))
    progressive = write_image(tmp_path / "progressive.jpg", scene, quality=90, progressive=True)
    restarts = write_image(tmp_path / "restarts.jpg", scene, quality=90, restart_marker_blocks=4)
    subsampled = write_image(tmp_path / "420.jpg", scene, quality=75, subsampling=2)
    paths = [progressive, restarts, subsampled]
    assert Image.open(progressive).info.get("progressive") and b"\xff\xdd" in restarts.read_bytes()
    outcomes, decoder = decode_all(paths)
    assert decoder.on_device == 3 and decoder.by_pillow == 0
    for p in paths:
        pixels = outcomes[str(p)].items[0].pixels.cpu().numpy().astype(int)
        assert np.abs(pixels - pillow_pixels(p).astype(int)).mean() < 3, p.name


def test_torchcodec_decodes_and_torchvision_takes_over_where_it_is_missing(tmp_path, monkeypatch):
    """TorchCodec's decoder where it is installed (setup installs it), torchvision's deprecated
    one where it is not or cannot load: the same pixels and the same refusals either way."""
    import sys

    from indexer import jpeg_batch

    scene = Image.effect_noise((200, 150), 40).convert("RGB").filter(ImageFilter.GaussianBlur(2))
    paths = [
        write_image(tmp_path / "scene.jpg", scene, quality=90),
        write_image(tmp_path / "grey.jpg", four_corners().convert("L"), quality=95),
        write_image(tmp_path / "turned.jpg", four_corners(), exif=make_exif(orientation=6), quality=95),
        write_image(tmp_path / "upside.jpg", four_corners(), exif=make_exif(orientation=3), quality=95),
        write_truncated_jpeg(tmp_path / "truncated.jpg"),
    ]
    backend = jpeg_batch.jpeg_backend(DEVICE)
    if DEVICE != "cpu" and backend.name != "torchcodec":  # e.g. a device machine it was not sent to
        pytest.skip(f"TorchCodec does not decode on {DEVICE} here; torchvision's runs every other test")
    assert backend.name == "torchcodec" and backend.turns_by_exif  # setup installs it
    by_backend = {"torchcodec": decode_all(paths)}
    jpeg_batch.jpeg_backend.cache_clear()
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # its import now fails
    try:
        fallback = jpeg_batch.jpeg_backend(DEVICE)
        assert fallback.name == "torchvision" and not fallback.turns_by_exif
        by_backend["torchvision"] = decode_all(paths)
    finally:
        jpeg_batch.jpeg_backend.cache_clear()
    (codec, codec_decoder), (vision, vision_decoder) = by_backend.values()
    assert codec_decoder.on_device == vision_decoder.on_device == 4
    assert codec_decoder.by_pillow == vision_decoder.by_pillow == 1  # the truncated one, refused
    for p in paths[:4]:  # turned once, by whichever does it, as Pillow turns them
        a, b = (o[str(p)].items[0].pixels.cpu().numpy().astype(int) for o in (codec, vision))
        assert np.abs(a - b).max() <= 1, p.name
        assert np.abs(a - pillow_pixels(p).astype(int)).mean() < 3, p.name
    assert codec[str(paths[4])].reason == vision[str(paths[4])].reason


def test_jpegs_go_to_the_fallback_when_no_decoder_works_on_the_device(tmp_path, monkeypatch, caplog):
    """A device where neither TorchCodec nor torchvision decodes (a CPU-only build beside a GPU):
    one warning, and every JPEG decoded by the fallback, none lost."""
    import sys

    from indexer import jpeg_batch

    def refuses(encoded, device):
        raise RuntimeError("not compiled with nvJPEG support")

    paths = [tmp_path / f"{i}.jpg" for i in range(3)]
    for p in paths:
        p.write_bytes(jpeg_bytes((64, 48)))
    jpeg_batch.jpeg_backend.cache_clear()
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    monkeypatch.setattr(jpeg_batch, "_torchvision_decode", refuses)
    try:
        with caplog.at_level("WARNING", logger="indexer.jpeg_batch"):
            outcomes, decoder = decode_all(paths)
    finally:
        jpeg_batch.jpeg_backend.cache_clear()
    assert decoder.backend is None and decoder.on_device == 0 and decoder.by_pillow == 0
    assert all(isinstance(outcomes[str(p)], Decoded) for p in paths)
    assert "no JPEG decoder works" in caplog.text


def test_orient_matches_pillow_transpose_exactly():
    img = four_corners((6, 4))
    tensor = torch.from_numpy(np.array(img)).permute(2, 0, 1)
    from PIL import ImageOps

    for orientation in range(1, 9):
        exif = img.getexif()
        exif[0x0112] = orientation
        img.info["exif"] = exif.tobytes()
        want = np.asarray(ImageOps.exif_transpose(img.copy()))
        got = _orient(tensor, orientation).permute(1, 2, 0).numpy()
        assert np.array_equal(got, want), orientation


def test_metadata_hash_and_letterbox_match_the_pillow_path(tmp_path):
    taken = datetime(2021, 7, 4, 12, 30, 0)
    exif = make_exif(taken_at=taken, make="Canon", model="EOS R5", gps=(48.85, 2.35))
    scene = Image.effect_noise((300, 200), 60).convert("RGB").filter(ImageFilter.GaussianBlur(3))
    path = write_image(tmp_path / "photo.jpg", scene, exif=exif)
    portrait = write_image(tmp_path / "portrait.JPEG", four_corners((40, 120)), quality=95)
    grey = write_image(tmp_path / "grey.jpg", four_corners().convert("L"), quality=95)
    outcomes, decoder = decode_all([path, portrait, grey])
    assert decoder.on_device == 3 and decoder.by_pillow == 0
    pillow = {
        str(p): InlineDecoder(CONFIG).run([DecodeJob(str(p), "image", READER)])
        for p in (path, portrait, grey)
    }
    for key, outcome in outcomes.items():
        reference = next(pillow[key])
        assert outcome.content_hash == reference.content_hash
        assert outcome.meta == reference.meta
        diff = np.abs(
            outcome.items[0].pixels.cpu().numpy().astype(int) - reference.items[0].pixels.astype(int)
        )
        assert diff.mean() < 3, key
    assert (
        outcomes[str(path)].meta["taken_at"] == taken
        and outcomes[str(path)].meta["camera"] == "Canon EOS R5"
    )


def test_files_the_device_cannot_take_go_to_pillow_or_are_skipped_with_pillows_reason(tmp_path):
    good = [tmp_path / f"ok{i}.jpg" for i in range(5)]
    for i, p in enumerate(good):
        p.write_bytes(jpeg_bytes((80 + i, 60)))
    truncated = write_truncated_jpeg(tmp_path / "truncated.jpg")  # in a batch with good ones
    cmyk = write_image(tmp_path / "cmyk.jpg", four_corners().convert("CMYK"), quality=95)
    png_named_jpg = write_image(tmp_path / "png.jpg", four_corners(), format="PNG")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    paths = [*good[:2], truncated, *good[2:], cmyk, png_named_jpg, empty, text]
    outcomes, decoder = decode_all(paths)
    assert decoder.on_device == 5  # the good ones, although a bad one shared their batch
    assert decoder.by_pillow == 3  # the truncated one (refused), CMYK, and the PNG
    for p in (cmyk, png_named_jpg):
        assert isinstance(outcomes[str(p)], Decoded)
        assert (
            np.abs(
                outcomes[str(p)].items[0].pixels.astype(int) - pillow_pixels(p).astype(int)
            ).max()
            == 0
        )
    reasons = {Path(k).name: o.reason for k, o in outcomes.items() if isinstance(o, Failed)}
    reference = {
        p.name: next(InlineDecoder(CONFIG).run([DecodeJob(str(p), "image", READER)])).reason
        for p in (truncated, empty, text)
    }
    assert reasons == reference
    assert "truncated" in reasons["truncated.jpg"] and reasons["empty.jpg"] == "empty file"


def test_other_files_go_to_the_worker_processes(tmp_path):
    jpg = tmp_path / "a.jpg"
    jpg.write_bytes(jpeg_bytes((64, 48)))
    png = write_image(tmp_path / "b.png", four_corners())
    with ProcessDecoder(CONFIG, 1, 64) as workers:
        outcomes, decoder = decode_all([jpg, png], decoder_fallback=workers)
    assert set(outcomes) == {str(jpg), str(png)} and decoder.on_device == 1
    assert isinstance(outcomes[str(png)].items[0].pixels, np.ndarray)  # from a worker process


def test_fit_tensors_letterboxes_like_pillow():
    for size in ((300, 200), (50, 400), (64, 64), (1, 90), (640, 480)):
        img = Image.effect_noise(size, 30).convert("RGB")
        tensor = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
        for pre in (PRE, ImagePreprocess((64, 64), PRE.mean, PRE.std, mode="squash")):
            got = pre.fit_tensors([tensor, tensor])
            want = pre.to_uint8(img)
            assert got.shape == (2, 64, 64, 3) and got.dtype == torch.uint8
            assert np.array_equal(got[0].numpy(), got[1].numpy())
            # the padding is exactly the fill colour, where Pillow puts it
            pad = np.all(want == np.asarray(pre.fill, np.uint8), axis=-1)
            assert np.all(got[0].numpy()[pad.all(axis=1)] == pre.fill) or pre.mode == "squash"
            assert np.abs(got[0].numpy().astype(int) - want.astype(int)).mean() < 4, (
                size,
                pre.mode,
            )


def test_stack_uint8_mixes_device_tensors_and_arrays():
    a = np.full((4, 4, 3), 7, np.uint8)
    b = torch.full((4, 4, 3), 9, dtype=torch.uint8)
    assert isinstance(stack_uint8([a, a]), np.ndarray)
    mixed = stack_uint8([a, b, a])
    assert isinstance(mixed, torch.Tensor) and mixed.shape == (3, 4, 4, 3)
    assert mixed[:, 0, 0, 0].tolist() == [7, 9, 7]


def test_an_index_run_with_jpegs_on_the_device_stores_what_pillow_would(tmp_path):
    photos = write_photo_folder(tmp_path / "photos", 16, seed=3)  # captioned scenes, JPEG and PNG
    for i, path in enumerate(sorted(photos.glob("*.jpg"))[:8]):  # turned, as cameras write them
        write_image(
            path, Image.open(path).convert("RGB"), exif=make_exif(orientation=1 + i), quality=92
        )
    write_truncated_jpeg(photos / "broken.jpg")
    (photos / "note.txt").write_text("a passage about lighthouses")
    jpegs = len(list(photos.glob("*.jpg"))) - 1
    stored, hits = {}, {}
    for choice in ("device", "pillow"):
        home = tmp_path / choice
        with Engine(home=home, model="tiny", device=DEVICE) as engine:
            summary = engine.index([photos], options=IndexOptions(workers=1, jpeg_decoder=choice))
            hits[choice] = [
                Path(h.path).name for h in engine.search("a red circle", 5, group=False)
            ]
        assert_index_matches_catalog(home)
        assert summary.new == 17 and [Path(s.path).name for s in summary.skipped] == ["broken.jpg"]
        assert summary.device_decoded == (jpegs if choice == "device" else 0)
        with Collection(home, create=False) as collection:
            ids, vectors = collection.catalog.vectors_for(collection.catalog.item_ids())
            records = collection.catalog.items_by_ids(ids)
            stored[choice] = {
                Path(r.path).name: (v, r.asset.width, r.asset.height, r.asset.content_hash)
                for r, v in zip(records, vectors, strict=True)
            }
    assert stored["device"].keys() == stored["pillow"].keys() and jpegs >= 8
    names = sorted(stored["pillow"])
    pillow = np.stack([stored["pillow"][n][0] for n in names])
    for name, (vector, *meta) in stored["device"].items():
        assert tuple(meta) == stored["pillow"][name][1:], name
        similarity = pillow @ vector
        assert names[int(similarity.argmax())] == name and similarity.max() > 0.98, name
    assert hits["device"][:3] == hits["pillow"][:3]


def test_jpeg_decoder_choice():
    assert decodes_jpegs_on_device("auto", "cuda:1") and not decodes_jpegs_on_device("auto", "cpu")
    assert decodes_jpegs_on_device("device", "cpu") and not decodes_jpegs_on_device(
        "pillow", "cuda"
    )
    with pytest.raises(ConfigError, match="jpeg_decoder"):
        IndexOptions(jpeg_decoder="nvjpeg")


def test_a_closed_decoder_stops_its_thread(tmp_path):
    paths = []
    for i in range(40):
        p = tmp_path / f"{i}.jpg"
        p.write_bytes(jpeg_bytes((64, 48)))
        paths.append(p)
    jobs = [DecodeJob(str(p), "image", READER) for p in paths]
    decoder = BatchJpegDecoder(CONFIG, DEVICE, InlineDecoder(CONFIG), max_ahead=2, batch_files=4)
    outcomes = decoder.run(jobs)
    first = next(o for o in outcomes if o is not None)
    assert isinstance(first, Decoded)
    decoder.close()  # with the outbox full and most files not decoded
    assert decoder._thread is not None and not decoder._thread.is_alive()
    assert decoder.on_device < 40


def test_io_bytes_header_is_none_for_other_formats():
    from indexer.sources.image import read_jpeg_header

    buf = io.BytesIO()
    four_corners().save(buf, "PNG")
    assert read_jpeg_header(buf.getvalue(), "x.jpg") is None
    header = read_jpeg_header(jpeg_bytes((30, 20)), "y.jpg")
    assert header is not None and header.mode == "RGB" and header.orientation == 1


def test_an_unforeseen_header_error_hands_the_file_to_pillow(tmp_path, monkeypatch):
    import indexer.jpeg_batch as jpeg_batch

    good, odd = tmp_path / "good.jpg", tmp_path / "odd.jpg"
    good.write_bytes(jpeg_bytes((64, 48)))
    odd.write_bytes(jpeg_bytes((48, 64)))
    real = jpeg_batch.read_jpeg_file

    def flaky(path, limits):
        if Path(path).name == "odd.jpg":
            raise RuntimeError("a library bug")
        return real(path, limits)

    monkeypatch.setattr(jpeg_batch, "read_jpeg_file", flaky)
    outcomes, decoder = decode_all([good, odd])
    assert all(isinstance(o, Decoded) for o in outcomes.values())
    assert (decoder.on_device, decoder.by_pillow) == (1, 1)
