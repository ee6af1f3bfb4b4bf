"""MDETR's transformer: the encoder runs over the image features concatenated with the resized text features; the
decoder's queries cross-attend to that joint memory and every layer's (normalised) output is returned.

Tensors are sequence-first (S×B×C) as in `nn.MultiheadAttention`'s default layout. Post-norm layers only (the
release's decoder has no pre-norm variant).
"""
import copy
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .text_encoder import FeatureResizer, load_text_encoder


def _with_pos(x: Tensor, pos: Optional[Tensor]) -> Tensor:
    return x if pos is None else x + pos


class TransformerEncoderLayer(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(self, src: Tensor, key_padding_mask: Tensor, pos: Tensor) -> Tensor:
        q = k = _with_pos(src, pos)
        attended = self.self_attn(q, k, src, key_padding_mask=key_padding_mask, need_weights=False)[0]
        src = self.norm1(src + self.dropout1(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(src))))
        return self.norm2(src + self.dropout2(ffn))


class TransformerDecoderLayer(nn.Module):
    """Self-attention, cross-attention to the joint image+text memory, FFN (norm1/3/4: the release's key names)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.cross_attn_image = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.norm4 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.dropout4 = nn.Dropout(dropout)

    def forward(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Tensor, pos: Tensor,
                query_pos: Tensor) -> Tensor:
        q = k = _with_pos(tgt, query_pos)
        attended = self.self_attn(q, k, tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + self.dropout1(attended))
        attended = self.cross_attn_image(_with_pos(tgt, query_pos), _with_pos(memory, pos), memory,
                                         key_padding_mask=memory_key_padding_mask, need_weights=False)[0]
        tgt = self.norm3(tgt + self.dropout3(attended))
        ffn = self.linear2(self.dropout(F.relu(self.linear1(tgt))))
        return self.norm4(tgt + self.dropout4(ffn))


class TransformerEncoder(nn.Module):
    def __init__(self, layer: nn.Module, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))

    def forward(self, src: Tensor, key_padding_mask: Tensor, pos: Tensor) -> Tensor:
        for layer in self.layers:
            src = layer(src, key_padding_mask, pos)
        return src


class TransformerDecoder(nn.Module):
    """Returns the shared final LayerNorm applied to every layer's output, stacked: L×Q×B×C."""

    def __init__(self, layer: nn.Module, num_layers: int, d_model: int):
        super().__init__()
        self.layers = nn.ModuleList(copy.deepcopy(layer) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: Tensor, memory: Tensor, memory_key_padding_mask: Tensor, pos: Tensor,
                query_pos: Tensor) -> Tensor:
        intermediate = []
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_key_padding_mask, pos, query_pos)
            intermediate.append(self.norm(tgt))
        return torch.stack(intermediate)


class Transformer(nn.Module):
    """Holds the text encoder (`text_encoder`, `tokenizer`, `resizer`) and the image-text encoder/decoder.

    Two passes, as the release: `encode` -> memory cache (dict), `decode(cache)` -> decoder states L×B×Q×C.
    """

    def __init__(self, d_model: int, nhead: int, num_encoder_layers: int, num_decoder_layers: int,
                 dim_feedforward: int, dropout: float, text_encoder_type: str, freeze_text_encoder: bool):
        super().__init__()
        self.encoder = TransformerEncoder(TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout),
                                          num_encoder_layers)
        self.decoder = TransformerDecoder(TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout),
                                          num_decoder_layers, d_model)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        self.tokenizer, self.text_encoder = load_text_encoder(text_encoder_type)
        if freeze_text_encoder:
            self.text_encoder.requires_grad_(False)
        self.resizer = FeatureResizer(self.text_encoder.config.hidden_size, d_model, dropout=0.1)
        self.d_model = d_model
        self.nhead = nhead

    def encode(self, src: Tensor, mask: Tensor, query_embed: Tensor, pos_embed: Tensor, captions) -> dict:
        """src/pos_embed B×C×H×W, mask B×H×W (True on padding), query_embed Q×C, captions list of str."""
        bs = src.shape[0]
        src = src.flatten(2).permute(2, 0, 1)
        pos_embed = pos_embed.flatten(2).permute(2, 0, 1)
        mask = mask.flatten(1)

        tokenized = self.tokenizer(list(captions), padding="longest", return_tensors="pt").to(src.device)
        text_memory = self.text_encoder(**tokenized).last_hidden_state.transpose(0, 1)
        text_attention_mask = tokenized["attention_mask"].ne(1)
        text_memory_resized = self.resizer(text_memory)

        joint = torch.cat([src, text_memory_resized])
        joint_mask = torch.cat([mask, text_attention_mask], dim=1)
        joint_pos = torch.cat([pos_embed, torch.zeros_like(text_memory_resized)])  # no position for text tokens
        memory = self.encoder(joint, key_padding_mask=joint_mask, pos=joint_pos)
        return {
            "text_memory_resized": text_memory_resized,
            "text_memory": memory[-len(text_memory_resized):],
            "img_memory": memory,
            "mask": joint_mask,
            "text_attention_mask": text_attention_mask,
            "pos_embed": joint_pos,
            "query_embed": query_embed.unsqueeze(1).repeat(1, bs, 1),
            "tokenized": tokenized,
        }

    def decode(self, cache: dict) -> Tensor:
        query_embed = cache["query_embed"]
        hs = self.decoder(torch.zeros_like(query_embed), cache["img_memory"], cache["mask"], cache["pos_embed"],
                          query_embed)
        return hs.transpose(1, 2)
