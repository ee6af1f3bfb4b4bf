"""Stage specs and resolved configs for tests."""
import json

from mdetr_phrasecut.config import MODEL_TRAIN_KEYS, validate_spec


def tiny_spec(text_encoder, **train):
    """A model small enough for CI (hidden 128: the smallconv head's GroupNorm(8) needs a multiple of 128)."""
    model = {"backbone": "resnet18", "hidden_dim": 128, "nheads": 8, "enc_layers": 1, "dec_layers": 1,
             "dim_feedforward": 64, "num_queries": 4, "dropout": 0.0, "text_encoder_type": str(text_encoder)}
    base = {"epochs": 1, "batch_size": 2, "scales": [64], "max_size": 64, "num_workers": 0, "lr": 3e-4,
            "lr_backbone": 1e-4, "text_encoder_lr": 1e-4, "ema_decay": 0.9, "eval_every": 0}
    return validate_spec({"model": model, "train": {**base, **train}})


def model_config(**keys):
    """`build_model`'s mapping: the schema's defaults (a detector) with `keys` replaced (masks, freeze_detr, ...)."""
    spec = validate_spec({"model": {}, "train": {}})
    base = {**spec["model"], **{k: spec["train"][k] for k in MODEL_TRAIN_KEYS}, "masks": False, "freeze_detr": False,
            "train_batchnorm": False}
    return {**base, **keys}


def criterion_config(**keys):
    """`build_criterion`'s (model, train): the schema's defaults with `keys` replaced in both."""
    return model_config(**keys), {**validate_spec({"model": {}, "train": {}})["train"], **keys}


def spec_file(folder, spec, name="spec.json"):
    """`spec` written as the JSON file a stage command's --spec takes; its path as a string."""
    path = folder / name
    path.write_text(json.dumps(spec))
    return str(path)
