"""Letterbox preprocessing keeps the edges of non-square pictures and survives worker processes."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from PIL import Image

from mmsearch.errors import ConfigError
from mmsearch.models.preprocess import ImagePreprocess, to_rgb

MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP, as open_clip ships them
STD = (0.26862954, 0.26130258, 0.27577711)
RED, BLUE, GREY = (255, 0, 0), (0, 0, 255), (128, 128, 128)


def _pp(mode: str = "letterbox") -> ImagePreprocess:
    return ImagePreprocess(size=(64, 64), mean=MEAN, std=STD, mode=mode)


def _edges(width: int, height: int) -> Image.Image:
    """Grey picture with a red block at its first edge and a blue one at its last edge."""
    image = Image.new("RGB", (width, height), GREY)
    if width >= height:
        image.paste(RED, (0, 0, 16, height))
        image.paste(BLUE, (width - 16, 0, width, height))
    else:
        image.paste(RED, (0, 0, width, 16))
        image.paste(BLUE, (0, height - 16, width, height))
    return image


def _rgb(tensor) -> np.ndarray:
    """Undo normalisation: (3, H, W) tensor -> (H, W, 3) in 0..1."""
    array = np.asarray(tensor).transpose(1, 2, 0)
    return array * np.asarray(STD) + np.asarray(MEAN)


def _count(rgb: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((np.abs(rgb - np.asarray(colour) / 255.0).max(axis=2) < 0.1).sum())


@pytest.mark.parametrize("mode", ["letterbox", "squash"])
@pytest.mark.parametrize(("width", "height"), [(256, 64), (64, 256), (300, 200)])
def test_objects_at_the_edges_survive(mode: str, width: int, height: int):
    rgb = _rgb(_pp(mode)(_edges(width, height)))
    assert rgb.shape == (64, 64, 3)
    assert _count(rgb, RED) > 0 and _count(rgb, BLUE) > 0


def test_centre_crop_would_have_lost_them():
    """The reason for letterboxing: open_clip's default eval transform drops both blocks."""
    import open_clip

    crop = open_clip.image_transform(64, is_train=False, mean=MEAN, std=STD)
    rgb = _rgb(crop(_edges(256, 64)))
    assert _count(rgb, RED) == 0 and _count(rgb, BLUE) == 0


def test_letterbox_places_the_picture_and_pads_with_zero():
    tensor = _pp()(_edges(256, 64))  # scaled to 64 x 16, centred vertically
    assert tensor.dtype.is_floating_point and tuple(tensor.shape) == (3, 64, 64)
    rgb = _rgb(tensor)
    assert _count(rgb[24:40, :4], RED) == 16 * 4
    assert _count(rgb[24:40, 60:], BLUE) == 16 * 4
    pad = np.asarray(tensor)[:, :20, :]
    np.testing.assert_allclose(pad, 0.0, atol=0.01)  # the mean colour normalises to zero


@pytest.mark.parametrize(
    "image",
    [
        Image.new("L", (40, 20), 200),
        Image.new("1", (40, 20), 1),
        Image.new("CMYK", (40, 20), (0, 255, 255, 0)),
        Image.new("RGBA", (40, 20), (255, 0, 0, 255)),
        Image.new("LA", (40, 20), (30, 255)),
        Image.new("P", (40, 20), 3),
        Image.new("F", (40, 20), 0.5),
        Image.fromarray(np.full((20, 40), 65535, dtype=np.uint16)),
        Image.new("I", (40, 20), 100000),
    ],
    ids=lambda image: image.mode,
)
def test_every_pil_mode_becomes_a_normalised_rgb_tensor(image: Image.Image):
    tensor = _pp()(image)
    assert tuple(tensor.shape) == (3, 64, 64) and str(tensor.dtype) == "torch.float32"
    assert np.isfinite(np.asarray(tensor)).all()


def test_transparency_shows_the_background_not_black():
    clear = Image.new("RGBA", (10, 10), (0, 0, 0, 0))
    assert to_rgb(clear, background=(1, 2, 3)).getpixel((5, 5)) == (1, 2, 3)
    palette = Image.new("P", (10, 10), 0)
    palette.info["transparency"] = 0
    assert to_rgb(palette, background=(9, 9, 9)).getpixel((0, 0)) == (9, 9, 9)
    assert _count(_rgb(_pp()(clear)), (0, 0, 0)) == 0


def test_sixteen_bit_white_stays_white():
    white = Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16))
    assert to_rgb(white).getpixel((0, 0)) == (255, 255, 255)


def test_bad_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="letterbox"):
        ImagePreprocess(size=(64, 64), mean=MEAN, std=STD, mode="crop")


def test_preprocess_pickles_into_worker_processes():
    pp = _pp()
    clone = pickle.loads(pickle.dumps(pp))
    picture = _edges(120, 80)
    assert clone == pp
    np.testing.assert_array_equal(np.asarray(clone(picture)), np.asarray(pp(picture)))
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        (array,) = pool.map(pp.to_array, [picture])
    np.testing.assert_allclose(array, pp.to_array(picture), atol=1e-6)


def test_uint8_pixels_normalise_to_the_same_tensor():
    pp, picture = _pp(), _edges(100, 70)
    pixels = pp.to_uint8(picture)
    assert pixels.dtype == np.uint8 and pixels.shape == (64, 64, 3)
    normalised = (pixels / 255.0 - np.asarray(MEAN)) / np.asarray(STD)
    np.testing.assert_allclose(normalised.transpose(2, 0, 1), pp.to_array(picture), atol=1e-5)
