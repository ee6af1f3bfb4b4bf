"""Training as the release trained: the batch's positive map as the release's collate builds it (0/1 rows in
`release` mode, rows summing to 1 in `normalised` mode), the matcher's assignment and every loss term it
drives, each against values computed independently here from the release's formulas; and the training loop
hands the criterion that very map."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch.utils.data import Subset
from transformers import AutoTokenizer

from mdetr_phrasecut.config import resolve_stage, validate_spec
from mdetr_phrasecut.data.dataset import build_dataset, train_collate_fn
from mdetr_phrasecut.engine import train as train_mod
from mdetr_phrasecut.model import build as build_mod
from mdetr_phrasecut.model.criterion import build_criterion
from mdetr_phrasecut.model.matcher import HungarianMatcher
from mdetr_phrasecut.model.positive_map import batch_positive_map, caption_positive_map, create_positive_map
from helpers.specs import criterion_config

TEXT_ENCODER = Path(__file__).resolve().parents[1] / "src/mdetr_phrasecut/assets/tiny_text_encoder"
MODES = ("release", "normalised")
WIDTH, QUERIES, EOS = 256, 6, 0.1
# PhraseCut: every box's span is the whole phrase. Sample 1 also has a span starting on a space, where the
# span lookup falls back to the next characters.
CAPTIONS = ["small red circle left of the blue square", "white clouds in blue sky", "a dog on the grass"]
SPANS = [[[(0, 40)]], [[(0, 24)], [(12, 24)]], [[(0, 18)]] * 3]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(TEXT_ENCODER)


def token_of_char(offsets, char):
    """The token whose (non-empty) character range holds `char`, from the tokenizer's offsets."""
    hits = [k for k, (s, e) in enumerate(offsets) if s <= char < e]
    return hits[0] if hits else None


def release_rows(tokenizer, caption, spans):
    """Bool [boxes, 256], as the release's dataset + collate see a sample: first..last token of each span."""
    offsets = tokenizer(caption, return_offsets_mapping=True)["offset_mapping"]
    rows = torch.zeros((len(spans), WIDTH), dtype=torch.bool)
    for j, box_spans in enumerate(spans):
        for beg, end in box_spans:
            first = next(t for t in (token_of_char(offsets, c) for c in (beg, beg + 1, beg + 2)) if t is not None)
            last = next(t for t in (token_of_char(offsets, c) for c in (end - 1, end - 2, end - 3)) if t is not None)
            rows[j, first : last + 1] = True
    return rows


def expected_batch_map(tokenizer, mode):
    """The release's collate: every box of the batch stacked into one torch.bool buffer, then .float();
    `normalised`: the same rows divided by (row sum + 1e-6), as create_positive_map leaves them."""
    rows = [release_rows(tokenizer, c, s) for c, s in zip(CAPTIONS, SPANS)]
    buffer = torch.zeros((sum(len(r) for r in rows), WIDTH), dtype=torch.bool)
    start = 0
    for r in rows:
        buffer[start : start + len(r)] = r
        start += len(r)
    pmap = buffer.float()
    return pmap if mode == "release" else pmap / (pmap.sum(1, keepdim=True) + 1e-6)


def xyxy(b):
    return torch.stack([b[..., 0] - b[..., 2] / 2, b[..., 1] - b[..., 3] / 2,
                        b[..., 0] + b[..., 2] / 2, b[..., 1] + b[..., 3] / 2], -1)


def giou(a, b):
    """Generalised IoU of every box of a [n,4] with every box of b [m,4] (cxcywh)."""
    a, b = xyxy(a)[:, None], xyxy(b)[None]
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    inter = ((torch.minimum(a[..., 2], b[..., 2]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
             * (torch.minimum(a[..., 3], b[..., 3]) - torch.maximum(a[..., 1], b[..., 1])).clamp(min=0))
    union = area(a) + area(b) - inter
    hull = ((torch.maximum(a[..., 2], b[..., 2]) - torch.minimum(a[..., 0], b[..., 0]))
            * (torch.maximum(a[..., 3], b[..., 3]) - torch.minimum(a[..., 1], b[..., 1])))
    return inter / union - (hull - union) / hull


def random_boxes(n, g):
    return torch.cat([0.3 + 0.4 * torch.rand(n, 2, generator=g), 0.1 + 0.3 * torch.rand(n, 2, generator=g)], 1)


def make_batch(tokenizer):
    """Items as the dataset yields them, and two decoder layers of outputs. Sample 0's query 0 has its box
    exactly but predicts no-object, query 1 a shifted box and the phrase's tokens: the class cost decides."""
    g = torch.Generator().manual_seed(0)
    items, sizes = [], [(20, 24), (16, 28), (24, 18)]
    for caption, spans, (h, w) in zip(CAPTIONS, SPANS, sizes):
        n = len(spans)
        target = {"boxes": random_boxes(n, g), "labels": torch.ones(n, dtype=torch.int64), "caption": caption,
                  "tokens_positive": spans, "positive_map": caption_positive_map(tokenizer, caption, spans),
                  "masks": torch.rand(n, h, w, generator=g) > 0.6, "size": torch.tensor([h, w])}
        items.append((torch.randn(3, h, w, generator=g), target))
    tokenized = tokenizer(CAPTIONS, padding="longest", return_tensors="pt")
    tokens = tokenized["input_ids"].shape[1]

    def layer():
        logits = 2 * torch.randn(len(CAPTIONS), QUERIES, WIDTH, generator=g)
        boxes = torch.stack([random_boxes(QUERIES, g) for _ in CAPTIONS])
        box = items[0][1]["boxes"][0]
        boxes[0, 0], boxes[0, 1] = box, box + torch.tensor([0.01, 0.0, 0.0, 0.0])
        logits[0, 0, -1] += 12
        logits[0, 1, 1:12] += 12  # the phrase's tokens
        return {"pred_logits": logits, "pred_boxes": boxes,
                "proj_queries": F.normalize(torch.randn(len(CAPTIONS), QUERIES, 16, generator=g), dim=-1),
                "proj_tokens": F.normalize(torch.randn(len(CAPTIONS), tokens, 16, generator=g), dim=-1)}

    outputs = {**layer(), "pred_masks": torch.randn(len(CAPTIONS), QUERIES, 6, 7, generator=g),
               "tokenized": tokenized, "aux_outputs": [layer()]}
    return items, outputs


def expected_indices(layer, targets, pmap):
    """The release's matcher: 5 L1 + 1 class + 2 (-GIoU), class = -(softmax * positive map row).sum()."""
    indices, start = [], 0
    for i, t in enumerate(targets):
        n = len(t["boxes"])
        prob = layer["pred_logits"][i].softmax(-1)
        cost_class = -(prob[:, None, :] * pmap[start : start + n][None]).sum(-1)
        cost_bbox = (layer["pred_boxes"][i][:, None] - t["boxes"][None]).abs().sum(-1)
        cost = 5 * cost_bbox + cost_class - 2 * giou(layer["pred_boxes"][i], t["boxes"])
        rows, cols = linear_sum_assignment(cost.numpy())
        indices.append((rows.tolist(), cols.tolist()))
        start += n
    return indices


def release_contrastive_positive(tokenized, targets, indices, shape, mode):
    """The release's loss_contrastive_align map: the first lookups read sample i, the fallback retries call
    `tokenized.char_to_token(c)` without a batch index (sample 0); `normalised` retries in sample i."""
    def lookup(i, chars):
        for k, c in enumerate(chars):
            if c < 0:
                continue
            token = tokenized.char_to_token(c) if k and mode == "release" else tokenized.char_to_token(i, c)
            if token is not None:
                return token
        return None

    positive = torch.zeros(shape, dtype=torch.bool)
    for i, (src, tgt) in enumerate(indices):
        for q, j in zip(src, tgt):
            for beg, end in targets[i]["tokens_positive"][j]:
                first, last = lookup(i, (beg, beg + 1, beg + 2)), lookup(i, (end - 1, end - 2, end - 3))
                if first is not None and last is not None:
                    positive[i, q, first : last + 1] = True
    return positive


def expected_losses(layer, targets, pmap, indices, tokenized, mode, masks):
    num_boxes = sum(len(t["boxes"]) for t in targets)
    log_prob = layer["pred_logits"].log_softmax(-1)
    ce, l1, gi, matched, start = 0.0, 0.0, 0.0, [], 0
    for i, (src, tgt) in enumerate(indices):
        for q in range(QUERIES):
            if q in src:
                j = tgt[src.index(q)]
                ce += -(log_prob[i, q] * pmap[start + j]).sum()
                box, gt = layer["pred_boxes"][i, q], targets[i]["boxes"][j]
                l1 += (box - gt).abs().sum()
                gi += 1 - giou(box[None], gt[None])[0, 0]
                matched.append((i, q, j))
            else:
                ce += -EOS * log_prob[i, q, -1]
        start += len(targets[i]["boxes"])
    predicted = (layer["pred_logits"].argmax(-1) != WIDTH - 1).sum(1).float()
    cardinality = sum(abs(float(predicted[i]) - len(t["boxes"])) for i, t in enumerate(targets)) / len(targets)

    logits = layer["proj_queries"] @ layer["proj_tokens"].transpose(-1, -2) / 0.07
    positive = release_contrastive_positive(tokenized, targets, indices, logits.shape, mode)
    pos = logits.masked_fill(~positive, 0)
    box_to_token = ((-pos.sum(2) / (positive.sum(2) + 1e-6) + logits.logsumexp(2))
                    .masked_fill(~positive.any(2), 0).sum())
    token_to_box = ((-pos.sum(1) / (positive.sum(1) + 1e-6) + logits.logsumexp(1))
                    .masked_fill(~positive.any(1), 0).sum())
    out = {"loss_ce": ce / num_boxes, "loss_bbox": l1 / num_boxes, "loss_giou": gi / num_boxes,
           "cardinality_error": cardinality, "loss_contrastive_align": (box_to_token + token_to_box) / 2 / num_boxes}
    if masks:
        h = max(t["masks"].shape[1] for t in targets)
        w = max(t["masks"].shape[2] for t in targets)
        focal, dice = 0.0, 0.0
        for i, q, j in matched:
            gt = torch.zeros(h, w)
            m = targets[i]["masks"][j].float()
            gt[: m.shape[0], : m.shape[1]] = m
            x = F.interpolate(layer["pred_masks"][i, q][None, None], size=(h, w), mode="bilinear",
                              align_corners=False).flatten()
            gt, p = gt.flatten(), x.sigmoid()
            p_t = p * gt + (1 - p) * (1 - gt)
            bce = -(gt * torch.log(p) + (1 - gt) * torch.log(1 - p))
            focal += ((0.25 * gt + 0.75 * (1 - gt)) * bce * (1 - p_t) ** 2).mean()
            dice += 1 - (2 * (p * gt).sum() + 1) / (p.sum() + gt.sum() + 1)
        out.update(loss_mask=focal / num_boxes, loss_dice=dice / num_boxes)
    return out


def test_the_batched_map_is_the_release_collate_output(tokenizer):
    items, _ = make_batch(tokenizer)
    for mode in MODES:
        samples, targets, pmap = train_collate_fn(items, mode)
        expected = expected_batch_map(tokenizer, mode)
        assert pmap.dtype == torch.float32 and pmap.shape == expected.shape == (6, WIDTH)
        assert torch.allclose(pmap, expected, rtol=0, atol=1e-7), mode
        assert samples.tensors.shape[0] == len(targets) == 3
    release = train_collate_fn(items, "release")[2]
    assert set(release.unique().tolist()) == {0.0, 1.0} and (release.sum(1) > 1).all()  # a row per token
    assert torch.allclose(train_collate_fn(items, "normalised")[2].sum(1), torch.ones(6), atol=1e-5)


def test_maps_of_different_widths_are_padded_to_the_widest(tokenizer):
    tokenized = [tokenizer(c, return_tensors="pt") for c in CAPTIONS[:2]]
    maps = [create_positive_map(t, s, max_len=t["input_ids"].shape[1]) for t, s in zip(tokenized, SPANS[:2])]
    widths = [m.shape[1] for m in maps]
    assert widths[0] != widths[1]
    for mode in MODES:
        batched = batch_positive_map(maps, mode)
        assert batched.shape == (3, max(widths))
        for m, rows in zip(maps, (batched[:1], batched[1:])):
            want = (m > 0).float() if mode == "release" else m
            assert torch.equal(rows[:, : m.shape[1]], want) and not rows[:, m.shape[1]:].any()
    with pytest.raises(ValueError, match="positive_map mode"):
        batch_positive_map(maps, "soft")


def test_matcher_and_every_loss_term_follow_the_mode(tokenizer):
    items, outputs = make_batch(tokenizer)
    assignments, values = {}, {}
    for mode in MODES:
        _, targets, pmap = train_collate_fn(items, mode)
        criterion, _ = build_criterion(*criterion_config(dec_layers=2, masks=True, positive_map=mode))
        losses = criterion(outputs, targets, pmap)
        expected = {}
        for suffix, layer in (("", outputs), ("_0", outputs["aux_outputs"][0])):
            want = expected_indices(layer, targets, pmap)
            got = [(s.tolist(), t.tolist()) for s, t in HungarianMatcher(1, 5, 2)(layer, targets, pmap)]
            assert got == want, (mode, suffix)
            assignments[mode, suffix] = want
            terms = expected_losses(layer, targets, pmap, want, outputs["tokenized"], mode, masks=not suffix)
            expected.update({f"{k}{suffix}": v for k, v in terms.items()})
        assert sorted(losses) == sorted(expected)
        for key, value in expected.items():
            assert float(losses[key]) == pytest.approx(float(value), rel=1e-5, abs=1e-6), (mode, key)
        values[mode] = losses
    # The 0/1 rows scale the class cost by the phrase's token count: sample 0 gets another query.
    assert assignments["release", ""][0] == ([1], [0]) and assignments["normalised", ""][0] == ([0], [0])
    assert float(values["release"]["loss_ce"]) > 2 * float(values["normalised"]["loss_ce"])
    # Sample 1's second span starts on a space: the release's retry reads sample 0's tokens there.
    assert float(values["release"]["loss_contrastive_align"]) != pytest.approx(
        float(values["normalised"]["loss_contrastive_align"]), rel=1e-4)


@pytest.mark.parametrize("mode", MODES)
def test_the_training_loop_hands_the_criterion_the_collated_map(tmp_path, monkeypatch, reference_dir, mini_coco,
                                                                   mode):
    mini = reference_dir / "phrasecut_mini" / "s0"
    tokenizer = AutoTokenizer.from_pretrained(TEXT_ENCODER)
    data = Subset(build_dataset("miniv", mini_coco, mini / "images", tokenizer,
                                {"scales": [64], "max_size": 64, "masks": False}), [0, 1, 2])
    seen = []
    build = build_mod.build_criterion

    def recording(model, train):
        criterion, weights = build(model, train)
        forward = criterion.forward

        def spy(outputs, targets, positive_map):
            seen.append((targets, positive_map))
            return forward(outputs, targets, positive_map)

        criterion.forward = spy
        return criterion, weights

    monkeypatch.setattr(build_mod, "build_criterion", recording)
    model = {"backbone": "resnet18", "hidden_dim": 128, "nheads": 8, "enc_layers": 1, "dec_layers": 1,
             "dim_feedforward": 64, "num_queries": 4, "text_encoder_type": str(TEXT_ENCODER)}
    train = {"epochs": 1, "batch_size": 3, "max_steps_per_epoch": 1, "scales": [64], "max_size": 64,
             "num_workers": 0, "eval_every": 1, "positive_map": mode}
    spec = validate_spec({"model": model, "train": train})
    train_mod.run(resolve_stage(spec, "pretrain"),
                  coco_dir=None, images=None, out_dir=tmp_path, datasets=(data, data), progress=False)
    assert len(seen) >= 2  # a training step and validation
    for targets, pmap in seen:
        rows = torch.cat([release_rows(tokenizer, t["caption"], t["tokens_positive"]) for t in targets]).float()
        want = rows if mode == "release" else rows / (rows.sum(1, keepdim=True) + 1e-6)
        assert torch.allclose(pmap.cpu(), want, rtol=0, atol=1e-7)
