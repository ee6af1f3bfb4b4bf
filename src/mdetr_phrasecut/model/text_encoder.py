"""The text side: a `transformers` RoBERTa encoder with its tokenizer, and the resizer to the transformer width."""
from pathlib import Path

import torch
from huggingface_hub import constants as hf_constants
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from .. import ASSETS
from ..errors import InputError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")
ASSET_PREFIX = "asset:"


def _quietly(load, *args, **kwargs):
    """Call `load` without transformers' progress bar: one model load is no progress to report on stderr."""
    shown = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        return load(*args, **kwargs)
    finally:
        if shown:
            hf_logging.enable_progress_bar()


def load_text_encoder(text_encoder_type: str):
    """(tokenizer, encoder) for a hub name such as ``roberta-base``, a local folder or ``asset:NAME`` (a folder
    shipped in the package, e.g. ``asset:tiny_text_encoder``). A hub name with the Hub offline (``HF_HUB_OFFLINE``:
    every workflow job but the downloads) is one error line naming the `downloads` entry to add.

    A folder with weights loads them; a folder with only ``config.json`` (plus tokenizer files) builds a randomly
    initialised encoder of that architecture, for when a checkpoint supplies the weights. The encoder keeps its
    pooler, so its keys match the release's (``transformer.text_encoder.pooler.dense.*``).
    """
    if text_encoder_type.startswith(ASSET_PREFIX):  # in the package's assets, wherever it is installed
        text_encoder_type = str(ASSETS / text_encoder_type.removeprefix(ASSET_PREFIX))
    folder = Path(text_encoder_type).expanduser()
    if not folder.is_dir() and hf_constants.is_offline_mode():  # the workflow's jobs: only downloads go online
        raise InputError(f"text_encoder_type {text_encoder_type!r}: no such folder, and the Hub is offline here "
                         f"(HF_HUB_OFFLINE=1): add a `downloads` entry named {text_encoder_type!r} (an hf:// "
                         "snapshot) and let its download job fetch it (docs/downloads.md)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(text_encoder_type)
        if folder.is_dir() and not any((folder / name).exists() for name in WEIGHT_FILES):
            encoder = AutoModel.from_config(AutoConfig.from_pretrained(folder))
        else:
            encoder = _quietly(AutoModel.from_pretrained, text_encoder_type, dtype=torch.float32)
    except (OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"text_encoder_type {text_encoder_type!r}: cannot load tokenizer/encoder: {first_line}") from e
    if not tokenizer.is_fast:
        raise InputError(f"text_encoder_type {text_encoder_type!r}: a fast tokenizer (tokenizer.json) is required")
    return tokenizer, encoder


class FeatureResizer(nn.Module):
    """Linear map of text features to the transformer width, then LayerNorm (eps 1e-12) and dropout."""

    def __init__(self, input_feat_size: int, output_feat_size: int, dropout: float = 0.1):
        super().__init__()
        self.fc = nn.Linear(input_feat_size, output_feat_size)
        self.layer_norm = nn.LayerNorm(output_feat_size, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.layer_norm(self.fc(x)))


def check_phrase_lengths(tokenizer, phrases, where):
    """Refuse (never truncate) a phrase longer than the model takes: the encoder's `model_max_length` and the
    positive map's MAX_TEXT_LEN tokens, special tokens included. `where(i)` names phrase i's record."""
    from .positive_map import MAX_TEXT_LEN

    limit = min(tokenizer.model_max_length, MAX_TEXT_LEN)
    phrases = list(phrases)
    for i, ids in enumerate(tokenizer(phrases)["input_ids"] if phrases else []):
        if len(ids) > limit:
            raise InputError(f"{where(i)}: phrase has {len(ids)} tokens, more than the {limit} the text encoder "
                             "takes (long phrases are refused, not truncated)")
