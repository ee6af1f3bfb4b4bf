"""config/README.md, the configuration reference, generated from the schema (the one home of defaults):
`python -m mdetr_phrasecut.config_reference --out config/README.md` rewrites it, `--check` fails when it drifted.

Every key gets a row: its dotted path, default, allowed values and meaning. Sections whose entries share one
definition (`train.<stage>`, `resources.<stage>`) are listed once, the entries named; keys under a name of the
user's choice (`downloads.<name>`, `runs.<run>`) are listed with that placeholder.
"""
import argparse
import json
import sys

from .config import load_schema
from .infra import io

HEADER = """# Configuration reference

Generated from the schema, `src/mdetr_phrasecut/assets/config.schema.yaml` (linked from
`workflow/schemas/config.schema.yaml`), by `python -m mdetr_phrasecut.config_reference --out config/README.md`;
do not edit by hand (`tests/test_config_reference.py` fails when this file and the schema disagree).

Configs: `config/config.yaml` (the embedded demo, what `snakemake` runs without `--configfile`),
`config/phrasecut.yaml` (the published recipe, both backbones), `config/one_node.yaml` (the recipe's overrides for
one 8-GPU machine, given after it). A config states only what differs from these defaults; an unknown key or a
bad value fails before any job runs, with one line naming the file and key, e.g.
`config/x.yaml: train.stage1.lr: 'fast' is not of type 'number'`. A file given with `--configfile` replaces the
embedded default; a second one updates the first key by key (a list is replaced whole). A run's `model` and
`train` override the top-level sections for that run only.
"""


def resolve(node, schema):
    """`node` with its `$ref` / `allOf` merged in: its own keys win, property by property (`resources_default`
    sets defaults on the `resources` definition's keys)."""
    if "$ref" not in node and "allOf" not in node:
        return node
    base = resolve(schema["definitions"][node["$ref"].split("/")[-1]] if "$ref" in node else node["allOf"][0], schema)
    own = {k: v for k, v in node.items() if k not in ("$ref", "allOf")}
    merged = {**base, **own}
    properties = {**base.get("properties", {})}
    for key, child in own.get("properties", {}).items():
        properties[key] = {**properties.get(key, {}), **child}
    if properties:
        merged["properties"] = properties
    return merged


def merged_properties(node, schema):
    return {k: resolve(v, schema) for k, v in node.get("properties", {}).items()}


def object_branch(node):
    """An object-typed branch of a `oneOf` (`runs.<run>.published`), else the node."""
    objects = [b for b in node.get("oneOf", []) if b.get("type") == "object"]
    return objects[0] if objects else node


def short(value):
    return json.dumps(value, separators=(", ", ": "))


def allowed(node):
    """The values a key takes, in words."""
    if "enum" in node:
        return " / ".join(f"`{short(v)}`" for v in node["enum"])
    if "oneOf" in node:
        return " or ".join(allowed(b) for b in node["oneOf"])
    if "pattern" in node:
        return f"string matching `{node['pattern']}`"
    kind = node.get("type", "any")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    bounds = [f">= {node['minimum']}" if "minimum" in node else "", f"> {node['exclusiveMinimum']}"
              if "exclusiveMinimum" in node else "", f"<= {node['maximum']}" if "maximum" in node else "",
              f"< {node['exclusiveMaximum']}" if "exclusiveMaximum" in node else ""]
    if kind == "array" and "items" in node and "type" in node["items"]:
        kind = f"list of {node['items']['type']}"
    return " ".join([kind, *[b for b in bounds if b]])


def meaning(node):
    return " ".join(node.get("description", "").split()).replace("|", "\\|")


def is_section(node, schema):
    """Whether a key holds keys of its own (`dataset.synth`, `downloads.<name>`), not a value."""
    node = object_branch(node)
    extra = node.get("additionalProperties")
    return bool(node.get("properties")) or isinstance(extra, dict) and bool(resolve(extra, schema).get("properties"))


def rows(node, path, schema, defaults=None):
    """(dotted key, default, allowed, meaning) of every key under `node`, depth first in schema order; `defaults`:
    the enclosing section's default value, which fills its keys before their own defaults do
    (`dataset.pretrain_synth`)."""
    node = object_branch(resolve(node, schema))
    if not node.get("properties"):  # keys the user names: downloads.<name>, runs.<run>
        yield from rows(node["additionalProperties"], f"{path}.{'<run>' if path == 'runs' else '<name>'}", schema)
        return
    shared = {}  # a definition -> the keys that are exactly it (train.pretrain, .stage1, .stage2)
    for key, raw in node["properties"].items():
        if "$ref" in raw and set(raw) <= {"$ref", "default"}:
            shared.setdefault(raw["$ref"], []).append(key)
    for key, child in merged_properties(node, schema).items():
        group = next((keys for keys in shared.values() if key in keys and len(keys) > 1), [])
        if group and key != group[0]:
            continue
        child_path = f"{path}.<stage>" if group else f"{path}.{key}"
        default = (defaults or {}).get(key, child.get("default", ...))
        if is_section(child, schema):
            names = f"one each: {', '.join(f'`{k}`' for k in group)}. " if group else ""
            if names or meaning(child):
                shown = "" if default is ... or isinstance(default, dict) else f"`{short(default)}`"
                yield child_path, shown, "section", names + meaning(child)
            yield from rows(child, child_path, schema, default if isinstance(default, dict) else None)
        else:
            yield child_path, "—" if default is ... else f"`{short(default)}`", allowed(child), meaning(child)


def render(schema) -> str:
    lines = [HEADER]
    for section, node in schema["properties"].items():
        resolved = resolve(node, schema)
        required = " (required)" if section in schema.get("required", []) else ""
        lines += [f"## `{section}`{required}", ""]
        if meaning(resolved):
            lines += [meaning(resolved), ""]
        if is_section(resolved, schema):
            table = list(rows(node, section, schema))
        else:  # a section that is one value (submit_downloads)
            table = [(section, f"`{short(resolved['default'])}`", allowed(resolved), "see above")]
        lines += ["| key | default | allowed | meaning |", "|---|---|---|---|"]
        lines += [f"| `{key}` | {default} | {kinds} | {text} |" for key, default, kinds, text in table]
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m mdetr_phrasecut.config_reference",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the reference to write (config/README.md)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when --out differs from the schema")
    args = parser.parse_args(argv)
    text = render(load_schema())
    if args.check:
        with open(args.out, encoding="utf-8") as f:
            if f.read() != text:
                sys.exit(f"{args.out}: differs from the schema; run python -m mdetr_phrasecut.config_reference "
                         f"--out {args.out}")
        return
    io.atomic_write_text(args.out, text)


if __name__ == "__main__":
    main()
