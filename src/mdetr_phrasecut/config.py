"""Load and validate workflow configs against the package's `assets/config.schema.yaml` (linked from
`workflow/schemas/`), filling the release's defaults.

Errors are one line naming the file and the key path, e.g.
`config/x.yaml: train.stage1.lr: 'fast' is not of type 'number'`.
"""
import copy
import json
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import jsonschema
import yaml

from .errors import InputError
from .infra.io import note_input
from .schema import load_schema
from .stages import STAGES, TRAIN_STAGES, Stage


def _with_defaults(cls):
    """A validator class that also fills `default` values of missing properties (recursively)."""
    validate_properties = cls.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, props, instance, schema)

    return jsonschema.validators.extend(cls, {"properties": properties})


Validator = _with_defaults(jsonschema.Draft7Validator)


def check(instance, schema, source, prefix=""):
    """Validate `instance` in place (defaults filled); InputError naming `source` and the key path."""
    error = jsonschema.exceptions.best_match(Validator(schema).iter_errors(instance))
    if error is not None:
        where = (prefix + ".".join(str(p) for p in error.absolute_path)).rstrip(".") or "(top)"
        raise InputError(f"{source}: {where}: {error.message}")


def section_schema(schema, name):
    """The schema of one definition (e.g. "model", "train"), resolvable on its own."""
    return {"definitions": schema["definitions"], **schema["definitions"][name]}


def validate_config(config: dict, source="config") -> dict:
    """Validate `config` in place (defaults filled) and each run's merged model/train sections; return it."""
    schema = load_schema()
    check(config, schema, source)
    for run_name, run in config["runs"].items():
        check(run_model(config, run_name), section_schema(schema, "model"), source, f"runs.{run_name}.model.")
        unknown = set(run["train"]) - set(TRAIN_STAGES)
        if unknown:
            raise InputError(f"{source}: runs.{run_name}.train: unknown stage {sorted(unknown)[0]!r}")
        for stage in TRAIN_STAGES:
            check(run_train(config, run_name, stage), section_schema(schema, "train"), source,
                   f"runs.{run_name}.train.{stage}.")
        for key in ("pretrained", "released"):
            if run.get(key) is not None and run[key] not in config["downloads"]:
                raise InputError(f"{source}: runs.{run_name}.{key}: {run[key]!r} is not a key of downloads")
    return config


def load_config(path) -> dict:
    return validate_config(read_mapping(path), str(path))


def read_mapping(path) -> dict:
    """A YAML (or, named *.json, JSON) file holding a mapping; a syntax error names the file, line and column."""
    path = Path(path)
    note_input(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f) if path.suffix == ".json" else yaml.safe_load(f)
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{path}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot be read ({e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        raise InputError(f"{path}: invalid YAML{where}: {getattr(e, 'problem', None) or str(e).splitlines()[0]}") \
            from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: (top): must be a mapping, got {type(data).__name__}")
    return data


SPEC_SPLIT_KEYS = ("train_split", "val_split")  # the schema's dataset keys a spec's train section may set
MODEL_TRAIN_KEYS = ("lr_backbone", "aux_loss", "contrastive_align_loss")  # train-section keys the model reads


def load_spec(spec_file: Path, train_overrides=None) -> dict:
    """A stage spec from a JSON file, with `train_overrides` (e.g. --epochs) applied before it is validated (see
    `validate_spec`)."""
    try:
        spec = json.loads(Path(spec_file).read_text())
    except FileNotFoundError:
        raise InputError(f"{spec_file}: spec file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{spec_file}: cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{spec_file}: invalid JSON ({e})") from None
    if train_overrides and isinstance(spec, dict):
        spec["train"] = {**(spec.get("train") or {}), **train_overrides}
    return validate_spec(spec, str(spec_file))


def validate_spec(spec: dict, source: str = "spec") -> dict:
    """{"model", "train"[, "evaluate"]} checked against the workflow schema (defaults filled), plus the splits to
    train and validate on (defaults: the schema's dataset section)."""
    if not isinstance(spec, dict) or not {"model", "train"} <= set(spec) <= {"model", "train", "evaluate"}:
        raise InputError(f"{source}: expected an object with the keys 'model' and 'train' (and optionally 'evaluate')")
    if not all(isinstance(spec.get(k, {}), dict) for k in ("model", "train", "evaluate")):
        raise InputError(f"{source}: 'model', 'train' and 'evaluate' must be objects")
    schema = load_schema()
    model, train, evaluate = dict(spec["model"]), dict(spec["train"]), dict(spec.get("evaluate", {}))
    check(model, section_schema(schema, "model"), source, "model.")
    split_schema = {k: schema["properties"]["dataset"]["properties"][k] for k in SPEC_SPLIT_KEYS}
    splits = {k: train.pop(k, split_schema[k]["default"]) for k in SPEC_SPLIT_KEYS}
    check(train, section_schema(schema, "train"), source, "train.")
    check(splits, {"properties": split_schema}, source, "train.")
    check(evaluate, {"definitions": schema["definitions"], **schema["properties"]["evaluate"]}, source, "evaluate.")
    return {"model": model, "train": {**train, **splits}, "evaluate": evaluate}


def schema_defaults(section: str) -> dict:
    """The `default` of every key of one schema section: a definition ("model", "train") or a top-level
    property ("evaluate")."""
    schema = load_schema()
    props = (schema["definitions"].get(section) or schema["properties"][section])["properties"]
    return {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}


@dataclass(frozen=True)
class StageConfig:
    """One stage's resolved config, every key set (the schema's defaults applied once, by `resolve_stage`).

    stage: its row of `stages.STAGES`. model: what `model.build.build_model` reads: the model section, the
    stage's structure (masks, mask_model, freeze_detr, train_batchnorm) and the train keys that shape the model
    (`MODEL_TRAIN_KEYS`). train: the train section (the stage's losses off) and the splits. evaluate: the
    evaluate section (threshold of the PhraseCut post-processing, image size, batching)."""

    stage: Stage
    model: Mapping
    train: Mapping
    evaluate: Mapping

    def as_args(self) -> dict:
        """The flat record a training checkpoint keeps as its `args` (and `recipe-audit` compares)."""
        return {**self.train, **self.model, "stage": self.stage.name, "threshold": self.evaluate["threshold"]}

    def with_evaluate(self, **keys) -> "StageConfig":
        """A copy with evaluate keys replaced (None values ignored), e.g. a command-line --threshold."""
        return replace(self, evaluate=MappingProxyType({**self.evaluate, **{k: v for k, v in keys.items()
                                                                            if v is not None}}))

    def with_model(self, **keys) -> "StageConfig":
        return replace(self, model=MappingProxyType({**self.model, **keys}))


def resolve_stage(spec: dict, stage: str) -> StageConfig:
    """One stage's `StageConfig` from a spec (validated here, see `validate_spec`): its structure from
    `stages.STAGES` -- the segmentation model around a frozen detector for a stage with masks, BatchNorms trained
    by a stage from scratch on a random backbone, the stage's `losses_off` switched off."""
    if stage not in STAGES:
        raise InputError(f"stage {stage!r} is not one of {', '.join(TRAIN_STAGES)}")
    row = STAGES[stage]
    spec = validate_spec(copy.deepcopy(spec))
    model, train = spec["model"], {**spec["train"], **{key: False for key in row.losses_off}}
    structure = {"masks": row.masks, "freeze_detr": row.frozen_detector,
                 "mask_model": model["mask_model"] if row.masks else "none",
                 "train_batchnorm": row.from_scratch and not model["backbone_pretrained"]}
    model = {**model, **structure, **{k: train[k] for k in MODEL_TRAIN_KEYS}}
    return StageConfig(row, MappingProxyType(model), MappingProxyType(train), MappingProxyType(spec["evaluate"]))


def run_model(config, run_name) -> dict:
    """The model section with the run's overrides applied."""
    return {**config["model"], **config["runs"][run_name]["model"]}


def run_train(config, run_name, stage) -> dict:
    """One training stage's section with the run's overrides applied."""
    return {**config["train"][stage], **config["runs"][run_name]["train"].get(stage, {})}
