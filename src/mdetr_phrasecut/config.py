"""Load and validate workflow configs against `workflow/schemas/config.schema.yaml`, filling the release's defaults.

Errors are one line naming the file and the key path, e.g.
`config/x.yaml: train.stage1.lr: 'fast' is not of type 'number'`.
"""
import copy
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
        raise InputError(f"{path}: invalid YAML: {str(e).splitlines()[0]}") from None
    return validate_config(config, str(path))


def run_model(config, run_name) -> dict:
    """The model section with the run's overrides applied."""
    return {**config["model"], **config["runs"][run_name]["model"]}


def run_train(config, run_name, stage) -> dict:
    """One training stage's section with the run's overrides applied."""
    return {**config["train"][stage], **config["runs"][run_name]["train"].get(stage, {})}
