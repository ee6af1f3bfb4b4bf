"""`predict`: segment one phrase in one image with a checkpoint; writes the mask PNG and an overlay PNG."""
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from .data.transforms import make_eval_transform
from .arguments import IN_FILE, OUT_FILE, POSITIVE_INT, PROBABILITY, text
from .config import load_spec, read_mapping, resolve_stage, run_model, validate_config, validate_spec
from .errors import InputError
from .infra.io import atomic_path, open_image
from .model.build import build
from .model.checkpoint_file import describe, load_weights
from .model.postprocess import phrasecut_answers
from .model.text_encoder import check_phrase_lengths
from .model.nested_tensor import nested_tensor_from_tensor_list
from .stages import model_stage


def add_arguments(parser):
    config = parser.add_mutually_exclusive_group(required=True)
    config.add_argument("--config", type=IN_FILE,
                        help="YAML or JSON: a workflow config (the model of --run, the image size of its evaluate "
                             "section), or build_model keys alone (a Hub folder's config.json)")
    config.add_argument("--spec", type=IN_FILE, help='JSON file {"model": {...}, "train": {...}[, "evaluate": {...}]}: '
                                                     "a stage spec as `train` and `evaluate` take it")
    parser.add_argument("--run", help="the run of a workflow config whose model to build (needed if it has several)")
    parser.add_argument("--checkpoint", required=True, type=IN_FILE, help="checkpoint (.pth): published or ours")
    parser.add_argument("--image", required=True, type=IN_FILE)
    parser.add_argument("--phrase", required=True, type=text)
    parser.add_argument("--out-mask", required=True, type=OUT_FILE, help="PNG, 255 on the phrase's pixels")
    parser.add_argument("--out-overlay", required=True, type=OUT_FILE,
                        help="PNG, the mask and kept boxes drawn over the image")
    parser.add_argument("--threshold", type=PROBABILITY,
                        help="keep queries with score above this (default: the config's evaluate.threshold)")
    parser.add_argument("--size", type=POSITIVE_INT, help="shorter side fed to the model (default: the config's "
                        "evaluate.size)")
    parser.add_argument("--max-size", type=POSITIVE_INT, help="cap on the longer side fed to the model (default: "
                        "the config's evaluate.max_size)")
    parser.add_argument("--no-ema", action="store_true", help="use the checkpoint's `model` weights, not `model_ema`")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


# build_model keys a flat --config may hold that predict takes from the checkpoint's stage instead
FROM_CHECKPOINT = ("masks", "contrastive_align_loss")


def read_spec(config=None, spec=None, run=None) -> dict:
    """The spec {"model", "train", "evaluate"} to build from: a `--spec` file as is; a workflow `--config`, `run`'s
    model (the run's overrides applied) and its evaluate section; a flat `--config`, the model keys alone (unknown
    keys are errors). A relative text_encoder_type resolves next to the file."""
    path = Path(spec or config)
    if spec is not None:
        if run is not None:
            raise InputError(f"--run {run}: belongs to a workflow --config, not a --spec")
        spec = load_spec(path)
    else:
        cfg = read_mapping(path)  # YAML, of which JSON is a subset
        if "runs" in cfg:  # a workflow config
            config = validate_config(cfg, f"config {path}")
            runs = list(config["runs"])
            if run is None and len(runs) > 1:
                raise InputError(f"config {path}: runs: {', '.join(runs)}: name the run to build with --run")
            if (run or runs[0]) not in runs:
                raise InputError(f"--run {run}: config {path} has no such run (runs: {', '.join(runs)})")
            spec = {"model": run_model(config, run or runs[0]), "train": {}, "evaluate": config["evaluate"]}
        elif run is not None:
            raise InputError(f"--run {run}: config {path} is no workflow config (it has no runs)")
        else:  # build_model keys alone
            model = {k: v for k, v in cfg.items() if k not in FROM_CHECKPOINT}
            spec = validate_spec({"model": model, "train": {}}, f"config {path}")
    encoder = spec["model"].get("text_encoder_type")
    if encoder and not Path(encoder).is_absolute() and (path.parent / encoder).is_dir():
        spec["model"]["text_encoder_type"] = str(path.parent / encoder)
    return spec


@torch.inference_mode()
def predict(model, postprocessors, image: Image.Image, phrase: str, size: int, max_size: int, device="cpu") -> dict:
    """PhraseCut answer for one phrase with the post-processors of `model.build.build`: {"boxes": K×4
    [x, y, w, h], "masks": H×W bool} at the image's size (a detector without mask head answers with the
    union of its kept boxes)."""
    tensor, _ = make_eval_transform(size=size, max_size=max_size)(image)
    samples = nested_tensor_from_tensor_list([tensor]).to(device)
    outputs = model(samples, [phrase])
    orig_size = torch.tensor([[image.height, image.width]], device=device)
    input_size = torch.tensor([list(tensor.shape[-2:])], device=device)
    answer = phrasecut_answers(postprocessors, outputs, orig_size, input_size)[0]
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
    spec = read_spec(args.config, args.spec, args.run)
    chosen = {}

    def fitting_model(weights):
        """The weights say which stage made them (a mask head: the evaluated stage, else the detector it starts
        from) and whether they kept contrastive-align heads."""
        segmentation = describe(weights)[1] == "segmentation"
        if not segmentation:
            print(f"warning: {args.checkpoint} is a detector without mask head: the mask is the union of the kept "
                  "boxes", file=sys.stderr)
        cfg = resolve_stage(spec, model_stage(segmentation)).with_evaluate(
            threshold=args.threshold, size=args.size, max_size=args.max_size)
        chosen["cfg"] = cfg.with_model(contrastive_align_loss=any("contrastive_align_projection" in k for k in weights))
        return build(chosen["cfg"])

    model, _, postprocessors = load_weights(args.checkpoint, fitting_model, prefer_ema=not args.no_ema)
    cfg = chosen["cfg"]
    check_phrase_lengths(getattr(model, "detr", model).transformer.tokenizer, [args.phrase], lambda _: "--phrase")
    model.to(args.device).eval()
    answer = predict(model, postprocessors, image, args.phrase, cfg.evaluate["size"], cfg.evaluate["max_size"],
                     args.device)
    mask = answer["masks"].numpy()
    save_png(Image.fromarray(mask.astype(np.uint8) * 255), args.out_mask)
    save_png(overlay(image, mask, answer["boxes"].tolist()), args.out_overlay)
    print(f"{args.phrase!r}: {len(answer['boxes'])} box(es) kept, mask covers {int(mask.sum())} of {mask.size} px")
    return 0
