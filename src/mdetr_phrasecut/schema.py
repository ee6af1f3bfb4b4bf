"""The workflow schema (`assets/config.schema.yaml`, linked from `workflow/schemas/`): the one home of the config's
keys and defaults, read once per process. `config` validates and resolves with it."""
import functools

import yaml

from . import ASSETS

SCHEMA_PATH = ASSETS / "config.schema.yaml"


@functools.lru_cache(maxsize=1)
def load_schema() -> dict:
    """The schema (shared: treat it as read-only)."""
    with open(SCHEMA_PATH) as f:
        return yaml.safe_load(f)
