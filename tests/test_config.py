"""Every config option composes, the top-level keys reach the groups, and validation rejects bad values."""

from importlib.resources import files

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from cnnlab.config.validate import validate_train_config
from cnnlab.errors import UserError


def group_options(group: str) -> list[str]:
    folder = files("cnnlab.conf") / group
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def test_groups_hold_the_documented_options() -> None:
    assert group_options("dataset") == ["cifar10", "fashion_mnist", "imagefolder", "mnist", "synthetic"]
    assert group_options("model") == ["efficient", "efficient_tiny", "mlp", "simple_cnn", "timm", "torchvision"]
    assert group_options("optimizer") == ["adam", "adamw", "muon", "rmsprop", "sgd"]
    assert group_options("scheduler") == ["cosine", "linear", "none", "onecycle", "step"]
    assert "grid" in group_options("sweeper")
    assert "smoke" in group_options("experiment")


def test_defaults(compose_train) -> None:
    cfg = compose_train(hydra=True)
    assert cfg.dataset.name == "cifar10"
    assert cfg.model._target_.endswith("EfficientCNN")
    assert cfg.optimizer._target_ == "torch.optim.SGD"
    assert cfg.optimizer.momentum > 0 and cfg.optimizer.nesterov is True
    assert cfg.hydra.sweeper._target_.endswith("BasicSweeper")


@pytest.mark.parametrize(
    "group",
    ["dataset", "model", "optimizer", "scheduler", "sweeper", "experiment"],
)
def test_every_option_composes_and_resolves(compose_train, group: str, tmp_path) -> None:
    for option in group_options(group):
        overrides = [f"{group}={option}"]
        if option == "imagefolder":
            overrides.append(f"dataset.root={tmp_path}")
        cfg = compose_train(overrides)
        OmegaConf.resolve(cfg)  # every interpolation resolves
        validate_train_config(cfg)


def test_top_level_keys_reach_the_groups(compose_train) -> None:
    cfg = compose_train(["lr=0.123", "batch_size=64", "weight_decay=0.01", "optimizer=adamw"])
    assert cfg.optimizer.lr == 0.123
    assert cfg.optimizer.weight_decay == 0.01
    assert cfg.batch_size == 64


@pytest.mark.parametrize("option", group_options("optimizer"))
def test_optimizers_build(compose_train, option: str) -> None:
    import torch

    cfg = compose_train([f"optimizer={option}", "lr=0.2"])
    params = [torch.nn.Parameter(torch.zeros(3))]
    optimizer = instantiate(cfg.optimizer)(params)
    assert optimizer.param_groups[0]["lr"] == 0.2


@pytest.mark.parametrize("option", group_options("scheduler"))
def test_schedules_run_to_the_end(compose_train, option: str) -> None:
    import torch

    cfg = compose_train([f"scheduler={option}", "lr=1.0"])
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=100, steps_per_epoch=10)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert all(0 <= lr <= 1.0 + 1e-9 for lr in lrs)
    if option in ("onecycle", "cosine"):
        assert max(lrs) == pytest.approx(1.0, abs=0.05) and lrs[-1] < 0.05
    if option == "none":
        assert set(lrs) == {1.0}


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("lr=0", "lr"),
        ("lr=abc", "lr"),
        ("batch_size=0", "batch_size"),
        ("epochs=-1", "epochs"),
        ("dataset.val_size=1.5", "dataset.val_size"),
        ("model.dropout=1.0", "model.dropout"),
        ("device=gpu", "device"),
        ("trainer.label_smoothing=2", "trainer.label_smoothing"),
    ],
)
def test_validation_names_the_bad_key(compose_train, override: str, words: str) -> None:
    cfg = compose_train([override])
    with pytest.raises(UserError, match=words):
        validate_train_config(cfg)
