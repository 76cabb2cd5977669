"""Personalisation through concepts: the sparse concept model, the concept basis built from a
vocabulary and modifiers, and the choice between concepts and raw features by held-out queries."""

from __future__ import annotations

import numpy as np

from mmsearch.query.concepts import (
    SHAPES_MODIFIERS,
    ConceptBasis,
    Modifier,
    _articles,
    concept_directions,
    standardised,
    subjects,
)
from mmsearch.query.personal import (
    fit_logistic,
    fit_sparse_logistic,
    learn_profile,
)
from mmsearch.tags.vocabulary import parse_vocabulary

DIM = 128


def _world(rng, n, kinds):
    """Fake CLIP vectors: a strong direction per kind (what is in the picture), a weak "large"
    direction (how big it is, the taste), noise; judged items come from the kinds' queries."""
    names = {k: np.random.default_rng(100 + k).normal(size=DIM) for k in range(6)}
    large_dir = np.random.default_rng(99).normal(size=DIM)
    large_dir /= np.linalg.norm(large_dir)
    kind = rng.choice(kinds, n)
    large = rng.random(n) < 0.4
    vectors = (
        np.array([names[k] for k in kind])
        + 1.5 * large[:, None] * large_dir
        + 0.3 * rng.normal(size=(n, DIM))
    )
    return vectors, large, kind, names, large_dir


def _auc(scores, labels):
    pos, neg = scores[labels], scores[~labels]
    return float((pos[:, None] > neg[None, :]).mean())


def _basis(names, large_dir, reference):
    rows = [names[k] / np.linalg.norm(names[k]) for k in range(6)] + [large_dir]
    return standardised([f"kind {k}" for k in range(6)] + ["large"], np.array(rows), reference)


def test_sparse_logistic_keeps_only_what_the_labels_need():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 12))
    y = (x[:, 4] > 0).astype(float)
    w, b = fit_sparse_logistic(x, y, l1=0.05)
    assert np.argmax(np.abs(w)) == 4 and w[4] > 0
    assert (w == 0).sum() >= 8  # exact zeros, not small numbers
    dense, _ = fit_logistic(x, y)
    assert (dense == 0).sum() == 0
    none, _ = fit_sparse_logistic(x, y, l1=10.0)
    assert not none.any()  # a strong prior: no opinion


def test_concepts_carry_a_weak_taste_to_subjects_never_judged():
    rng = np.random.default_rng(3)
    vectors, large, kind, names, large_dir = _world(rng, 20, kinds=[0, 1, 2])  # judged on 3 kinds
    test_v, test_large, *_ = _world(np.random.default_rng(53), 300, kinds=[3, 4, 5])  # never judged
    reference, *_ = _world(np.random.default_rng(6), 500, kinds=[0, 1, 2, 3, 4, 5])
    basis = _basis(names, large_dir, reference)
    groups = [f"query {k}" for k in kind[large]] + [f"query {k}" for k in kind[~large]]
    with_concepts = learn_profile(vectors[large], vectors[~large], concepts=basis, groups=groups)
    raw = learn_profile(vectors[large], vectors[~large])
    assert with_concepts.model in ("concepts", "both") and raw.model == "features"
    assert next(iter(with_concepts.concepts_learned())) == "large"  # the taste, in a word
    assert (
        _auc(with_concepts.concept_margin(test_v), test_large) > 0.88
    )  # the words carry the taste
    raw_auc = _auc(raw.preference(test_v), test_large)
    assert raw_auc < 0.83  # the ridge on raw vectors does worse
    assert (
        _auc(with_concepts.preference(test_v), test_large) > raw_auc + 0.05
    )  # and the whole model gains
    exported = with_concepts.to_dict()
    assert exported["features"][0] == "concepts" and "large" in exported["concepts"]
    assert "more large (+" in _shown(
        {"user": "ann", "model": exported, "events": []}
    )  # profile show says it


def _shown(profile: dict) -> str:
    from rich.console import Console

    from mmsearch.cli_output import profile_table

    console = Console(width=200, record=True)
    console.print(profile_table(profile))
    return " ".join(console.export_text().split())  # the caption wraps to the table's width


def test_a_taste_the_concepts_cannot_name_is_learned_by_the_raw_features_alone():
    """A taste the concepts do not name (one fixed direction unlike any of them, liked and
    disliked under every query): the sparse concept model keeps no word, and the learned order
    is exactly the plain ridge model's."""
    rng = np.random.default_rng(8)
    vectors, _, kind, names, large_dir = _world(rng, 24, kinds=[0, 1, 2])
    taste = np.random.default_rng(77).normal(size=DIM)

    def liked_by(v, k):
        t, out = v @ taste, np.zeros(len(v), bool)
        for q in np.unique(k):
            out[k == q] = t[k == q] > np.median(t[k == q])
        return out

    liked = liked_by(vectors, kind)
    reference, *_ = _world(np.random.default_rng(6), 500, kinds=[0, 1, 2, 3, 4, 5])
    basis = _basis(names, large_dir, reference)
    groups = [f"query {k}" for k in kind[liked]] + [f"query {k}" for k in kind[~liked]]
    profile = learn_profile(vectors[liked], vectors[~liked], concepts=basis, groups=groups)
    plain = learn_profile(vectors[liked], vectors[~liked])
    assert profile.concepts_learned() == {}
    test_v, _, test_kind, *_ = _world(np.random.default_rng(53), 300, kinds=[0, 1, 2])
    learned, ridge = profile.preference(test_v), plain.preference(test_v)
    assert np.array_equal(np.argsort(learned), np.argsort(ridge))
    assert _auc(learned, liked_by(test_v, test_kind)) > 0.6  # the taste is learned, not noise


class _Encoder:
    """Embeds a text as the sum of fixed random word vectors (enough to check the arithmetic)."""

    name, weights_id = "fake", "fake-1"

    def __init__(self):
        self.seen: list[str] = []

    def encode_texts(self, texts):
        self.seen += list(texts)
        out = []
        for t in texts:
            v = sum(
                np.random.default_rng(abs(hash(w)) % 2**32).normal(size=8)
                for w in t.lower().split()
            )
            out.append(v / np.linalg.norm(v))
        return np.array(out, np.float32)


def test_modifier_contrasts_are_built_on_the_vocabularys_subjects():
    vocabulary = parse_vocabulary("[colour]\nred = a red circle | a red star\n[subject]\napple\n")
    assert subjects(vocabulary) == ["red circle", "red star", "apple"]
    assert (
        _articles("large apple") == "a large apple"
        and _articles("a orange star") == "an orange star"
    )
    encoder = _Encoder()
    modifiers = (
        Modifier("large", "size", "large {}"),
        Modifier("on the left", "position", "{} on the left"),
    )
    names, rows = concept_directions(encoder, vocabulary, modifiers)
    assert names == ["red", "apple", "large", "on the left"] and rows.shape == (4, 8)
    assert "a large apple" in encoder.seen and "an apple on the left" in encoder.seen
    unit = lambda m: m / np.linalg.norm(m)  # noqa: E731
    emb = lambda ts: unit(np.mean([unit(v) for v in encoder.encode_texts(ts)], axis=0))  # noqa: E731
    expected = emb(["a large red circle", "a large red star", "a large apple"]) - emb(
        ["a red circle", "a red star", "an apple"]
    )
    assert np.allclose(rows[2], expected, atol=1e-6)
    basis = standardised(names, rows, np.random.default_rng(1).normal(size=(200, 8)))
    f = basis.features(np.random.default_rng(1).normal(size=(200, 8)))
    assert np.allclose(f.mean(axis=0), 0, atol=1e-9) and np.allclose(f.std(axis=0), 1)
    assert isinstance(basis, ConceptBasis) and len(basis) == 4
    assert {m.group for m in SHAPES_MODIFIERS} == {"size", "position"}
