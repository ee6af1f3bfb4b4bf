"""`build(stage_config)`: the model, criterion and post-processors of one stage (DETR's build), from
`config.resolve_stage`; `build_model(cfg)`: the detector or the segmentation model alone."""
from typing import Mapping

from ..config import schema_defaults
from ..errors import InputError
from .backbone import BACKBONES, RESNET_CHANNELS, Backbone, Joiner, timm_name
from .criterion import build_criterion
from .mdetr import MDETR
from .position_encoding import build_position_encoding
from .postprocess import PostProcess, PostProcessPhrasecut, PostProcessSegm
from .segmentation import MDETRsegm
from .transformer import Transformer

NUM_CLASSES = 255  # the release's class head: 255 + 1 (no-object) logits

# Structure a stage sets (config.resolve_stage); a bare config gets the detector.
STRUCTURE = {"train_batchnorm": False, "pass_pos_and_query": True, "masks": False, "freeze_detr": False}
TRAIN_KEYS = ("lr_backbone", "aux_loss", "contrastive_align_loss")  # train-section keys the model reads


def defaults() -> dict:
    """build_model's defaults: the schema's model section, its train keys the model reads, `STRUCTURE`."""
    train = schema_defaults("train")
    return {**schema_defaults("model"), **{k: train[k] for k in TRAIN_KEYS}, **STRUCTURE}


def model_config(cfg: Mapping) -> dict:
    """`defaults()` updated with the known keys of `cfg` (other keys, e.g. training ones, are ignored), validated."""
    base = defaults()
    resolved = {**base, **{k: v for k, v in cfg.items() if k in base}}
    if resolved["backbone"] not in RESNET_CHANNELS and not timm_name(resolved["backbone"]):
        raise InputError(f"model config: backbone {resolved['backbone']!r} is not one of {', '.join(BACKBONES)}")
    if resolved["pre_norm"]:
        raise InputError("model config: pre_norm must be false (the release's decoder has no pre-norm variant)")
    if not resolved["pass_pos_and_query"]:
        raise InputError("model config: pass_pos_and_query must be true (the release's alternative does not run)")
    if resolved["hidden_dim"] % resolved["nheads"]:
        raise InputError(f"model config: hidden_dim {resolved['hidden_dim']} is not divisible by "
                         f"nheads {resolved['nheads']}")
    resolved["masks"] = bool(resolved["masks"] or cfg.get("mask_model", "none") != "none")  # as the release
    if resolved["masks"]:
        if resolved["mask_model"] != "smallconv":
            raise InputError(f"model config: mask_model {resolved['mask_model']!r} unsupported; use smallconv")
        hidden, heads = resolved["hidden_dim"], resolved["nheads"]
        widths = [hidden + heads] + [hidden // d for d in (2, 4, 8, 16)]
        if any(w % 8 for w in widths):
            raise InputError(f"model config: the smallconv mask head's GroupNorm(8) needs widths divisible by 8 "
                             f"(hidden_dim a multiple of 128, hidden_dim + nheads of 8); got hidden_dim {hidden}, "
                             f"nheads {heads}")
    return resolved


def build_model(cfg: Mapping):
    """Build MDETR, or with `masks` the smallconv segmentation model around it (detector at `model.detr`).

    cfg keys (defaults = the schema's, which are the release's):
      backbone             resnet18/34/50/101 (torchvision) or efficientnet_b3 (timm tf_efficientnet_b3_ns;
                           alias timm_tf_efficientnet_b3_ns)                                  ["resnet101"]
      backbone_pretrained  start from the torchvision/timm ImageNet weights (else random; checkpoints
                           supply weights)                                                    [False]
      dilation             last backbone level at stride 16 instead of 32 (the release's DC5) [False]
      train_batchnorm      trainable BatchNorms in the backbone (training from scratch)         [False]
      lr_backbone          > 0 trains the backbone (ResNet: layer2-4 only)                    [1e-5]
      position_embedding   sine                                                               ["sine"]
      hidden_dim, nheads, enc_layers, dec_layers, dim_feedforward, dropout                    [256, 8, 6, 6, 2048, 0.1]
      pre_norm, pass_pos_and_query   only False / True are supported (as the release runs)    [False, True]
      num_queries                                                                             [100]
      text_encoder_type    hub name or local folder of a RoBERTa encoder + tokenizer          ["roberta-base"]
      freeze_text_encoder                                                                     [False]
      contrastive_align_loss, contrastive_loss_hdim   box-token projection heads              [True, 64]
      aux_loss             also output every earlier decoder layer                            [True]
      masks, mask_model    build the segmentation model (smallconv only); an explicit mask_model
                           other than "none" also sets masks, as in the release              [False, "smallconv"]
      freeze_detr          segmentation only: freeze the detector (stage 2)                   [False]
    Unknown keys are ignored.
    """
    c = model_config(cfg)
    backbone = Joiner(Backbone(c["backbone"], train_backbone=c["lr_backbone"] > 0, pretrained=c["backbone_pretrained"],
                               dilation=c["dilation"], train_batchnorm=c["train_batchnorm"]),
                      build_position_encoding(c["position_embedding"], c["hidden_dim"]))
    transformer = Transformer(
        d_model=c["hidden_dim"], nhead=c["nheads"], num_encoder_layers=c["enc_layers"],
        num_decoder_layers=c["dec_layers"], dim_feedforward=c["dim_feedforward"], dropout=c["dropout"],
        text_encoder_type=str(c["text_encoder_type"]), freeze_text_encoder=c["freeze_text_encoder"])
    model = MDETR(backbone, transformer, num_classes=NUM_CLASSES, num_queries=c["num_queries"],
                  aux_loss=c["aux_loss"], contrastive_align_loss=c["contrastive_align_loss"],
                  contrastive_hdim=c["contrastive_loss_hdim"])
    if c["masks"]:
        model = MDETRsegm(model, freeze_detr=c["freeze_detr"])
    return model


def build(stage_config: Mapping):
    """DETR's build for one stage's resolved config (`config.resolve_stage`): the model, the criterion (its loss
    weights at `criterion.weight_dict`) and the post-processors {"bbox", "segm" (stage 2), "phrasecut"}."""
    model = build_model(stage_config)
    criterion, criterion.weight_dict = build_criterion(stage_config)
    postprocessors = {"bbox": PostProcess(), "phrasecut": PostProcessPhrasecut(stage_config["threshold"])}
    if stage_config["masks"]:
        postprocessors["segm"] = PostProcessSegm()
    return model, criterion, postprocessors
