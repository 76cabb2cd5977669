"""Text->image R@1/R@5 on compositional queries: `tiny` alone vs `tiny` top-50 reranked by `tiny-itm`.

    python benchmarks/rerank_itm.py                       # 500 queries, 3,000 pictures
    python benchmarks/rerank_itm.py --queries 50 --random 100 --out /tmp/r.json   # quick

Queries are held-out shapes-world captions of two-object scenes, spread evenly over the six
kinds (83-84 each of the default 500), each naming a fact CLIP is weak at:

==================  ==================================================  =========================
kind                query                                               its hard distractor
==================  ==================================================  =========================
``swap_colours``    "a red circle and a blue square"                    a blue circle, a red square
``colour``          "a red circle and a blue square"                    a green circle, a blue square
``shape``           "a red circle and a blue square"                    a red star, a blue square
``count``           "two blue squares" / "three blue squares"           three / two blue squares
``position``        "a red circle on the left and a blue square on ..."  the two exchanged
``size``            "a large red circle and a small blue square"        a small red circle, ...
==================  ==================================================  =========================

The gallery holds every query's scene, up to three distractors one fact away from it and false
of the query (its own kind's twin first), drawn from the same random state (same background,
style, shades and jitter), plus random scenes. A picture is relevant when the query is true of it
(the caption templates' truth, `mmsearch.synth.hard_negatives.describes`), so a random scene
that happens to fit counts too.

Pictures go through `encode_with_patches`, as the indexer stores them: the CLIP vector and the
patch features from one pass. The rerank scores the top 50 with `score_one(query, patches)`; the
added latency is that call alone (patch features already in memory, as a store would hand them
over), timed per query on ``--threads`` torch threads after a warm-up. Results are appended to
benchmarks/results/rerank_itm.json.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, measure_and_record, percentile_ms, set_torch_threads  # noqa: E402

from mmsearch.synth import Scene, sample_scene, scene_captions  # noqa: E402
from mmsearch.synth.hard_negatives import NEGATIVE_KINDS, describes, mutate  # noqa: E402
from mmsearch.train.data import AugmentConfig, augmented_rendering  # noqa: E402

SEED_BASE = 3_000_000_019  # no training or model-card scene draws these seeds
TOP_N = 50
KS = (1, 5)


# ---------------------------------------------------------------- queries and gallery


def query_for(kind: str, rng: random.Random) -> tuple[str, Scene, list[Scene]]:
    """A two-object scene, a query true of it that its `kind` twin makes false, and distractors."""
    while True:
        if kind == "count":
            scene = sample_scene(rng, n_objects=rng.choice((2, 3)), duplicate_prob=1.0)
        else:
            scene = sample_scene(rng, n_objects=2, duplicate_prob=0.0)
        twin = mutate(scene, kind, rng)
        if twin is None:
            continue
        plain = [c for c in scene_captions(scene) if not c.startswith(("a photo", "a picture"))]
        telling = [c for c in plain if not describes(c, twin)]
        if telling:
            query = telling[0]
            return query, scene, [twin, *_more_distractors(scene, query, twin, rng)]


def _more_distractors(
    scene: Scene, query: str, twin: Scene, rng: random.Random, n: int = 2
) -> list[Scene]:
    found: list[Scene] = []
    seen = {twin.objects}
    for _ in range(40):
        other = mutate(scene, rng.choice(NEGATIVE_KINDS), rng)
        if other is None or other.objects in seen or describes(query, other):
            continue
        seen.add(other.objects)
        found.append(other)
        if len(found) == n:
            break
    return found


def build_gallery(n_queries: int, n_random: int, augment: AugmentConfig):
    """Queries (text, kind, target index) and gallery (scenes, PIL images)."""
    queries, scenes, images = [], [], []
    for q in range(n_queries):
        kind = NEGATIVE_KINDS[q % len(NEGATIVE_KINDS)]
        rng = random.Random(SEED_BASE + q)
        query, target, distractors = query_for(kind, rng)
        state = rng.randrange(2**31)
        queries.append({"text": query, "kind": kind, "target": len(scenes)})
        for scene in (target, *distractors):
            scenes.append(scene)
            images.append(augmented_rendering(scene, random.Random(state), augment))
    for i in range(n_random):
        rng = random.Random(SEED_BASE + 1_000_000 + i)
        scene = sample_scene(rng)
        scenes.append(scene)
        images.append(augmented_rendering(scene, rng, augment))
    return queries, scenes, images


# ---------------------------------------------------------------- measuring


def recall(ranked: list[np.ndarray], relevant: list[set[int]], k: int) -> float:
    return float(np.mean([bool(rel & set(r[:k].tolist())) for r, rel in zip(ranked, relevant)]))


def run(args: argparse.Namespace) -> dict:
    import torch

    from mmsearch.models import load_encoder
    from mmsearch.models.itm import itm_for_encoder, load_itm
    from mmsearch.models.patches import bytes_per_item, encode_with_patches

    threads = set_torch_threads(args.threads)
    t0 = time.perf_counter()
    queries, scenes, images = build_gallery(args.queries, args.random, AugmentConfig())
    render_s = time.perf_counter() - t0
    encoder = load_encoder(args.model, device="cpu")
    itm = load_itm(args.itm or itm_for_encoder(encoder.name) or "")
    pixels = torch.stack([encoder.preprocess(im) for im in images])
    embeddings, patches = [], []
    for start in range(0, len(pixels), 256):
        e, p = encode_with_patches(encoder, pixels[start : start + 256])
        embeddings.append(e)
        patches.append(p)
    embeddings, patches = np.concatenate(embeddings), np.concatenate(patches)
    texts = [q["text"] for q in queries]
    relevant = [{g for g, s in enumerate(scenes) if describes(t, s)} for t in texts]
    clip = encoder.encode_texts(texts) @ embeddings.T
    clip_ranked = [np.argsort(-row, kind="stable") for row in clip]
    for text in texts[:5]:  # warm-up: first calls allocate
        itm.score_one(text, patches[clip_ranked[0][:TOP_N]])
    reranked, added = [], []
    for text, order in zip(texts, clip_ranked):
        top = order[:TOP_N]
        start = time.perf_counter()
        probs = itm.score_one(text, patches[top])
        added.append(time.perf_counter() - start)
        reranked.append(np.concatenate([top[np.argsort(-probs, kind="stable")], order[TOP_N:]]))
    result = {
        "model": encoder.name,
        "itm": itm.name,
        "queries": len(queries),
        "gallery": len(scenes),
        "top_n": TOP_N,
        "torch_threads": threads,
        "patch_shape": list(patches.shape[1:]),
        "patch_bytes_per_item": bytes_per_item(patches.shape[1:]),
        "clip": {f"R@{k}": round(recall(clip_ranked, relevant, k), 4) for k in KS},
        "reranked": {f"R@{k}": round(recall(reranked, relevant, k), 4) for k in KS},
        "per_kind": {},
        "added_ms_per_query": {
            "mean": round(1000 * float(np.mean(added)), 2),
            "p50": percentile_ms(added, 50),
            "p95": percentile_ms(added, 95),
        },
        "render_seconds": round(render_s, 1),
    }
    for kind in NEGATIVE_KINDS:
        rows = [i for i, q in enumerate(queries) if q["kind"] == kind]
        result["per_kind"][kind] = {
            name: round(recall([ranked[i] for i in rows], [relevant[i] for i in rows], 1), 4)
            for name, ranked in (("clip_R@1", clip_ranked), ("reranked_R@1", reranked))
        }
    result["R@1_gain"] = round(result["reranked"]["R@1"] - result["clip"]["R@1"], 4)
    return result


def report(result: dict) -> None:
    print(
        f"{result['queries']} queries over {result['gallery']} pictures, {result['model']} + {result['itm']}"
    )
    print(f"{'':<22}{'R@1':>8}{'R@5':>8}")
    for name, label in (("clip", "CLIP alone"), ("reranked", f"CLIP top-{result['top_n']} + ITM")):
        print(f"{label:<22}{result[name]['R@1']:>8.3f}{result[name]['R@5']:>8.3f}")
    print(f"R@1 gain: {result['R@1_gain']:+.3f}")
    print("R@1 by query kind (CLIP -> reranked):")
    for kind, figures in result["per_kind"].items():
        print(f"  {kind:<14}{figures['clip_R@1']:.3f} -> {figures['reranked_R@1']:.3f}")
    lat = result["added_ms_per_query"]
    print(
        f"added per query (score {result['top_n']} stored patch sets, {result['torch_threads']} threads): "
        f"mean {lat['mean']} ms, p50 {lat['p50']} ms, p95 {lat['p95']} ms"
    )
    print(
        f"patch features: {result['patch_shape']} float16 = {result['patch_bytes_per_item']} bytes per item"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--queries", type=int, default=500, help="queries, spread evenly over the kinds"
    )
    parser.add_argument(
        "--random", type=int, default=1000, help="random scenes added to the gallery"
    )
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--itm", default=None, help="ITM model (default: the encoder's companion)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "rerank_itm.json")
    return measure_and_record(run, report, parser.parse_args(argv))


if __name__ == "__main__":
    main()
