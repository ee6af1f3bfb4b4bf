"""Config validation: both shipped configs pass with the release's defaults filled; bad keys/values fail naming them."""
import copy
import re
import subprocess
import sys

import pytest
import yaml

from mdetr_phrasecut.config import load_config, run_model, run_train, validate_config
from mdetr_phrasecut.errors import InputError


@pytest.fixture(scope="module")
def embedded(repo_dir):
    return yaml.safe_load((repo_dir / "config" / "config.yaml").read_text())


def test_published_config_has_the_release_recipe(repo_dir):
    cfg = load_config(repo_dir / "config" / "phrasecut.yaml")
    assert set(cfg["runs"]) == {"resnet101", "efficientnet_b3"}
    s1 = run_train(cfg, "resnet101", "stage1")
    assert (s1["epochs"], s1["lr"], s1["text_encoder_lr"], s1["lr_drop"], s1["ema"]) == (10, 5e-5, 1e-5, 11, True)
    assert (s1["batch_size"], s1["clip_max_norm"], s1["ema_decay"], s1["weight_decay"]) == (2, 0.1, 0.9998, 1e-4)
    s2 = run_train(cfg, "efficientnet_b3", "stage2")
    assert (s2["epochs"], s2["lr_drop"], s2["aux_loss"], s2["contrastive_align_loss"]) == (35, 25, False, False)
    model = run_model(cfg, "resnet101")
    assert (model["hidden_dim"], model["nheads"], model["enc_layers"], model["dec_layers"]) == (256, 8, 6, 6)
    assert (model["num_queries"], model["dim_feedforward"], model["dropout"]) == (100, 2048, 0.1)
    assert cfg["runs"]["resnet101"]["published"] == {"miou": 53.1, "p50": 56.1, "p70": 38.9, "p90": 11.9}
    assert cfg["resources"]["stage1"]["nodes"] * cfg["resources"]["stage1"]["gpus_per_node"] == 32


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c["train"]["stage1"].update(lr="fast"), "train.stage1.lr"),
        (lambda c: c["model"].update(hiden_dim=3), "hiden_dim"),
        (lambda c: c["dataset"].update(source="ftp"), "dataset.source"),
        (lambda c: c["runs"]["demo"].update(pretrained="nowhere"), "runs.demo.pretrained"),
        (lambda c: c["runs"]["demo"].update(model={"nheads": 0}), "runs.demo.model.nheads"),
        (lambda c: c["downloads"]["demo_pretrained"].update(sha256="abc"), "downloads.demo_pretrained.sha256"),
    ],
)
def test_bad_config_names_the_key(embedded, mutate, expected):
    cfg = copy.deepcopy(embedded)
    mutate(cfg)
    with pytest.raises(InputError) as e:
        validate_config(cfg, "my.yaml")
    message = str(e.value)
    assert message.startswith("my.yaml: ") and expected in message and "\n" not in message


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: [unclosed\n")
    with pytest.raises(InputError, match="bad.yaml: invalid YAML"):
        load_config(bad)


@pytest.mark.parametrize("configfile", [None, "config/phrasecut.yaml"])
def test_dry_run_lists_the_whole_dag(repo_dir, configfile, tmp_path):
    cmd = [sys.executable, "-m", "snakemake", "-n", "--forceall", "results/table.md"]  # whatever results/ holds
    if configfile:
        cmd += ["--configfile", configfile]
    out = subprocess.run(cmd, cwd=repo_dir, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    for rule in ("convert", "stage1", "stage2", "evaluate", "table"):
        assert rule in out.stdout
    assert ("synth" in out.stdout) == (configfile is None)
    assert ("download_pretrained_resnet101" in out.stdout) == (configfile is not None)


def test_bad_config_stops_snakemake_before_any_job(repo_dir, embedded, tmp_path):
    cfg = copy.deepcopy(embedded)
    cfg["train"]["stage2"]["epochs"] = -1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "results/table.md", "--configfile", str(path)],
                         cwd=repo_dir, capture_output=True, text=True)
    assert out.returncode != 0
    assert "train.stage2.epochs" in out.stdout + out.stderr


def test_published_stages_request_four_nodes_of_eight_gpus_and_launch_torchrun(repo_dir):
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--configfile=config/phrasecut.yaml",
                          "results/runs/resnet101/stage2/checkpoint.pth"], cwd=repo_dir, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "nodes=4, tasks=4" in out.stdout and "gres=gpu:8" in out.stdout and "mpi=srun" in out.stdout
    assert ("srun --nodes=4 --ntasks-per-node=1 --kill-on-bad-exit=1 mdetr-phrasecut launch --nnodes=4 "
            "--nproc-per-node=8") in out.stdout
    assert "train --stage stage1" in out.stdout and "train --stage stage2" in out.stdout


def test_demo_training_stages_launch_two_processes_with_a_local_rendezvous(repo_dir):
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall",
                          "results/runs/demo/stage2/checkpoint.pth", "results/pretrain/demo/checkpoint.pth"],
                         cwd=repo_dir, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    commands = re.findall(r"^Shell command: ((?:.*\\\n)*.*)$", out.stdout, re.M)  # lines continued with \\
    launches = [command for command in commands if " train --stage " in command]
    assert len(launches) == 3
    torchrun = "torchrun --standalone --nproc-per-node=2 --signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
    assert all(command.startswith(f"{torchrun} -m mdetr_phrasecut.cli") for command in launches), launches
    assert "srun" not in out.stdout and "scontrol" not in out.stdout


def test_resolve_stage_applies_the_schema_defaults_once_and_sets_each_stage_structure():
    from mdetr_phrasecut.config import resolve_stage, schema_defaults

    spec = {"model": {"hidden_dim": 128}, "train": {"lr": 3e-4}}
    train, model = schema_defaults("train"), schema_defaults("model")
    pretrain, stage1, stage2 = (resolve_stage(spec, s) for s in ("pretrain", "stage1", "stage2"))
    assert stage1.as_args() == {**train, **model, "hidden_dim": 128, "lr": 3e-4, "train_split": "train",
                                "val_split": "miniv", "stage": "stage1", "masks": False, "freeze_detr": False,
                                "mask_model": "none", "train_batchnorm": False,
                                "threshold": schema_defaults("evaluate")["threshold"]}
    assert dict(stage1.train) == {**train, "lr": 3e-4, "train_split": "train", "val_split": "miniv"}
    assert dict(stage1.evaluate) == schema_defaults("evaluate")
    with pytest.raises(TypeError):  # resolved once, read-only
        stage1.model["hidden_dim"] = 256
    assert pretrain.model["train_batchnorm"] and not resolve_stage(
        {**spec, "model": {"backbone_pretrained": True}}, "pretrain").model["train_batchnorm"]
    # stage 2: the smallconv head on the frozen detector, without contrastive-align and auxiliary losses even
    # where the spec (here: the schema's defaults) asks for them
    assert train["contrastive_align_loss"] and train["aux_loss"]
    assert {k: stage2.model[k] for k in ("masks", "freeze_detr", "mask_model", "contrastive_align_loss",
                                         "aux_loss")} == \
        {"masks": True, "freeze_detr": True, "mask_model": "smallconv", "contrastive_align_loss": False,
         "aux_loss": False}
    assert not stage2.train["contrastive_align_loss"] and not stage2.train["aux_loss"]
    assert resolve_stage({**spec, "evaluate": {"threshold": 0.25}}, "stage2").evaluate["threshold"] == 0.25
    assert spec == {"model": {"hidden_dim": 128}, "train": {"lr": 3e-4}}  # the caller's spec is left as it was
    with pytest.raises(InputError, match=r"train\.lr"):
        resolve_stage({"model": {}, "train": {"lr": "fast"}}, "stage1")
    with pytest.raises(InputError, match="stage 'stage3'"):
        resolve_stage(spec, "stage3")


def test_build_returns_the_stage_model_criterion_and_post_processors(tiny_roberta_dir):
    from mdetr_phrasecut.config import resolve_stage
    from mdetr_phrasecut.model.build import build

    model_cfg = {"backbone": "resnet18", "hidden_dim": 128, "nheads": 8, "enc_layers": 1, "dec_layers": 2,
                 "dim_feedforward": 64, "num_queries": 4, "text_encoder_type": str(tiny_roberta_dir)}
    spec = {"model": model_cfg, "train": {"mask_loss_coef": 3}}
    detector, criterion, post = build(resolve_stage({**spec, "evaluate": {"threshold": 0.4}}, "stage1"))
    assert not hasattr(detector, "detr") and hasattr(detector, "contrastive_align_projection_image")
    assert set(post) == {"bbox", "phrasecut"} and post["phrasecut"].score_thresh == 0.4
    assert "loss_contrastive_align" in criterion.weight_dict and "loss_bbox_0" in criterion.weight_dict
    segm, criterion, post = build(resolve_stage(spec, "stage2"))
    assert hasattr(segm, "detr") and not hasattr(segm.detr, "contrastive_align_projection_image")
    assert set(post) == {"bbox", "segm", "phrasecut"} and post["phrasecut"].score_thresh == 0.7
    assert criterion.weight_dict == {"loss_ce": 1, "loss_bbox": 5, "loss_giou": 2, "loss_mask": 3, "loss_dice": 1}


@pytest.mark.parametrize("command,section,options", [
    ("compare", "statistics", {"resamples": 1234, "level": 0.8, "seed": 7, "unit": "image"}),
    ("table", "statistics", {"resamples": 1234, "level": 0.8, "seed": 7, "unit": "image"}),
])
def test_cli_defaults_are_read_from_the_schema(monkeypatch, command, section, options):
    """The schema is the one home of these defaults: change them there and the subcommand's defaults follow."""
    from mdetr_phrasecut import cli, config

    schema = config.load_schema()
    edited = copy.deepcopy(schema)
    for key, value in options.items():
        assert schema["properties"][section]["properties"][key]["default"] != value
        edited["properties"][section]["properties"][key]["default"] = value
    monkeypatch.setattr(config, "load_schema", lambda: copy.deepcopy(edited))
    _, parser = cli.build_parser(command)
    assert {key: parser.get_default(key) for key in options} == options


def test_the_evaluate_settings_of_a_stage_config_are_read_from_the_schema(monkeypatch):
    """evaluate and predict take them from their spec's evaluate section, its missing keys the schema's defaults:
    change them there and the resolved config follows."""
    from mdetr_phrasecut import config

    options = {"threshold": 0.42, "size": 640, "max_size": 999, "batch_size": 3, "workers": 5, "use_ema": False}
    edited = copy.deepcopy(config.load_schema())
    for key, value in options.items():
        assert edited["properties"]["evaluate"]["properties"][key]["default"] != value
        edited["properties"]["evaluate"]["properties"][key]["default"] = value
    monkeypatch.setattr(config, "load_schema", lambda: edited)
    resolved = config.resolve_stage({"model": {}, "train": {}}, "stage2").evaluate
    assert {key: resolved[key] for key in options} == options
    assert config.resolve_stage({"model": {}, "train": {}, "evaluate": {"size": 64}}, "stage2").evaluate["size"] == 64
