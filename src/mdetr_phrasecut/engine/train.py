"""`mdetr-phrasecut train`: pretrain or fine-tune the detector (stage 1), or train the mask head on the frozen
detector (stage 2); one process, torchrun or Slurm `srun`, resumable after pre-emption.

Resuming is automatic when OUT_DIR/checkpoint_last.pth exists (or with --resume CKPT): model, EMA,
optimizer, schedule, data position and RNG states are restored, so the result does not depend on
interruptions. A stop signal (SIGTERM, SIGUSR1) saves at the next step boundary and exits with status 75.
"""
import functools
import shutil
import sys
from pathlib import Path

import torch

from ..arguments import IN_DIR, IN_FILE, OUT_DIR, POSITIVE_INT, PathArg
from ..config import StageConfig, load_spec, resolve_stage
from ..data.dataset import build_dataset, train_collate_fn
from ..errors import InputError
from ..infra.io import atomic_path
from ..model.build import build
from ..model.checkpoint_file import load_weights, read_checkpoint
from ..model.ema import build_ema
from ..stages import STAGES, TRAIN_STAGES
from . import distributed as D
from .resume_state import (EXIT_REQUEUE, StopSignal, restore_training_checkpoint, save_training_checkpoint,
                            seed_everything)
from .train_log import TrainingLog
from .loop import NonFiniteLoss, Position, Preempted, train_one_epoch, validate
from .optim import build_optimizer, build_scheduler
from .sampling import SeededItems, epoch_batches, train_loader, val_loader

LAST = "checkpoint_last.pth"
FINAL = "checkpoint.pth"


def add_arguments(parser):
    parser.add_argument("--stage", required=True, choices=TRAIN_STAGES,
                        help="pretrain: detector from scratch; stage1: fine-tune the detector from --init; "
                             "stage2: train the mask head on the frozen detector of --init (see stages.py)")
    parser.add_argument("--spec", type=IN_FILE, required=True, help='JSON file {"model": {...}, "train": {...}}')
    parser.add_argument("--coco-dir", type=IN_DIR, required=True, help="folder of finetune_phrasecut_{split}.json")
    parser.add_argument("--images", type=IN_DIR, required=True, help="image folder")
    parser.add_argument("--out-dir", type=OUT_DIR, required=True)
    parser.add_argument("--init", type=IN_FILE, help="weights to start from (stage1: the pre-trained detector, "
                                                     "stage2: the stage-1 checkpoint); EMA weights preferred")
    parser.add_argument("--resume", type=PathArg("in", "file", rewritten=True),
                        help=f"training checkpoint to resume (default: OUT_DIR/{LAST})")
    parser.add_argument("--epochs", type=POSITIVE_INT, help="override train.epochs")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def same_run(saved: dict, args: dict) -> bool:
    """Whether a checkpoint's args describe this run. With the step schedule the number of epochs does not
    change the steps taken so far, so a run may be extended (or stopped earlier) by changing `epochs`."""
    def key(a):
        if not isinstance(a, dict) or not isinstance(a.get("train"), dict):
            return a
        train = dict(a["train"])
        if train.get("schedule") == "step":
            train.pop("epochs", None)
        return {**a, "train": train}

    return key(saved) == key(args)


def resumable(out_dir: Path, args: dict, is_main: bool):
    """OUT_DIR/checkpoint_last.pth when it belongs to this very run (same stage, config and init; see
    `same_run`), e.g. after pre-emption; a leftover of another configuration is set aside (renamed *.stale) so
    the run starts afresh."""
    last = out_dir / LAST
    if not last.exists():
        return None
    if same_run(read_checkpoint(last).get("args"), args):
        return last
    D.barrier()
    if is_main:
        print(f"{last}: made with another stage/config/init; starting afresh", file=sys.stderr)
        for name in (LAST, *TrainingLog.WORKING):
            if (out_dir / name).exists():
                (out_dir / name).replace(out_dir / f"{name}.stale")
    D.barrier()
    return None


def init_help(stage: str) -> str:
    """What --init of `stage` is, in words."""
    init = STAGES[stage].init
    return "the pre-trained detector" if init == "pretrained" else f"the {init} checkpoint"


def check_init(stage: str, init) -> None:
    """InputError unless --init is given exactly when the stage starts from a checkpoint."""
    if STAGES[stage].from_scratch and init is not None:
        starting = ", ".join(name for name, s in STAGES.items() if not s.from_scratch)
        raise InputError(f"train --stage {stage}: trains from scratch; --init belongs to {starting}")
    if not STAGES[stage].from_scratch and init is None:
        raise InputError(f"train --stage {stage}: --init is required ({init_help(stage)})")


def run(cfg: StageConfig, *, coco_dir: Path, images: Path, out_dir: Path, init: Path = None, resume: Path = None,
        device: str = "auto", progress: bool = True, datasets=None) -> Path:
    """Train one stage of a resolved config; returns OUT_DIR/checkpoint.pth. `datasets` = (train, val) overrides
    the data built from coco_dir/images (tests). Raises NonFiniteLoss, Preempted or InputError."""
    stage = cfg.stage.name
    check_init(stage, init)
    train = cfg.train
    out_dir = Path(out_dir)
    denv, dev = D.init_distributed(device)
    stop = StopSignal()
    try:
        # Same seed on every process: identical initial weights; per-process RNG streams come later.
        seed_everything(train["seed"])
        args = {"stage": stage, "train": cfg.as_args(), "init": str(init) if init else None}
        resume = resume or resumable(out_dir, args, denv.is_main)
        if init is not None and resume is None:  # the release's --load; a stage continuing another loads a detector
            model, criterion, postprocessors = load_weights(
                init, lambda _: build(cfg), need="detector" if cfg.stage.init in STAGES else None,
                needed_by=f"train --stage {stage}")
        else:
            model, criterion, postprocessors = build(cfg)
        model.to(dev)
        criterion.to(dev)

        if datasets is None:
            tokenizer = getattr(model, "detr", model).transformer.tokenizer
            datasets = [build_dataset(train[f"{s}_split"], coco_dir, images, tokenizer,
                                      {**train, "masks": cfg.stage.masks}) for s in ("train", "val")]
        train_set, val_set = datasets
        ema = build_ema(model, train)
        items = SeededItems(train_set, train["seed"])
        steps_per_epoch = len(epoch_batches(train_set, train["batch_size"], denv, train["seed"], 0,
                                            train["max_steps_per_epoch"]))
        if steps_per_epoch == 0:
            raise InputError(f"train.batch_size {train['batch_size']} x {denv.world_size} processes exceeds the "
                             f"{len(train_set)} training items")
        optimizer = build_optimizer(model, train)
        scheduler = build_scheduler(optimizer, train, steps_per_epoch)

        position = Position()
        if resume is not None:
            position = restore_training_checkpoint(
                read_checkpoint(resume), resume, denv=denv, model=model, model_ema=ema,
                optimizer=optimizer, scheduler=scheduler, batch_size=train["batch_size"], seed=train["seed"])
            if denv.is_main:
                print(f"resuming from {resume}: epoch {position.epoch}, step {position.step}", file=sys.stderr)
        else:
            seed_everything(train["seed"] + denv.rank)

        net = torch.compile(model) if train["compile"] and dev.type == "cuda" else model
        if denv.distributed:
            net = torch.nn.parallel.DistributedDataParallel(
                net, device_ids=[dev.index] if dev.type == "cuda" else None, find_unused_parameters=True)

        log = TrainingLog(out_dir if denv.is_main else None, stage)
        if denv.is_main:
            out_dir.mkdir(parents=True, exist_ok=True)
            log.rewind(position.global_step, position.epoch)  # a fresh start (0, 0) drops a killed run's rows

        def save(pos: Position, path: Path = out_dir / LAST):
            save_training_checkpoint(path, denv=denv, model=model, model_ema=ema,
                                     optimizer=optimizer, scheduler=scheduler, position=pos, args=args,
                                     batch_size=train["batch_size"])

        progress = progress and denv.is_main
        pin = dev.type == "cuda"
        collate_fn = functools.partial(train_collate_fn, positive_map=train["positive_map"])
        val, val_items = val_loader(val_set, train["batch_size"], denv, collate_fn, train["num_workers"], pin)
        while position.epoch < train["epochs"]:
            batches = epoch_batches(train_set, train["batch_size"], denv, train["seed"], position.epoch,
                                    train["max_steps_per_epoch"])[position.step:]
            loader = train_loader(items, batches, collate_fn, train["num_workers"], position.epoch, pin)
            epoch = position.epoch
            position = train_one_epoch(
                net, model, criterion, loader, optimizer, scheduler, dev, position, steps_per_epoch,
                max_norm=train["clip_max_norm"], bf16=train["bf16"], world_batch=train["batch_size"] * denv.world_size,
                ema=ema, log=log, save=save, every=train["checkpoint_every_steps"], stop_requested=stop,
                progress=progress)
            every = train["eval_every"]
            if every and ((epoch + 1) % every == 0 or position.epoch == train["epochs"]):
                metrics = validate(ema.module if ema else model, criterion, postprocessors, val, real_items=val_items,
                                   device=dev, bf16=train["bf16"], progress=progress)
                log.epoch({"epoch": epoch, **metrics})
            save(position)
            if D.any_process(stop(), dev):
                raise Preempted(f"stopped by a signal after epoch {epoch}; checkpoint saved")
        if denv.is_main:
            log.publish()
            with atomic_path(out_dir / FINAL) as tmp:
                shutil.copyfile(out_dir / LAST, tmp)
        log.close()
        D.barrier()
        return out_dir / FINAL
    finally:
        stop.restore()
        D.cleanup()


def main(args):
    cfg = resolve_stage(load_spec(args.spec, {"epochs": args.epochs} if args.epochs is not None else None),
                        args.stage)
    try:
        run(cfg, coco_dir=args.coco_dir, images=args.images, out_dir=args.out_dir, init=args.init,
            resume=args.resume, device=args.device, progress=not args.no_progress)
    except NonFiniteLoss as e:
        print(f"error: {e}; the last good checkpoint is kept", file=sys.stderr)
        return 1
    except Preempted as e:
        print(f"{e}; exiting with {EXIT_REQUEUE} so the job can be requeued and resumed", file=sys.stderr)
        return EXIT_REQUEUE
    return 0
