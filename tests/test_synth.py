"""Synthetic PhraseCut: deterministic, the exact original format (read back by the validated reader),
a real referring task (attributes, relations, multi-instance, multi-polygon, stuff) whose ground-truth
masks are the drawn pixels; plus the committed tiny RoBERTa text encoder built from its captions."""
import json
import re
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageDraw

from helpers.paths import REFERENCE, require
from mdetr_phrasecut import cli
from mdetr_phrasecut.data import phrasecut_format as pf
from mdetr_phrasecut.data import synth
from mdetr_phrasecut.data import tiny_text_encoder as tte

SMALL = {"train": 60, "val": 12, "test": 30}
TINY_ENCODER_FILES = ("config.json", "merges.txt", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                      "vocab.json")  # what save_pretrained writes for the tiny RoBERTa


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "ds"
    summary = synth.write_synthetic_phrasecut(root, seed=0, num_images=SMALL, miniv_images=4)
    return root, summary


def files_of(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rasterize(polygons_of_instances, w, h):
    """The PhraseCut evaluator's ground truth: PIL polygons on int-truncated coordinates, OR-ed."""
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for inst in polygons_of_instances:
        for poly in inst:
            draw.polygon([(int(x), int(y)) for x, y in poly], fill=1, outline=1)
    return np.asarray(img).astype(bool)


def test_deterministic_byte_identical(small, tmp_path):
    root, _ = small
    again = tmp_path / "again"
    synth.write_synthetic_phrasecut(again, seed=0, num_images=SMALL, miniv_images=4)
    assert files_of(again) == files_of(root)
    other = tmp_path / "other"
    synth.write_synthetic_phrasecut(other, seed=1, num_images=SMALL, miniv_images=4)
    assert files_of(other)["refer_train.json"] != files_of(root)["refer_train.json"]


def test_layout_and_format_match_the_original(small, reference_dir):
    root, summary = small
    s0 = reference_dir / "phrasecut_mini" / "s0"
    names = sorted(p.name for p in root.iterdir())
    assert names == ["image_data_split.json", "images", "name_att_rel_count.json",
                     "refer_miniv.json", "refer_test.json", "refer_train.json", "refer_val.json"]
    assert not list(root.parent.glob(".*.tmp"))  # no temporary folders left
    # same keys, key order and JSON layout (single line, ", " / ": ") as the reference mini set
    for name in ["image_data_split.json", "refer_test.json", "name_att_rel_count.json"]:
        ours, ref = (root / name).read_text(), (s0 / name).read_text()
        assert "\n" not in ours and ours == json.dumps(json.loads(ours))
        ours, ref = json.loads(ours), json.loads(ref)
        if isinstance(ours, list):
            assert list(ours[0]) == list(ref[0])
            if "phrase_structure" in ours[0]:
                assert list(ours[0]["phrase_structure"]) == list(ref[0]["phrase_structure"])
        else:
            assert list(ours) == list(ref)
    info = pf.load_image_split(root)
    assert len(info) == sum(SMALL.values())
    assert Counter(r["split"] for r in info.values()) == {"train": 60, "val": 8, "miniv": 4, "test": 30}
    recs = {s: pf.load_refer(root, s, info) for s in pf.PHRASECUT_SPLITS}
    for split in pf.PHRASECUT_SPLITS:
        images = {r["image_id"] for r in recs[split]}
        assert len(images) == summary[split]["images"]
        assert all(Image.open(pf.image_path(root, i)).size == (info[i]["width"], info[i]["height"]) for i in images)
        assert len(recs[split]) == summary[split]["phrases"]
    # miniv is a subset of val; the splits' images are disjoint otherwise
    assert recs["miniv"] == recs["val"][: len(recs["miniv"])] and len(recs["miniv"]) > 0
    imgs = {s: {r["image_id"] for r in recs[s]} for s in pf.PHRASECUT_SPLITS}
    assert not (imgs["train"] & imgs["val"]) and not (imgs["train"] & imgs["test"]) and not (imgs["val"] & imgs["test"])
    assert all(info[i]["split"] == "miniv" for i in imgs["miniv"])
    assert all(info[i]["split"] == s for s in ("train", "test") for i in imgs[s])
    # coco ids: null for most, an int for some; sizes vary and are rarely square
    coco = [r["coco_id"] for r in info.values()]
    assert coco.count(None) > len(coco) / 2 and any(isinstance(c, int) for c in coco)
    sizes = {(r["width"], r["height"]) for r in info.values()}
    assert len(sizes) > 20 and sum(w != h for w, h in sizes) > len(sizes) * 0.8
    assert all(96 <= v <= 160 for wh in sizes for v in wh)
    # name_att_rel_count holds the counts of the generated phrases (train + val + test), sorted
    counts = pf.load_name_att_rel_count(root)
    everything = recs["train"] + recs["val"] + recs["test"]
    cat = Counter(r["phrase_structure"]["name"] for r in everything)
    assert dict(map(tuple, counts["cat"])) == cat
    attributes = Counter(a for r in everything for a in r["phrase_structure"]["attributes"])
    assert dict(map(tuple, counts["att"])) == attributes
    assert dict(map(tuple, counts["rel"])) == Counter(
        p for r in everything for p, _ in r["phrase_structure"]["relation_descriptions"])
    assert [c for _, c in counts["cat"]] == sorted((c for _, c in counts["cat"]), reverse=True)


def test_phrases_are_a_real_referring_task(small):
    root, _ = small
    recs = pf.load_refer(root, "train") + pf.load_refer(root, "test")
    types = Counter(r["phrase_structure"]["type"] for r in recs)
    assert set(types) == {"name", "attribute", "relation", "verbose"}
    assert sum(len(r["instance_boxes"]) > 1 for r in recs) > 20               # multi-instance phrases
    assert sum(any(len(i) == 2 for i in r["Polygons"]) for r in recs) > 5     # instances in 2 visible parts
    stuff = [r for r in recs if r["phrase_structure"]["name"] in ("sky", "grass", "water", "sand")]
    assert len(stuff) > 10 and {r["phrase_structure"]["name"] for r in stuff} >= {"sky"}
    assert sum(bool(r["phrase_structure"]["relation_descriptions"]) for r in recs) > 20
    assert any(len(r["phrase_structure"]["attributes"]) == 2 for r in recs)  # "small red circle"
    per_image = Counter(r["image_id"] for r in recs)
    assert 3 <= np.mean(list(per_image.values())) <= 5
    for r in recs:
        ps = r["phrase_structure"]
        has_att, has_rel = bool(ps["attributes"]), bool(ps["relation_descriptions"])
        assert ps["type"] == {(False, False): "name", (True, False): "attribute",
                              (False, True): "relation", (True, True): "verbose"}[(has_att, has_rel)]
        words = r["phrase"].split()
        noun = synth.PLURAL[ps["name"]] if len(r["ann_ids"]) > 1 and ps["name"] in synth.PLURAL else ps["name"]
        head = " ".join(ps["attributes"] + [noun])
        assert r["phrase"].startswith(head), (r["phrase"], ps)
        for pred, obj in ps["relation_descriptions"]:
            assert r["phrase"] == f"{head} {pred} {obj}"
        assert len(ps["attribute_ids"]) == len(ps["attributes"]) and len(ps["relation_ids"]) == len(
            ps["relation_descriptions"])
        assert r["task_id"] == f"{r['image_id']}__" + "_".join(map(str, r["ann_ids"]))
        assert len(words) <= 10
    # distractors: phrases whose attribute actually selects a subset of the named objects
    by_image = {}
    for r in recs:
        by_image.setdefault(r["image_id"], []).append(r)
    assert all(len({r["task_id"] for r in rs}) == len(rs) for rs in by_image.values())


def test_ground_truth_matches_drawn_pixels_and_boxes(small):
    root, _ = small
    info = pf.load_image_split(root)
    checked = 0
    for r in pf.load_refer(root, "test", info):
        w, h = info[r["image_id"]]["width"], info[r["image_id"]]["height"]
        img = np.asarray(Image.open(pf.image_path(root, r["image_id"])).convert("RGB")).astype(int)
        for box, inst in zip(r["instance_boxes"], r["Polygons"]):
            m = rasterize([inst], w, h)
            ys, xs = np.nonzero(m)
            # inclusive extents: w = x2 - x1 + 1
            assert box == [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
        colours = [a for a in r["phrase_structure"]["attributes"] if a in synth.COLORS]
        if colours:
            m = rasterize(r["Polygons"], w, h)
            close = np.abs(img - np.array(synth.COLORS[colours[0]])).max(-1) < 48
            assert close[m].mean() > 0.97, r["task_id"]
            # ... and no pixel of that colour outside the mask inside the instance boxes
            inside = np.zeros_like(m)
            for x, y, bw, bh in r["instance_boxes"]:
                inside[y:y + bh, x:x + bw] = True
            assert (close & inside & ~m).sum() <= 0.02 * m.sum() + 2
            checked += 1
        if r["phrase_structure"]["name"] in ("sky", "grass", "water", "sand"):
            m = rasterize(r["Polygons"], w, h)
            assert m.mean() > 0.12  # a large region
    assert checked > 20


def test_circle_polygons_have_enough_points(small):
    root, _ = small
    circles = [poly for r in pf.load_refer(root, "train") if r["phrase_structure"]["name"] == "circle"
               for inst in r["Polygons"] for poly in inst]
    assert circles and min(len(p) for p in circles) >= 32


def test_cli_synth(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli.main(["synth", "--out", str(out), "--seed", "5", "--train-images", "3", "--val-images", "2",
                   "--test-images", "2", "--min-size", "100", "--max-size", "120"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["train"]["images"] == 3 and summary["miniv"]["images"] == 2
    info = pf.load_image_split(out)
    assert all(100 <= r["width"] <= 120 and 100 <= r["height"] <= 120 for r in info.values())
    # rerun into the same folder with fewer images: dataset replaced, no stale images left
    assert cli.main(["synth", "--out", str(out), "--seed", "5", "--train-images", "1", "--val-images", "1",
                     "--test-images", "1"]) == 0
    assert len(list((out / "images").iterdir())) == 3 == len(pf.load_image_split(out))


def test_failed_generation_writes_nothing(tmp_path, monkeypatch):
    calls = []

    def boom(arr):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("disk full")
        return b"x"

    monkeypatch.setattr(synth, "_jpeg_bytes", boom)
    with pytest.raises(RuntimeError):
        synth.write_synthetic_phrasecut(tmp_path / "ds", num_images={"train": 5, "val": 1, "test": 1})
    assert list(tmp_path.iterdir()) == []  # neither the dataset nor a temporary folder


def test_bad_arguments_are_input_errors(tmp_path):
    from mdetr_phrasecut.errors import InputError

    with pytest.raises(InputError, match="num_images"):
        synth.write_synthetic_phrasecut(tmp_path / "a", num_images={"dev": 3})
    with pytest.raises(InputError, match="min_size"):
        synth.write_synthetic_phrasecut(tmp_path / "b", min_size=200, max_size=100)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_default_set_sizes_and_speed(tmp_path):
    t0 = time.process_time()
    summary = synth.write_synthetic_phrasecut(tmp_path / "default", seed=0)
    cpu = time.process_time() - t0
    assert cpu < 30, f"default set took {cpu:.1f}s of CPU"
    assert summary["train"]["images"] == 1500 and summary["train"]["phrases"] > 4000
    assert summary["test"]["phrases"] >= 300
    assert 100 <= summary["val"]["phrases"] <= 250
    assert summary["miniv"]["images"] == synth.DEFAULT_MINIV_IMAGES


# ----------------------------------------------------------------------------- tiny text encoder
def test_committed_tiny_text_encoder_loads_and_tokenizes():
    from transformers import AutoTokenizer, RobertaConfig, RobertaModel
    import torch

    folder = tte.default_path()
    assert sorted(p.name for p in folder.iterdir()) == sorted(TINY_ENCODER_FILES)
    reference = require(REFERENCE / "tiny_roberta")
    assert sorted(p.name for p in folder.iterdir()) == sorted(p.name for p in reference.iterdir())
    assert sum(p.stat().st_size for p in folder.iterdir()) < 1_000_000
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.is_fast
    caption = "small red circles left of blue square"
    enc = tok([caption, "sky"], padding="longest", return_tensors="pt")
    tokens = tok.convert_ids_to_tokens(enc.input_ids[0])
    assert tokens[0] == "<s>" and tokens[-1] == "</s>"
    assert len(tokens) == 2 + len(caption.split())  # every generator word is one token
    for m in re.finditer(r"\S+", caption):
        assert enc.char_to_token(0, m.start()) == enc.char_to_token(0, m.end() - 1) is not None
    assert [enc.char_to_token(0, m.start()) for m in re.finditer(r"\S+", caption)] == list(range(1, 8))
    assert enc.attention_mask[1].tolist() == [1, 1, 1] + [0] * (len(tokens) - 3)
    assert "<unk>" not in tok.convert_ids_to_tokens(tok("Zebra ünïcode #42").input_ids)  # byte-level
    config = RobertaConfig.from_pretrained(folder)
    assert config.max_position_embeddings >= 66 and config.vocab_size == len(tok)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (64, 2, 2)
    model = RobertaModel.from_pretrained(folder).eval()
    with torch.no_grad():
        out = model(**enc).last_hidden_state
    assert out.shape == (2, len(tokens), 64) and torch.isfinite(out).all()


def test_every_synthetic_caption_word_is_one_token(small):
    from transformers import AutoTokenizer

    root, _ = small
    tok = AutoTokenizer.from_pretrained(tte.default_path())
    for r in pf.load_refer(root, "test")[:80]:
        ids = tok(r["phrase"]).input_ids
        assert len(ids) == 2 + len(r["phrase"].split()), r["phrase"]


def test_build_tiny_text_encoder_is_deterministic(tmp_path):
    captions = ["small red circle", "blue squares left of large star", "sky", "grass"] * 5
    a = tte.build_tiny_text_encoder(captions, tmp_path / "a", vocab_size=300, hidden_size=32, layers=1, heads=2)
    b = tte.build_tiny_text_encoder(captions, tmp_path / "b", vocab_size=300, hidden_size=32, layers=1, heads=2)
    assert files_of(a) == files_of(b)
    assert sorted(files_of(a)) == sorted(TINY_ENCODER_FILES)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_committed_tiny_text_encoder_is_up_to_date(tmp_path):
    """The asset is what the documented regeneration command produces from the current generator."""
    out = tte.build_tiny_text_encoder(tte.default_synthetic_captions(0), tmp_path / "tte")
    assert files_of(out) == files_of(tte.default_path())
