"""Matcher, criterion and positive map against the published code's losses (golden fixtures),
plus unit checks of matching, box loss and gradients."""
import json

import pytest
import torch
from transformers import AutoTokenizer

from helpers.paths import MDETR_GOLDEN, require
from mdetr_phrasecut.model.criterion import build_criterion
from mdetr_phrasecut.model.matcher import HungarianMatcher
from mdetr_phrasecut.model.positive_map import caption_positive_map, create_positive_map
from helpers.specs import criterion_config

PARTS = ["detector", "segm"]


@pytest.fixture(scope="module", params=MDETR_GOLDEN, ids=lambda p: p.name)
def golden(request):
    data = torch.load(require(request.param), weights_only=True)
    tokenizer = AutoTokenizer.from_pretrained(request.param.parent / data["config"]["text_encoder_type"])
    data["tokenizer"] = tokenizer
    data["tokenized"] = tokenizer(data["captions"], padding="longest", return_tensors="pt")
    return data


def golden_positive_map(data):
    # The fixtures were made by the release's create_positive_map on the batch encoding, which
    # (no batch index) reads every target's spans against sample 0's tokens: do the same here.
    return torch.cat([create_positive_map(data["tokenized"], t["tokens_positive"]) for t in data["targets"]])


def golden_cfg(data, part):
    outputs = data[part]["outputs"]
    return {
        "dec_layers": data["config"]["dec_layers"],
        "aux_loss": "aux_outputs" in outputs,
        "contrastive_align_loss": "proj_queries" in outputs,
        "masks": "pred_masks" in outputs,
    }


@pytest.mark.parametrize("part", PARTS)
def test_golden_positive_map(golden, part):
    pmap = golden_positive_map(golden)
    assert torch.allclose(pmap, golden[part]["positive_map"], atol=1e-6, rtol=0)
    first = golden["targets"][0]
    single = caption_positive_map(golden["tokenizer"], first["caption"], first["tokens_positive"])
    assert torch.allclose(pmap[: len(single)], single, atol=1e-6, rtol=0)


@pytest.mark.parametrize("part", PARTS)
def test_golden_losses_and_weight_dict(golden, part):
    criterion, weight_dict = build_criterion(*criterion_config(**golden_cfg(golden, part)))
    assert weight_dict == golden[part]["weight_dict"]
    outputs = {**golden[part]["outputs"], "tokenized": golden["tokenized"]}
    losses = criterion(outputs, golden["targets"], golden_positive_map(golden))
    expected = golden[part]["losses"]
    assert sorted(losses) == sorted(expected)
    for key, value in expected.items():
        assert float(losses[key]) == pytest.approx(float(value), abs=1e-4), key


def test_full_size_weight_dicts(reference_dir):
    shapes = json.loads((reference_dir / "official_state_dict_shapes.json").read_text())
    for name, entry in shapes.items():
        segm = name.endswith("/segm")
        cfg = {"dec_layers": 6, "aux_loss": True, "masks": segm, "contrastive_align_loss": not segm}
        assert build_criterion(*criterion_config(**cfg))[1] == entry["weight_dict"], name


def random_boxes(n, generator):
    centre = torch.rand(n, 2, generator=generator) * 0.5 + 0.25
    size = torch.rand(n, 2, generator=generator) * 0.3 + 0.1
    return torch.cat([centre, size], 1)


def one_hot_map(tokens, width=256):
    pmap = torch.zeros(len(tokens), width)
    pmap[torch.arange(len(tokens)), torch.as_tensor(tokens)] = 1
    return pmap


def test_matcher_recovers_a_known_permutation():
    g = torch.Generator().manual_seed(0)
    num_queries, num_boxes = 12, 5
    tgt_boxes = random_boxes(num_boxes, g)
    tokens = torch.arange(1, num_boxes + 1)
    query_of_box = torch.randperm(num_queries, generator=g)[:num_boxes]
    pred_boxes = random_boxes(num_queries, g)
    pred_boxes[query_of_box] = tgt_boxes + 0.01 * torch.randn(num_boxes, 4, generator=g)
    logits = torch.randn(num_queries, 256, generator=g)
    logits[query_of_box, tokens] += 5
    outputs = {"pred_logits": logits[None], "pred_boxes": pred_boxes[None]}

    (src, tgt), = HungarianMatcher(1, 5, 2)(outputs, [{"boxes": tgt_boxes}], one_hot_map(tokens))
    assert src.dtype == tgt.dtype == torch.int64 and len(src) == num_boxes
    assert torch.equal(query_of_box[tgt], src)


def synthetic_batch(tokenizer, generator, requires_grad):
    captions = ["a red ball next to a cup", "two dogs"]
    spans = [[[(2, 10)], [(19, 24)]], [[(0, 8)]]]
    tokenized = tokenizer(captions, padding="longest", return_tensors="pt")
    bs, queries, tokens = 2, 6, tokenized["input_ids"].shape[1]
    targets = []
    for caption, tokens_positive, (h, w) in zip(captions, spans, [(32, 40), (36, 28)]):
        n = len(tokens_positive)
        targets.append({"boxes": random_boxes(n, generator), "labels": torch.zeros(n, dtype=torch.int64),
                        "tokens_positive": tokens_positive,
                        "masks": torch.rand(n, h, w, generator=generator) > 0.5})
    positive_map = torch.cat([caption_positive_map(tokenizer, c, t["tokens_positive"])
                              for c, t in zip(captions, targets)])

    def leaf(*shape):
        return torch.randn(*shape, generator=generator).requires_grad_(requires_grad)

    def layer():
        return {"pred_logits": leaf(bs, queries, 256), "pred_boxes": leaf(bs, queries, 4),
                "proj_queries": leaf(bs, queries, 16), "proj_tokens": leaf(bs, tokens, 16)}

    outputs = {**layer(), "pred_masks": leaf(bs, queries, 9, 10), "tokenized": tokenized, "aux_outputs": [layer()]}
    return outputs, targets, positive_map


def test_perfect_boxes_have_zero_box_loss(tiny_roberta_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_roberta_dir)
    outputs, targets, positive_map = synthetic_batch(tokenizer, torch.Generator().manual_seed(1), False)
    criterion, _ = build_criterion(*criterion_config(aux_loss=False, contrastive_align_loss=False))
    pred = outputs["pred_boxes"].sigmoid()
    pred[0, [4, 1]] = targets[0]["boxes"]
    pred[1, [3]] = targets[1]["boxes"]
    outputs["pred_boxes"] = pred
    losses = criterion(outputs, targets, positive_map)
    assert float(losses["loss_bbox"]) < 1e-6 and float(losses["loss_giou"]) < 1e-6
    outputs["pred_boxes"] = pred.flip(1)  # still perfect: the matcher finds the moved queries
    assert float(criterion(outputs, targets, positive_map)["loss_bbox"]) < 1e-6


def test_gradients_flow_to_every_output(tiny_roberta_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_roberta_dir)
    outputs, targets, positive_map = synthetic_batch(tokenizer, torch.Generator().manual_seed(2), True)
    raw_boxes = [outputs["pred_boxes"], outputs["aux_outputs"][0]["pred_boxes"]]
    outputs["pred_boxes"] = raw_boxes[0].sigmoid()
    outputs["aux_outputs"][0]["pred_boxes"] = raw_boxes[1].sigmoid()
    criterion, weight_dict = build_criterion(*criterion_config(dec_layers=2, masks=True))
    losses = criterion(outputs, targets, positive_map)
    assert {"loss_mask", "loss_dice", "loss_contrastive_align_0"} <= set(losses)
    total = sum(losses[k] * weight_dict[k] for k in losses if k in weight_dict)
    total.backward()
    leaves = [outputs["pred_logits"], outputs["proj_queries"], outputs["proj_tokens"], outputs["pred_masks"],
              outputs["aux_outputs"][0]["pred_logits"], outputs["aux_outputs"][0]["proj_queries"], *raw_boxes]
    for tensor in leaves:
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all() and tensor.grad.abs().sum() > 0


def test_targets_without_boxes_give_finite_losses(tiny_roberta_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_roberta_dir)
    outputs, targets, _ = synthetic_batch(tokenizer, torch.Generator().manual_seed(3), False)
    outputs["pred_boxes"] = outputs["pred_boxes"].sigmoid()
    outputs["aux_outputs"][0]["pred_boxes"] = outputs["aux_outputs"][0]["pred_boxes"].sigmoid()
    for t in targets:
        t.update(boxes=t["boxes"][:0], labels=t["labels"][:0], tokens_positive=[], masks=t["masks"][:0])
    criterion, _ = build_criterion(*criterion_config(dec_layers=2, masks=True))
    losses = criterion(outputs, targets, torch.zeros(0, 256))
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert float(losses["loss_bbox"]) == 0 and float(losses["loss_ce"]) > 0
