"""Load and validate workflow configs against the package's `assets/config.schema.yaml` (linked from
`workflow/schemas/`), filling the release's defaults.

Errors are one line naming the file and the key path, e.g.
`config/x.yaml: train.stage1.lr: 'fast' is not of type 'number'`.
"""
import copy
import json
from pathlib import Path

import jsonschema
import yaml

from . import ASSETS
from .errors import InputError
from .infra.io import note_input

SCHEMA_PATH = ASSETS / "config.schema.yaml"
TRAIN_STAGES = ("pretrain", "stage1", "stage2")  # the --stage of `train`


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


def load_schema():
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)


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


def load_spec(spec_json=None, spec_file=None, train_overrides=None) -> dict:
    """A training spec from inline JSON or a file, with `train_overrides` (e.g. --epochs) applied before it is
    validated (see `validate_spec`)."""
    source = str(spec_file) if spec_file else "--spec-json"
    try:
        text = spec_file.read_text() if spec_file else spec_json
        spec = json.loads(text)
    except FileNotFoundError:
        raise InputError(f"{spec_file}: spec file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{source}: cannot be read ({e})") from None
    except json.JSONDecodeError as e:
        raise InputError(f"{source}: invalid JSON ({e})") from None
    if train_overrides and isinstance(spec, dict):
        spec["train"] = {**(spec.get("train") or {}), **train_overrides}
    return validate_spec(spec, source)


def validate_spec(spec: dict, source: str = "spec") -> dict:
    """{"model", "train"} checked against the workflow schema (defaults filled), plus the splits to train and
    validate on (defaults: the schema's dataset section)."""
    if not isinstance(spec, dict) or set(spec) != {"model", "train"}:
        raise InputError(f"{source}: expected an object with exactly the keys 'model' and 'train'")
    if not all(isinstance(spec[k], dict) for k in ("model", "train")):
        raise InputError(f"{source}: 'model' and 'train' must be objects")
    schema = load_schema()
    model, train = dict(spec["model"]), dict(spec["train"])
    check(model, section_schema(schema, "model"), source, "model.")
    split_schema = {k: schema["properties"]["dataset"]["properties"][k] for k in SPEC_SPLIT_KEYS}
    splits = {k: train.pop(k, split_schema[k]["default"]) for k in SPEC_SPLIT_KEYS}
    check(train, section_schema(schema, "train"), source, "train.")
    check(splits, {"properties": split_schema}, source, "train.")
    return {"model": model, "train": {**train, **splits}}


def schema_defaults(section: str) -> dict:
    """The `default` of every key of one schema section: a definition ("model", "train") or a top-level
    property ("evaluate")."""
    schema = load_schema()
    props = (schema["definitions"].get(section) or schema["properties"][section])["properties"]
    return {k: copy.deepcopy(v["default"]) for k, v in props.items() if "default" in v}


def resolve_stage(spec: dict, stage: str, threshold: float = None) -> dict:
    """One stage's flat config, the schema's defaults applied once: the spec's model and train sections
    (validated, see `validate_spec`), the stage's structure and the score threshold of the PhraseCut
    post-processing (default: the schema's evaluate.threshold). pretrain/stage1 build the detector (a
    backbone trained from scratch trains its BatchNorms); stage2 the smallconv segmentation model around the
    frozen detector and, as the release trains it, without contrastive-align and auxiliary losses.
    `model.build.build` takes it."""
    if stage not in TRAIN_STAGES:
        raise InputError(f"stage {stage!r} is not one of {', '.join(TRAIN_STAGES)}")
    spec = validate_spec(copy.deepcopy(spec))
    model, train = spec["model"], spec["train"]
    cfg = {**train, **model, "stage": stage, "masks": stage == "stage2", "freeze_detr": stage == "stage2",
           "mask_model": model["mask_model"] if stage == "stage2" else "none",
           "train_batchnorm": stage == "pretrain" and not model["backbone_pretrained"],
           "threshold": schema_defaults("evaluate")["threshold"] if threshold is None else threshold}
    if stage == "stage2":
        cfg.update(aux_loss=False, contrastive_align_loss=False)
    return cfg


def run_model(config, run_name) -> dict:
    """The model section with the run's overrides applied."""
    return {**config["model"], **config["runs"][run_name]["model"]}


def run_train(config, run_name, stage) -> dict:
    """One training stage's section with the run's overrides applied."""
    return {**config["train"][stage], **config["runs"][run_name]["train"].get(stage, {})}
