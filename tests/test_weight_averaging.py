"""trainer.weight_averaging: an EMA of parameters and BatchNorm buffers (or Lookahead's slow weights), which
validation and the checkpoints' "model" use, while the training weights stay restorable for exact resume."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from cnnlab.config.validate import validate_train_config
from cnnlab.errors import UserError
from cnnlab.tracking.tracker import Tracker
from cnnlab.training.averaging import WARMUP, WeightAverage
from cnnlab.training.step import TrainStep
from cnnlab.training.trainer import Trainer

from conftest import TINY, cli_env, cnnlab_executable
from test_muon import interrupt_after_first_epoch


def toy_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3))


def averaged_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The floating-point tensors an average covers: parameters and BatchNorm's running statistics."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}


def train_steps(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int, after_step) -> None:
    """SGD steps on random batches in train mode (so BatchNorm's running statistics move too)."""
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(torch.randn(16, 4)), torch.randint(0, 3, (16,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        after_step()


def test_ema_equals_the_hand_computed_average_of_weights_and_batchnorm_statistics() -> None:
    model = toy_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    ema = WeightAverage(model, decay=0.3, every=2, warmup=True)
    expected = averaged_state(model)  # the average starts at the weights training starts from
    updates = 0

    def after_step() -> None:
        nonlocal updates
        ema.after_step()
        if ema.steps % 2 == 0:
            updates += 1
            decay = min(0.3, (1 + updates) / (WARMUP + updates))
            for k, v in averaged_state(model).items():
                expected[k] = decay * expected[k] + (1 - decay) * v

    train_steps(model, optimizer, 7, after_step)
    assert updates == 3 and ema.current_decay() == 0.3  # warmed up: (1 + 4) / (10 + 4) > 0.3
    got = averaged_state(ema.module)
    assert got.keys() == expected.keys() and any("running_var" in k for k in got)
    for k in expected:
        torch.testing.assert_close(got[k], expected[k], rtol=1e-6, atol=1e-7)
    assert not torch.equal(got["0.weight"], model.state_dict()["0.weight"])


def test_lookahead_moves_the_slow_weights_alpha_of_the_way_and_restarts_training_from_them() -> None:
    model = toy_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    lookahead = WeightAverage(model, decay=1 - 0.25, every=3, pull_back=True)
    slow = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_steps(model, optimizer, 2, lookahead.after_step)  # two steps: no pull yet
    train_steps(model, optimizer, 1, lambda: None)
    fast = {name: p.detach().clone() for name, p in model.named_parameters()}
    lookahead.after_step()  # the third step: pull
    trained, kept = model.state_dict(), lookahead.module.state_dict()
    for name in slow:
        pulled = slow[name] + 0.25 * (fast[name] - slow[name])
        torch.testing.assert_close(kept[name], pulled, rtol=1e-6, atol=1e-7)
        assert torch.equal(trained[name], kept[name])
    # BatchNorm's running statistics are not averaged: they follow the training weights
    assert all(torch.equal(trained[name], kept[name]) for name in trained if "running" in name)


def test_validation_and_checkpoints_use_the_averaged_weights_and_keep_the_training_ones() -> None:
    model = toy_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    step = TrainStep(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        device=torch.device("cpu"),
        amp_dtype=None,
        scheduler=LambdaLR(optimizer, lambda s: 1.0),
        averaging=WeightAverage(model, decay=0.9, every=1),
    )
    trainer = Trainer(step, tracker=Tracker([]))
    images, labels = torch.randn(64, 4), torch.randint(0, 3, (64,))
    step(images, labels)
    with torch.no_grad():
        trainer.evaluated_model[3].bias.copy_(torch.tensor([0.0, 1e6, 0.0]))  # the average predicts class 1 only
    assert trainer.evaluate([(images, labels)])["acc"] == pytest.approx((labels == 1).double().mean().item())
    state = trainer.state_dict()
    assert state["model"]["3.bias"][1] == 1e6 and state["training_model"]["3.bias"][1] != 1e6
    assert state["averaging"] == {"steps": 1, "n_averaged": 2}

    resumed_model = toy_model()
    resumed_optimizer = torch.optim.SGD(resumed_model.parameters(), lr=0.5)
    resumed = Trainer(
        TrainStep(
            resumed_model,
            resumed_optimizer,
            nn.CrossEntropyLoss(),
            device=torch.device("cpu"),
            amp_dtype=None,
            scheduler=LambdaLR(resumed_optimizer, lambda s: 1.0),
            averaging=WeightAverage(resumed_model, decay=0.9, every=1),
        ),
        tracker=Tracker([]),
    )
    resumed.load_state_dict(state)
    for name, tensor in state["training_model"].items():
        assert torch.equal(resumed_model.state_dict()[name], tensor)
    for name, tensor in state["model"].items():
        assert torch.equal(resumed.evaluated_model.state_dict()[name], tensor)
    assert resumed.averaging.state_dict() == state["averaging"]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "trainer.weight_averaging=swa",
            "trainer.weight_averaging='swa' is invalid: must be one of none, ema, lookahead",
        ),
        ("trainer.ema_decay=1", "trainer.ema_decay=1 is invalid: must be a number in [0, 1)"),
        ("trainer.ema_every=0", "trainer.ema_every=0 is invalid: must be a whole number >= 1"),
        ("trainer.lookahead_alpha=0", "trainer.lookahead_alpha=0 is invalid: must be a number in (0, 1]"),
        ("trainer.lookahead_steps=1.5", "trainer.lookahead_steps=1.5 is invalid: must be a whole number >= 1"),
    ],
)
def test_bad_averaging_settings_are_one_line_errors(compose_train, override: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        validate_train_config(compose_train([override]))


@pytest.mark.slow  # 50 s: a run stopped and resumed, and one uninterrupted
def test_cli_run_with_ema_and_muon_interrupted_and_resumed_is_bit_identical(run_cnnlab, tmp_path: Path) -> None:
    """Both new states at once (one run set instead of two): the average, the training weights and both of
    optimizer=muon's parts continue exactly."""
    args = [*TINY, "trainer.weight_averaging=ema", "trainer.ema_every=2", "optimizer=muon"]
    args += ["dataset.train_size=1100", "batch_size=32"]
    env = {**cli_env(tmp_path), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread: same float sums
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    victim = subprocess.Popen(
        [cnnlab_executable(), "train", *args, f"hydra.run.dir={stopped}"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    interrupt_after_first_epoch(victim, stopped)
    assert torch.load(stopped / "checkpoints/last.pt", weights_only=True)["position"]["step"] > 0
    resumed = run_cnnlab("train", f"resume={stopped}", env=env)
    assert resumed.returncode == 0, resumed.stderr
    reference = run_cnnlab("train", *args, f"hydra.run.dir={straight}", env=env)
    assert reference.returncode == 0, reference.stderr

    a, b = (json.loads((run / "metrics.json").read_text()) for run in (straight, stopped))
    assert [h["val/acc"] for h in a["history"]] == [h["val/acc"] for h in b["history"]]
    assert (a["test_acc"], a["best_val_acc"]) == (b["test_acc"], b["best_val_acc"])
    last_a, last_b = (torch.load(run / "checkpoints/last.pt", weights_only=True) for run in (straight, stopped))
    assert last_a["averaging"] == last_b["averaging"]
    for key in ("model", "training_model"):  # the average and the training weights both continue exactly
        assert last_a[key].keys() == last_b[key].keys()
        assert all(torch.equal(last_a[key][k], last_b[key][k]) for k in last_a[key])
    assert any(not torch.equal(last_b["model"][k], last_b["training_model"][k]) for k in last_b["model"])
    momentum = [state for part in last_b["optimizer"]["parts"] for state in part["state"].values()]
    assert momentum and all("momentum_buffer" in state for state in momentum)  # both parts' momentum is saved
