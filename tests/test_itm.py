"""The ITM reranker's model side: patch features, hard negatives, `tiny-itm`, and the BLIP loader.

Everything runs the real models; only the network (the Hugging Face hub) is faked.
"""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmsearch.errors import MissingDependencyError, ModelError, ModelUnavailableError
from mmsearch.models import add_model_config, load_encoder
from mmsearch.models import itm as itm_module
from mmsearch.models.itm import (
    TINY_ITM,
    TINY_ITM_DIR,
    ItmConfig,
    build_itm,
    itm_for_encoder,
    load_itm,
    save_itm,
)
from mmsearch.models.patches import bytes_per_item, encode_with_patches, patch_features, patch_shape
from mmsearch.models.registry import CONFIG_DIR
from mmsearch.synth import sample_scene, scene_captions
from mmsearch.synth.hard_negatives import (
    NEGATIVE_KINDS,
    caption_key,
    describes,
    distinguishing_captions,
    mutate,
)
from mmsearch.synth.scene import Background, Scene, ShapeObject
from mmsearch.train.itm_data import build_pair_set

FRESH_SEED = 4_000_000_007  # neither training, the model card nor the benchmark draws these
BLIP_REPO = "Salesforce/blip-itm-base-coco"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_encoder("tiny", device="cpu")


@pytest.fixture(scope="module")
def shipped():
    return load_itm(TINY_ITM)


@pytest.fixture(scope="module")
def pixels(tiny) -> torch.Tensor:
    images = [
        Image.new("RGB", (96, 48), c) for c in ((200, 30, 30), (30, 30, 200), (250, 250, 250))
    ]
    images[0].paste((30, 200, 30), (5, 5, 30, 30))
    return torch.stack([tiny.preprocess(im) for im in images])


def _scene(*objects: tuple[str, str, str, str]) -> Scene:
    grey = (128, 128, 128)
    return Scene(tuple(ShapeObject(*o) for o in objects), Background("plain", grey, grey))


# ---------------------------------------------------------------- patch features


def test_tiny_patches_come_with_the_encoders_own_embeddings(tiny, pixels):
    embeddings, patches = encode_with_patches(tiny, pixels)
    assert embeddings.dtype == np.float32 and embeddings.shape == (3, tiny.dim)
    np.testing.assert_allclose(embeddings, tiny.encode_images(pixels), atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    # the trunk's native 2 x 2 map at 64 px, 512 channels
    assert patches.dtype == np.float16 and patches.shape == (3, 4, 512)
    features = patch_features(tiny.model, pixels)
    assert features.dtype == torch.float16 and tuple(features.shape) == (3, 4, 512)
    np.testing.assert_array_equal(features.numpy(), patches)
    assert patch_shape(tiny) == (4, 512) and bytes_per_item((4, 512)) == 4096
    assert not np.allclose(patches[0], patches[1])  # pictures differ, so do their patches


def test_vit_patches_are_projected_tokens_pooled_to_the_grid(tmp_path: Path):
    config = json.loads((CONFIG_DIR / "mmsearch-tiny.json").read_text())
    config["embed_dim"] = 48
    config["vision_cfg"] = {
        "image_size": 64,
        "layers": 2,
        "width": 64,
        "patch_size": 8,
        "head_width": 32,
    }
    path = tmp_path / "test-mini-vit.json"
    path.write_text(json.dumps(config))
    add_model_config(path)
    enc = load_encoder("test-mini-vit/random", device="cpu")
    x = torch.randn(2, 3, 64, 64)
    embeddings, patches = encode_with_patches(enc, x)
    np.testing.assert_allclose(embeddings, enc.encode_images(x), atol=1e-5)
    assert patches.shape == (2, 4, 48)  # an 8x8 token grid pooled to 2x2, in the 48-d shared space
    visual = enc.model.visual
    visual.output_tokens = True
    try:
        with torch.no_grad():
            _, tokens = visual(x)
    finally:
        visual.output_tokens = False
    grid = (tokens @ visual.proj).reshape(2, 8, 8, 48).permute(0, 3, 1, 2)
    expected = torch.nn.functional.adaptive_avg_pool2d(grid, 2).flatten(2).transpose(1, 2)
    np.testing.assert_allclose(patches, expected.numpy(), atol=2e-3)
    assert encode_with_patches(enc, x, grid=4)[1].shape == (2, 16, 48)


def test_patch_features_refuse_what_is_not_a_clip_model():
    with pytest.raises(TypeError, match="open_clip"):
        patch_features(torch.nn.Linear(2, 2), torch.zeros(1, 3, 8, 8))


# ---------------------------------------------------------------- hard negatives


def test_truth_ignores_prefix_and_object_order():
    scene = _scene(("red", "circle", "small", "left"), ("blue", "square", "large", "right"))
    assert describes("a photo of a blue square and a red circle", scene)
    assert describes("a red circle on the left", scene)  # a partial caption names one object
    assert not describes("a blue circle and a red square", scene)
    assert caption_key("A picture of  two red circles") == "two red circles"


@pytest.mark.parametrize("kind", NEGATIVE_KINDS)
def test_each_twin_is_one_fact_away(kind: str):
    rng = random.Random(3)
    made = 0
    for _ in range(200):
        scene = sample_scene(rng, n_objects=rng.choice((1, 2, 3)))
        twin = mutate(scene, kind, rng)
        if twin is None:
            continue
        made += 1
        assert twin.background == scene.background and twin.extra["negative"] == kind
        assert distinguishing_captions(scene, twin) or distinguishing_captions(twin, scene)
        for caption in distinguishing_captions(scene, twin):
            assert describes(caption, scene) and not describes(caption, twin)
        before, after = scene.objects, twin.objects
        if kind == "swap_colours":
            assert sorted(o.colour for o in before) == sorted(o.colour for o in after)
            assert [o.shape for o in before] == [o.shape for o in after]
        elif kind == "shape":
            assert sum(a.shape != b.shape for a, b in zip(before, after)) == 1
        elif kind == "count":
            assert abs(len(after) - len(before)) == 1
        elif kind == "position":
            assert [(o.colour, o.shape) for o in before] == [(o.colour, o.shape) for o in after]
        else:
            assert [o.position for o in before] == [o.position for o in after]
    assert made > 40


def test_training_groups_are_a_scene_and_distinct_variants_one_fact_away():
    from mmsearch.train.itm_data import sample_group, sample_pair

    for seed in range(30):
        group = sample_group(random.Random(seed), 4)
        assert len(group) == 4
        # size 2 is the twin pair, drawn exactly as before groups existed
        assert sample_group(random.Random(seed), 2) == list(sample_pair(random.Random(seed)))
        scene, variants = group[0], group[1:]
        assert all(v.background == scene.background for v in variants)
        for v in variants:  # one fact away: some caption tells the two apart
            assert distinguishing_captions(scene, v) or distinguishing_captions(v, scene)
        if len({v.objects for v in variants}) == 3:
            assert scene.objects not in {v.objects for v in variants}


def test_clip_neighbours_stay_outside_the_group():
    from mmsearch.train.itm import clip_neighbours
    from mmsearch.train.itm_data import PairSet

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(24, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    pairs = PairSet([None] * 24, np.zeros((24, 4, 512), np.float16), emb, group=4)
    near = clip_neighbours(pairs, 5, chunk=7)
    assert near.shape == (24, 5)
    for i, row in enumerate(near):
        assert not set(row.tolist()) & set(pairs.members(i))
        outside = [j for j in range(24) if j not in pairs.members(i)]
        best = sorted(outside, key=lambda j: -float(emb[i] @ emb[j]))[:5]
        assert set(row.tolist()) == set(best)


def test_one_text_per_gallery_scores_like_pairs(shipped):
    """The net pairs text i with k consecutive pictures; the same logits as pair by pair."""
    patches = torch.from_numpy(np.random.default_rng(1).normal(size=(6, 4, 512)).astype(np.float32))
    ids = shipped.tokenizer(["a red circle and a blue square", "two green stars"])
    with torch.inference_mode():
        grouped = shipped.net(ids, patches)
        paired = shipped.net(ids.repeat_interleave(3, dim=0), patches)
        single = torch.cat([shipped.net(ids[:1], patches[:3]), shipped.net(ids[1:], patches[3:])])
    torch.testing.assert_close(grouped, paired, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grouped, single, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError):
        shipped.net(ids, patches[:5])


# ---------------------------------------------------------------- the ITM interface


def test_itm_for_encoder_names_the_companion():
    assert itm_for_encoder("tiny") == TINY_ITM
    assert itm_for_encoder("ViT-B-32/laion2b_s34b_b79k") is None


def test_shipped_model_reads_tiny_patches(shipped):
    assert shipped.name == TINY_ITM and shipped.encoder == "tiny" and shipped.input == "patches"
    assert shipped.patch_shape == (4, 512)


def test_score_shapes_dtypes_and_pairs(shipped, tiny, pixels):
    _, patches = encode_with_patches(tiny, pixels)
    one = shipped.score_one("a red circle", patches)
    assert one.shape == (3,) and one.dtype == np.float32 and np.all((one >= 0) & (one <= 1))
    np.testing.assert_allclose(
        shipped.score_one("a red circle", patches.astype(np.float32)), one, atol=1e-6
    )
    pairs = shipped.score(["a red circle"] * 3, patches)
    np.testing.assert_allclose(pairs, one, atol=1e-5)  # one text broadcast == the same text per row
    mixed = shipped.score(["a red circle", "two blue stars", "a white square"], patches)
    assert mixed.shape == (3,)
    assert shipped.score_one("a red circle", patches[:0]).shape == (0,)


def test_score_refuses_another_encoders_patches(shipped):
    with pytest.raises(ModelError, match="'tiny'") as info:
        shipped.score_one("a red circle", np.zeros((2, 16, 256), np.float16))
    assert "(2, 16, 256)" in str(info.value)
    with pytest.raises(ValueError, match="2 texts for 3"):
        shipped.score(["a", "b"], np.zeros((3, 4, 512), np.float16))


def test_unknown_words_read_as_one_unknown_token(shipped):
    ids = shipped.tokenizer(["a red circle", "a crimson circle"])
    assert ids.shape == (2, 5)
    assert ids[0, 2] > 1 and ids[1, 2] == 1  # "crimson" is outside the shapes world: UNK


def test_save_and_load_round_trip(tmp_path: Path, shipped):
    config = ItmConfig(
        **{**shipped.config.__dict__, "name": "test-itm", "width": 32, "layers": 1, "heads": 2}
    )
    torch.manual_seed(1)
    model = build_itm(config)
    weights = save_itm(model, tmp_path / "m")
    assert weights.name == "itm.safetensors"
    loaded = load_itm(f"local-dir:{tmp_path / 'm'}")
    patches = np.random.default_rng(0).normal(size=(4, 4, 512)).astype(np.float16)
    np.testing.assert_allclose(
        loaded.score_one("a red circle", patches),
        model.score_one("a red circle", patches),
        atol=2e-3,
    )
    assert loaded.name == f"local-dir:{(tmp_path / 'm').resolve()}"


def test_missing_weights_say_how_to_train(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(itm_module, "TINY_ITM_DIR", tmp_path)
    with pytest.raises(ModelUnavailableError, match=r"python -m mmsearch\.train\.itm"):
        load_itm(TINY_ITM)


@pytest.mark.parametrize("name", ["", "nonsense", "/no/such/folder/"])
def test_bad_names_say_what_would_work(name: str):
    with pytest.raises(ModelError, match="tiny-itm"):
        load_itm(name)


def test_import_is_cheap():
    code = (
        "import sys, mmsearch.models.itm, mmsearch.models.patches, mmsearch.models.itm_blip; "
        "print(sorted({'torch', 'open_clip', 'transformers'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------- the shipped model's quality


@pytest.mark.slow
def test_shipped_model_tells_true_captions_from_hard_negatives(shipped, tiny):
    """Fresh scenes: the true caption beats its hard negative, and the scene beats its twin."""
    from mmsearch.train.itm import evaluate_pairs

    torch.set_num_threads(2)
    pairs = build_pair_set(150, FRESH_SEED, tiny, workers=1)
    report = evaluate_pairs(shipped, pairs, tiny, seed=1)
    itm, clip = report["itm"], report["clip"]
    assert itm["text_side"]["all"] >= 0.85, itm
    assert itm["image_side"]["all"] >= 0.8, itm
    assert itm["image_side"]["swap_colours"] > clip["image_side"]["swap_colours"], report
    assert itm["image_side"]["all"] > clip["image_side"]["all"], report


def test_model_card_and_metrics_are_shipped():
    for name in ("MODEL_CARD.md", "metrics.json", "itm_config.json", "tiny-itm.safetensors"):
        assert (TINY_ITM_DIR / name).is_file(), name
    metrics = json.loads((TINY_ITM_DIR / "metrics.json").read_text())
    assert metrics["patch_bytes_per_item"] == 4096
    assert metrics["held_out"]["itm"]["image_side"]["all"] >= 0.8
    assert metrics["held_out"]["itm"]["text_side"]["all"] >= 0.8
    assert metrics["weights_bytes"] < 4_000_000
    card = (TINY_ITM_DIR / "MODEL_CARD.md").read_text()
    assert "python -m mmsearch.train.itm" in card and "bytes per item" in card


@pytest.mark.slow
def test_training_command_writes_a_loadable_model(tmp_path: Path):
    from mmsearch.train.itm import main

    main(["--out", str(tmp_path), "--n-pairs", "40", "--steps", "3", "--n-eval-pairs", "10"])
    for name in ("MODEL_CARD.md", "metrics.json", "itm_config.json"):
        assert (tmp_path / name).is_file()
    model = load_itm(str(tmp_path))
    assert model.score_one("a red circle", np.zeros((2, 4, 512), np.float16)).shape == (2,)


@pytest.mark.slow
def test_rerank_benchmark_runs_and_appends(tmp_path: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import rerank_itm

    out = tmp_path / "r.json"
    result = rerank_itm.main(
        ["--queries", "10", "--random", "20", "--threads", "1", "--out", str(out)]
    )
    assert result["gallery"] >= 30 and result["patch_bytes_per_item"] == 4096
    assert set(result["per_kind"]) == set(NEGATIVE_KINDS)
    assert 0 <= result["clip"]["R@1"] <= result["clip"]["R@5"] <= 1
    assert json.loads(out.read_text())[-1]["queries"] == 10


# ---------------------------------------------------------------- BLIP through transformers (network faked)


@pytest.fixture(scope="module")
def blip_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A BLIP ITM model with random weights and a ten-word BERT vocabulary, saved like a hub repo."""
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("blip")
    words = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "a",
        "red",
        "circle",
        "blue",
        "square",
        "[DEC]",
    ]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    processor = transformers.BlipProcessor(
        image_processor=transformers.BlipImageProcessor(size={"height": 32, "width": 32}),
        tokenizer=transformers.BertTokenizer(str(folder / "vocab.txt")),
    )
    small = {
        "hidden_size": 32,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 64,
    }
    config = transformers.BlipConfig(
        text_config={
            **small,
            "vocab_size": len(words),
            "encoder_hidden_size": 32,
            "bos_token_id": 2,
            "sep_token_id": 3,
            "pad_token_id": 0,
            "eos_token_id": 3,
        },
        vision_config={**small, "image_size": 32, "patch_size": 16},
        projection_dim=16,
    )
    torch.manual_seed(0)
    repo = folder / "repo"
    transformers.BlipForImageTextRetrieval(config).save_pretrained(repo)
    processor.save_pretrained(repo)
    return repo


class FakeSnapshot:
    """Stands in for huggingface_hub.snapshot_download: copies a folder into the cache, or raises."""

    def __init__(self, source: Path | None = None, error: Exception | None = None):
        self.source, self.error, self.calls = source, error, []

    def __call__(self, repo_id: str, cache_dir=None, allow_patterns=None, **_):
        self.calls.append(
            {"repo_id": repo_id, "cache_dir": cache_dir, "allow_patterns": allow_patterns}
        )
        if self.error is not None:
            raise self.error
        target = Path(cache_dir) / repo_id.replace("/", "--")
        target.mkdir(parents=True, exist_ok=True)
        for path in self.source.iterdir():
            if allow_patterns is None or path.name in allow_patterns:
                shutil.copy(path, target / path.name)
        return str(target)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MMSEARCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "transformers"


def _pictures() -> list[Image.Image]:
    return [Image.new("RGB", (40, 30), (255, 0, 0)), Image.new("RGBA", (30, 30), (0, 0, 255, 255))]


def test_blip_is_fetched_into_the_cache_and_scores_pictures(
    cache: Path, blip_folder: Path, monkeypatch
):
    import huggingface_hub

    hub = FakeSnapshot(blip_folder)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    model = load_itm(BLIP_REPO)
    assert model.name == BLIP_REPO and model.input == "pixels"
    assert hub.calls[0] == {**hub.calls[0], "repo_id": BLIP_REPO, "cache_dir": str(cache)}
    assert "model.safetensors" in hub.calls[0]["allow_patterns"]
    probs = model.score_one("a red circle", _pictures())
    assert probs.shape == (2,) and probs.dtype == np.float32 and np.all((probs > 0) & (probs < 1))
    pairs = model.score(["a red circle", "a blue square"], _pictures())
    assert pairs.shape == (2,)
    np.testing.assert_allclose(model.score(["a red circle"] * 2, _pictures()), probs, atol=1e-6)
    assert load_itm(f"hf-hub:{BLIP_REPO}").name == BLIP_REPO


def test_blip_offline_names_the_model_and_the_ways_out(cache: Path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(
        huggingface_hub,
        "snapshot_download",
        FakeSnapshot(error=OSError("[Errno -3] Temporary failure in name resolution")),
    )
    with pytest.raises(ModelUnavailableError) as info:
        load_itm(BLIP_REPO)
    message = str(info.value)
    for needed in (
        BLIP_REPO,
        str(cache),
        "MMSEARCH_CACHE",
        "local-dir:",
        "tiny-itm",
        "name resolution",
    ):
        assert needed in message


def test_blip_repo_without_weights_is_refused(
    cache: Path, tmp_path: Path, blip_folder: Path, monkeypatch
):
    import huggingface_hub

    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(blip_folder / "config.json", bare / "config.json")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", FakeSnapshot(bare))
    with pytest.raises(ModelUnavailableError, match="no BLIP weights"):
        load_itm(BLIP_REPO)


def test_blip_local_folder_needs_no_network(blip_folder: Path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(
        huggingface_hub, "snapshot_download", FakeSnapshot(error=AssertionError("network used"))
    )
    model = load_itm(str(blip_folder))
    assert model.input == "pixels" and model.score_one("a blue square", _pictures()).shape == (2,)


def test_blip_without_transformers_says_what_to_install(blip_folder: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match=r"mmsearch\[text\]"):
        load_itm(str(blip_folder))


def test_scene_captions_are_what_truth_is_built_on():
    scene = _scene(("red", "circle", "small", "left"), ("blue", "square", "large", "right"))
    assert all(describes(c, scene) for c in scene_captions(scene, partial=True))
