"""open_clip's CLIP tokenizer (`open_clip.tokenizer.SimpleTokenizer`, clean="lower") without torch.

open_clip's tokenizer module imports torch at its top, which costs seconds from a cold shell; a
text query needs only the byte-pair encoding. This is the same algorithm on the same merges file
(open_clip's `bpe_simple_vocab_16e6.txt.gz`, found without importing open_clip), returning numpy
int64 ids. tests/test_text_runtime.py checks the ids equal open_clip's on many strings (unicode,
Chinese, emoji, markup, over-long text).

    tokenize = ClipBpe(context_length=77)
    tokenize(["a red car"])   # (1, 77) int64: <start_of_text> ... <end_of_text> 0 0 ...
"""

from __future__ import annotations

import bisect
import gzip
import html
import importlib.util
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from mmsearch.errors import MissingDependencyError

MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"
MERGES_USED = 49152 - 256 - 2  # open_clip reads merges[1 : 49152 - 256 - 2 + 1]
SPECIAL = ("<start_of_text>", "<end_of_text>")
_PATTERN = (
    r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)


def default_merges() -> Path:
    """open_clip's bundled merges file, located without importing open_clip (which imports torch)."""
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            "open_clip_torch is not installed; install mmsearch with its dependencies "
            "(pip install -e .)."
        )
    return Path(next(iter(spec.submodule_search_locations))) / MERGES_FILE


@lru_cache
def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table."""
    bs = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    cs = bs[:]
    extra = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clean_lower(text: str) -> str:
    """open_clip's clean="lower": ftfy, HTML entities unescaped twice, whitespace folded, lower case.

    Printable ASCII without "&" is left as it is by ftfy and by unescaping (every ftfy fix needs a
    non-ASCII character, a control character or an entity), so such text, most queries, skips
    importing ftfy (a tenth of a second from a cold shell).
    """
    if not (text.isascii() and text.isprintable() and "&" not in text):
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text)))
    text = text.strip()
    return " ".join(text.split()).strip().lower()


class ClipBpe:
    """Texts -> (n, context_length) int64 token ids, exactly as open_clip's SimpleTokenizer."""

    def __init__(self, context_length: int = 77, merges: Path | None = None) -> None:
        import regex

        self._tables = _tables(merges or default_merges())
        self.sot, self.eot = self._tables.token_id(SPECIAL[0]), self._tables.token_id(SPECIAL[1])
        self.vocab_size = len(self._tables.tokens)
        self.context_length = int(context_length)
        self._byte = bytes_to_unicode()
        self._pattern = regex.compile(_PATTERN, regex.IGNORECASE)
        self._cache: dict[str, list[int]] = {}
        self._lock = threading.Lock()

    def __call__(self, texts: str | Sequence[str], context_length: int | None = None) -> np.ndarray:
        rows = [texts] if isinstance(texts, str) else list(texts)
        length = int(context_length or self.context_length)
        out = np.zeros((len(rows), length), dtype=np.int64)
        for i, text in enumerate(rows):
            ids = [self.sot, *self.encode(text), self.eot]
            if len(ids) > length:
                ids = ids[:length]
                ids[-1] = self.eot
            out[i, : len(ids)] = ids
        return out

    def encode(self, text: str) -> list[int]:
        """One text's ids, without the start and end tokens."""
        ids: list[int] = []
        for word in self._pattern.findall(clean_lower(text)):
            ids.extend(self._word(word))
        return ids

    def _word(self, word: str) -> list[int]:
        if word in SPECIAL:
            return [self._tables.token_id(word)]
        found = self._cache.get(word)
        if found is None:
            symbols = "".join(self._byte[b] for b in word.encode("utf-8"))
            found = [self._tables.token_id(piece) for piece in self._merge(symbols)]
            with self._lock:
                if len(self._cache) > 100_000:
                    self._cache.clear()
                self._cache[word] = found
        return found

    def _merge(self, token: str) -> list[str]:
        """Apply the lowest-ranked merge until none applies (open_clip's `bpe`)."""
        rank = self._tables.rank
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            best, first, second = min((rank(a, b), a, b) for a, b in zip(word, word[1:]))
            if best == NO_MERGE:
                break
            merged, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == first and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = merged
        return word


NO_MERGE = 1 << 30


class _Tables:
    """The vocabulary and the merge ranks as sorted lists searched by bisection: loading them is
    a third of the time of building dicts of 97,000 entries, and a query looks up a few dozen."""

    def __init__(
        self, tokens: list[str], ids: list[int], pairs: list[str], ranks: list[int]
    ) -> None:
        self.tokens, self.ids, self.pairs, self.ranks = tokens, ids, pairs, ranks

    def token_id(self, piece: str) -> int:
        i = bisect.bisect_left(self.tokens, piece)
        if i == len(self.tokens) or self.tokens[i] != piece:
            raise KeyError(piece)
        return self.ids[i]

    def rank(self, first: str, second: str) -> int:
        pair = f"{first} {second}"
        i = bisect.bisect_left(self.pairs, pair)
        return self.ranks[i] if i < len(self.pairs) and self.pairs[i] == pair else NO_MERGE


@lru_cache(maxsize=4)
def _tables(merges: Path) -> _Tables:
    """Read from a marshal file in the cache, made from the merges file on first use."""
    import marshal
    import os

    from mmsearch import paths

    stat = merges.stat()
    cached = paths.cache_dir() / "onnx" / f"clip-bpe-{stat.st_size}-{stat.st_mtime_ns}.marshal"
    try:
        return _Tables(*marshal.loads(cached.read_bytes()))
    except (OSError, ValueError, EOFError, TypeError):
        pass
    with gzip.open(merges) as handle:
        lines = handle.read().decode("utf-8").split("\n")[1 : MERGES_USED + 1]
    chars = list(bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + [line.replace(" ", "") for line in lines]
    vocab += list(SPECIAL)
    by_token = sorted(zip(vocab, range(len(vocab))))
    by_pair = sorted(zip(lines, range(len(lines))))
    parts = (
        [t for t, _ in by_token],
        [i for _, i in by_token],
        [p for p, _ in by_pair],
        [r for _, r in by_pair],
    )
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        temp = cached.with_name(f"{cached.name}.{os.getpid()}.tmp")
        temp.write_bytes(marshal.dumps(parts))
        os.replace(temp, cached)
    except OSError:  # a read-only cache: built again next time
        pass
    return _Tables(*parts)
