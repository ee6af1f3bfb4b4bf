"""The training stages, one row each: what a stage starts from, what it builds and trains, what the workflow keeps
of it. Read by config (a stage's structure), engine (--init, the detector to load), evaluation and predict (the
stage whose model they run) and the workflow rules (common.smk, train.smk). Importable without torch.

Adding a stage: a row here and its section in the schema's `train` (assets/config.schema.yaml) and the configs.
"""
from dataclasses import dataclass
from typing import Optional, Tuple


@dataclass(frozen=True)
class Stage:
    """One training stage.

    init: what `train --init` is: None (from scratch), "pretrained" (the run's `pretrained` downloads entry) or the
      name of the stage whose checkpoint it continues; a stage that continues another loads its detector strictly.
    masks: builds the smallconv segmentation model (and trains on masks); else the detector alone.
    frozen_detector: the detector's weights are frozen (only the mask head trains).
    losses_off: train-section switches the stage turns off whatever the config says (the release trains stage 2
      without contrastive-align and auxiliary losses).
    corpus: the data it trains on (common.smk's corpora: "main", or the demo's "pretrain").
    logged: its log.csv is a workflow output the plots read (results/runs/{run}/{stage}/log.csv).
    cost: its job's benchmark counts in the cost of a row of results/table.md.
    """

    name: str
    init: Optional[str]
    masks: bool
    frozen_detector: bool
    losses_off: Tuple[str, ...] = ()
    corpus: str = "main"
    logged: bool = True
    cost: bool = True

    @property
    def from_scratch(self) -> bool:
        """Trains the whole detector from random or ImageNet weights (a random backbone also trains its
        BatchNorms)."""
        return self.init is None


STAGES = {s.name: s for s in (
    Stage("pretrain", init=None, masks=False, frozen_detector=False, corpus="pretrain", logged=False, cost=False),
    Stage("stage1", init="pretrained", masks=False, frozen_detector=False),
    Stage("stage2", init="stage1", masks=True, frozen_detector=True, losses_off=("aux_loss", "contrastive_align_loss")),
)}
TRAIN_STAGES = tuple(STAGES)  # the --stage of `train`
RUN_STAGES = tuple(name for name, s in STAGES.items() if s.corpus == "main")  # results/runs/{run}/{stage}
LOGGED_STAGES = tuple(name for name, s in STAGES.items() if s.logged)  # the training folders with a log.csv
COST_STAGES = (*(name for name, s in STAGES.items() if s.cost), "evaluate")  # the jobs behind a table row
EVALUATED = next(name for name, s in STAGES.items() if s.masks)  # the stage whose checkpoint `evaluate` scores


def model_stage(segmentation: bool) -> str:
    """The stage whose model fits a checkpoint: the evaluated (segmentation) stage, or the detector it starts
    from."""
    return EVALUATED if segmentation else STAGES[EVALUATED].init
