"""Model names -> `ModelSpec`: the registry is data, so every way of naming a model is one table.

Name forms (first match wins):

=============================  =========== ================================================
name                           kind        meaning
=============================  =========== ================================================
``tiny``                       tiny        bundled `mmsearch-tiny` weights (offline demo, CI)
``hf-hub:org/repo``            hf-hub      OpenCLIP repo on the Hugging Face hub
``local-dir:/folder``          local-dir   folder with ``open_clip_config.json`` + weights
``ARCH@/path/ckpt.pt``         local-file  a checkpoint for a known architecture
``/path/folder``               local-dir   same as ``local-dir:``
``/path/ckpt.safetensors``     local-file  architecture read from the file's metadata or an
                                           ``open_clip_config.json`` beside it
``ARCH/random``                random      random init, for throughput benchmarks only
``ARCH/TAG``                   pretrained  OpenCLIP pretrained tag, e.g. ViT-B-32/laion2b_s34b_b79k
=============================  =========== ================================================

A bare ``ARCH`` is refused: silently getting random weights is the worst failure a search engine
can have (it returns confident nonsense), so random init must be asked for by name.

Architectures are open_clip's configs plus ours in ``model_configs/`` and any added with
`add_model_config`. They are registered with open_clip on first use, never at import.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from mmsearch.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

TINY = "tiny"
TINY_ARCH = "mmsearch-tiny"
TINY_ZH = "tiny-zh"
BUNDLED: dict[str, str] = {TINY: TINY_ARCH, TINY_ZH: "mmsearch-tiny-zh"}
"""The models this package ships (name -> architecture): `tiny`, English, and `tiny-zh`, its
bilingual (English and Chinese) sibling trained with more varied drawing; both know only the
shapes world."""
RANDOM_TAG = "random"
HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")
CONFIG_DIR = Path(__file__).parent / "model_configs"

KINDS = ("tiny", "pretrained", "random", "hf-hub", "local-dir", "local-file")

_added_paths: list[Path] = []  # config files/folders handed to open_clip, in order
_custom_archs: set[str] = set()  # architectures that come from our configs, not open_clip's


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model name: enough to fetch and build it, nothing loaded yet."""

    name: str  # canonical name, recorded in collection sidecars and compared on reuse
    kind: str  # one of KINDS; picks the fetcher in openclip_loader.FETCHERS
    arch: str | None = None  # open_clip architecture (config name) when the name says it
    tag: str | None = None  # open_clip pretrained tag ("pretrained" kind only)
    repo: str | None = None  # Hugging Face repo id ("hf-hub" kind only)
    path: Path | None = None  # local checkpoint file or folder ("tiny", "local-*" kinds)


def resolve(name: str) -> ModelSpec:
    """Parse a model name into a spec without touching the network or loading weights."""
    text = (name or "").strip()
    if not text:
        raise ModelError("No model name given; try 'tiny' or 'ViT-B-32/laion2b_s34b_b79k'.")
    if text in BUNDLED:
        from mmsearch.models.openclip_loader import tiny_weights_path

        return ModelSpec(name=text, kind="tiny", arch=BUNDLED[text], path=tiny_weights_path(text))
    if text.startswith(HF_HUB_PREFIX):
        return _resolve_hf_hub(text)
    if text.startswith(LOCAL_DIR_PREFIX):
        return _local_dir_spec(Path(text[len(LOCAL_DIR_PREFIX) :]))
    if os.path.exists(text):
        return _resolve_path(Path(text))
    arch, sep, rest = text.partition("@")
    if sep and rest and not _looks_like_path(arch):
        return _resolve_arch_at_path(arch, rest)
    if _looks_like_path(text):
        return _resolve_path(Path(text))
    registered = registered_model(text)
    if registered is not None:
        return ModelSpec(name=text, kind="local-file", path=registered)
    return _resolve_arch_tag(text)


REGISTERED_SUFFIX = ".safetensors"


def registered_model(name: str) -> Path | None:
    """The checkpoint a fine-tune registered under `name` (`mmsearch finetune --name`), if any."""
    from mmsearch.paths import models_dir

    if "/" in name or name.startswith(".") or not name.strip():
        return None
    path = models_dir() / f"{name}{REGISTERED_SUFFIX}"
    return path if path.is_file() else None


def registered_models() -> list[str]:
    from mmsearch.paths import models_dir

    folder = models_dir()
    return sorted(p.name[: -len(REGISTERED_SUFFIX)] for p in folder.glob(f"*{REGISTERED_SUFFIX}")) if folder.is_dir() else []


def _looks_like_path(text: str) -> bool:
    if text.lower().endswith(WEIGHT_SUFFIXES) or text.startswith(("/", ".", "~", "\\")):
        return True
    if os.sep != "/" and (os.sep in text or text[1:3] == ":\\"):
        return True
    return os.path.exists(text)


def _resolve_hf_hub(text: str) -> ModelSpec:
    repo = text[len(HF_HUB_PREFIX) :].strip("/")
    if repo.count("/") != 1:
        raise ModelError(f"Model name {text!r} should look like 'hf-hub:org/repo'.")
    return ModelSpec(name=f"{HF_HUB_PREFIX}{repo}", kind="hf-hub", repo=repo)


def _local_dir_spec(folder: Path) -> ModelSpec:
    folder = folder.expanduser().resolve()
    return ModelSpec(name=f"{LOCAL_DIR_PREFIX}{folder}", kind="local-dir", path=folder)


def _resolve_path(path: Path) -> ModelSpec:
    path = path.expanduser().resolve()
    if path.is_dir():
        return _local_dir_spec(path)
    return ModelSpec(name=str(path), kind="local-file", path=path)


def _resolve_arch_at_path(arch: str, path_text: str) -> ModelSpec:
    _require_arch(arch, f"{arch}@{path_text}")
    path = Path(path_text).expanduser().resolve()
    return ModelSpec(name=f"{arch}@{path}", kind="local-file", arch=arch, path=path)


def _resolve_arch_tag(text: str) -> ModelSpec:
    arch, sep, tag = text.partition("/")
    if not sep:
        return _refuse_bare_name(text)
    _require_arch(arch, text)
    if tag.lower() == RANDOM_TAG:
        return ModelSpec(name=f"{arch}/{RANDOM_TAG}", kind="random", arch=arch)
    import open_clip

    clean = tag.lower().replace("-", "_")
    if not open_clip.pretrained.get_pretrained_cfg(arch, clean):
        tags = open_clip.list_pretrained_tags_by_model(arch)
        known = ", ".join(tags) if tags else "none"
        raise ModelError(
            f"{arch!r} has no pretrained tag {tag!r}. Known tags: {known}. "
            f"Use {arch}@/path/to/checkpoint for your own weights, "
            f"or {arch}/{RANDOM_TAG} for random weights."
        )
    return ModelSpec(name=f"{arch}/{clean}", kind="pretrained", arch=arch, tag=clean)


def _refuse_bare_name(text: str) -> ModelSpec:
    if text in known_architectures():
        import open_clip

        tags = open_clip.list_pretrained_tags_by_model(text)
        example = f"{text}/{tags[0]}" if tags else f"{text}@/path/to/checkpoint"
        raise ModelError(
            f"Model name {text!r} names an architecture but no weights. "
            f"Add a pretrained tag (e.g. {example}), or write {text}/{RANDOM_TAG} if you "
            "really want random weights (throughput benchmarks)."
        )
    raise ModelError(_unknown_message(text))


def _require_arch(arch: str, name: str) -> None:
    if architecture_config(arch) is None and arch not in known_architectures():
        raise ModelError(_unknown_message(name, arch))


def architecture_config(arch: str) -> dict | None:
    """The architecture's JSON config, read without importing open_clip (which imports torch):
    a name is checked, and a picture's input size known, before the model loads. The folders
    are searched in the order open_clip lets them override each other; None if none has it."""
    for folder in (*reversed(_added_paths), CONFIG_DIR, _open_clip_config_dir()):
        if folder is None:
            continue
        for file in _config_files(folder):
            if _config_name(file) == arch:
                try:
                    return json.loads(file.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    return None
    return None


def _open_clip_config_dir() -> Path | None:
    """open_clip's own `model_configs` folder, found without running the package."""
    import importlib.util

    spec = importlib.util.find_spec("open_clip")
    locations = list(spec.submodule_search_locations or ()) if spec else []
    return Path(locations[0]) / "model_configs" if locations else None


def _unknown_message(name: str, arch: str | None = None) -> str:
    candidates = known_architectures() if arch else [*BUNDLED, *known_architectures()]
    close = difflib.get_close_matches(arch or name, candidates, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    what = f"architecture {arch!r} in {name!r}" if arch else f"model {name!r}"
    return (
        f"Unknown {what}.{hint} A model is 'tiny' (bundled, offline), 'ARCH/TAG' "
        "(e.g. ViT-B-32/laion2b_s34b_b79k; see list_models()), 'ARCH/random', "
        "'hf-hub:org/repo', 'local-dir:/folder', a checkpoint path, or 'ARCH@/path/ckpt.pt'."
    )


def ensure_registered() -> None:
    """Hand our config folder to open_clip once; called before anything asks open_clip by name."""
    if CONFIG_DIR not in _added_paths:
        _register(CONFIG_DIR)


def _register(path: Path) -> list[str]:
    import open_clip

    before = set(open_clip.list_models())
    open_clip.add_model_config(path)
    _added_paths.append(path)
    names = [_config_name(p) for p in _config_files(path)]
    _custom_archs.update(names)
    log.debug("registered model configs %s from %s (new: %s)", names, path, set(names) - before)
    return names


def known_architectures() -> list[str]:
    """Every architecture name open_clip can build, ours included."""
    ensure_registered()
    import open_clip

    return list(open_clip.list_models())


def add_model_config(path: str | os.PathLike[str]) -> list[str]:
    """Register an OpenCLIP architecture JSON (or a folder of them); returns the names added."""
    ensure_registered()
    config_path = Path(path).expanduser().resolve()
    files = _config_files(config_path)
    if not files:
        raise ConfigError(f"No model config JSON found at {config_path}.")
    for file in files:
        _check_config(file)
    return _register(config_path)


def _config_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(path.glob("*.json"))
    return [path] if path.is_file() else []


def _config_name(path: Path) -> str:
    return path.stem


def _check_config(file: Path) -> None:
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Model config {file} is not readable JSON: {exc}") from exc
    missing = [k for k in ("embed_dim", "vision_cfg", "text_cfg") if k not in config]
    if missing:
        raise ConfigError(
            f"Model config {file} lacks {', '.join(missing)}; an OpenCLIP architecture JSON "
            "has embed_dim, vision_cfg and text_cfg at the top level."
        )


def is_shapes_model(name: str) -> bool:
    """A bundled model, which knows only the shapes world (its tags and concepts are shapes')."""
    return name in BUNDLED


def list_models() -> list[str]:
    """Every name `load_encoder` knows without a path: tiny, pretrained tags, our random-init archs."""
    ensure_registered()
    import open_clip

    pretrained = [f"{arch}/{tag}" for arch, tag in open_clip.list_pretrained()]
    custom = [f"{arch}/{RANDOM_TAG}" for arch in sorted(_custom_archs)]
    return [*BUNDLED, *registered_models(), *pretrained, *custom]
