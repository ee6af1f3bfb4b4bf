"""`predict`: segment one phrase in one image with a checkpoint; writes the mask PNG and an overlay PNG."""
import copy
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .data.transforms import make_eval_transform
from .arguments import IN_FILE, OUT_FILE, POSITIVE_INT, PROBABILITY, text
from .config import (check, load_schema, read_mapping, resolve_stage, run_model, schema_defaults, section_schema,
                     validate_config)
from .errors import InputError
from .infra.io import atomic_path, open_image
from .model.build import build
from .model.checkpoint_file import describe, load_weights
from .model.text_encoder import check_phrase_lengths
from .model.nested_tensor import nested_tensor_from_tensor_list


def add_arguments(parser):
    defaults = schema_defaults("evaluate")
    parser.add_argument("--checkpoint", required=True, type=IN_FILE, help="checkpoint (.pth): published or ours")
    parser.add_argument("--config", required=True, type=IN_FILE,
                        help="YAML or JSON: a workflow config (the model of --run, the image size of its evaluate "
                             "section), a spec holding build_model keys under 'model', or those keys alone")
    parser.add_argument("--run", help="the run of a workflow config whose model to build (needed if it has several)")
    parser.add_argument("--image", required=True, type=IN_FILE)
    parser.add_argument("--phrase", required=True, type=text)
    parser.add_argument("--out-mask", required=True, type=OUT_FILE, help="PNG, 255 on the phrase's pixels")
    parser.add_argument("--out-overlay", required=True, type=OUT_FILE,
                        help="PNG, the mask and kept boxes drawn over the image")
    parser.add_argument("--threshold", type=PROBABILITY, default=defaults["threshold"],
                        help="keep queries with score above this (default: the schema's evaluate.threshold)")
    parser.add_argument("--size", type=POSITIVE_INT, help="shorter side fed to the model (default: the config's "
                        f"evaluate.size, else {defaults['size']})")
    parser.add_argument("--max-size", type=POSITIVE_INT, help="cap on the longer side fed to the model (default: "
                        f"the config's evaluate.max_size, else {defaults['max_size']})")
    parser.add_argument("--no-ema", action="store_true", help="use the checkpoint's `model` weights, not `model_ema`")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


# build_model keys a flat --config may hold that predict takes from the checkpoint's stage instead
FROM_CHECKPOINT = ("masks", "contrastive_align_loss")


def read_model_config(path, run=None) -> tuple:
    """(build_model dict, evaluate section) from a YAML/JSON file, checked against the workflow schema (unknown keys
    are errors): a workflow config gives `run`'s model (the run's overrides applied) and its `evaluate` section; a
    spec or a flat dict the model alone, with the schema's evaluate defaults. A relative text_encoder_type resolves
    next to the file."""
    path = Path(path)
    cfg = read_mapping(path)  # YAML, of which JSON is a subset
    schema = load_schema()
    evaluate = schema_defaults("evaluate")
    if "runs" in cfg:  # a workflow config
        config = validate_config(cfg, f"config {path}")
        runs = list(config["runs"])
        if run is None and len(runs) > 1:
            raise InputError(f"config {path}: runs: {', '.join(runs)}: name the run to build with --run")
        if (run or runs[0]) not in runs:
            raise InputError(f"--run {run}: config {path} has no such run (runs: {', '.join(runs)})")
        cfg, evaluate = run_model(config, run or runs[0]), config["evaluate"]
    elif run is not None:
        raise InputError(f"--run {run}: config {path} is no workflow config (it has no runs)")
    else:  # a spec, or build_model keys alone
        prefix = ""
        if "model" in cfg:
            extra = sorted(set(cfg) - set(schema["properties"]) - {"model", "train"})
            if extra:
                raise InputError(f"config {path}: {extra[0]}: unknown key (expected a spec or a workflow config)")
            cfg, prefix = cfg["model"], "model."
        if not isinstance(cfg, dict):
            raise InputError(f"config {path}: {prefix or 'model'}: must be a mapping")
        cfg = {k: v for k, v in cfg.items() if k not in FROM_CHECKPOINT}
        check(copy.deepcopy(cfg), section_schema(schema, "model"), f"config {path}", prefix)
    encoder = cfg.get("text_encoder_type")
    if encoder and not Path(encoder).is_absolute() and (path.parent / encoder).is_dir():
        cfg["text_encoder_type"] = str(path.parent / encoder)
    return cfg, evaluate


@torch.inference_mode()
def predict(model, postprocessors, image: Image.Image, phrase: str, size: int, max_size: int, device="cpu") -> dict:
    """PhraseCut answer for one phrase with the post-processors of `model.build.build`: {"boxes": K×4
    [x, y, w, h], "masks": H×W bool} at the image's size (a detector without mask head answers with the
    union of its kept boxes)."""
    tensor, _ = make_eval_transform(size=size, max_size=max_size)(image)
    samples = nested_tensor_from_tensor_list([tensor]).to(device)
    outputs = model(samples, [phrase])
    orig_size = torch.tensor([[image.height, image.width]], device=device)
    results = postprocessors["bbox"](outputs, orig_size)
    if "segm" in postprocessors:
        input_size = torch.tensor([list(tensor.shape[-2:])], device=device)
        results = postprocessors["segm"](results, outputs, orig_size, input_size)
    answer = postprocessors["phrasecut"](results)[0]
    if "masks" not in answer:
        mask = torch.zeros(image.height, image.width, dtype=torch.bool)
        for x, y, w, h in answer["boxes"].tolist():
            mask[int(y):int(y + h), int(x):int(x + w)] = True
        answer["masks"] = mask
    return answer


def save_png(image: Image.Image, path):
    with atomic_path(path, suffix=".png") as tmp:
        image.save(tmp, format="PNG")


def overlay(image: Image.Image, mask: np.ndarray, boxes) -> Image.Image:
    """Red at half opacity on the mask, kept boxes outlined in yellow."""
    tint = Image.new("RGB", image.size, (255, 0, 0))
    out = Image.composite(Image.blend(image, tint, 0.5), image, Image.fromarray(mask.astype(np.uint8) * 255))
    draw = ImageDraw.Draw(out)
    for x, y, w, h in boxes:
        draw.rectangle([x, y, x + w, y + h], outline=(255, 255, 0), width=2)
    return out


def main(args):
    image = open_image(args.image, "--image")
    model_config, evaluate = read_model_config(args.config, args.run)
    size, max_size = args.size or evaluate["size"], args.max_size or evaluate["max_size"]

    def fitting_model(weights):
        """The weights say which stage made them (a mask head: stage 2) and whether it kept contrastive-align heads."""
        stage = "stage2" if describe(weights)[1] == "segmentation" else "stage1"
        if stage == "stage1":
            print(f"warning: {args.checkpoint} is a detector without mask head: the mask is the union of the kept "
                  "boxes", file=sys.stderr)
        cfg = resolve_stage({"model": model_config, "train": {}}, stage, args.threshold)
        return build({**cfg, "contrastive_align_loss": any("contrastive_align_projection" in k for k in weights)})

    model, _, postprocessors = load_weights(args.checkpoint, fitting_model, prefer_ema=not args.no_ema)
    check_phrase_lengths(getattr(model, "detr", model).transformer.tokenizer, [args.phrase], lambda _: "--phrase")
    model.to(args.device).eval()
    answer = predict(model, postprocessors, image, args.phrase, size, max_size, args.device)
    mask = answer["masks"].numpy()
    save_png(Image.fromarray(mask.astype(np.uint8) * 255), args.out_mask)
    save_png(overlay(image, mask, answer["boxes"].tolist()), args.out_overlay)
    print(f"{args.phrase!r}: {len(answer['boxes'])} box(es) kept, mask covers {int(mask.sum())} of {mask.size} px")
    return 0
