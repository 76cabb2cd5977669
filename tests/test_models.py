"""Encoder registry, loaders and Encoder, on the real tiny architecture; only the network is faked."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mmsearch.errors import ConfigError, ModelError, ModelUnavailableError
from mmsearch.models import (
    DEFAULT_MODEL,
    TINY,
    Encoder,
    add_model_config,
    build_openclip,
    list_models,
    load_encoder,
    openclip_loader,
    resolve,
    save_tiny_weights,
)
from mmsearch.models.device import resolve_device, resolve_precision
from mmsearch.models.openclip_loader import expected_preprocess
from mmsearch.models.preprocess import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from mmsearch.models.registry import CONFIG_DIR

TEXTS = ["a red circle on the left", "two blue stars", "a small green triangle at the top"]
FAKE_REPO = "mmsearch/test-tiny"


def _picture(colour: tuple[int, int, int], size: tuple[int, int] = (96, 48)) -> Image.Image:
    image = Image.new("RGB", size, (128, 128, 128))
    image.paste(colour, (10, 10, 40, 40))
    return image


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A randomly initialised tiny model saved as safetensors, plus its reference embeddings."""
    torch.manual_seed(0)
    loaded = build_openclip(TINY, pretrained=False)
    model = loaded.model.eval()
    path = save_tiny_weights(model, tmp_path_factory.mktemp("tiny") / "tiny.safetensors")
    with torch.no_grad():
        texts = F.normalize(model.encode_text(loaded.tokenizer(TEXTS)), dim=-1).numpy()
        pixels = torch.stack([loaded.preprocess(_picture((255, 0, 0)))])
        images = F.normalize(model.encode_image(pixels), dim=-1).numpy()
    return {"path": path, "texts": texts, "images": images}


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "open_clip"


@pytest.fixture
def bundled_tiny(tiny_checkpoint: dict, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the bundled tiny weights at the test checkpoint (real ones may not exist yet)."""
    monkeypatch.setattr(openclip_loader, "TINY_WEIGHTS", tiny_checkpoint["path"])
    return tiny_checkpoint["path"]


class FakeHub:
    """Stands in for huggingface_hub.hf_hub_download: serves files from a dict, or raises."""

    def __init__(self, files: dict[str, Path] | None = None, error: Exception | None = None):
        self.files = files or {}
        self.error = error
        self.calls: list[dict] = []

    def __call__(self, repo_id: str, filename: str, revision=None, cache_dir=None, **_):
        self.calls.append({"repo_id": repo_id, "filename": filename, "cache_dir": cache_dir})
        if self.error is not None:
            raise self.error
        if filename not in self.files:
            raise FileNotFoundError(f"404: {repo_id}/{filename}")
        return str(self.files[filename])


def _offline() -> FakeHub:
    return FakeHub(error=OSError("[Errno -3] Temporary failure in name resolution"))


@pytest.fixture
def fake_tag(monkeypatch: pytest.MonkeyPatch) -> str:
    """Give mmsearch-tiny an OpenCLIP pretrained tag hosted on a (fake) hub repo."""
    tags = {"testtag": open_clip.pretrained._pcfg(hf_hub=f"{FAKE_REPO}/")}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "mmsearch-tiny", tags)
    return "mmsearch-tiny/testtag"


# ---------------------------------------------------------------- registry


def test_import_is_cheap():
    code = "import sys, mmsearch.models; print(sorted({'torch', 'open_clip'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_naming_a_local_checkpoint_or_random_model_imports_neither_torch_nor_open_clip():
    """`mmsearch index` resolves the model name and knows its input size before it loads the
    model, so decoding can start while torch imports."""
    code = (
        "import sys\n"
        "from mmsearch.models import resolve\n"
        "from mmsearch.models.openclip_loader import expected_preprocess\n"
        "for name in ('ViT-B-32@/models/ckpt.pt', 'RN50/random', 'tiny'):\n"
        "    print(name, expected_preprocess(resolve(name)).size)\n"
        "print(sorted({'torch', 'open_clip'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [
        "ViT-B-32@/models/ckpt.pt (224, 224)", "RN50/random (224, 224)", "tiny (64, 64)", "[]",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "name", ["tiny", "tiny-zh", "ViT-B-32-256/random", "RN50/random"]
)
def test_the_expected_input_is_the_built_models(name: str, bundled_tiny: Path):
    expected = expected_preprocess(resolve(name))
    assert expected is not None and expected == build_openclip(name).preprocess


def test_no_input_is_expected_where_the_weights_bring_their_own(tmp_path: Path):
    assert expected_preprocess(resolve(DEFAULT_MODEL)) is None  # a pretrained tag's mean/std
    assert expected_preprocess(resolve(f"local-dir:{tmp_path}")) is None
    assert expected_preprocess(resolve("/models/ckpt.pt")) is None  # its architecture is in the file


def test_the_default_normalisation_is_open_clips():
    assert (OPENAI_DATASET_MEAN, OPENAI_DATASET_STD) == (
        open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "kind", "canonical", "fetcher"),
    [
        ("tiny", "tiny", "tiny", "_fetch_tiny"),
        (DEFAULT_MODEL, "pretrained", DEFAULT_MODEL, "_fetch_pretrained"),
        ("ViT-B-32/LAION2B-S34B-B79K", "pretrained", DEFAULT_MODEL, "_fetch_pretrained"),
        ("ViT-B-32/random", "random", "ViT-B-32/random", "_fetch_random"),
        ("mmsearch-tiny/random", "random", "mmsearch-tiny/random", "_fetch_random"),
        ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "hf-hub", None, "_fetch_hf_hub"),
        ("local-dir:/models/clip", "local-dir", "local-dir:/models/clip", "_fetch_local_dir"),
        ("/models/ckpt.pt", "local-file", "/models/ckpt.pt", "_fetch_local_file"),
        ("ViT-B-32@/models/ckpt.pt", "local-file", "ViT-B-32@/models/ckpt.pt", "_fetch_local_file"),
    ],
)
def test_each_name_form_resolves_to_its_loader(name, kind, canonical, fetcher):
    spec = resolve(name)
    assert spec.kind == kind
    assert spec.name == (canonical or name)
    assert openclip_loader.FETCHERS[spec.kind].__name__ == fetcher


def test_existing_folder_and_file_paths_resolve_locally(tmp_path: Path):
    (tmp_path / "weights.bin").write_bytes(b"x")
    assert resolve(str(tmp_path)).kind == "local-dir"
    spec = resolve(str(tmp_path / "weights.bin"))
    assert (spec.kind, spec.path, spec.arch) == ("local-file", tmp_path / "weights.bin", None)
    assert resolve(f"mmsearch-tiny@{tmp_path / 'weights.bin'}").arch == "mmsearch-tiny"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("ViT-B-32", "ViT-B-32/random"),  # a bare architecture never means random weights
        ("ViT-B-32/no-such-tag", "laion2b_s34b_b79k"),  # lists the known tags
        ("ViT-B-23/openai", "ViT-B-32"),  # suggests the close match
        ("tinny", "tiny"),
        ("hf-hub:just-a-repo", "hf-hub:org/repo"),
        ("", "tiny"),
    ],
)
def test_bad_names_say_what_would_work(name, says):
    with pytest.raises(ModelError) as info:
        resolve(name)
    assert says in str(info.value)


def test_list_models_names_tiny_default_and_custom_architectures():
    names = list_models()
    assert names[0] == TINY
    assert DEFAULT_MODEL in names
    assert "mmsearch-tiny/random" in names
    assert all(resolve(n).kind in ("tiny", "pretrained", "random") for n in names[:5])


def test_add_model_config_registers_an_architecture(tmp_path: Path, tiny_checkpoint: dict):
    config = json.loads((CONFIG_DIR / "mmsearch-tiny.json").read_text())
    config["embed_dim"] = 32
    path = tmp_path / "test-tiny-32.json"
    path.write_text(json.dumps(config))
    assert add_model_config(path) == ["test-tiny-32"]
    assert "test-tiny-32/random" in list_models()
    assert load_encoder("test-tiny-32/random", device="cpu").dim == 32
    # tiny weights are the wrong shape for it: a clear error, not "corrupt file"
    with pytest.raises(ModelError, match="does not fit") as info:
        load_encoder(f"test-tiny-32@{tiny_checkpoint['path']}", device="cpu")
    assert not isinstance(info.value, ModelUnavailableError)


def test_add_model_config_refuses_a_non_architecture(tmp_path: Path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"embed_dim": 8}))
    with pytest.raises(ConfigError, match="vision_cfg"):
        add_model_config(path)


# ---------------------------------------------------------------- tiny and local files


def test_tiny_without_weights_says_how_to_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(openclip_loader, "TINY_WEIGHTS", tmp_path / "missing.safetensors")
    with pytest.raises(ModelUnavailableError, match=r"python -m mmsearch\.train\.tiny"):
        load_encoder(TINY)


def test_tiny_loads_its_weights_and_encodes(bundled_tiny: Path, tiny_checkpoint: dict):
    enc = load_encoder(TINY, device="cpu")
    assert (enc.name, enc.dim, enc.image_size, enc.device) == ("tiny", 128, 64, "cpu")
    texts = enc.encode_texts(TEXTS, batch_size=2)
    assert texts.dtype == np.float32 and texts.shape == (3, 128)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(texts, tiny_checkpoint["texts"], atol=1e-5)
    images = enc.encode_images([_picture((255, 0, 0))])
    np.testing.assert_allclose(images, tiny_checkpoint["images"], atol=1e-5)


def test_image_inputs_agree_across_forms(bundled_tiny: Path):
    enc = load_encoder(TINY, device="cpu")
    pictures = [_picture(c) for c in ((255, 0, 0), (0, 0, 255), (0, 255, 0))]
    from_pil = enc.encode_images(pictures, batch_size=2)
    tensors = [enc.preprocess(p) for p in pictures]
    np.testing.assert_allclose(enc.encode_images(tensors), from_pil, atol=1e-5)
    np.testing.assert_allclose(enc.encode_images(torch.stack(tensors)), from_pil, atol=1e-5)
    arrays = [enc.preprocess.to_array(p) for p in pictures]
    np.testing.assert_allclose(enc.encode_images(arrays, batch_size=1), from_pil, atol=1e-5)
    assert enc.encode_images([]).shape == (0, 128)
    assert enc.encode_texts([]).shape == (0, 128)
    with pytest.raises(ValueError, match="shape"):
        enc.encode_images(torch.zeros(1, 3, 32, 32))


def test_encoder_loads_lazily():
    enc = load_encoder("mmsearch-tiny/random", device="cpu", lazy=True)
    assert not enc.loaded and enc.name == "mmsearch-tiny/random"
    assert enc.encode_texts("one string").shape == (1, 128)
    assert enc.loaded


def test_local_safetensors_knows_its_architecture(tiny_checkpoint: dict):
    enc = load_encoder(str(tiny_checkpoint["path"]), device="cpu")
    assert enc.name == str(tiny_checkpoint["path"])
    np.testing.assert_allclose(enc.encode_texts(TEXTS), tiny_checkpoint["texts"], atol=1e-5)


def test_local_checkpoint_without_architecture_is_refused(tmp_path: Path):
    ckpt = tmp_path / "ckpt.pt"
    torch.save({"state_dict": {}}, ckpt)
    with pytest.raises(ModelError, match=r"ARCH@"):
        load_encoder(str(ckpt))


def test_unreadable_local_checkpoint_is_a_model_error(tmp_path: Path):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot be read") as info:
        load_encoder(f"mmsearch-tiny@{ckpt}", device="cpu")
    assert str(ckpt) in str(info.value)


def test_local_dir_with_open_clip_config(tmp_path: Path, tiny_checkpoint: dict):
    _write_open_clip_folder(tmp_path, tiny_checkpoint["path"])
    enc = load_encoder(f"local-dir:{tmp_path}", device="cpu")
    np.testing.assert_allclose(enc.encode_texts(TEXTS), tiny_checkpoint["texts"], atol=1e-5)


def _write_open_clip_folder(folder: Path, weights: Path) -> Path:
    model_cfg = json.loads((CONFIG_DIR / "mmsearch-tiny.json").read_text())
    config = {"model_cfg": model_cfg, "preprocess_cfg": {"interpolation": "bicubic"}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    (folder / "open_clip_model.safetensors").write_bytes(weights.read_bytes())
    return folder


# ---------------------------------------------------------------- downloads (network faked)


def test_default_model_offline_says_the_ways_out(cache: Path, monkeypatch: pytest.MonkeyPatch):
    hub = _offline()
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", hub)
    with pytest.raises(ModelUnavailableError) as info:
        load_encoder(DEFAULT_MODEL, device="cpu")
    message = str(info.value)
    for needed in (DEFAULT_MODEL, str(cache), "MMSEARCH_CACHE", "--model tiny", "local"):
        assert needed in message
    assert hub.calls and hub.calls[0]["repo_id"] == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


def test_url_download_offline(cache: Path, monkeypatch: pytest.MonkeyPatch):
    tags = {"urltag": open_clip.pretrained._pcfg(url="https://example.invalid/tiny.pt")}
    monkeypatch.setitem(open_clip.pretrained._PRETRAINED, "mmsearch-tiny", tags)

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    with pytest.raises(ModelUnavailableError, match="network is unreachable"):
        load_encoder("mmsearch-tiny/urltag", device="cpu")


def test_pretrained_tag_from_warm_cache(
    cache: Path, fake_tag: str, tiny_checkpoint: dict, monkeypatch: pytest.MonkeyPatch
):
    hub = FakeHub({"open_clip_model.safetensors": tiny_checkpoint["path"]})
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", hub)
    enc = load_encoder(fake_tag, device="cpu")
    assert enc.name == fake_tag
    np.testing.assert_allclose(enc.encode_texts(TEXTS), tiny_checkpoint["texts"], atol=1e-5)
    assert {call["cache_dir"] for call in hub.calls} == {str(cache)}


def test_corrupt_download_names_the_file_to_delete(
    cache: Path, fake_tag: str, tiny_checkpoint: dict, monkeypatch: pytest.MonkeyPatch
):
    cache.mkdir(parents=True)
    truncated = cache / "open_clip_model.safetensors"
    truncated.write_bytes(tiny_checkpoint["path"].read_bytes()[:5000])
    monkeypatch.setattr(
        open_clip.pretrained, "hf_hub_download", FakeHub({truncated.name: truncated})
    )
    with pytest.raises(ModelUnavailableError, match="corrupt") as info:
        load_encoder(fake_tag, device="cpu")
    assert str(truncated) in str(info.value) and "Delete" in str(info.value)


def test_hf_hub_model(
    cache: Path, tmp_path: Path, tiny_checkpoint: dict, monkeypatch: pytest.MonkeyPatch
):
    folder = _write_open_clip_folder(tmp_path, tiny_checkpoint["path"])
    hub = FakeHub({p.name: p for p in folder.iterdir()})
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", hub)
    enc = load_encoder(f"hf-hub:{FAKE_REPO}", device="cpu")
    np.testing.assert_allclose(enc.encode_texts(TEXTS), tiny_checkpoint["texts"], atol=1e-5)
    assert {call["repo_id"] for call in hub.calls} == {FAKE_REPO}


def test_cached_weights_are_read_without_asking_the_hub(
    cache: Path, fake_tag: str, tiny_checkpoint: dict, monkeypatch: pytest.MonkeyPatch
):
    """huggingface_hub, online by default, sends a HEAD request even for a cached file and,
    offline, retries it for ~30 s: the cache is asked first in the hub's offline mode."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs with it set
    modes: list[bool] = []
    hub = FakeHub({"open_clip_model.safetensors": tiny_checkpoint["path"]})

    def record(*args, **kwargs):
        modes.append(constants.HF_HUB_OFFLINE)
        return hub(*args, **kwargs)

    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", record)
    load_encoder(fake_tag, device="cpu").load()
    assert modes == [True] and constants.HF_HUB_OFFLINE is False


def test_offline_machine_fails_after_one_cache_look_and_no_retry(
    cache: Path, monkeypatch: pytest.MonkeyPatch
):
    import socket

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs with it set
    hub, modes = _offline(), []

    def record(*args, **kwargs):
        modes.append(constants.HF_HUB_OFFLINE)
        return hub(*args, **kwargs)

    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", record)

    def no_network(*args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(ModelUnavailableError, match="huggingface.co cannot be reached"):
        load_encoder(DEFAULT_MODEL, device="cpu")
    assert modes and all(modes)  # the cache looks (one per file name); no online attempt


def test_offline_mode_set_by_the_user_is_kept_and_named(
    cache: Path, monkeypatch: pytest.MonkeyPatch
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", _offline())
    with pytest.raises(ModelUnavailableError, match="HF_HUB_OFFLINE is set"):
        load_encoder(DEFAULT_MODEL, device="cpu")
    assert constants.HF_HUB_OFFLINE is True


def test_hf_hub_model_offline(cache: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", _offline())
    with pytest.raises(ModelUnavailableError, match=f"hf-hub:{FAKE_REPO}"):
        load_encoder(f"hf-hub:{FAKE_REPO}", device="cpu")


# ---------------------------------------------------------------- device


def test_auto_device_is_cpu_without_cuda(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision("auto", "cuda:0") == "fp16"
    with pytest.raises(ConfigError, match="--device cpu"):
        resolve_device("cuda")


def test_auto_precision_takes_bf16_or_int8_only_for_a_big_model_on_the_cpu(
    monkeypatch: pytest.MonkeyPatch,
):
    from mmsearch.models import device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", "cpu", params=88_000_000) == "bf16"
    assert resolve_precision("auto", "cpu", params=4_700_000) == "fp32"  # tiny: decoding bound
    assert resolve_precision("auto", "cpu") == "fp32"  # size not known yet
    assert resolve_precision("auto", "cuda", params=88_000_000) == "fp16"
    assert resolve_precision("fp32", "cpu", params=88_000_000) == "fp32"  # forced
    assert resolve_precision("auto", "cpu", params=88_000_000, int8_ok=True) == "bf16"
    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", "cpu", params=88_000_000) == "fp32"  # not a ViT tower
    assert resolve_precision("auto", "cpu", params=88_000_000, int8_ok=True) == "int8"
    assert resolve_precision("auto", "cpu", params=4_700_000, int8_ok=True) == "fp32"
    assert resolve_precision("auto", "cuda", params=88_000_000, int8_ok=True) == "fp16"
    assert resolve_precision("bf16", "cpu", params=88_000_000) == "bf16"  # forced


@pytest.mark.parametrize(
    ("flags", "env", "native"),
    [
        ({"avx2", "amx_bf16", "amx_tile"}, "", True),
        ({"avx512f", "avx512_bf16"}, "", True),
        ({"avx2", "fma"}, "", False),
        (set(), "", False),
        ({"avx2"}, "1", True),
        ({"amx_bf16"}, "0", False),
    ],
)
def test_native_bf16_is_read_from_the_cpu_flags(
    flags: set[str], env: str, native: bool, monkeypatch: pytest.MonkeyPatch
):
    from mmsearch.models import device

    monkeypatch.setattr(device, "cpu_flags", lambda: flags)
    monkeypatch.setenv("MMSEARCH_CPU_BF16", env)
    device.cpu_has_native_bf16.cache_clear()
    try:
        assert device.cpu_has_native_bf16() is native
    finally:
        device.cpu_has_native_bf16.cache_clear()


def test_cpu_flags_come_from_proc_cpuinfo():
    from mmsearch.models.device import cpu_flags

    flags = cpu_flags()
    if Path("/proc/cpuinfo").exists():
        assert {"fpu", "sse2"} <= flags or "fp" in flags  # x86 or ARM names


def test_bf16_on_the_cpu_casts_the_model_and_ranks_like_fp32(bundled_tiny: Path):
    """The cast model (the fast bf16 path) gives float32 unit vectors close to fp32's, with
    and without patch features."""
    from mmsearch.models.patches import encode_with_patches

    fp32 = load_encoder("tiny", device="cpu", precision="fp32")
    bf16 = load_encoder("tiny", device="cpu", precision="bf16")
    assert bf16.precision == "bf16"
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert next(fp32.model.parameters()).dtype == torch.float32
    colours = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (240, 220, 30), (20, 20, 20)]
    pictures = [_picture(c, (64 + 8 * i, 48)) for i, c in enumerate(colours)]
    a, b = fp32.encode_images(pictures), bf16.encode_images(pictures)
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(1).min()) > 0.995
    texts = ["red", "green", "blue", "yellow", "black"]
    ta, tb = fp32.encode_texts(texts), bf16.encode_texts(texts)
    assert float((ta * tb).sum(1).min()) > 0.995
    batch = torch.stack([bf16.preprocess(p) for p in pictures])
    vectors, patches = encode_with_patches(bf16, batch)
    assert vectors.dtype == np.float32 and patches.dtype == np.float16
    assert float((vectors * b).sum(1).min()) > 0.999


def _small_vit() -> openclip_loader.LoadedModel:
    """A small random-init ViT CLIP (the tower kind int8 converts), wrapped like a loaded model."""
    torch.manual_seed(0)
    net = open_clip.model.CLIP(
        embed_dim=64,
        vision_cfg={"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
        text_cfg={"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    )
    return openclip_loader.LoadedModel(
        spec=resolve("tiny"),
        model=net,
        tokenizer=open_clip.tokenizer.SimpleTokenizer(context_length=16),
        preprocess=openclip_loader.preprocess_for(net),
        weights_id="test-vit",
    )


def test_int8_quantises_only_the_vit_image_tower_and_keeps_texts_exact():
    """int8 swaps the image transformer's linears for quantised ones: pictures stay close to
    fp32, patch features still come out, and the fp32 text tower gives identical text vectors."""
    from mmsearch.models.patches import encode_with_patches

    def quantised(module: torch.nn.Module) -> bool:
        return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in module.modules())

    fp32 = Encoder.from_loaded(_small_vit(), precision="fp32")
    int8 = Encoder.from_loaded(_small_vit(), precision="int8")
    assert int8.precision == "int8" and quantised(int8.model)
    assert not quantised(fp32.model)
    assert quantised(int8.model.visual.transformer)
    assert all(
        not type(m).__module__.startswith("torch.ao") for m in int8.model.transformer.modules()
    )  # the text tower
    colours = [(220, 30, 30), (30, 200, 40), (40, 60, 220), (240, 220, 30), (20, 20, 20)]
    pictures = [_picture(c, (64 + 8 * i, 48)) for i, c in enumerate(colours)]
    a, b = fp32.encode_images(pictures), int8.encode_images(pictures)
    assert b.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert float((a * b).sum(1).min()) > 0.99 and not np.array_equal(a, b)
    np.testing.assert_array_equal(fp32.encode_texts(TEXTS), int8.encode_texts(TEXTS))
    batch = torch.stack([int8.preprocess(p) for p in pictures])
    vectors, patches = encode_with_patches(int8, batch)
    assert patches.dtype == np.float16 and float((vectors * b).sum(1).min()) > 0.999


def test_an_int8_encoder_exports_its_fp32_text_tower_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """int8 leaves the text tower in fp32, so the export for torch-free queries is made from the
    model in memory (no reload from disk) and gives the encoder's own text vectors."""
    from mmsearch.models import openclip_loader as loader
    from mmsearch.models.text_onnx import export_text_tower

    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path))
    monkeypatch.setattr(loader, "build_openclip", lambda *a, **k: pytest.fail("reloaded"))
    int8 = Encoder.from_loaded(_small_vit(), precision="int8")
    tower = export_text_tower(int8)
    assert tower is not None
    cosine = (tower.encode_texts(TEXTS) * int8.encode_texts(TEXTS)).sum(axis=1)
    assert cosine.min() > 0.9999


def test_int8_is_refused_where_it_cannot_run(bundled_tiny: Path):
    """A ResNet image tower (tiny) has nothing int8 converts, and int8 has no GPU kernels here:
    both are config errors that say what to use instead, never a silent fp32."""
    with pytest.raises(ConfigError, match="transformer"):
        load_encoder("tiny", device="cpu", precision="int8").load()
    with pytest.raises(ConfigError, match="CPU only"):
        resolve_precision("int8", "cuda:0", params=88_000_000)
    assert resolve_precision("int8", "cpu", params=88_000_000) == "int8"


def test_device_errors_are_config_errors(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ConfigError, match="1 CUDA device"):
        resolve_device("cuda:1")
    with pytest.raises(ConfigError, match="Unknown device"):
        resolve_device("gpu-please")
    with pytest.raises(ConfigError, match="precision"):
        resolve_precision("fp8", "cpu")


def test_encoder_from_loaded_model():
    loaded = build_openclip("mmsearch-tiny/random")
    enc = Encoder.from_loaded(loaded)
    assert enc.loaded and enc.encode_images([_picture((1, 2, 3))]).shape == (1, 128)


def test_random_init_is_the_same_in_every_process():
    """A collection indexed with ARCH/random must be searchable from another process."""
    import subprocess
    import sys

    code = (
        "from mmsearch.models import load_encoder;"
        "print(load_encoder('mmsearch-tiny/random', device='cpu').encode_texts(['a red circle'])[0][:4].tolist())"
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout for _ in range(2)]
    assert runs[0] == runs[1] and runs[0].strip()


@pytest.mark.parametrize(
    "name",
    ["xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k", "nllb-clip-base/v1", "nllb-clip-base-siglip/v1"],
)
def test_multilingual_models_resolve_and_download_through_the_hub(
    name: str, cache: Path, monkeypatch: pytest.MonkeyPatch
):
    """The multilingual OpenCLIP models the README recommends are known by name; loading one
    asks the hub for its weights (offline here: the error names the model and the ways out)."""
    from mmsearch.models import resolve

    spec = resolve(name)
    assert spec.kind == "pretrained" and spec.name == name
    hub = _offline()
    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", hub)
    with pytest.raises(ModelUnavailableError) as info:
        load_encoder(name, device="cpu")
    assert name in str(info.value) and "--model tiny" in str(info.value)
    assert hub.calls and hub.calls[0]["repo_id"]


def test_texts_run_only_up_to_their_end_and_keep_their_order(bundled_tiny: Path):
    """The prefix-length forward gives open_clip's full-context vectors, also for texts holding
    token 0 ("!") and for batches sorted by length and put back in order."""
    from mmsearch.models import encoder as encoder_module

    enc = load_encoder("tiny", device="cpu")
    assert encoder_module._prefix_module(enc.model) is not None  # tiny is a plain causal CLIP
    texts = ["wow!! a red circle!", "", "a blue square", "word " * 90, "红色的圆", "a"] * 7
    short_first = enc.encode_texts(texts, batch_size=4)
    with torch.inference_mode():
        full = enc.model.encode_text(enc._loaded.tokenizer(texts)).float()
    full = torch.nn.functional.normalize(full, dim=-1).numpy()
    assert float((short_first * full).sum(1).min()) > 0.9999
    np.testing.assert_allclose(enc.encode_texts(texts[:5]), short_first[:5], atol=1e-5)


def test_weights_loaded_over_the_architecture_skip_its_random_init(
    tiny_checkpoint: dict, monkeypatch: pytest.MonkeyPatch
):
    """Drawing random weights that the checkpoint replaces at once costs seconds for ViT-B-32:
    with weights to load, no torch.nn.init draw runs, and the model is the checkpoint's exactly;
    a random-init model still draws its (seeded) weights."""
    from torch.nn import init

    draws: list[str] = []
    real_normal = init.normal_

    def counted_normal(tensor, *args, **kwargs):
        draws.append("normal_")
        return real_normal(tensor, *args, **kwargs)

    monkeypatch.setattr(init, "normal_", counted_normal)
    enc = load_encoder(f"mmsearch-tiny@{tiny_checkpoint['path']}", device="cpu")
    enc.load()
    assert draws == [] and init.normal_ is counted_normal  # restored afterwards
    np.testing.assert_allclose(enc.encode_texts(TEXTS), tiny_checkpoint["texts"], atol=1e-5)
    np.testing.assert_allclose(
        enc.encode_images([_picture((255, 0, 0))]), tiny_checkpoint["images"], atol=1e-5
    )
    build_openclip(TINY, pretrained=False)
    assert draws  # random init still draws
