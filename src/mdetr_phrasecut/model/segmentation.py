"""The `smallconv` segmentation model: per-query attention maps over the encoder memory, refined by a small FPN-style
conv head into one mask logit map per query at stride 4. Wraps a detector (`detr.` key prefix)."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .mdetr import MDETR


class MHAttentionMap(nn.Module):
    """Multi-head attention weights (softmax over H×W, no values) of queries B×Q×C over a feature map B×C×H×W."""

    def __init__(self, query_dim: int, hidden_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.hidden_dim = hidden_dim
        self.dropout = nn.Dropout(dropout)
        self.q_linear = nn.Linear(query_dim, hidden_dim)
        self.k_linear = nn.Linear(query_dim, hidden_dim)
        for linear in (self.q_linear, self.k_linear):
            nn.init.xavier_uniform_(linear.weight)
            nn.init.zeros_(linear.bias)
        self.normalize_fact = float(hidden_dim / num_heads) ** -0.5

    def forward(self, q: Tensor, k: Tensor, mask: Tensor) -> Tensor:
        """-> B×Q×heads×H×W; `mask` (B×H×W, True on padding) gets zero weight."""
        q = self.q_linear(q)
        k = F.conv2d(k, self.k_linear.weight[:, :, None, None], self.k_linear.bias)  # the linear, per pixel
        head_dim = self.hidden_dim // self.num_heads
        qh = q.view(q.shape[0], q.shape[1], self.num_heads, head_dim)
        kh = k.view(k.shape[0], self.num_heads, head_dim, k.shape[-2], k.shape[-1])
        weights = torch.einsum("bqnc,bnchw->bqnhw", qh * self.normalize_fact, kh)
        weights = weights.masked_fill(mask[:, None, None], float("-inf"))
        weights = weights.flatten(3).softmax(-1).view_as(weights)
        return self.dropout(weights)


class MaskHeadSmallConv(nn.Module):
    """Conv + GroupNorm(8) stack over [projected features; attention maps], upsampled FPN-style with three backbone
    levels (strides 16, 8, 4) through 1×1 adapters; one output channel."""

    def __init__(self, dim: int, fpn_dims, context_dim: int):
        super().__init__()
        widths = [dim, context_dim // 2, context_dim // 4, context_dim // 8, context_dim // 16]
        self.lay1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.gn1 = nn.GroupNorm(8, dim)
        self.lay2 = nn.Conv2d(dim, widths[1], 3, padding=1)
        self.gn2 = nn.GroupNorm(8, widths[1])
        self.lay3 = nn.Conv2d(widths[1], widths[2], 3, padding=1)
        self.gn3 = nn.GroupNorm(8, widths[2])
        self.lay4 = nn.Conv2d(widths[2], widths[3], 3, padding=1)
        self.gn4 = nn.GroupNorm(8, widths[3])
        self.lay5 = nn.Conv2d(widths[3], widths[4], 3, padding=1)
        self.gn5 = nn.GroupNorm(8, widths[4])
        self.out_lay = nn.Conv2d(widths[4], 1, 3, padding=1)
        self.adapter1 = nn.Conv2d(fpn_dims[0], widths[1], 1)
        self.adapter2 = nn.Conv2d(fpn_dims[1], widths[2], 1)
        self.adapter3 = nn.Conv2d(fpn_dims[2], widths[3], 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor, bbox_mask: Tensor, fpns) -> Tensor:
        """x B×C×h×w, bbox_mask B×Q×heads×h×w, fpns [stride 16, 8, 4] B×c×H×W -> (B·Q)×1×H4×W4."""
        num_queries = bbox_mask.shape[1]
        x = torch.cat([x.repeat_interleave(num_queries, 0), bbox_mask.flatten(0, 1)], 1)
        x = F.relu(self.gn1(self.lay1(x)))
        x = F.relu(self.gn2(self.lay2(x)))
        stages = [(self.adapter1, self.lay3, self.gn3), (self.adapter2, self.lay4, self.gn4),
                  (self.adapter3, self.lay5, self.gn5)]
        for (adapter, conv, norm), fpn in zip(stages, fpns):
            lateral = adapter(fpn)
            lateral = lateral.repeat_interleave(x.shape[0] // lateral.shape[0], 0)
            x = lateral + F.interpolate(x, size=lateral.shape[-2:], mode="nearest")
            x = F.relu(norm(conv(x)))
        return self.out_lay(x)


class MDETRsegm(nn.Module):
    """Detector outputs plus pred_masks B×Q×H/4×W/4 (mask logits over the padded batch).

    FPN widths come from the backbone's channels at strides 16, 8, 4 (ResNet-50/101: 1024, 512, 256).
    `freeze_detr` (stage 2) stops gradients to every detector weight.
    """

    def __init__(self, detr: MDETR, freeze_detr: bool = False):
        super().__init__()
        self.detr = detr
        if freeze_detr:
            detr.requires_grad_(False)
        hidden_dim, nheads = detr.transformer.d_model, detr.transformer.nhead
        self.bbox_attention = MHAttentionMap(hidden_dim, hidden_dim, nheads, dropout=0.0)
        self.mask_head = MaskHeadSmallConv(hidden_dim + nheads, detr.backbone.channels[:-1][::-1], hidden_dim)

    def forward(self, samples, captions) -> dict:
        cache = self.detr.encode(samples, captions)
        hs = self.detr.transformer.decode(cache)
        out = self.detr.heads(hs, cache)
        features, src_proj = cache["features"], cache["src_proj"]
        num_text = len(cache["text_memory"])
        memory = cache["img_memory"][:-num_text].permute(1, 2, 0).reshape(src_proj.shape)
        bbox_mask = self.bbox_attention(hs[-1], memory, mask=features[-1].mask)
        masks = self.mask_head(src_proj, bbox_mask, [f.tensors for f in features[2::-1]])
        out["pred_masks"] = masks.view(src_proj.shape[0], -1, masks.shape[-2], masks.shape[-1])
        return out
