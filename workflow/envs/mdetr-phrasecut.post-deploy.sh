#!/usr/bin/env bash
# Run by Snakemake in the new environment, from the working directory (the repo root): the package itself.
set -euo pipefail
pip install --no-deps -e .
