"""MDETR: the modulated detector (backbone -> input projection -> image-text transformer -> box/class heads)."""
import torch.nn.functional as F
from torch import Tensor, nn

from .nested_tensor import NestedTensor, nested_tensor_from_tensor_list


class MLP(nn.Module):
    """`num_layers` linear layers with ReLU between them (`layers.i` keys)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class MDETR(nn.Module):
    """Outputs (see `decode`): pred_logits B×Q×(num_classes+1), pred_boxes B×Q×4 (normalised cxcywh), tokenized (the
    tokenizer's BatchEncoding), with contrastive align: proj_queries B×Q×hdim, proj_tokens B×T×hdim (L2-normalised);
    with aux_loss: aux_outputs, the same for each earlier decoder layer.

    `model(samples, captions)` runs both passes. The release's two-pass calls also work:
    `cache = model(samples, captions, encode_and_save=True)` then
    `model(samples, captions, encode_and_save=False, memory_cache=cache)`.
    """

    def __init__(self, backbone: nn.Module, transformer: nn.Module, num_classes: int, num_queries: int,
                 aux_loss: bool, contrastive_align_loss: bool, contrastive_hdim: int):
        super().__init__()
        hidden_dim = transformer.d_model
        self.num_queries = num_queries
        self.transformer = transformer
        self.class_embed = nn.Linear(hidden_dim, num_classes + 1)
        self.bbox_embed = MLP(hidden_dim, hidden_dim, 4, 3)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        self.input_proj = nn.Conv2d(backbone.num_channels, hidden_dim, kernel_size=1)
        self.backbone = backbone
        self.aux_loss = aux_loss
        self.contrastive_align_loss = contrastive_align_loss
        if contrastive_align_loss:
            self.contrastive_align_projection_image = nn.Linear(hidden_dim, contrastive_hdim)
            self.contrastive_align_projection_text = nn.Linear(hidden_dim, contrastive_hdim)

    def encode(self, samples, captions) -> dict:
        """Backbone + joint encoder. The cache also keeps the backbone `features` and the projected last level
        `src_proj` (for the mask head)."""
        if not isinstance(samples, NestedTensor):
            samples = nested_tensor_from_tensor_list(list(samples))
        features, pos = self.backbone(samples)
        src, mask = features[-1].decompose()
        src_proj = self.input_proj(src)
        cache = self.transformer.encode(src_proj, mask, self.query_embed.weight, pos, captions)
        cache.update(features=features, src_proj=src_proj)
        return cache

    def decode(self, cache: dict) -> dict:
        return self.heads(self.transformer.decode(cache), cache)

    def heads(self, hs: Tensor, cache: dict) -> dict:
        """Heads on the decoder states hs (L×B×Q×C)."""
        logits = self.class_embed(hs)
        boxes = self.bbox_embed(hs).sigmoid()
        layers = [{"pred_logits": a, "pred_boxes": b, "tokenized": cache["tokenized"]} for a, b in zip(logits, boxes)]
        if self.contrastive_align_loss:
            proj_queries = F.normalize(self.contrastive_align_projection_image(hs), p=2, dim=-1)
            proj_tokens = F.normalize(
                self.contrastive_align_projection_text(cache["text_memory"]).transpose(0, 1), p=2, dim=-1)
            for layer, queries in zip(layers, proj_queries):
                layer.update(proj_queries=queries, proj_tokens=proj_tokens)
        out = layers[-1]
        if self.aux_loss:
            out["aux_outputs"] = layers[:-1]
        return out

    def forward(self, samples, captions, encode_and_save=None, memory_cache=None):
        if encode_and_save is False:
            return self.decode(memory_cache)
        cache = self.encode(samples, captions)
        return cache if encode_and_save else self.decode(cache)
