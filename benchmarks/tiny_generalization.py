"""Does `tiny` hold on shapes it never saw drawn? Colour+shape precision@5, English and Chinese.

    python benchmarks/tiny_generalization.py                     # the shipped tiny, 960 + 1000 pictures
    python benchmarks/tiny_generalization.py --model /tmp/x/tiny.safetensors --n 480
    python benchmarks/tiny_generalization.py --update-card       # also write the figures into tiny's card

Two held-out sets of single-object pictures, each asked the 48 colour+shape queries ("a red
circle" ... "a black cross", and in Chinese "一个红色的圆" ... "一个黑色的十字"):

- **independent renderer** (`benchmarks/independent_render.py`, never used in training): other
  code, other proportions (thin crosses, narrow diamonds, fat stars), other colour shades,
  outlines, shading, shadows, textured backgrounds; n pictures, colour+shape pairs balanced;
- **own renderer** (`mmsearch.synth`): the model card's `single_objects_224px` set (seeds no
  training scene draws, canonical drawing at 224x224).

A query's precision@5 is the share of its five nearest pictures (by the encoder's cosine) that
show its colour and shape. Printed, and appended to benchmarks/results/tiny_generalization.json;
`--update-card` also stores them in tiny's metrics.json and rewrites its MODEL_CARD.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, measure_and_record, set_torch_threads  # noqa: E402

INDEPENDENT_SEED = 424242


def _summary(per_query: dict[str, float], shapes: dict[str, str]) -> dict:
    by_shape: dict[str, list[float]] = {}
    for q, p in per_query.items():
        by_shape.setdefault(shapes[q], []).append(p)
    return {
        "p_at_5": round(sum(per_query.values()) / len(per_query), 4),
        "queries": len(per_query),
        "by_shape": {s: round(sum(v) / len(v), 3) for s, v in by_shape.items()},
        "worst": sorted(per_query.items(), key=lambda kv: kv[1])[:6],
    }


def evaluate(encoder, n: int, own_n: int, seed: int = INDEPENDENT_SEED) -> dict:
    """P@5 per language on the independent renderer's n pictures and the own renderer's own_n."""
    from independent_render import single_object_set

    from mmsearch.synth import vocab
    from mmsearch.synth.captions_zh import colour_shape_query_zh
    from mmsearch.train.evaluate import colour_shape_precision, colour_shape_query
    from mmsearch.train.tiny import held_out_set

    queries = {"en": colour_shape_query, "zh": colour_shape_query_zh}
    shape_of = {q(c, s): s for q in queries.values() for c in vocab.COLOURS for s in vocab.SHAPES}
    out = {}
    started = time.perf_counter()
    drawn = single_object_set(n, seed)
    render_s = time.perf_counter() - started
    vectors = encoder.encode_images([img for img, _ in drawn])
    truths = [{(d.colour, d.shape)} for _, d in drawn]
    out["independent"] = {
        "n_images": n,
        "seed": seed,
        "render_seconds": round(render_s, 1),
        **{lang: _summary(colour_shape_precision(encoder.encode_texts, vectors, truths, q), shape_of) for lang, q in queries.items()},
        "by_style_en": {},
    }
    for style in ("fill", "fill+outline", "outline"):
        idx = [i for i, (_, d) in enumerate(drawn) if d.style == style]
        sub = colour_shape_precision(encoder.encode_texts, vectors[idx], [truths[i] for i in idx], colour_shape_query)
        out["independent"]["by_style_en"][style] = round(sum(sub.values()) / max(1, len(sub)), 3) if sub else None
    if own_n:
        scenes, images = held_out_set(own_n, None)
        vectors = encoder.encode_images(images)
        truths = [{(o.colour, o.shape) for o in sc.objects} for sc in scenes]
        out["own_single_objects_224px"] = {
            "n_images": own_n,
            **{lang: _summary(colour_shape_precision(encoder.encode_texts, vectors, truths, q), shape_of) for lang, q in queries.items()},
        }
    return out


def run(args: argparse.Namespace) -> dict:
    from mmsearch.models import load_encoder

    threads = set_torch_threads(args.threads)
    encoder = load_encoder(args.model, device="cpu")
    result = {
        "model": args.model,
        "weights_id": encoder.weights_id,
        "torch_threads": threads,
        **evaluate(encoder, args.n, args.own_n, args.seed),
    }
    if args.update_card:
        update_card(result, args.model)
    return result


def update_card(result: dict, model: str) -> None:
    """Store the figures in a bundled model's metrics.json and rewrite its model card."""
    from mmsearch.models import tiny_weights_path
    from mmsearch.models.registry import BUNDLED
    from mmsearch.train.tiny import model_card

    if model not in BUNDLED:
        raise SystemExit(f"--update-card needs a bundled model name ({', '.join(BUNDLED)}), not {model!r}")
    folder = tiny_weights_path(model).parent
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["generalization"] = {k: v for k, v in result.items() if k not in ("device",)}
    metrics["generalization"]["command"] = f"python benchmarks/tiny_generalization.py --model {model} --update-card"
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
    (folder / "MODEL_CARD.md").write_text(model_card(metrics))


def report(result: dict) -> None:
    for label in ("independent", "own_single_objects_224px"):
        if label not in result:
            continue
        block = result[label]
        for lang in ("en", "zh"):
            r = block[lang]
            shapes = ", ".join(f"{s} {p:.2f}" for s, p in r["by_shape"].items())
            print(f"{label:26s} {lang}: colour+shape P@5 {r['p_at_5']:.3f} over {r['queries']} queries ({shapes})")
        print(f"{'':26s} worst (en): {block['en']['worst']}")
        print(f"{'':26s} worst (zh): {block['zh']['worst']}")
    if "independent" in result:
        print("independent by style (en):", result["independent"]["by_style_en"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="model name or weights file (default: the shipped tiny)")
    parser.add_argument("--n", type=int, default=960, help="independent-renderer pictures (20 per colour+shape)")
    parser.add_argument("--own-n", type=int, default=1000, help="own-renderer pictures (0: skip)")
    parser.add_argument("--seed", type=int, default=INDEPENDENT_SEED)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--update-card", action="store_true", help="write the figures into the bundled model's card")
    parser.add_argument("--out", type=Path, default=RESULTS / "tiny_generalization.json")
    return measure_and_record(run, report, parser.parse_args(argv))


if __name__ == "__main__":
    main()
