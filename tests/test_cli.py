"""The installed `cnnlab` command, run as a user runs it: artifacts, sweeps, Hydra flags and one-line errors."""

import json
import re
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_dirs

FAST = ["experiment=smoke", "dataset.train_size=800", "dataset.test_size=200", "dataset.val_size=200"]


def test_help_lists_tasks_and_groups(run_cnnlab) -> None:
    result = run_cnnlab("--help")
    assert result.returncode == 0
    for word in ("train", "dataset", "cifar10", "imagefolder", "efficient", "onecycle", "smoke", "batch_size"):
        assert word in result.stdout


def test_smoke_run_writes_every_artifact(run_cnnlab, tmp_path: Path) -> None:
    result = run_cnnlab("train", "experiment=smoke")
    assert result.returncode == 0, result.stderr
    (run,) = run_dirs(tmp_path / "outputs" / "runs")
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["epochs_completed"] == 3
    assert metrics["best_val_acc"] > 0.5
    assert 0 <= metrics["test_acc"] <= 1
    assert metrics["params"] > 0 and metrics["macs"] > 0 and metrics["train_time_s"] > 0
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):
        assert (run / ".hydra" / name).is_file()
    assert "epoch 3" in (run / "train.log").read_text()
    for name in ("last.pt", "best.pt"):
        checkpoint = torch_load(run / "checkpoints" / name)
        assert "model" in checkpoint
    events = EventAccumulator(str(run)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "throughput/images_per_s"} <= tags
    assert [e.step for e in events.Scalars("val/acc")] == [1, 2, 3]
    assert events.Scalars("val/acc")[-1].value == pytest.approx(metrics["history"][-1]["val/acc"], abs=1e-6)
    # not a terminal: no control codes, one summary line per epoch
    assert "\x1b" not in result.stdout + result.stderr
    assert len(re.findall(r"^epoch \d+ \|", result.stdout + result.stderr, re.M)) == 3


def torch_load(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=True)


def test_multirun_makes_one_folder_per_combination(run_cnnlab, tmp_path: Path) -> None:
    result = run_cnnlab("-m", "lr=0.01,0.1", "batch_size=256,512", *FAST, "epochs=1")
    assert result.returncode == 0, result.stderr
    runs = run_dirs(tmp_path / "outputs" / "sweeps")
    assert [r.name for r in runs] == ["0", "1", "2", "3"]
    assert len({r.parent for r in runs}) == 1
    seen = set()
    for run in runs:
        config = OmegaConf.to_container(OmegaConf.load(run / ".hydra" / "config.yaml"), resolve=True)
        overrides = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
        assert f"lr={config['lr']}" in overrides and f"batch_size={config['batch_size']}" in overrides
        assert config["optimizer"]["lr"] == config["lr"]
        assert json.loads((run / "metrics.json").read_text())["status"] == "completed"
        seen.add((config["lr"], config["batch_size"]))
    assert seen == {(0.01, 256), (0.01, 512), (0.1, 256), (0.1, 512)}


def test_hydra_flags_keep_working(run_cnnlab) -> None:
    result = run_cnnlab("train", "--cfg", "job", "lr=0.5")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    assert config["lr"] == 0.5 and config["optimizer"]["lr"] == "${lr}"


def test_tab_completion_installs_for_cnnlab_and_completes_each_task(run_cnnlab, tmp_path: Path) -> None:
    install = run_cnnlab("-sc", "install=bash")
    assert install.returncode == 0, install.stderr
    assert install.stdout.rstrip().endswith("complete -o nospace -o default -F hydra_bash_completion cnnlab")

    def complete(line: str) -> list[str]:
        done = run_cnnlab("-sc", "query=bash", env={"COMP_LINE": line, "COMP_POINT": str(len(line))})
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert "model=" in complete("cnnlab train mod")
    assert "model=efficient" in complete("cnnlab train model=eff")
    assert {"logger=csv", "logger=mlflow"} <= set(complete("cnnlab -m logger="))
    assert "trainer.tta=" in complete("cnnlab trainer.tt")
    assert "split=" in complete("cnnlab eval spl")  # eval's own config
