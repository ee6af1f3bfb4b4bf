"""MDETR's set criterion: Hungarian matching, then soft-token classification, box, contrastive-align
and mask losses, each averaged over the number of target boxes in the (distributed) batch."""
from typing import Dict, List, Mapping, Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from .matcher import HungarianMatcher
from .positive_map import MODES, token_mask

Indices = List[Tuple[Tensor, Tensor]]

LOSS_KEYS = {  # loss name -> the weighted keys it returns
    "labels": ["loss_ce"],
    "boxes": ["loss_bbox", "loss_giou"],
    "contrastive_align": ["loss_contrastive_align"],
    "masks": ["loss_mask", "loss_dice"],
}

def dice_loss(inputs: Tensor, targets: Tensor, num_boxes: float) -> Tensor:
    """1 - smoothed Dice coefficient of sigmoid(inputs) vs binary targets, both [N, pixels]."""
    prob = inputs.sigmoid()
    numerator = 2 * (prob * targets).sum(1) + 1
    denominator = prob.sum(1) + targets.sum(1) + 1
    return (1 - numerator / denominator).sum() / num_boxes


def focal_loss(inputs: Tensor, targets: Tensor, num_boxes: float) -> Tensor:
    """Sigmoid focal loss (alpha 0.25, gamma 2), mean over pixels, summed over masks."""
    loss = sigmoid_focal_loss(inputs, targets, alpha=0.25, gamma=2, reduction="none")
    return loss.mean(1).sum() / num_boxes


def _src_idx(indices: Indices) -> Tuple[Tensor, Tensor]:
    batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    return batch, torch.cat([src for src, _ in indices])


def _world_mean_num_boxes(targets: Sequence[Dict], device) -> float:
    num_boxes = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(num_boxes)
        world = dist.get_world_size()
    return torch.clamp(num_boxes / world, min=1).item()


class SetCriterion(nn.Module):
    """Computes the requested losses for the last decoder layer and, with `aux_outputs`,
    for every earlier layer (keys suffixed `_i`; mask losses only for the last layer).

    The matcher and `loss_ce` take the batch's positive map as given (see positive_map.batch_positive_map);
    `positive_map` ("release" or "normalised") sets only where contrastive-align's span fallbacks look up
    tokens: sample 0 of the batch for every target, as the release does, or the target's own sample."""

    def __init__(self, matcher: HungarianMatcher, losses: Sequence[str], eos_coef: float, temperature: float,
                 positive_map: str):
        super().__init__()
        unknown = set(losses) - set(LOSS_KEYS) - {"cardinality"}
        if unknown:
            raise ValueError(f"unknown losses {sorted(unknown)}")
        if positive_map not in MODES:
            raise ValueError(f"positive_map {positive_map!r} is not one of {MODES}")
        self.fallback_sample0 = positive_map == "release"
        self.matcher = matcher
        self.losses = list(losses)
        self.eos_coef = eos_coef
        self.temperature = temperature

    def loss_labels(self, outputs, targets, positive_map, indices, num_boxes, token_masks):
        """Soft-token cross-entropy: matched queries predict their box's token distribution,
        the others the no-object token (last column), down-weighted by eos_coef."""
        log_prob = outputs["pred_logits"].log_softmax(-1)
        src = _src_idx(indices)
        offsets = torch.tensor([0] + [len(t["boxes"]) for t in targets[:-1]]).cumsum(0)
        tgt = torch.cat([j + off for (_, j), off in zip(indices, offsets)])

        target_sim = torch.zeros_like(log_prob)
        target_sim[:, :, -1] = 1
        target_sim[src] = positive_map[tgt].to(log_prob)
        weight = torch.full(log_prob.shape[:2], self.eos_coef, device=log_prob.device)
        weight[src] = 1
        loss = -(log_prob * target_sim).sum(-1) * weight
        return {"loss_ce": loss.sum() / num_boxes}

    @torch.no_grad()
    def loss_cardinality(self, outputs, targets, positive_map, indices, num_boxes, token_masks):
        """|number of queries not predicting no-object - number of targets|, averaged (logging only)."""
        logits = outputs["pred_logits"]
        predicted = (logits.argmax(-1) != logits.shape[-1] - 1).sum(1).float()
        expected = torch.tensor([float(len(t["labels"])) for t in targets], device=logits.device)
        return {"cardinality_error": F.l1_loss(predicted, expected)}

    def loss_boxes(self, outputs, targets, positive_map, indices, num_boxes, token_masks):
        """L1 and 1 - GIoU between matched boxes (normalised cxcywh)."""
        src = outputs["pred_boxes"][_src_idx(indices)]
        tgt = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices)])
        giou = generalized_box_iou(box_convert(src, "cxcywh", "xyxy"), box_convert(tgt, "cxcywh", "xyxy"))
        return {
            "loss_bbox": F.l1_loss(src, tgt, reduction="sum") / num_boxes,
            "loss_giou": (1 - torch.diag(giou)).sum() / num_boxes,
        }

    def loss_contrastive_align(self, outputs, targets, positive_map, indices, num_boxes, token_masks):
        """Symmetric InfoNCE between query and token projections; a matched query's positives
        are the tokens of its box, averaged over them, in both directions."""
        logits = outputs["proj_queries"] @ outputs["proj_tokens"].transpose(-1, -2) / self.temperature
        positive = torch.zeros(logits.shape, dtype=torch.bool)
        for i, (src, tgt) in enumerate(indices):
            positive[i, src] = token_masks[i][tgt]
        positive = positive.to(logits.device)
        pos_logits = logits.masked_fill(~positive, 0)

        def one_way(dim):
            per_item = -pos_logits.sum(dim) / (positive.sum(dim) + 1e-6) + logits.logsumexp(dim)
            return per_item.masked_fill(~positive.any(dim), 0).sum()

        return {"loss_contrastive_align": (one_way(2) + one_way(1)) / 2 / num_boxes}

    def loss_masks(self, outputs, targets, positive_map, indices, num_boxes, token_masks):
        """Focal and Dice losses of matched masks, predictions upsampled bilinearly to the
        batch's padded target size (targets zero-padded at the bottom/right)."""
        src_masks = outputs["pred_masks"][_src_idx(indices)]
        h = max(t["masks"].shape[-2] for t in targets)
        w = max(t["masks"].shape[-1] for t in targets)
        tgt_masks = torch.cat([
            F.pad(t["masks"][j].to(src_masks), (0, w - t["masks"].shape[-1], 0, h - t["masks"].shape[-2]))
            for t, (_, j) in zip(targets, indices)
        ])
        src_masks = F.interpolate(src_masks[:, None], size=(h, w), mode="bilinear", align_corners=False)
        src_masks, tgt_masks = src_masks.flatten(1), tgt_masks.flatten(1)
        return {
            "loss_mask": focal_loss(src_masks, tgt_masks, num_boxes),
            "loss_dice": dice_loss(src_masks, tgt_masks, num_boxes),
        }

    def _layer_losses(self, outputs, targets, positive_map, num_boxes, token_masks, skip=()):
        indices = self.matcher(outputs, targets, positive_map)
        losses = {}
        for name in self.losses:
            if name not in skip:
                losses.update(getattr(self, f"loss_{name}")(outputs, targets, positive_map, indices,
                                                            num_boxes, token_masks))
        return losses

    def forward(self, outputs: Dict, targets: Sequence[Dict], positive_map: Tensor) -> Dict[str, Tensor]:
        """outputs: the model's dict (see HungarianMatcher; plus proj_queries [B,Q,d], proj_tokens [B,T,d],
        tokenized for contrastive_align; pred_masks [B,Q,h,w] for masks; aux_outputs);
        targets: dicts with boxes, labels, tokens_positive, masks [n,H,W];
        positive_map: [total boxes, 256], the targets' maps batched (positive_map.batch_positive_map)."""
        num_boxes = _world_mean_num_boxes(targets, outputs["pred_logits"].device)
        token_masks = None
        if "contrastive_align" in self.losses:
            width = outputs["proj_tokens"].shape[1]
            token_masks = [token_mask(outputs["tokenized"], t["tokens_positive"], width, i,
                                      0 if self.fallback_sample0 else i)
                           for i, t in enumerate(targets)]
        main = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        losses = self._layer_losses(main, targets, positive_map, num_boxes, token_masks)
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            aux_losses = self._layer_losses(aux, targets, positive_map, num_boxes, token_masks, skip=("masks",))
            losses.update({f"{k}_{i}": v for k, v in aux_losses.items()})
        return losses


def build_criterion(model: Mapping, train: Mapping) -> Tuple[SetCriterion, Dict[str, float]]:
    """The criterion and loss weights of a resolved config (`config.StageConfig`'s model and train, the release's
    argument names): the model's dec_layers, temperature_NCE and heads (masks, aux_loss, contrastive_align_loss),
    the train section's coefficients, matcher costs and positive_map."""
    cfg = {**train, **{k: model[k] for k in ("dec_layers", "temperature_NCE", "masks", "aux_loss",
                                             "contrastive_align_loss")}}
    coef = {
        "loss_ce": cfg["ce_loss_coef"],
        "loss_bbox": cfg["bbox_loss_coef"],
        "loss_contrastive_align": cfg["contrastive_align_loss_coef"],
        "loss_giou": cfg["giou_loss_coef"],
        "loss_mask": cfg["mask_loss_coef"],
        "loss_dice": cfg["dice_loss_coef"],
    }
    losses = ["labels", "boxes", "cardinality"]
    if cfg["masks"]:
        losses.append("masks")
    if cfg["contrastive_align_loss"]:
        losses.append("contrastive_align")
    used = {k for name in losses for k in LOSS_KEYS.get(name, [])}
    weight_dict = {k: v for k, v in coef.items() if k in used}
    if cfg["aux_loss"]:
        # Like the release, aux weights copy every key, mask ones included (no aux mask loss is computed).
        for i in range(cfg["dec_layers"] - 1):
            weight_dict.update({f"{k}_{i}": v for k, v in coef.items() if k in used})
    matcher = HungarianMatcher(cfg["set_cost_class"], cfg["set_cost_bbox"], cfg["set_cost_giou"])
    criterion = SetCriterion(matcher, losses, eos_coef=cfg["eos_coef"], temperature=cfg["temperature_NCE"],
                             positive_map=cfg["positive_map"])
    return criterion, weight_dict

