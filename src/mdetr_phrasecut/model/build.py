"""`build(stage_config)`: the model, criterion and post-processors of one stage (DETR's build), from
`config.resolve_stage`; `build_model(model_cfg)`: the detector or the segmentation model alone. No defaults here:
every key comes from the resolved config (the schema is their one home)."""
from typing import Mapping

from ..errors import InputError
from .backbone import BACKBONES, RESNET_CHANNELS, Backbone, Joiner, timm_name
from .criterion import build_criterion
from .mdetr import MDETR
from .position_encoding import build_position_encoding
from .postprocess import PostProcess, PostProcessPhrasecut, PostProcessSegm
from .segmentation import MDETRsegm
from .transformer import Transformer

NUM_CLASSES = 255  # the release's class head: 255 + 1 (no-object) logits



def check_model_config(c: Mapping) -> None:
    """InputError for what the schema cannot say: a backbone we cannot build, an unsupported variant, widths that
    do not divide."""
    if c["backbone"] not in RESNET_CHANNELS and not timm_name(c["backbone"]):
        raise InputError(f"model config: backbone {c['backbone']!r} is not one of {', '.join(BACKBONES)}")
    if c["pre_norm"]:
        raise InputError("model config: pre_norm must be false (the release's decoder has no pre-norm variant)")
    if c["hidden_dim"] % c["nheads"]:
        raise InputError(f"model config: hidden_dim {c['hidden_dim']} is not divisible by nheads {c['nheads']}")
    if c["masks"]:
        if c["mask_model"] != "smallconv":
            raise InputError(f"model config: mask_model {c['mask_model']!r} unsupported; use smallconv")
        hidden, heads = c["hidden_dim"], c["nheads"]
        widths = [hidden + heads] + [hidden // d for d in (2, 4, 8, 16)]
        if any(w % 8 for w in widths):
            raise InputError(f"model config: the smallconv mask head's GroupNorm(8) needs widths divisible by 8 "
                             f"(hidden_dim a multiple of 128, hidden_dim + nheads of 8); got hidden_dim {hidden}, "
                             f"nheads {heads}")


def build_model(c: Mapping):
    """Build MDETR, or with `masks` the smallconv segmentation model around it (detector at `model.detr`).

    Keys (`config.StageConfig.model`; [the schema's defaults, which are the release's]):
      backbone             resnet18/34/50/101 (torchvision) or efficientnet_b3 (timm tf_efficientnet_b3_ns;
                           alias timm_tf_efficientnet_b3_ns)                                  ["resnet101"]
      backbone_pretrained  start from the torchvision/timm ImageNet weights (else random; checkpoints
                           supply weights)                                                    [False]
      dilation             last backbone level at stride 16 instead of 32 (the release's DC5) [False]
      train_batchnorm      trainable BatchNorms in the backbone (training from scratch)         [False]
      lr_backbone          > 0 trains the backbone (ResNet: layer2-4 only)                    [1e-5]
      position_embedding   sine                                                               ["sine"]
      hidden_dim, nheads, enc_layers, dec_layers, dim_feedforward, dropout                    [256, 8, 6, 6, 2048, 0.1]
      pre_norm             only False is supported (as the release runs)                      [False]
      num_queries                                                                             [100]
      text_encoder_type    hub name or local folder of a RoBERTa encoder + tokenizer          ["roberta-base"]
      freeze_text_encoder                                                                     [False]
      contrastive_align_loss, contrastive_loss_hdim   box-token projection heads              [True, 64]
      aux_loss             also output every earlier decoder layer                            [True]
      masks, mask_model    build the segmentation model (smallconv only)                     [the stage's]
      freeze_detr          segmentation only: freeze the detector                             [the stage's]
    Other keys are ignored.
    """
    check_model_config(c)
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


def build(stage_config):
    """DETR's build for one stage's `config.StageConfig` (`config.resolve_stage`): the model, the criterion (its
    loss weights at `criterion.weight_dict`) and the post-processors {"bbox", "segm" (a stage with masks),
    "phrasecut"}."""
    model = build_model(stage_config.model)
    criterion, criterion.weight_dict = build_criterion(stage_config.model, stage_config.train)
    postprocessors = {"bbox": PostProcess(), "phrasecut": PostProcessPhrasecut(stage_config.evaluate["threshold"])}
    if stage_config.model["masks"]:
        postprocessors["segm"] = PostProcessSegm()
    return model, criterion, postprocessors
