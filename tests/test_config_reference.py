"""config/README.md is generated from the schema and never drifts from it: every key of a filled config has a row
with a meaning, and `--check` refuses a stale file."""
import re

import pytest

from mdetr_phrasecut import config_reference
from mdetr_phrasecut.config import load_config, load_schema

from helpers.paths import REPO

README = REPO / "config" / "README.md"
PLACEHOLDERS = {"downloads": "<name>", "runs": "<run>", "train": "<stage>", "resources": "<stage>"}


def rows():
    """{dotted key: (default, meaning)} of config/README.md's tables."""
    found = re.findall(r"^\| `([^`]+)` \| ([^|]*) \| [^|]* \| (.*) \|$", README.read_text(), re.M)
    return {key: (default.strip(), text.strip()) for key, default, text in found}


def leaf_keys(value, path=()):
    """Dotted keys of a filled config, with the reference's placeholders for names the user chooses."""
    opaque = path[-1:] == ("originals",) or len(path) == 3 and path[0] == "runs" and path[2] in ("model", "train")
    if not isinstance(value, dict) or not value or opaque:
        yield ".".join(path)
        return
    for key, child in value.items():
        placeholder = PLACEHOLDERS.get(path[0]) if len(path) == 1 else None
        if placeholder == "<stage>" and key == "default":
            placeholder = None
        yield from leaf_keys(child, (*path, placeholder or key))


def test_the_committed_reference_is_the_schemas():
    assert README.read_text() == config_reference.render(load_schema()), \
        "config/README.md is stale: python -m mdetr_phrasecut.config_reference --out config/README.md"


@pytest.mark.parametrize("name", ["config.yaml", "phrasecut.yaml"])
def test_every_key_of_a_filled_config_has_a_row_with_its_default_and_meaning(name):
    """Independent of the generator's walk: the keys validation fills in (defaults included) each have a row."""
    table = rows()
    keys = set(leaf_keys(load_config(REPO / "config" / name)))
    missing = sorted(k for k in keys if k not in table)
    assert not missing and len(keys) > 60, missing
    assert all(text for _, text in table.values()), [k for k, (_, text) in table.items() if not text]
    assert table["train.<stage>.lr"][0] == "`0.0001`" and table["statistics.unit"][0] == '`"phrase"`'
    assert table["dataset.pretrain_synth.train_images"][0] == "`8000`"  # the section's default fills its keys


def test_check_refuses_a_stale_file_and_out_writes_the_reference(tmp_path, monkeypatch):
    out = tmp_path / "README.md"
    config_reference.main(["--out", str(out)])
    assert out.read_text() == README.read_text()
    config_reference.main(["--out", str(out), "--check"])
    schema = load_schema()
    schema["properties"]["statistics"]["properties"]["resamples"]["default"] = 2000  # the schema changes
    monkeypatch.setattr(config_reference, "load_schema", lambda: schema)
    with pytest.raises(SystemExit, match="differs from the schema"):
        config_reference.main(["--out", str(out), "--check"])
    assert "| `statistics.resamples` | `2000` |" in config_reference.render(schema)
