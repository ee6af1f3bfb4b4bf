"""2-D position encodings of a feature map (DETR's): sine (normalised to 2*pi over the unpadded extent)."""
import math

import torch
from torch import nn

from .nested_tensor import NestedTensor


class PositionEmbeddingSine(nn.Module):
    """sin/cos of the cumulative row and column index of unpadded pixels; `2 * num_pos_feats` channels (y then x)."""

    def __init__(self, num_pos_feats: int = 64, temperature: float = 10000, normalize: bool = True,
                 scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, x: NestedTensor) -> torch.Tensor:
        valid = ~x.mask
        y_embed = valid.cumsum(1, dtype=torch.float32)
        x_embed = valid.cumsum(2, dtype=torch.float32)
        if self.normalize:
            eps = 1e-6
            y_embed = y_embed / (y_embed[:, -1:, :] + eps) * self.scale
            x_embed = x_embed / (x_embed[:, :, -1:] + eps) * self.scale
        i = torch.arange(self.num_pos_feats, dtype=torch.float32, device=x.tensors.device)
        freqs = self.temperature ** (2 * torch.div(i, 2, rounding_mode="floor") / self.num_pos_feats)

        def encode(coord):  # B×H×W -> B×H×W×F, sin on even channels, cos on odd ones, interleaved
            angles = coord[..., None] / freqs
            return torch.stack((angles[..., 0::2].sin(), angles[..., 1::2].cos()), dim=4).flatten(3)

        return torch.cat((encode(y_embed), encode(x_embed)), dim=3).permute(0, 3, 1, 2)


def build_position_encoding(kind: str, hidden_dim: int) -> nn.Module:
    if kind != "sine":
        raise ValueError(f"unknown position_embedding {kind!r}; expected sine")
    return PositionEmbeddingSine(hidden_dim // 2, normalize=True)
