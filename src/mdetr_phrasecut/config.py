"""Load and validate workflow configs against `workflow/schemas/config.schema.yaml`, filling the release's defaults.

Errors are one line naming the file and the key path, e.g.
`config/x.yaml: train.stage1.lr: 'fast' is not of type 'number'`.
"""
import copy
import json
from pathlib import Path

import jsonschema
import yaml

from .errors import InputError

REPO = Path(__file__).resolve().parents[2]
SCHEMA_PATH = REPO / "workflow" / "schemas" / "config.schema.yaml"
STAGES = ("pretrain", "stage1", "stage2")


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
        unknown = set(run["train"]) - set(STAGES)
        if unknown:
            raise InputError(f"{source}: runs.{run_name}.train: unknown stage {sorted(unknown)[0]!r}")
        for stage in STAGES:
            check(run_train(config, run_name, stage), section_schema(schema, "train"), source,
                   f"runs.{run_name}.train.{stage}.")
        for key in ("pretrained", "released"):
            if run.get(key) is not None and run[key] not in config["downloads"]:
                raise InputError(f"{source}: runs.{run_name}.{key}: {run[key]!r} is not a key of downloads")
    return config


def load_config(path) -> dict:
    path = Path(path)
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise InputError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: invalid YAML{_where(e)}: {getattr(e, 'problem', None) or str(e).splitlines()[0]}") \
            from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: (top): must be a mapping of sections, got {type(config).__name__}")
    return validate_config(config, str(path))


def _where(error) -> str:
    """` at line L column C` of a YAML error (1-based), when it has a position."""
    mark = getattr(error, "problem_mark", None)
    return f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""


SPLITS = ("train_split", "val_split")  # in the workflow schema's dataset section; a spec's train section may set them


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
    if not isinstance(spec, dict) or set(spec) - {"model", "train"}:
        raise InputError(f"{source}: expected an object with keys 'model' and 'train'")
    if not all(isinstance(spec.get(k, {}), dict) for k in ("model", "train")):
        raise InputError(f"{source}: 'model' and 'train' must be objects")
    schema = load_schema()
    model, train = dict(spec.get("model", {})), dict(spec.get("train", {}))
    check(model, section_schema(schema, "model"), source, "model.")
    split_schema = {k: schema["properties"]["dataset"]["properties"][k] for k in SPLITS}
    splits = {k: train.pop(k, split_schema[k]["default"]) for k in SPLITS}
    check(train, section_schema(schema, "train"), source, "train.")
    check(splits, {"properties": split_schema}, source, "train.")
    return {"model": model, "train": {**train, **splits}}


def run_model(config, run_name) -> dict:
    """The model section with the run's overrides applied."""
    return {**config["model"], **config["runs"][run_name]["model"]}


def run_train(config, run_name, stage) -> dict:
    """One training stage's section with the run's overrides applied."""
    return {**config["train"][stage], **config["runs"][run_name]["train"].get(stage, {})}
