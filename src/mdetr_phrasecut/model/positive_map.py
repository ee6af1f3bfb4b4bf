"""Positive maps: which text tokens each box refers to, from character spans (`tokens_positive`).

Spans map to tokens through a fast tokenizer's `char_to_token`; a span whose first (last)
character falls on no token (e.g. whitespace) retries one and two characters further in,
as MDETR's release does, and a span that still maps to nothing is dropped.

A batch's boxes share one map (`batch_positive_map`), in one of two modes (the `positive_map` setting of
a training stage):

- ``release``: what the published checkpoints were trained with. The release's collate stacks every
  sample's map into one torch.bool buffer and calls .float(), so a row is 1 on each of its box's tokens
  (it sums to the span's token count) and the soft-token loss and the matcher's class cost add up over
  the phrase's tokens.
- ``normalised``: the rows as `create_positive_map` makes them, summing to 1 (a token distribution).
"""
from typing import Optional, Sequence

import torch
from torch import Tensor

MAX_TEXT_LEN = 256  # width of the soft-token classifier; its last column is the no-object token
MODES = ("release", "normalised")

Spans = Sequence[Sequence[int]]  # [(char_begin, char_end_exclusive), ...] for one box


def _char_to_token(tokenized, batch_index: int, char_index: int) -> Optional[int]:
    if char_index < 0:
        return None
    return tokenized.char_to_token(batch_index, char_index)


def _span_token(tokenized, batch_index: int, fallback_index: int, chars) -> Optional[int]:
    """The token of the first of `chars` that falls on one: the first looked up in sample `batch_index`,
    the retries in sample `fallback_index`."""
    for k, c in enumerate(chars):
        token = _char_to_token(tokenized, fallback_index if k else batch_index, c)
        if token is not None:
            return token
    return None


def token_mask(tokenized, tokens_positive: Sequence[Spans], width: int, batch_index: int = 0,
               fallback_index: Optional[int] = None) -> Tensor:
    """Bool [num_boxes, width]: True where box j's spans cover a token of sample `batch_index`.

    The fallback retries read sample `fallback_index` (default: `batch_index`); the release's
    contrastive-align loss reads sample 0's there. Tokens at or beyond `width` are cut off.
    """
    fallback_index = batch_index if fallback_index is None else fallback_index
    mask = torch.zeros((len(tokens_positive), width), dtype=torch.bool)
    for j, spans in enumerate(tokens_positive):
        for beg, end in spans:
            first = _span_token(tokenized, batch_index, fallback_index, (beg, beg + 1, beg + 2))
            last = _span_token(tokenized, batch_index, fallback_index, (end - 1, end - 2, end - 3))
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


def batch_positive_map(maps: Sequence[Tensor], mode: str = "release") -> Tensor:
    """Float [total boxes, widest map]: the samples' maps stacked in order, zero-padded on the right, as the
    release's collate builds it; `release` passes them through a torch.bool buffer (0/1 rows),
    `normalised` keeps their values."""
    if mode not in MODES:
        raise ValueError(f"positive_map mode {mode!r} is not one of {MODES}")
    width = max((m.shape[1] for m in maps), default=MAX_TEXT_LEN)
    batched = torch.zeros((sum(len(m) for m in maps), width),
                          dtype=torch.bool if mode == "release" else torch.float)
    row = 0
    for m in maps:
        batched[row : row + len(m), : m.shape[1]] = m
        row += len(m)
    return batched.float()
