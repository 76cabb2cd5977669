"""Does `--precision int8` keep a *trained* ViT's rankings? Train a small ViT CLIP, compare.

    python benchmarks/int8_trained_vit.py                  # ~12 min on 2 cores
    python benchmarks/int8_trained_vit.py --scenes 6000 --epochs 2   # a quick look

`precision_agreement.py` compares int8 with fp32 on the bundled `tiny` (a ResNet tower, which
int8 does not apply to) or on random-init ViT weights, whose activations look nothing like a
trained model's. No pretrained ViT can be downloaded here, so this script trains one: a small
ViT image tower (open_clip's `VisionTransformer`, the module int8 converts in ViT-B-32) with
tiny's text tower, on the shapes world, seeded. It then encodes held-out scenes with the model
in fp32 and with `quantize_image_tower` applied, and reports colour+shape precision@5 for each,
text->image recall@k for each, the top-10 agreement of the two rankings and the picture cosine.
Appends to benchmarks/results/int8_trained_vit.json.
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, print_and_append, stamp, top_k_agreement  # noqa: E402

VISION = {"image_size": 64, "patch_size": 8, "width": 192, "layers": 6, "head_width": 32}
TEXT = {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 3}


def main(argv: list[str] | None = None) -> dict:
    import open_clip
    import torch

    from mmsearch.models.device import quantize_image_tower
    from mmsearch.models.openclip_loader import preprocess_for
    from mmsearch.train.data import AugmentConfig, render_set
    from mmsearch.train.evaluate import evaluate_held_out
    from mmsearch.train.loop import LoopConfig, train_contrastive
    from mmsearch.train.tiny import held_out_set

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=6_000, help="rendered training scenes")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--eval", type=int, default=600, help="held-out scenes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=RESULTS / "int8_trained_vit.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    model = open_clip.model.CLIP(embed_dim=128, vision_cfg=VISION, text_cfg=TEXT)
    tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=TEXT["context_length"])
    pp = preprocess_for(model)
    t0 = time.perf_counter()
    data = render_set(args.scenes, args.seed + 1, pp.to_uint8, AugmentConfig(), workers=2)
    caption_rng = random.Random(args.seed)
    loop = LoopConfig(epochs=args.epochs, batch_size=128, lr=2e-3, warmup_steps=100, seed=args.seed)
    trained = train_contrastive(
        model, tokenizer, data.pixels, lambda _e: data.captions(caption_rng), pp.mean, pp.std, loop
    )
    train_s = time.perf_counter() - t0
    model.eval().requires_grad_(False)
    int8 = copy.deepcopy(model)
    quantize_image_tower(int8)

    def encoders(net):
        def images(pictures):
            batch = torch.stack([pp(p) for p in pictures])
            with torch.inference_mode():
                out = torch.cat([net.encode_image(b) for b in batch.split(128)])
            return torch.nn.functional.normalize(out, dim=-1).numpy()

        def texts(captions):
            with torch.inference_mode():
                out = net.encode_text(tokenizer(list(captions)))
            return torch.nn.functional.normalize(out, dim=-1).numpy()

        return images, texts

    reports, vectors = {}, {}
    for label, aug in (("augmented_scenes", AugmentConfig()), ("single_objects_224px", None)):
        scenes, pictures = held_out_set(args.eval, aug)
        for precision, net in (("fp32", model), ("int8", int8)):
            enc_images, enc_texts = encoders(net)
            rep = evaluate_held_out(enc_images, enc_texts, pictures, scenes)
            reports.setdefault(label, {})[precision] = {
                "colour_shape_p_at_5": round(rep.colour_shape_p_at_5, 4),
                "text_to_image_recall": {k: round(v, 4) for k, v in rep.text_to_image_recall.items()},
            }
            if label == "augmented_scenes":
                vectors[precision] = enc_images(pictures)
        if label == "augmented_scenes":
            queries = sorted({f"a {c} {s}" for sc in scenes for o in sc.objects for c, s in [(o.colour, o.shape)]})
            text = encoders(model)[1](queries)  # the text tower is fp32 in both
            agreement = top_k_agreement(text, vectors["fp32"], vectors["int8"])
    result = stamp(
        {
            "vision_cfg": VISION,
            "train_scenes": args.scenes,
            "epochs": args.epochs,
            "train_seconds": round(train_s, 1),
            "final_loss": round(trained.losses[-1], 4),
            "held_out": reports,
            "int8_vs_fp32": agreement,
            "command": "python benchmarks/int8_trained_vit.py " + " ".join(argv or sys.argv[1:]),
        }
    )
    return print_and_append(result, args.out)


if __name__ == "__main__":
    main()
