"""What Snakemake would re-run, for each of several config files, in one process: run from a finished workspace,

    python dry_run_plans.py TARGET CONFIG [CONFIG ...]   # -> {CONFIG: {"plan": [[rule, output], ...], ...}}

`plan`: each output of a job the summary (`snakemake --summary`) plans to update ("update pending"), with the
default rerun triggers (mtime, params, input, software-env, code); `local`: the rules that run where Snakemake runs
(`localrules`, never submitted); `hub_offline`: HF_HUB_OFFLINE as the workflow left it for its jobs. One process,
one DAG per config: a few seconds for them all, where a `snakemake -n` each would start Python and import Snakemake
again every time.
"""
import contextlib
import io
import json
import os
import sys
from pathlib import Path

from snakemake.api import SnakemakeApi
from snakemake.settings.enums import Quietness
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, ResourceSettings


def plan(target, configfile):
    summary = io.StringIO()
    with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
        workflow = api.workflow(ResourceSettings(cores=1), ConfigSettings(configfiles=[Path(configfile)]),
                                snakefile=Path("Snakefile"), workdir=Path.cwd())
        with contextlib.redirect_stdout(summary):
            workflow.dag(DAGSettings(targets={target})).summary()
        local = sorted(workflow._workflow._localrules)  # what `localrules` and `localrule: True` named
    rows = [line.split("\t") for line in summary.getvalue().splitlines()[1:]]  # output, date, rule, log, status, plan
    return {"plan": sorted({(row[2], row[0]) for row in rows if row[-1] == "update pending"}), "local": local,
            "hub_offline": os.environ.get("HF_HUB_OFFLINE")}


if __name__ == "__main__":
    print(json.dumps({configfile: plan(sys.argv[1], configfile) for configfile in sys.argv[2:]}))
