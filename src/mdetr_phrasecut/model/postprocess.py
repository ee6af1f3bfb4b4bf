"""Model outputs -> per-image results at the original image size, and the PhraseCut per-phrase answer.

Chain: `PostProcess` (boxes, scores) -> `PostProcessSegm` (binary masks) -> `PostProcessPhrasecut` (one merged mask
and the kept boxes per phrase), as the release evaluates PhraseCut; `phrasecut_answers` runs it.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert


class PostProcess(nn.Module):
    """Per image {scores, labels, boxes}: score = 1 - P(no-object) (the last logit's softmax probability), label 1,
    boxes xyxy in pixels of `target_sizes` (B×2, h w; the original image sizes for evaluation)."""

    @torch.no_grad()
    def forward(self, outputs: dict, target_sizes: Tensor) -> list:
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]
        if len(logits) != len(target_sizes) or target_sizes.shape[1] != 2:
            raise ValueError("target_sizes must be B×2 with one row per image")
        scores = 1 - logits.softmax(-1)[..., -1]
        labels = torch.ones_like(scores, dtype=torch.long)
        img_h, img_w = target_sizes.unbind(1)
        scale = torch.stack([img_w, img_h, img_w, img_h], dim=1).to(boxes)
        boxes = box_convert(boxes, "cxcywh", "xyxy") * scale[:, None, :]
        return [{"scores": s, "labels": c, "boxes": b} for s, c, b in zip(scores, labels, boxes)]


class PostProcessSegm(nn.Module):
    """Adds `masks` (Q×1×H×W bool at the original size) to each result: mask logits are bilinearly upsampled to the
    padded batch size (max of `max_target_sizes`), cropped to the image's own size, bilinearly resized to
    `orig_target_sizes`, then sigmoid > threshold."""

    def __init__(self, threshold: float = 0.5):
        super().__init__()
        self.threshold = threshold

    @torch.no_grad()
    def forward(self, results: list, outputs: dict, orig_target_sizes: Tensor, max_target_sizes: Tensor) -> list:
        if len(orig_target_sizes) != len(max_target_sizes):
            raise ValueError("orig_target_sizes and max_target_sizes need one row per image")
        max_h, max_w = max_target_sizes.max(0)[0].tolist()
        masks = F.interpolate(outputs["pred_masks"], size=(max_h, max_w), mode="bilinear", align_corners=False)
        for result, mask, (h, w), orig in zip(results, masks, max_target_sizes.tolist(), orig_target_sizes):
            mask = F.interpolate(mask[:, None, :h, :w], size=tuple(orig.tolist()), mode="bilinear",
                                 align_corners=False)
            result["masks"] = (mask.sigmoid() > self.threshold).cpu()
        return results


class PostProcessPhrasecut(nn.Module):
    """Per phrase: `boxes` K×4 [x, y, w, h] of the queries with score > `score_thresh`, and with masks `masks`, the
    H×W union of their masks (all False when none is kept)."""

    def __init__(self, score_thresh: float):
        super().__init__()
        self.score_thresh = score_thresh

    @torch.no_grad()
    def forward(self, results: list) -> list:
        answers = []
        for result in results:
            keep = result["scores"] > self.score_thresh
            boxes = box_convert(result["boxes"][keep].view(-1, 4), "xyxy", "xywh").cpu()
            answer = {"boxes": boxes}
            if "masks" in result:
                answer["masks"] = result["masks"][keep.cpu()].any(0).squeeze(0).cpu()
            answers.append(answer)
        return answers


def phrasecut_answers(postprocessors: dict, outputs: dict, orig_sizes: Tensor, input_sizes: Tensor) -> list:
    """The PhraseCut answer of each phrase of a batch (`model.build.build`'s post-processors: "bbox", then "segm"
    when the model has masks, then "phrasecut"), at `orig_sizes` (B×2, h w) from the network's `input_sizes`."""
    results = postprocessors["bbox"](outputs, orig_sizes)
    if "segm" in postprocessors:
        results = postprocessors["segm"](results, outputs, orig_sizes, input_sizes)
    return postprocessors["phrasecut"](results)
