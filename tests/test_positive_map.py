"""Positive maps from character spans, checked against the tokenizer's own offsets."""
import pytest
import torch
from transformers import AutoTokenizer

from mdetr_phrasecut.model.positive_map import MAX_TEXT_LEN, caption_positive_map, create_positive_map

CAPTIONS = ["the small red circle left of the blue square", "white clouds in blue sky"]


@pytest.fixture(scope="module")
def tokenizer(tiny_roberta_dir):
    return AutoTokenizer.from_pretrained(tiny_roberta_dir)


def overlapping_tokens(tokenizer, caption, beg, end):
    """Token indices whose character offsets intersect [beg, end), from the offset mapping."""
    offsets = tokenizer(caption, return_offsets_mapping=True)["offset_mapping"]
    return [k for k, (s, e) in enumerate(offsets) if e > s and s < end and e > beg]


def word_span(caption, words):
    beg = caption.index(words)
    return beg, beg + len(words)


@pytest.mark.parametrize("words", ["small red circle", "the blue square", "clouds", "sky"])
def test_span_covers_its_tokens_and_rows_are_normalised(tokenizer, words):
    caption = next(c for c in CAPTIONS if words in c)
    beg, end = word_span(caption, words)
    pmap = caption_positive_map(tokenizer, caption, [[(beg, end)]])
    expected = overlapping_tokens(tokenizer, caption, beg, end)
    assert pmap.shape == (1, MAX_TEXT_LEN)
    assert pmap[0].nonzero().flatten().tolist() == expected
    assert torch.allclose(pmap[0, expected], torch.full((len(expected),), 1 / (len(expected) + 1e-6)))


def test_spans_on_whitespace_fall_back_inwards(tokenizer):
    caption = CAPTIONS[0]
    beg, end = word_span(caption, "red circle")
    exact = caption_positive_map(tokenizer, caption, [[(beg, end)]])
    padded = caption_positive_map(tokenizer, caption, [[(beg - 1, end + 1)]])  # both ends on a space
    assert caption[beg - 1] == " " and caption[end] == " "
    assert torch.equal(padded, exact)


def test_unmappable_span_gives_empty_row_and_spans_union(tokenizer):
    caption = CAPTIONS[0]
    first, last = word_span(caption, "the"), word_span(caption, "square")
    pmap = caption_positive_map(tokenizer, caption, [[(len(caption) + 5, len(caption) + 9)], [first, last]])
    assert pmap[0].sum() == 0
    expected = overlapping_tokens(tokenizer, caption, *first) + overlapping_tokens(tokenizer, caption, *last)
    assert pmap[1].nonzero().flatten().tolist() == expected


def test_batch_encoding_sample_index_matches_single_caption(tokenizer):
    batch = tokenizer(CAPTIONS, padding="longest", return_tensors="pt")
    spans = [[word_span(CAPTIONS[1], "white clouds")], [word_span(CAPTIONS[1], "blue sky")]]
    single = caption_positive_map(tokenizer, CAPTIONS[1], spans)
    assert torch.equal(create_positive_map(batch, spans, batch_index=1), single)
    assert not torch.equal(create_positive_map(batch, spans, batch_index=0), single)


def test_width_and_no_boxes(tokenizer):
    caption = CAPTIONS[0]
    tokenized = tokenizer(caption, return_tensors="pt")
    span = [word_span(caption, "blue square")]
    narrow = create_positive_map(tokenized, [span], max_len=8)
    wide = create_positive_map(tokenized, [span])
    assert narrow.shape == (1, 8) and wide[0, 8:].sum() > 0
    assert torch.equal(narrow.bool(), wide[:, :8].bool())
    assert create_positive_map(tokenized, []).shape == (0, MAX_TEXT_LEN)
