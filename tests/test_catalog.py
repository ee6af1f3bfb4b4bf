"""What the Snakemake workflow catalog and citation tools read: .snakemake-workflow-catalog.yml, config/README.md,
LICENSE and CITATION.cff agree with the workflow and pyproject.toml."""
import re
import tomllib

import yaml

from helpers.paths import REPO


def test_catalog_settings_hold_for_this_workflow():
    from snakemake.cli import parse_args

    usage = yaml.safe_load((REPO / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    args = parse_args(["all", *usage["mandatory-flags"]["flags"].split()])[1]
    assert all((REPO / f).is_file() for f in args.configfile) and args.profile == ["slurm"]
    assert (REPO / "config" / "README.md").is_file()
    deploy = usage["software-stack-deployment"]
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    if deploy["conda"]:  # every rule names the conda env, which exists
        assert len(re.findall(r"^\s*rule\b", rules, re.M)) == len(re.findall(r"^\s+conda:", rules, re.M)) > 0
        assert (REPO / "workflow" / "envs" / "mdetr-phrasecut.yaml").is_file()
    assert usage["report"] == any((REPO / "workflow" / "report").glob("*.rst"))


def test_licence_and_citation_match_the_package():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    assert "Apache License\n                           Version 2.0" in (REPO / "LICENSE").read_text()
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["license"] == project["license"] and cff["version"] == project["version"]
    titles = [ref["title"] for ref in cff["references"]]
    assert any("MDETR" in t for t in titles) and any("PhraseCut" in t for t in titles)
