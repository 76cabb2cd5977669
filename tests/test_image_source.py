"""The image source decodes every common format to RGB, reads EXIF, and rejects bad files with a reason."""

from __future__ import annotations

import io
import os
import sys
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from fixtures_media import (
    jpeg_bytes,
    make_exif,
    quadrant_image,
    run_unprivileged,
    unprivileged_tmp_dir,
    write_animated_gif,
    write_bad_corpus,
    write_image,
    write_png_header_only,
)
from PIL import Image, ImageFile, JpegImagePlugin, features

from indexer import sources
from indexer.sources import image as image_source
from indexer.sources.base import ASSET_IMAGE, IMAGE
from indexer.sources.image import ImageLimits, parse_exif_datetime, read_image
from mmsearch.errors import DecodeError

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def pixel(img: Image.Image, xy: tuple[int, int]) -> tuple[int, int, int]:
    return img.getpixel(xy)  # type: ignore[return-value]


def close(a, b, tol: int = 40) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def only_image(path: Path, **kwargs) -> Image.Image:
    result = read_image(path, **kwargs)
    assert result.asset_kind == ASSET_IMAGE
    assert [i.kind for i in result.items] == [IMAGE]
    img = result.items[0].image
    assert img is not None and img.mode == "RGB"
    return img


# ---- formats and modes -----------------------------------------------------------------------

FORMATS = ["jpg", "png", "webp", "bmp", "tif", "gif"]
if features.check("avif"):
    FORMATS.append("avif")


@pytest.mark.parametrize("ext", FORMATS)
def test_each_format_decodes_to_rgb_with_its_size(tmp_path: Path, ext: str) -> None:
    path = write_image(tmp_path / f"pic.{ext}", quadrant_image((64, 32)))
    result = read_image(path)
    img = result.items[0].image
    assert img.mode == "RGB" and img.size == (64, 32)
    assert result.meta["width"] == 64 and result.meta["height"] == 32
    assert close(pixel(img, (8, 16)), RED) and close(pixel(img, (56, 16)), BLUE)


def test_every_image_extension_is_registered_to_read_image() -> None:
    for ext in (".jpg", ".JPEG", ".png", ".webp", ".gif", ".bmp", ".tiff", ".heic"):
        spec = sources.spec_for(f"x{ext}")
        assert spec is not None and spec.asset_kind == ASSET_IMAGE, ext
        assert sources.load_reader(spec.reader) is read_image
    assert ".heic" in sources.extensions(ASSET_IMAGE)
    assert sources.spec_for("notes.xyz") is None


def test_registering_an_extension_twice_for_another_reader_is_refused() -> None:
    with pytest.raises(ValueError, match="already registered"):
        sources.register([".jpg"], "video", "indexer.sources.video:read_video")


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    path = write_animated_gif(tmp_path / "anim.gif", [(0, 200, 0), (200, 0, 0), (0, 0, 200)])
    assert close(pixel(only_image(path), (5, 5)), (0, 200, 0), tol=10)


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (20, 10), (0, 0, 0, 0))
    rgba.paste((255, 0, 0, 255), (10, 0, 20, 10))
    img = only_image(write_image(tmp_path / "alpha.png", rgba))
    assert pixel(img, (2, 5)) == WHITE and pixel(img, (15, 5)) == RED

    la = Image.new("LA", (8, 8), (0, 0))
    assert pixel(only_image(write_image(tmp_path / "la.png", la)), (4, 4)) == WHITE

    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (4, 0, 8, 8))
    path = write_image(tmp_path / "transparent.gif", palette, transparency=0)
    img = only_image(path)
    assert pixel(img, (1, 1)) == WHITE and pixel(img, (6, 1)) == RED


def test_grey_cmyk_and_bilevel_become_rgb(tmp_path: Path) -> None:
    grey = only_image(write_image(tmp_path / "grey.png", Image.new("L", (8, 8), 128)))
    assert pixel(grey, (0, 0)) == (128, 128, 128)
    cmyk = only_image(
        write_image(tmp_path / "cmyk.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)))
    )
    assert close(pixel(cmyk, (4, 4)), RED)
    bilevel = only_image(write_image(tmp_path / "bw.bmp", Image.new("1", (8, 8), 1)))
    assert pixel(bilevel, (0, 0)) == WHITE


def test_sixteen_bit_grey_keeps_its_tones_instead_of_clipping_to_white(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(0, 65535, 64, dtype=np.uint16), (8, 1))
    path = tmp_path / "deep.png"
    Image.fromarray(ramp).save(path)
    img = only_image(path)
    left, mid, right = pixel(img, (0, 4))[0], pixel(img, (32, 4))[0], pixel(img, (63, 4))[0]
    assert left < 10 and 110 < mid < 145 and right > 245


def test_returned_image_does_not_need_the_file(tmp_path: Path) -> None:
    path = write_image(tmp_path / "gone.png")
    img = only_image(path)
    path.unlink()
    assert img.copy().size == (64, 32)


# ---- orientation and metadata ----------------------------------------------------------------


@pytest.mark.parametrize("ext", ["jpg", "tif"])
def test_exif_orientation_6_rotates_pixels_and_reported_size(tmp_path: Path, ext: str) -> None:
    # Stored 64x32, left red / right blue; orientation 6 means "rotate 90 degrees clockwise".
    path = write_image(
        tmp_path / f"rot.{ext}", quadrant_image((64, 32)), exif=make_exif(orientation=6)
    )
    result = read_image(path)
    img = result.items[0].image
    assert img.size == (32, 64)
    assert (result.meta["width"], result.meta["height"]) == (32, 64)
    assert close(pixel(img, (16, 5)), RED) and close(pixel(img, (16, 58)), BLUE)


@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
def test_exif_date_camera_and_gps(tmp_path: Path, ext: str) -> None:
    exif = make_exif(
        taken_at=datetime(2021, 7, 4, 15, 30, 5),
        make="FUJIFILM",
        model="X-T4",
        gps=(-33.8568, -151.2153),
    )
    meta = read_image(write_image(tmp_path / f"exif.{ext}", exif=exif)).meta
    assert meta["taken_at"] == datetime(2021, 7, 4, 15, 30, 5)
    assert meta["camera"] == "FUJIFILM X-T4"
    assert meta["gps_lat"] == pytest.approx(-33.8568, abs=1e-4)
    assert meta["gps_lon"] == pytest.approx(-151.2153, abs=1e-4)


def test_camera_make_is_not_repeated_and_north_east_are_positive(tmp_path: Path) -> None:
    exif = make_exif(make="Canon", model="Canon EOS 5D Mark IV", gps=(48.8584, 2.2945))
    meta = read_image(write_image(tmp_path / "paris.jpg", exif=exif)).meta
    assert meta["camera"] == "Canon EOS 5D Mark IV"
    assert meta["gps_lat"] == pytest.approx(48.8584, abs=1e-4)
    assert meta["gps_lon"] == pytest.approx(2.2945, abs=1e-4)


def test_no_exif_means_no_metadata_keys_beyond_size(tmp_path: Path) -> None:
    assert read_image(write_image(tmp_path / "plain.jpg")).meta == {"width": 64, "height": 32}


def test_blank_exif_date_is_ignored(tmp_path: Path) -> None:
    exif = make_exif(make="Nikon")
    exif.get_ifd(0x8769)[0x9003] = "0000:00:00 00:00:00"
    meta = read_image(write_image(tmp_path / "noclock.jpg", exif=exif)).meta
    assert "taken_at" not in meta and meta["camera"] == "Nikon"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2020:01:02 03:04:05", datetime(2020, 1, 2, 3, 4, 5)),
        ("2020:01:02 03:04:05\x00", datetime(2020, 1, 2, 3, 4, 5)),
        (b"2020:01:02 03:04:05", datetime(2020, 1, 2, 3, 4, 5)),
        ("2020-01-02 03:04:05", datetime(2020, 1, 2, 3, 4, 5)),
        ("2020:01:02", datetime(2020, 1, 2)),
        ("    :  :     :  :  ", None),
        ("garbage", None),
        (None, None),
    ],
)
def test_parse_exif_datetime(raw, expected) -> None:
    assert parse_exif_datetime(raw) == expected


# ---- reduced decoding ------------------------------------------------------------------------


def test_target_size_shrinks_but_keeps_twice_the_encoder_side(tmp_path: Path) -> None:
    big = quadrant_image((2000, 1500))
    for ext in ("jpg", "png"):
        result = read_image(write_image(tmp_path / f"big.{ext}", big), target_size=224)
        img = result.items[0].image
        assert max(img.size) == 448 and img.size == (448, 336), ext
        assert (result.meta["width"], result.meta["height"]) == (2000, 1500)
        assert close(pixel(img, (10, 10)), RED) and close(pixel(img, (440, 10)), BLUE)


def test_jpeg_draft_is_used_when_a_target_is_given(tmp_path: Path, monkeypatch) -> None:
    requested, decoded = [], []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        requested.append(size)
        result = original(self, mode, size)
        decoded.append(self.size)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    only_image(write_image(tmp_path / "d.jpg", quadrant_image((1200, 900))), target_size=100)
    assert requested == [(100, 100)]
    assert decoded == [(150, 113)]  # DCT scaling 1/8: both sides still >= the target


# ---- refusals --------------------------------------------------------------------------------


def reason(path: Path, **kwargs) -> str:
    with pytest.raises(DecodeError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert str(path) in message or path.name in message, message
    return message


def test_bad_input_corpus_is_rejected_with_short_reasons(tmp_path: Path) -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # otherwise truncation goes unnoticed
    corpus = write_bad_corpus(tmp_path / "bad")
    assert "empty file" in reason(corpus["empty"])
    assert "truncated or corrupt image" in reason(corpus["truncated"])
    assert "not an image" in reason(corpus["not_an_image"])
    assert "image too large: 900 megapixels > Pillow's limit 179" in reason(corpus["bomb"])


def test_pixel_limit_is_configurable(tmp_path: Path) -> None:
    path = write_image(tmp_path / "small.png", quadrant_image((64, 32)))
    message = reason(path, limits=ImageLimits(max_pixels=1000))
    assert "image too large: 0.00205 megapixels > limit 0.001" in message
    assert only_image(path, limits=ImageLimits(max_pixels=2048)).size == (64, 32)


def test_header_over_our_limit_is_refused_before_decoding(tmp_path: Path) -> None:
    # 120 MP: above our 100 MP default but under Pillow's own hard stop (~179 MP).
    path = write_png_header_only(tmp_path / "claims.png", 12_000, 10_000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        message = reason(path)
    assert "image too large: 120 megapixels > limit 100" in message
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_our_limit_not_pillows_warning_decides(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # warns above 1000, raises above 2000
    warned = write_image(tmp_path / "warned.png", quadrant_image((40, 40)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert only_image(warned).size == (40, 40)
    bomb = write_image(tmp_path / "bomb.png", quadrant_image((64, 64)))
    assert "image too large" in reason(bomb)


def test_byte_limit_refuses_big_files_unopened(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_bytes())
    monkeypatch.setattr(image_source, "open", _must_not_open, raising=False)
    assert "file too large" in reason(path, limits=ImageLimits(max_bytes=1000))


def _must_not_open(*args, **kwargs):
    raise AssertionError("the file should have been refused before opening")


def test_permission_denied_at_open_is_reported(tmp_path: Path, monkeypatch) -> None:
    path = write_image(tmp_path / "locked.jpg")

    def deny(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(image_source, "open", deny, raising=False)
    assert "permission denied" in reason(path)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork to drop privileges")
def test_unreadable_file_for_real() -> None:
    with unprivileged_tmp_dir() as folder:
        path = write_image(folder / "locked.jpg")
        os.chmod(path, 0)

        def attempt() -> str:
            try:
                read_image(path)
            except DecodeError as exc:
                return str(exc)
            return "decoded"

        assert "permission denied" in run_unprivileged(attempt)


def test_folder_with_an_image_name_is_not_an_image(tmp_path: Path) -> None:
    folder = tmp_path / "album.jpg"
    folder.mkdir()
    with pytest.raises(DecodeError, match="folder"):
        read_image(folder)


def test_missing_file_is_a_decode_error(tmp_path: Path) -> None:
    assert "not found" in reason(tmp_path / "nowhere.jpg")


def test_heic_without_pillow_heif_says_what_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # import now raises ImportError
    monkeypatch.setattr(image_source, "_heif_registered", None)
    path = tmp_path / "IMG_0001.HEIC"
    buf = io.BytesIO()
    quadrant_image().save(buf, "PNG")
    path.write_bytes(buf.getvalue())
    assert "pip install 'mmsearch[heic]'" in reason(path)
