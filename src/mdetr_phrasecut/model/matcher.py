"""Hungarian matching of predicted queries to target boxes (MDETR's soft-token class cost)."""
from typing import Dict, List, Sequence, Tuple

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou


class HungarianMatcher(nn.Module):
    """One-to-one assignment minimising class, L1 box and GIoU costs, per image.

    The class cost of query q for box b is -(softmax(logits_q) * positive_map_b).sum(): minus the
    probability mass q puts on b's tokens with the release's 0/1 rows, its mean over them (x1/token count)
    with normalised rows.
    """

    def __init__(self, cost_class: float, cost_bbox: float, cost_giou: float):
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise ValueError("all matching costs are 0")
        self.cost_class = cost_class
        self.cost_bbox = cost_bbox
        self.cost_giou = cost_giou

    @torch.no_grad()
    def forward(self, outputs: Dict[str, Tensor], targets: Sequence[Dict], positive_map: Tensor
                ) -> List[Tuple[Tensor, Tensor]]:
        """outputs: pred_logits [B,Q,T], pred_boxes [B,Q,4] (normalised cxcywh);
        targets: dicts with `boxes` [n_i,4] (normalised cxcywh); positive_map [sum n_i, T].

        Returns per image (query indices, target indices), int64, of length min(Q, n_i).
        """
        bs, num_queries = outputs["pred_logits"].shape[:2]
        prob = outputs["pred_logits"].flatten(0, 1).softmax(-1)
        out_boxes = outputs["pred_boxes"].flatten(0, 1)
        tgt_boxes = torch.cat([t["boxes"] for t in targets])
        if len(tgt_boxes) != len(positive_map):
            raise ValueError(f"positive_map has {len(positive_map)} rows for {len(tgt_boxes)} target boxes")

        cost_class = -prob @ positive_map.to(prob).T
        cost_bbox = torch.cdist(out_boxes, tgt_boxes, p=1)
        cost_giou = -generalized_box_iou(box_convert(out_boxes, "cxcywh", "xyxy"),
                                         box_convert(tgt_boxes, "cxcywh", "xyxy"))
        cost = self.cost_bbox * cost_bbox + self.cost_class * cost_class + self.cost_giou * cost_giou
        cost = cost.view(bs, num_queries, -1).cpu()

        sizes = [len(t["boxes"]) for t in targets]
        indices = []
        for i, c in enumerate(cost.split(sizes, -1)):
            rows, cols = linear_sum_assignment(c[i])
            indices.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return indices
