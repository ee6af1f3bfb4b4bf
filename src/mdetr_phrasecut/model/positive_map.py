"""Positive maps: which text tokens each box refers to, from character spans (`tokens_positive`).

Spans map to tokens through a fast tokenizer's `char_to_token`; a span whose first (last)
character falls on no token (e.g. whitespace) retries one and two characters further in,
as MDETR's release does, and a span that still maps to nothing is dropped.
"""
from typing import Optional, Sequence

import torch
from torch import Tensor

MAX_TEXT_LEN = 256  # width of the soft-token classifier; its last column is the no-object token

Spans = Sequence[Sequence[int]]  # [(char_begin, char_end_exclusive), ...] for one box


def _char_to_token(tokenized, batch_index: int, char_index: int) -> Optional[int]:
    if char_index < 0:
        return None
    return tokenized.char_to_token(batch_index, char_index)


def _first_token(tokenized, batch_index: int, beg: int) -> Optional[int]:
    for c in (beg, beg + 1, beg + 2):
        token = _char_to_token(tokenized, batch_index, c)
        if token is not None:
            return token
    return None


def _last_token(tokenized, batch_index: int, end: int) -> Optional[int]:
    for c in (end - 1, end - 2, end - 3):
        token = _char_to_token(tokenized, batch_index, c)
        if token is not None:
            return token
    return None


def token_mask(tokenized, tokens_positive: Sequence[Spans], width: int, batch_index: int = 0) -> Tensor:
    """Bool [num_boxes, width]: True where box j's spans cover a token of sample `batch_index`.

    Tokens at or beyond `width` are cut off.
    """
    mask = torch.zeros((len(tokens_positive), width), dtype=torch.bool)
    for j, spans in enumerate(tokens_positive):
        for beg, end in spans:
            first = _first_token(tokenized, batch_index, beg)
            last = _last_token(tokenized, batch_index, end)
            if first is not None and last is not None:
                mask[j, first : last + 1] = True
    return mask


def create_positive_map(tokenized, tokens_positive: Sequence[Spans], max_len: int = MAX_TEXT_LEN,
                        batch_index: int = 0) -> Tensor:
    """Float [num_boxes, max_len]: each box's tokens, its row normalised by (row sum + 1e-6)."""
    pmap = token_mask(tokenized, tokens_positive, max_len, batch_index).float()
    return pmap / (pmap.sum(-1, keepdim=True) + 1e-6)


def caption_positive_map(tokenizer, caption: str, tokens_positive: Sequence[Spans],
                         max_len: int = MAX_TEXT_LEN) -> Tensor:
    """The positive map of one sample: tokenize its caption alone and map its boxes' spans."""
    return create_positive_map(tokenizer(caption, return_tensors="pt"), tokens_positive, max_len)
