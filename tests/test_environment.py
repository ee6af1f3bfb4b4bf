"""The pins of requirements.txt and environment.yml agree, and the installed packages match them."""
from importlib.metadata import version

import yaml

from helpers.requirements import read_requirements


def test_environment_yml_matches_requirements(repo_dir):
    pins = read_requirements(repo_dir / "requirements.txt")
    env = yaml.safe_load((repo_dir / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    env_pins = dict(p.lower().split("==") for p in pip_section)
    assert env_pins == pins


def test_installed_versions_match_pins(repo_dir):
    for name, pinned in read_requirements(repo_dir / "requirements.txt").items():
        assert version(name) == pinned, name
