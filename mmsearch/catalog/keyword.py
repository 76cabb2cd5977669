"""Turn what a person typed into a safe FTS5 query: words only, each quoted, joined with OR.

FTS5 has its own query language (AND/OR/NOT/NEAR, column filters, ``*``, ``^``, quotes). User
text must never reach it as syntax: ``a-b`` would parse as a column filter, an unbalanced quote
is an error. So the text is cut into word tokens and each is written as a quoted string, where
nothing is an operator. OR between them lets bm25 rank passages that share the rarest words
first, rather than demanding every word. The result is passed as a bound parameter.

Common English function words are dropped (unless the query has nothing else): with OR they
would make nearly every passage a "match", and since the engine fuses by rank, a list ordered
by shared stopwords would carry as much weight as one ordered by shared content words.
"""

from __future__ import annotations

import re

MAX_TERMS = 32
"""Words kept from a query: a pasted paragraph should not become a thousand-term OR."""

_WORD = re.compile(r"\w+", re.UNICODE)
_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")

STOPWORDS = frozenset(  # a word list reads better as text than as quoted strings
    """a about above after again all am an and any are as at be been before being below between
    both but by can could did do does doing down during each few for from further had has have
    having he her here hers him his how i if in into is it its itself just me more most my no
    nor not of off on once only or other our ours out over own same she should so some such
    than that the their theirs them then there these they this those through to too under
    until up very was we were what when where which while who whom why will with would you
    your yours""".split()  # noqa: SIM905
)


def cjk_runs(text: str) -> list[str]:
    """Runs of Chinese/Japanese characters in a query, unique, in order."""
    return list(dict.fromkeys(_CJK_RUN.findall(text)))


def cjk_match_expression(runs: list[str], max_terms: int = MAX_TERMS) -> str | None:
    """For the trigram table: runs of three or more characters, quoted, joined with OR (shorter
    runs cannot be trigram-matched; `keyword_search` looks for them with LIKE)."""
    long_runs = [r for r in runs if len(r) >= 3][:max_terms]
    return " OR ".join('"' + r + '"' for r in long_runs) or None


def query_terms(text: str, max_terms: int = MAX_TERMS) -> list[str]:
    """A user query's non-CJK words, lower-cased, unique, in order, stopwords dropped (unless
    nothing else is left). PostgreSQL gets each one as a bound ``plainto_tsquery`` parameter."""
    words = list(dict.fromkeys(_WORD.findall(_CJK_RUN.sub(" ", text).lower())))  # unique, in order
    terms = [w for w in words if w not in STOPWORDS] or words
    return terms[:max_terms]


def fts_match_expression(text: str, max_terms: int = MAX_TERMS) -> str | None:
    """The FTS5 MATCH expression for a user query's non-CJK words, or None when there are none."""
    terms = query_terms(text, max_terms)
    if not terms:
        return None
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)
