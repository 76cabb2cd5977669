"""Spec -> ready OpenCLIP model, in three steps: fetch files, build the architecture, load weights.

Fetching comes first, so an offline machine fails in a second with `ModelUnavailableError`
instead of after building a large model (the download cache is asked before the network). Building always starts from random init on the CPU in
fp32; weights are then loaded with open_clip's own `load_checkpoint`, which also converts
OpenAI/timm/big_vision checkpoints. Every failure becomes a typed error that names the model, the
file and the way out.

For training code:

    loaded = build_openclip("tiny", pretrained=False)   # mmsearch-tiny, random init
    loaded.model, loaded.tokenizer, loaded.preprocess   # train with the same preprocessing
    save_tiny_weights(loaded.model)                     # -> mmsearch/models/tiny/tiny.safetensors

mmsearch-tiny (model_configs/mmsearch-tiny.json) is a ModifiedResNet (width 16, layers 1-1-1-1,
64 px) with a 3-layer, 64-wide text transformer (context 32, open_clip's BPE vocabulary) and a
128-d embedding: 4.68 M parameters, 18.7 MB as fp32 safetensors. One contrastive step (forward,
backward, AdamW) on a batch of 128 takes about 230-270 ms on 2 CPU cores; a ViT with patch 8,
width 192 and 3 layers of the same size takes 680-720 ms, so the convolutional tower won.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmsearch import paths
from mmsearch.errors import ModelError, ModelUnavailableError
from mmsearch.models.preprocess import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, ImagePreprocess
from mmsearch.models.registry import (
    TINY_ARCH,
    ModelSpec,
    architecture_config,
    ensure_registered,
    resolve,
)

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

TINY_WEIGHTS = Path(__file__).parent / "tiny" / "tiny.safetensors"
BUNDLED_DIR = Path(__file__).parent
CONFIG_NAME = "open_clip_config.json"
ARCH_METADATA_KEY = "open_clip_arch"  # safetensors metadata key naming the architecture
_PREFERRED_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "model.safetensors",
    "open_clip_pytorch_model.bin",
    "pytorch_model.bin",
)


def tiny_weights_path(name: str = "tiny") -> Path:
    """Where a bundled model's weights live (written by `python -m mmsearch.train.tiny`)."""
    if name == "tiny":
        return TINY_WEIGHTS
    return BUNDLED_DIR / name.replace("-", "_") / "tiny.safetensors"


def local_weights_file(spec: ModelSpec) -> Path | None:
    """The local file a model's weights come from (bundled, a checkpoint, a model folder's),
    known without building it; None for downloads and random weights."""
    if spec.kind == "tiny":
        path = spec.path or tiny_weights_path(spec.name)
        return path if path.is_file() else None
    if spec.kind == "local-file" and spec.path is not None and spec.path.is_file():
        return spec.path
    if spec.kind == "local-dir" and spec.path is not None:
        return _find_weights(spec.path)
    return None


def model_cache_dir() -> Path:
    """Download cache for OpenCLIP weights: a subfolder of mmsearch's model cache."""
    return paths.cache_dir() / "open_clip"


@dataclass(frozen=True)
class Recipe:
    """What to build and what to load into it, once every file it needs is on disk."""

    arch: str | None  # open_clip architecture name; None when config_dir holds the config
    config_dir: Path | None = None  # folder with open_clip_config.json (hf-hub, local-dir)
    weights: Path | None = None  # checkpoint to load; None means random init
    weights_cached: bool = False  # True when weights came from the download cache
    quick_gelu: bool = False  # the pretrained tag was trained with QuickGELU
    preprocess: dict[str, Any] = field(default_factory=dict)  # tag's mean/std/interpolation

    @property
    def source(self) -> str:
        """The model name open_clip's create_model/get_tokenizer understand."""
        return self.arch if self.arch else f"local-dir:{self.config_dir}"


@dataclass
class LoadedModel:
    """An OpenCLIP model with its tokenizer and the preprocessing it must be fed with."""

    spec: ModelSpec  # where it came from
    model: torch.nn.Module  # open_clip CLIP/CustomTextCLIP, on the CPU in fp32, train() mode
    tokenizer: Callable[..., torch.Tensor]  # list[str] -> LongTensor (n, context_length)
    preprocess: ImagePreprocess  # PIL -> tensor (3, S, S), letterboxed unless asked otherwise
    weights_id: str = ""  # digest of the weights file ("random" for random init): tells two
    # checkpoints of one name apart (a retrained `tiny`, a fine-tune saved under the same name)


# ---------------------------------------------------------------- fetch: kind -> local files


def _fetch_tiny(spec: ModelSpec, cache: Path, weights: bool) -> Recipe:
    path = spec.path or tiny_weights_path(spec.name)
    if weights and not path.is_file():
        raise ModelUnavailableError(
            f"The bundled model '{spec.name}' has no weights yet: {path} is missing. "
            f"Train it with `python -m mmsearch.train.tiny --model {spec.name}` (under 25 minutes "
            "on a CPU), or pick another model with --model."
        )
    return Recipe(arch=spec.arch or TINY_ARCH, weights=path if weights else None)


def _fetch_random(spec: ModelSpec, cache: Path, weights: bool) -> Recipe:
    log.warning("model %s has random weights: fine for throughput, useless for search", spec.name)
    return Recipe(arch=spec.arch)


def _fetch_pretrained(spec: ModelSpec, cache: Path, weights: bool) -> Recipe:
    import open_clip

    cfg = open_clip.pretrained.get_pretrained_cfg(spec.arch, spec.tag)
    preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation") if k in cfg}
    recipe = Recipe(arch=spec.arch, quick_gelu=bool(cfg.get("quick_gelu")), preprocess=preprocess)
    if not weights:
        return recipe
    target = _download(
        spec, cache, lambda: open_clip.pretrained.download_pretrained(cfg, cache_dir=str(cache))
    )
    return replace(recipe, weights=target, weights_cached=True)


def _fetch_hf_hub(spec: ModelSpec, cache: Path, weights: bool) -> Recipe:
    from open_clip.pretrained import download_pretrained_from_hf

    repo = spec.repo or ""
    config = _download(
        spec, cache, lambda: download_pretrained_from_hf(repo, CONFIG_NAME, cache_dir=str(cache))
    )
    target = None
    if weights:
        target = _download(
            spec, cache, lambda: download_pretrained_from_hf(repo, cache_dir=str(cache))
        )
    return Recipe(arch=None, config_dir=config.parent, weights=target, weights_cached=True)


def _fetch_local_dir(spec: ModelSpec, cache: Path, weights: bool) -> Recipe:
    folder = _existing(spec, spec.path)
    if not (folder / CONFIG_NAME).is_file():
        raise ModelError(
            f"Model folder {folder} has no {CONFIG_NAME}. A local-dir model is a folder with "
            f"{CONFIG_NAME} and a weights file; for a bare checkpoint use ARCH@/path/ckpt.pt."
        )
    return Recipe(arch=None, config_dir=folder, weights=_find_weights(folder) if weights else None)


def _fetch_local_file(spec: ModelSpec, cache: Path, weights: bool) -> Recipe:
    path = _existing(spec, spec.path)
    target = path if weights else None
    arch = spec.arch or _arch_from_metadata(spec, path)
    if arch:
        return Recipe(arch=arch, weights=target)
    if (path.parent / CONFIG_NAME).is_file():
        return Recipe(arch=None, config_dir=path.parent, weights=target)
    raise ModelError(
        f"Cannot tell which architecture the checkpoint {path} is for. Name it as ARCH@{path} "
        f"(e.g. ViT-B-32@{path}), or put its {CONFIG_NAME} in the same folder."
    )


FETCHERS: dict[str, Callable[[ModelSpec, Path, bool], Recipe]] = {
    "tiny": _fetch_tiny,
    "pretrained": _fetch_pretrained,
    "random": _fetch_random,
    "hf-hub": _fetch_hf_hub,
    "local-dir": _fetch_local_dir,
    "local-file": _fetch_local_file,
}


def _download(spec: ModelSpec, cache: Path, fetch: Callable[[], str]) -> Path:
    """Run one open_clip download; any failure means the weights are unavailable here.

    The cache is asked first with the hub in offline mode: huggingface_hub otherwise sends a
    HEAD request even for a cached file and, offline, retries it five times with back-off
    (about 30 s) before it answers. Only on a cache miss does it go online, and only when the
    hub answers a 3-second connection; an offline machine fails in about a second."""
    try:
        with _hub_cache_only():
            target = fetch()
    except Exception as cached_miss:
        unreachable = _hub_unreachable()
        if unreachable:
            raise _unavailable(spec, cache, f"{_short(cached_miss)}; {unreachable}") from cached_miss
        try:
            target = fetch()
        except Exception as exc:
            raise _unavailable(spec, cache, _short(exc)) from exc
    if not target or not Path(target).is_file():
        raise ModelUnavailableError(
            f"Downloading model {spec.name!r} gave no file ({target!r}); "
            f"check the cache folder {cache} or use --model tiny."
        )
    return Path(target)


def _unavailable(spec: ModelSpec, cache: Path, why: str) -> ModelUnavailableError:
    return ModelUnavailableError(
        f"Could not fetch the weights of model {spec.name!r} ({why}). Ways out: "
        f"connect to the internet once so they are cached in {cache} (or set "
        "MMSEARCH_CACHE to a folder that already holds them); use a local checkpoint "
        "(--model ARCH@/path/ckpt.pt or --model local-dir:/folder); or use the bundled "
        "offline model with --model tiny."
    )


@contextlib.contextmanager
def _hub_cache_only() -> Iterator[None]:
    """huggingface_hub answers from its cache only (its offline mode, read at each call)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _hub_unreachable(timeout_s: float = 3.0) -> str | None:
    """Why the hub cannot be reached (offline mode, no name resolution, no connection), or None."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
    except OSError as exc:
        return f"{host} cannot be reached: {_short(exc, 120)}"
    return None


def _existing(spec: ModelSpec, path: Path | None) -> Path:
    if path is None or not path.exists():
        raise ModelError(f"Model {spec.name!r}: {path} does not exist.")
    return path


def _find_weights(folder: Path) -> Path:
    for name in _PREFERRED_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    found = sorted(
        p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth")
    )
    if not found:
        raise ModelError(f"Model folder {folder} has a config but no weights file.")
    if len(found) > 1:
        log.warning("several checkpoints in %s; using %s", folder, found[0].name)
    return found[0]


def _arch_from_metadata(spec: ModelSpec, path: Path) -> str | None:
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:
        raise _unreadable(spec, path, cached=False, exc=exc) from exc
    return metadata.get(ARCH_METADATA_KEY)


# ---------------------------------------------------------------- build and load


def build_openclip(
    model: str | ModelSpec,
    pretrained: bool = True,
    *,
    preprocess_mode: str = "letterbox",
    cache_dir: str | os.PathLike[str] | None = None,
) -> LoadedModel:
    """Build a model by name; `pretrained=False` gives its architecture with random weights."""
    spec = resolve(model) if isinstance(model, str) else model
    ensure_registered()
    cache = Path(cache_dir) if cache_dir else model_cache_dir()
    recipe = FETCHERS[spec.kind](spec, cache, pretrained and spec.kind != "random")
    net = _build(spec, recipe, cache)
    if recipe.weights is not None:
        _load_weights(net, spec, recipe.weights, cached=recipe.weights_cached)
    return LoadedModel(
        spec=spec,
        model=net,
        tokenizer=_tokenizer(spec, recipe, cache),
        preprocess=preprocess_for(net, preprocess_mode),
        weights_id=weights_digest(recipe.weights) if recipe.weights is not None else "random",
    )


def weights_digest(path: Path) -> str:
    """First 16 hex digits of the file's SHA-256, remembered by (path, size, mtime) in the cache
    folder so a big checkpoint is hashed once, not at every start."""
    import hashlib
    import json

    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    memo = model_cache_dir() / "weights_digests.json"
    try:
        known = json.loads(memo.read_text())
    except (OSError, ValueError):
        known = {}
    if key in known:
        return known[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    known[key] = digest.hexdigest()[:16]
    try:
        memo.parent.mkdir(parents=True, exist_ok=True)
        temp = memo.with_name(memo.name + f".{os.getpid()}.tmp")
        temp.write_text(json.dumps(known))
        os.replace(temp, memo)
    except OSError:  # a read-only cache: hash again next time
        pass
    return known[key]


# Random-init models (benchmarks, plumbing tests) draw the same weights in every process, so a
# collection indexed with `ARCH/random` can be searched from another process.
RANDOM_INIT_SEED = 0


def _build(spec: ModelSpec, recipe: Recipe, cache: Path) -> torch.nn.Module:
    import open_clip
    import torch

    loading = recipe.weights is not None
    try:
        with (
            _BUILD_LOCK,
            _hide_random_init_warning(loading),
            _skip_random_init(loading),
            torch.random.fork_rng(devices=[]),
        ):
            torch.manual_seed(RANDOM_INIT_SEED)
            return open_clip.create_model(
                recipe.source,
                pretrained=None,
                load_weights=False,
                precision="fp32",
                device="cpu",
                force_quick_gelu=recipe.quick_gelu,
                force_preprocess_cfg=recipe.preprocess or None,
                pretrained_text=False,  # never fetch tower weights behind our back
                cache_dir=str(cache),
            )
    except Exception as exc:
        raise ModelError(
            f"Could not build model {spec.name!r} from {recipe.source} ({_short(exc)})."
        ) from exc


_BUILD_LOCK = threading.Lock()  # `_skip_random_init` patches torch.nn.init for the whole process

_INIT_FUNCTIONS = (
    "uniform_", "normal_", "trunc_normal_", "constant_", "ones_", "zeros_", "eye_", "dirac_",
    "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "orthogonal_",
    "sparse_",
)  # fmt: skip


@contextlib.contextmanager
def _skip_random_init(active: bool) -> Iterator[None]:
    """Skip drawing random weights that the checkpoint overwrites at once: ViT-B-32's random
    init costs seconds on a CPU (more than reading its weights). Safe because the weights are
    then loaded with strict=True: every parameter and persistent buffer is replaced or the load
    fails; buffers built without torch.nn.init (masks) are untouched."""
    if not active:
        yield
        return
    from torch.nn import init

    saved = {name: getattr(init, name) for name in _INIT_FUNCTIONS if hasattr(init, name)}
    for name in saved:
        setattr(init, name, _keep)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(init, name, function)


def _keep(tensor, *args, **kwargs):
    return tensor


class _DropRandomInitWarning(logging.Filter):
    """open_clip warns "initialized randomly" on the root logger before we load the weights."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextlib.contextmanager
def _hide_random_init_warning(active: bool) -> Iterator[None]:
    if not active:
        yield
        return
    root = logging.getLogger()
    quiet = _DropRandomInitWarning()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def _load_weights(net: torch.nn.Module, spec: ModelSpec, path: Path, cached: bool) -> None:
    import open_clip

    log.info("loading weights for %s from %s", spec.name, path)
    try:
        open_clip.load_checkpoint(net, str(path), strict=True, weights_only=True)
    except Exception as exc:
        if _is_shape_mismatch(exc):
            raise ModelError(
                f"The checkpoint {path} does not fit the architecture of {spec.name!r} "
                f"({_short(exc)}). Name the right one as ARCH@{path}."
            ) from exc
        raise _unreadable(spec, path, cached, exc) from exc


def _is_shape_mismatch(exc: Exception) -> bool:
    return isinstance(exc, RuntimeError) and "Error(s) in loading state_dict" in str(exc)


def _unreadable(spec: ModelSpec, path: Path, cached: bool, exc: Exception) -> ModelError:
    if cached:
        real = path.resolve()
        where = f"{path}" if real == path else f"{path} (-> {real})"
        return ModelUnavailableError(
            f"The downloaded weights of {spec.name!r} are corrupt or truncated: {where} "
            f"({_short(exc)}). Delete that file and run again to download it afresh."
        )
    return ModelError(
        f"The checkpoint {path} for {spec.name!r} cannot be read ({_short(exc)}); it is "
        "corrupt, truncated, or not a PyTorch/safetensors weights file."
    )


def _tokenizer(spec: ModelSpec, recipe: Recipe, cache: Path) -> Callable[..., torch.Tensor]:
    import open_clip

    try:
        return open_clip.get_tokenizer(recipe.source, cache_dir=str(cache))
    except Exception as exc:
        raise ModelUnavailableError(
            f"The tokenizer of model {spec.name!r} could not be loaded ({_short(exc)}). "
            "It may need a download; use --model tiny offline."
        ) from exc


def expected_preprocess(spec: ModelSpec, mode: str = "letterbox") -> ImagePreprocess | None:
    """What `build_openclip(spec).preprocess` will be, known without torch or open_clip where it
    is certain: a bundled, random-init or ARCH@checkpoint model gets open_clip's default
    normalisation at its config's input size. None for the rest (a pretrained tag or a model
    folder brings its own), and for an architecture not found this way."""
    if spec.kind not in ("tiny", "random", "local-file") or not spec.arch:
        return None
    config = architecture_config(spec.arch)
    if config is None:
        return None
    size = config.get("vision_cfg", {}).get("image_size", 224)
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    return ImagePreprocess(
        size=(height, width), mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD, mode=mode
    )


def preprocess_for(net: torch.nn.Module, mode: str = "letterbox") -> ImagePreprocess:
    """The model's input size and normalisation, with our letterbox instead of a centre crop."""
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(net)
    size = cfg.get("size", 224)
    height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    interpolation = cfg.get("interpolation", "bicubic")
    return ImagePreprocess(
        size=(height, width),
        mean=_triple(cfg.get("mean", OPENAI_DATASET_MEAN)),
        std=_triple(cfg.get("std", OPENAI_DATASET_STD)),
        mode=mode,
        interpolation=interpolation if interpolation in ("bicubic", "bilinear") else "bicubic",
    )


def _triple(values: Any) -> tuple[float, float, float]:
    items = [float(v) for v in values]
    if len(items) == 1:
        items = items * 3
    return (items[0], items[1], items[2])


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first if len(first) <= limit else first[: limit - 3] + "..."


# ---------------------------------------------------------------- save


def save_weights(net: torch.nn.Module, path: str | os.PathLike[str], arch: str) -> Path:
    """Write fp32 safetensors with the architecture in its metadata, atomically."""
    import torch
    from safetensors.torch import save_file

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        key: (value.detach().to("cpu", torch.float32) if value.is_floating_point() else value)
        .contiguous()
        .clone()
        for key, value in net.state_dict().items()
    }
    temp = target.with_name(target.name + ".tmp")
    save_file(tensors, str(temp), metadata={ARCH_METADATA_KEY: arch, "format": "pt"})
    with open(temp, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(temp, target)
    log.info("saved %s weights to %s", arch, target)
    return target


def save_tiny_weights(
    net: torch.nn.Module, path: str | os.PathLike[str] | None = None, name: str = "tiny"
) -> Path:
    """Save a trained bundled model where `load_encoder(name)` finds it."""
    from mmsearch.models.registry import BUNDLED

    return save_weights(net, path or tiny_weights_path(name), BUNDLED[name])
