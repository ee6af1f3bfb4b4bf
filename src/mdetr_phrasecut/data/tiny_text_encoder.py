"""A tiny RoBERTa-style text encoder for offline demos and tests.

``build_tiny_text_encoder(captions, out_dir)`` trains a byte-level BPE tokenizer (HF ``tokenizers``,
RoBERTa special tokens ``<s> <pad> </s> <unk> <mask>``, the full 256-byte alphabet so no text is ever
unknown) on the given captions and saves, next to it, a ``RobertaConfig`` and a randomly initialised
``RobertaModel`` (``model.safetensors``). The folder loads with::

    transformers.AutoTokenizer.from_pretrained(folder)   # fast RoBERTa tokenizer, char_to_token works
    transformers.RobertaModel.from_pretrained(folder)

The committed copy in ``mdetr_phrasecut/assets/tiny_text_encoder/`` (see :func:`default_path`) was built
from the captions of the default synthetic dataset (``synth`` with seed 0) plus every word the generator
can emit. Regenerate it with::

    python -m mdetr_phrasecut.data.tiny_text_encoder --out src/mdetr_phrasecut/assets/tiny_text_encoder

The output is deterministic (same captions and seed -> same files).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from .. import ASSETS

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
MAX_POSITION_EMBEDDINGS = 66  # RoBERTa offsets positions by padding_idx + 1: 64 usable tokens


def default_path() -> Path:
    """The committed tiny encoder folder inside the installed package
    (``text_encoder_type: asset:tiny_text_encoder``)."""
    return ASSETS / "tiny_text_encoder"


def synthetic_vocabulary_captions():
    """Every word/phrase piece the synthetic generator can emit, so the BPE keeps them whole."""
    from . import synth

    words = [*synth.SHAPES, *synth.PLURAL.values(), *synth.COLORS, *synth.SIZES, *synth.PREDICATES,
             *synth.TOP_STUFF, *synth.BOTTOM_STUFF]
    return [" ".join(words)] + list(words)


def default_synthetic_captions(seed=0):
    """Captions of the default synthetic dataset (no images written) plus the generator's vocabulary."""
    from . import synth

    captions = []
    counts = synth.DEFAULT_NUM_IMAGES
    total = counts["train"] + counts["val"] + counts["test"]
    for image_id in range(1, total + 1):
        _, recs = synth.generate_image(seed, image_id, 96, 160)
        captions.extend(r["phrase"] for r in recs)
    return captions + synthetic_vocabulary_captions()


def build_tiny_text_encoder(captions, out_dir, vocab_size=512, hidden_size=64, layers=2, heads=2, seed=0,
                            intermediate_size=None, min_frequency=1):
    """Train the tokenizer on ``captions``, initialise the model, save both into ``out_dir`` (atomically:
    built in a temporary sibling folder, then moved into place). Returns ``out_dir`` as a Path."""
    import torch
    from tokenizers import ByteLevelBPETokenizer, processors
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    captions = [str(c) for c in captions]
    if not captions:
        raise ValueError("build_tiny_text_encoder: no captions to train the tokenizer on")
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        bpe = ByteLevelBPETokenizer(add_prefix_space=False, trim_offsets=True)
        bpe.train_from_iterator(captions, vocab_size=vocab_size, min_frequency=min_frequency,
                                special_tokens=SPECIAL_TOKENS, show_progress=False)
        bpe.post_processor = processors.RobertaProcessing(
            ("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")),
            trim_offsets=True, add_prefix_space=False)
        raw = tmp / "raw"
        raw.mkdir()
        bpe.save_model(str(raw))  # vocab.json + merges.txt
        bpe.save(str(raw / "tokenizer.json"))
        tok = RobertaTokenizerFast(
            vocab_file=str(raw / "vocab.json"), merges_file=str(raw / "merges.txt"),
            tokenizer_file=str(raw / "tokenizer.json"), add_prefix_space=False, trim_offsets=True,
            model_max_length=MAX_POSITION_EMBEDDINGS - 2)
        final = tmp / "final"
        tok.save_pretrained(str(final))
        for name in ("vocab.json", "merges.txt"):
            if not (final / name).exists():
                shutil.copyfile(raw / name, final / name)
        for extra in ("special_tokens_map.json", "added_tokens.json"):
            (final / extra).unlink(missing_ok=True)  # same file set as the reference tiny_roberta/

        config = RobertaConfig(
            vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=intermediate_size or 4 * hidden_size, max_position_embeddings=MAX_POSITION_EMBEDDINGS,
            type_vocab_size=1, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, layer_norm_eps=1e-12)
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            model = RobertaModel(config, add_pooling_layer=True).eval()
        finally:
            torch.random.set_rng_state(state)
        model.save_pretrained(str(final), safe_serialization=True)

        for p in final.iterdir():
            os.chmod(p, 0o644)
        if out_dir.exists():
            for p in final.iterdir():
                os.replace(p, out_dir / p.name)
        else:
            os.chmod(final, 0o755)
            os.rename(final, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_path(), help="output folder (default: the package asset)")
    parser.add_argument("--seed", type=int, default=0, help="synthetic-data seed and model init seed")
    parser.add_argument("--vocab-size", type=int, default=512)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    args = parser.parse_args(argv)
    captions = default_synthetic_captions(args.seed)
    out = build_tiny_text_encoder(captions, args.out, vocab_size=args.vocab_size, hidden_size=args.hidden_size,
                                  layers=args.layers, heads=args.heads, seed=args.seed)
    size = sum(p.stat().st_size for p in out.iterdir())
    print(json.dumps({"out": str(out), "captions": len(captions), "bytes": size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
