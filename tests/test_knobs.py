"""The standard training knobs: gradient clipping, accumulation, MixUp/CutMix, deterministic mode and the overfit
sanity check. Each test fails when its knob is ignored."""

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnlab.config.validate import validate_train_config
from cnnlab.device import set_deterministic
from cnnlab.errors import UserError
from cnnlab.training.components import configured_mix, configured_step
from cnnlab.training.run import prepare_run, run_fit
from cnnlab.training.step import TrainStep

from conftest import TINY

CPU = torch.device("cpu")


def plain_step(model: nn.Module, **knobs) -> TrainStep:
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    return TrainStep(model, optimizer, nn.CrossEntropyLoss(), device=CPU, amp_dtype=None, **knobs)


def batch(n: int = 16, features: int = 8, classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(n, features, generator=generator) * 10, torch.randint(0, classes, (n,), generator=generator)


def weights_after(step: TrainStep, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    step(images, labels)
    return torch.cat([p.detach().flatten() for p in step.model.parameters()])


def test_gradient_clipping_bounds_the_step(compose_train) -> None:
    images, labels = batch()
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    start = torch.cat([p.detach().flatten() for p in model.parameters()])
    moved = weights_after(plain_step(model, clip_grad_norm=1e-3), images, labels) - start
    assert moved.norm() == pytest.approx(1e-3, rel=1e-4)  # SGD at lr 1: the step is the clipped gradient
    torch.manual_seed(0)
    unclipped = weights_after(plain_step(nn.Linear(8, 3)), images, labels) - start
    assert unclipped.norm() > 10 * moved.norm()

    cfg = compose_train([*TINY, "trainer.gradient_clip_val=0.5"])
    assert configured_step(cfg, nn.Linear(8, 3), CPU, 3).clip_grad_norm == 0.5


def test_accumulated_micro_batches_make_the_same_step_as_the_whole_batch() -> None:
    images, labels = batch(n=18)  # uneven micro-batches (5, 5, 5, 3): each weighted by its share
    torch.manual_seed(0)
    whole = weights_after(plain_step(nn.Linear(8, 3)), images, labels)
    torch.manual_seed(0)
    step = plain_step(nn.Linear(8, 3), accumulate=4)
    accumulated = weights_after(step, images, labels)
    assert torch.allclose(whole, accumulated, atol=1e-6)
    loss, logits = step(images, labels)
    assert logits.shape == (18, 3) and loss.ndim == 0


def test_accumulation_multiplies_the_batch_and_the_schedule_counts_optimizer_steps(
    compose_train, tmp_path: Path
) -> None:
    cfg = compose_train([*TINY, "batch_size=32", "trainer.accumulate_grad_batches=3", "scheduler=linear"])
    validate_train_config(cfg)
    run = prepare_run(cfg, tmp_path)
    assert run.data.train.batch_size == 96 and run.trainer.train_step.accumulate == 3
    run_fit(run, tmp_path)
    steps = len(run.data.train) * 2  # 2 epochs of 600 // 96 optimizer steps
    assert run.trainer.global_step == steps
    assert run.history[-1]["lr"] < 1e-3 * cfg.lr  # the linear schedule reached its end with the last optimizer step


@pytest.mark.parametrize("knob", ["mixup_alpha", "cutmix_alpha"])
def test_mixup_and_cutmix_train_on_soft_targets(compose_train, knob: str) -> None:
    cfg = compose_train([*TINY, f"trainer.{knob}=1.0"])
    torch.manual_seed(0)
    images, labels = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    mixed, targets = configured_mix(cfg, num_classes=4)(images, labels)
    assert targets.shape == (8, 4) and torch.allclose(targets.sum(1), torch.ones(8))
    assert ((targets > 0).sum(1) <= 2).all() and (targets.max(1).values < 1).any()  # two labels, blended
    assert not torch.equal(mixed, images)

    seen = []

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        seen.append(targets)
        return nn.functional.cross_entropy(logits, targets)

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 16 * 16, 4))
    step = configured_step(cfg, model, CPU, 4)
    step.loss_fn = loss
    step(images, labels)
    assert seen[0].shape == (8, 4) and seen[0].dtype.is_floating_point
    off = compose_train([*TINY, f"trainer.{knob}=1.0", "trainer.mix_prob=0.0"])
    unmixed, same = configured_mix(off, num_classes=4)(images, labels)
    assert unmixed is images and same is labels
    assert configured_mix(compose_train(TINY), 4) is None


def test_deterministic_mode_is_set_for_each_run(compose_train, tmp_path: Path) -> None:
    try:
        prepare_run(compose_train([*TINY, "trainer.deterministic=true"]), tmp_path / "on")
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        prepare_run(compose_train(TINY), tmp_path / "off")
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        set_deterministic(False)


def test_overfit_check_passes_on_a_learnable_setup_and_fails_when_nothing_learns(
    cnnlab_in_process, tmp_path: Path
) -> None:
    overfit = [*TINY, "trainer.overfit_batches=1", "epochs=40", "batch_size=32", "trainer.label_smoothing=0"]
    overfit += ["trainer.histograms=false"]  # 40 epochs of weight histograms would take longer than the training
    verdicts = {}
    for name, lr in (("learns", "0.05"), ("stuck", "1e-7")):
        run = tmp_path / name
        done = cnnlab_in_process("train", *overfit, f"lr={lr}", "scheduler=none", f"hydra.run.dir={run}")
        assert done.returncode == 0, done.stderr
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["test_acc"] is None  # no test split in the sanity check
        verdicts[name] = metrics["diagnosis"]
    assert verdicts["learns"][0].startswith("overfit check passed: on 1 training batches the loss fell")
    assert verdicts["stuck"][0].startswith("overfit check failed")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.gradient_clip_val=0", "trainer.gradient_clip_val=0 is invalid: must be null (off) or a gradient"),
        ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 is invalid: must be a whole number"),
        ("trainer.mixup_alpha=-1", "trainer.mixup_alpha=-1 is invalid"),
        ("trainer.mix_prob=2", "trainer.mix_prob=2 is invalid: must be a probability"),
        ("trainer.deterministic=yes", "trainer.deterministic='yes' is invalid: must be true or false"),
        ("trainer.overfit_batches=-1", "trainer.overfit_batches=-1 is invalid"),
        ("+logger.oops=1", "logger.oops is not a logger"),
    ],
)
def test_knob_values_are_checked(compose_train, override: str, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_train_config(compose_train([*TINY, override]))
