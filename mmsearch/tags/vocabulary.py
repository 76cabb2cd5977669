"""Tag vocabularies: which tags exist, the prompts that describe each, and their groups.

A vocabulary file has one tag per line, optionally with its own prompt ensemble, and
``[section]`` headers that group tags (a picture's tags are chosen per group, see
`mmsearch.tags.zero_shot`)::

    [scene]
    beach                                  # read through PROMPT_TEMPLATES
    city street = a busy city street | a photo of a street in a city

Two ship with mmsearch (``vocabularies/``): ``shapes.txt`` for the bundled ``tiny`` (colours and
shapes) and ``general.txt`` for real photos. A collection records the vocabulary it was tagged
with in its catalog, so a user's own list (``mmsearch tags use FILE [--extend]``, ``tags add``)
replaces or extends the default and survives later runs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from mmsearch.errors import ConfigError

VOCABULARIES = Path(__file__).parent / "vocabularies"
PROMPT_TEMPLATES = ("a photo of a {}.", "a photo of the {}.", "a picture of a {}.", "an image of a {}.")
"""How a tag without its own prompts is read (CLIP's prompt ensembling, Radford et al. 2021)."""
DEFAULT_GROUP = "tags"
MAX_TAG_CHARS = 64
_TAG_CHARS = re.compile(r"^[\w][\w \-'&.]*$", re.UNICODE)


@dataclass(frozen=True)
class Tag:
    name: str
    group: str
    prompts: tuple[str, ...] = ()  # empty: PROMPT_TEMPLATES

    def texts(self) -> tuple[str, ...]:
        """The prompts whose mean text embedding stands for this tag."""
        return self.prompts or tuple(t.format(self.name) for t in PROMPT_TEMPLATES)


@dataclass(frozen=True)
class Vocabulary:
    tags: tuple[Tag, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [t.name for t in self.tags]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ConfigError(f"The tag vocabulary names {', '.join(twice)} more than once.")

    def __len__(self) -> int:
        return len(self.tags)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tags]

    @property
    def groups(self) -> dict[str, list[int]]:
        """Group name -> indices of its tags, in file order."""
        out: dict[str, list[int]] = {}
        for i, tag in enumerate(self.tags):
            out.setdefault(tag.group, []).append(i)
        return out

    def extended(self, other: Vocabulary) -> Vocabulary:
        """This vocabulary plus `other`'s tags; a tag in both takes `other`'s prompts and group."""
        theirs = {t.name: t for t in other.tags}
        kept = [theirs.pop(t.name, t) for t in self.tags]
        return Vocabulary(tuple(kept) + tuple(t for t in other.tags if t.name in theirs))

    def without(self, names: list[str]) -> Vocabulary:
        unknown = sorted(set(names) - set(self.names))
        if unknown:
            raise ConfigError(f"No tag {', '.join(unknown)} in the vocabulary.")
        kept = tuple(t for t in self.tags if t.name not in names)
        if not kept:  # a vocabulary without tags could not be read back: refused before it is saved
            raise ConfigError(
                "That would leave the vocabulary without tags; keep one, or switch to another "
                "vocabulary with `mmsearch tags use FILE`."
            )
        return Vocabulary(kept)

    def to_text(self) -> str:
        """The file form (what `parse_vocabulary` reads back)."""
        lines: list[str] = []
        for group, indices in self.groups.items():
            lines += ([""] if lines else []) + [f"[{group}]"]
            for i in indices:
                tag = self.tags[i]
                lines.append(tag.name + (f" = {' | '.join(tag.prompts)}" if tag.prompts else ""))
        return "\n".join(lines) + "\n"

    def digest(self) -> str:
        """Changes whenever a tag, a prompt or a group does: the collection re-tags then."""
        return hashlib.sha256(self.to_text().encode()).hexdigest()[:16]


def parse_vocabulary(text: str, source: str = "the vocabulary") -> Vocabulary:
    """Read the file form; errors name the line."""
    group, tags = DEFAULT_GROUP, []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip() or DEFAULT_GROUP
            continue
        name, _, prompts = line.partition("=")
        tags.append(make_tag(name, group, prompts.split("|") if prompts else (), f"{source}, line {number}"))
    if not tags:
        raise ConfigError(f"{source} has no tags (one per line, e.g. 'beach').")
    return Vocabulary(tuple(tags))


def make_tag(name: str, group: str = DEFAULT_GROUP, prompts=(), where: str = "a tag") -> Tag:
    """A checked tag: a short name of letters, digits, spaces and - ' & ."""
    clean = " ".join(name.split()).lower()
    if not clean or len(clean) > MAX_TAG_CHARS or not _TAG_CHARS.match(clean):
        raise ConfigError(
            f"{where}: {name.strip()!r} is not a tag name (letters, digits, spaces and - ' & ., "
            f"at most {MAX_TAG_CHARS} characters)."
        )
    texts = tuple(p.strip() for p in prompts if p.strip())
    return Tag(clean, " ".join(group.split()) or DEFAULT_GROUP, texts)


def load_vocabulary(path: str | Path) -> Vocabulary:
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the tag vocabulary {path}: {exc}") from exc
    return parse_vocabulary(text, str(path))


def default_vocabulary(model_name: str) -> Vocabulary:
    """The shipped vocabulary for a model: the shapes world's for the bundled models, else the general one."""
    from mmsearch.models.registry import is_shapes_model

    name = "shapes.txt" if is_shapes_model(model_name) else "general.txt"
    return load_vocabulary(VOCABULARIES / name)
