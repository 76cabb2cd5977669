"""OCR: word recall on rendered pictures, search hits by a word on the picture, and cost per picture.

    python benchmarks/ocr.py                   # 60 pictures (40 English, 20 Chinese)
    python benchmarks/ocr.py --pictures 20 --out /tmp/o.json

Each picture is rendered with PIL (seeded): one to three lines of words drawn from a word list,
in DejaVu Sans or WenQuanYi Micro Hei, at 24-48 px, in a dark colour on a light, slightly noisy
background, sometimes rotated a few degrees, saved as PNG or JPEG. Everything goes through
`mmsearch index --ocr` (Engine.index with tiny). Reported:

- word recall: words of the picture found in its stored ``ocr`` passage (Chinese: each
  two-character word as a substring);
- search: for every word used, R-precision (with n pictures showing it, the share of them in
  the top n results of a search for the word);
- cost: OCR seconds per picture inside the workers, and the whole run with and without OCR.

Results are appended to benchmarks/results/ocr.json.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, measure_and_record, set_torch_threads  # noqa: E402

LATIN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"
ENGLISH = ["invoice", "budget", "meeting", "garden", "window", "station", "ticket", "harbour", "museum", "library", "schedule", "coffee", "delivery", "warranty", "passport", "mountain", "history", "chemistry", "orange", "theatre", "parking", "airport", "kitchen", "hospital", "festival", "concert", "weather", "account", "summary", "project", "holiday", "receipt"]
CHINESE = ["会议", "预算", "车站", "图书", "花园", "机场", "医院", "天气", "咖啡", "门票", "项目", "历史", "厨房", "音乐", "假期", "收据"]


def render(path: Path, words: list[str], font_file: str, rng: random.Random) -> None:
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    size = rng.randint(24, 48)
    font = ImageFont.truetype(font_file, size)
    picture = Image.new("RGB", (760, 360), tuple(rng.randint(215, 250) for _ in range(3)))
    draw = ImageDraw.Draw(picture)
    per_line = max(1, len(words) // rng.randint(1, 3))
    y = rng.randint(20, 60)
    for start in range(0, len(words), per_line):
        sep = "" if font_file == CJK_FONT else " "
        draw.text((rng.randint(20, 60), y), sep.join(words[start : start + per_line]), font=font,
                  fill=tuple(rng.randint(0, 70) for _ in range(3)))  # fmt: skip
        y += int(size * 1.6)
    if rng.random() < 0.3:
        picture = picture.rotate(rng.uniform(-4, 4), expand=False, fillcolor=picture.getpixel((0, 0)))
    picture = picture.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.6)))
    if rng.random() < 0.5:
        picture.save(path.with_suffix(".jpg"), quality=rng.randint(80, 95))
    else:
        picture.save(path.with_suffix(".png"))


def run(args: argparse.Namespace) -> dict:
    from mmsearch import Engine, IndexOptions

    threads = set_torch_threads(args.threads)
    rng = random.Random(args.seed)
    truth: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pictures"
        folder.mkdir()
        chinese = args.pictures // 3
        for i in range(args.pictures):
            is_cjk = i < chinese
            words = rng.sample(CHINESE if is_cjk else ENGLISH, rng.randint(2, 5))
            render(folder / f"p{i:03d}", words, CJK_FONT if is_cjk else LATIN_FONT, rng)
            truth[f"p{i:03d}"] = words
        started = time.perf_counter()
        with Engine(Path(tmp) / "plain", "tiny") as engine:
            engine.index([folder], options=IndexOptions(workers=args.workers))
        plain_s = time.perf_counter() - started
        started = time.perf_counter()
        with Engine(Path(tmp) / "home", "tiny") as engine:
            summary = engine.index([folder], options=IndexOptions(workers=args.workers, ocr=True))
            ocr_s = time.perf_counter() - started
            catalog = engine.collection.catalog
            read = {
                Path(r.path).stem: r.text or ""
                for r in catalog.items_by_ids(catalog.item_ids())
                if r.kind == "ocr"
            }
            found_words = total_words = 0
            per_script = {"english": [0, 0], "chinese": [0, 0]}
            for stem, words in truth.items():
                text = read.get(stem, "").lower()
                script = "chinese" if words[0] in CHINESE else "english"
                got = sum(w.lower() in text for w in words)
                found_words += got
                total_words += len(words)
                per_script[script][0] += got
                per_script[script][1] += len(words)
            precisions, keyword_precisions = [], []
            stems = {r.id: Path(r.path).stem for r in catalog.items_by_ids(catalog.item_ids())}
            for word in sorted({w for words in truth.values() for w in words}):
                holding = {stem for stem, words in truth.items() if word in words}
                results = engine.search(word, k=len(holding), user=None)
                precisions.append(len({Path(h.path).stem for h in results} & holding) / len(holding))
                ranked = [stems[i] for i, _ in catalog.keyword_search(word, limit=len(holding))]
                keyword_precisions.append(len(set(ranked) & holding) / len(holding))
    return {
        "model": "tiny",
        "pictures": args.pictures,
        "seed": args.seed,
        "workers": args.workers,
        "torch_threads": threads,
        "word_recall": round(found_words / total_words, 3),
        "word_recall_by_script": {k: round(a / b, 3) for k, (a, b) in per_script.items() if b},
        "search_r_precision": round(sum(precisions) / len(precisions), 3),
        "keyword_ranker_r_precision": round(sum(keyword_precisions) / len(keyword_precisions), 3),
        "ocr_seconds_per_picture": round(summary.ocr_seconds / max(summary.ocr_pictures, 1), 3),
        "index_seconds_without_ocr": round(plain_s, 1),
        "index_seconds_with_ocr": round(ocr_s, 1),
    }


def report(result: dict) -> None:
    print(f"{result['pictures']} rendered pictures, Tesseract through `index --ocr`")
    print(f"word recall {result['word_recall']:.3f} ({result['word_recall_by_script']})")
    print(
        f"searching each word: R-precision {result['search_r_precision']:.3f} through the fused "
        f"search, {result['keyword_ranker_r_precision']:.3f} from the keyword ranker alone "
        "(of the n pictures showing it, the share in the top n)"
    )
    print(
        f"OCR {result['ocr_seconds_per_picture']} s per picture in a worker; whole run "
        f"{result['index_seconds_without_ocr']} s without OCR, {result['index_seconds_with_ocr']} s with "
        f"({result['workers'] or 'auto'} workers)"
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=0, help="decode workers (0: one per core)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--out", type=Path, default=RESULTS / "ocr.json")
    return measure_and_record(run, report, parser.parse_args(argv))


if __name__ == "__main__":
    main()
