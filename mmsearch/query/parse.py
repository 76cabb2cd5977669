"""The CLI's query syntax: words, weights, signs, pictures, addresses and items.

    mmsearch query "2:red car" + ./beach.jpg - night
    mmsearch query a red car                      # unquoted words join into one text
    mmsearch query beach - 0.5:people + item:1234

- ``+`` and ``-`` are words of their own and give the sign of the term after them (default ``+``).
- ``W:term`` weighs a term by a positive number ``W`` (``2:red car``, ``0.5:night``).
- A term is a picture when it names an existing file, or looks like a path (starts with ``/``,
  ``./``, ``../`` or ``~``, or ends in a picture extension); a path that does not exist is an
  error, never silently searched as text. ``http://`` and ``https://`` addresses are pictures to
  fetch. ``item:ID`` is an indexed item (its stored vector; "more like this").
- Everything else is text; consecutive text words without a sign between them are one text.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

from mmsearch.errors import QueryError
from mmsearch.query.model import Term

SIGNS = {"+": 1.0, "-": -1.0}
PICTURE_EXTENSIONS = frozenset(
    [".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"]
)
MAX_WEIGHT = 1e6
"""Weights only compare terms with one another; far beyond this the float32 sum overflows."""
_WEIGHT = re.compile(r"^(?P<w>[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?):(?P<rest>.*)$", re.S)
_ITEM = re.compile(r"^item:(?P<id>.*)$", re.S | re.I)


def parse_terms(tokens: Sequence[str]) -> list[Term]:
    """Turn the words a person typed into weighted, signed terms (see the module docstring)."""
    terms: list[Term] = []
    sign: float | None = None
    words: list[str] = []  # pending text words
    words_weight = 1.0

    def flush_words() -> None:
        nonlocal words, words_weight
        if words:
            terms.append(Term("text", " ".join(words), words_weight))
            words, words_weight = [], 1.0

    for raw in tokens:
        token = raw.strip()
        if token in SIGNS:
            if sign is not None:
                raise QueryError(
                    f"Two signs in a row ({'+' if sign > 0 else '-'} {token}): put a term between them."
                )
            flush_words()
            sign = SIGNS[token]
            continue
        if not token:
            raise QueryError('An empty term: remove the empty quotes ("") from the query.')
        weight, body = _split_weight(token)
        kind, value = classify(body)
        signed = (sign if sign is not None else 1.0) * weight
        if kind == "text" and sign is None and weight == 1.0 and words:
            words.append(value)  # another word of the same text
        elif kind == "text":
            flush_words()
            words, words_weight = [value], signed
        else:
            flush_words()
            terms.append(Term(kind, value, signed))
        sign = None
    if sign is not None:
        raise QueryError("The query ends with a sign: put a term after the last + or -.")
    flush_words()
    return terms


def _split_weight(token: str) -> tuple[float, str]:
    match = _WEIGHT.match(token)
    if not match:
        return 1.0, token
    weight = float(match["w"])
    rest = match["rest"].strip()
    if not rest:
        raise QueryError(f"The weight {match['w']}: is not followed by a term.")
    if weight == 0:
        raise QueryError(f"The term {rest!r} has weight 0: drop it, or give a positive weight.")
    if not math.isfinite(weight) or weight > MAX_WEIGHT:
        raise QueryError(
            f"The weight of {rest!r} is not a usable number ({match['w']}): weights are relative, "
            f"at most {MAX_WEIGHT:g}."
        )
    return weight, rest


def classify(body: str) -> tuple[str, str | int]:
    """("text" | "image" | "url" | "item", value) for one term without its weight."""
    item = _ITEM.match(body)
    if item:
        raw = item["id"].strip()
        if not raw.isdigit() or int(raw) >= 2**63:
            raise QueryError(f"item: takes an item id (a number from a result), not {raw!r}.")
        return "item", int(raw)
    if _is_url(body):
        return "url", body
    path = Path(body).expanduser()
    looks_like_path = body.startswith(("/", "./", "../", "~")) or (
        path.suffix.lower() in PICTURE_EXTENSIONS and " " not in body
    )
    if _is_file(path) or looks_like_path:
        return "image", _picture_path(body, ", or quote the words to search for them as text")
    return "text", body


def picture_term(given: str) -> Term:
    """A picture given as such (``--image``): a file or an address, never text, whatever its name."""
    body = given.strip()
    if not body:
        raise QueryError("--image needs a picture: a file or an http(s) address.")
    if _is_url(body):
        return Term("url", body, 1.0)
    return Term("image", _picture_path(body), 1.0)


def _is_url(body: str) -> bool:
    return body.lower().startswith(("http://", "https://"))


def _picture_path(body: str, hint: str = "") -> str:
    """The picture file a term names; QueryError for a folder or a path that does not exist."""
    path = Path(body).expanduser()
    if _is_file(path):
        return str(path)
    if path.is_dir():
        raise QueryError(f"{body} is a folder; give a picture file to search by.")
    raise QueryError(f"The query picture {body} does not exist. Check the path{hint}.")


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long to be a path, and the like
        return False
