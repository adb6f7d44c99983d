"""One training step: the loop, the time-budget probe and `cnnlab bench` train through the same TrainStep."""

from pathlib import Path

import pytest
import torch
from torch import nn

import cnnlab.training.step as step_module
from cnnlab.training.run import prepare_run
from cnnlab.training.step import TrainStep

TINY = [
    "experiment=smoke",
    "device=cpu",
    "dataset.train_size=300",
    "dataset.val_size=100",
    "dataset.test_size=100",
    "batch_size=50",
    "trainer.histograms=false",
]


@pytest.fixture
def autocast_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, torch.dtype | None]]:
    """Every autocast TrainStep enters, as (phase, device type, dtype); the test sets the phase in calls[0]."""
    calls: list = [["setup"]]
    real = step_module.autocast

    def recording(device: torch.device, dtype: torch.dtype | None):
        calls.append((calls[0][0], device.type, dtype))
        return real(device, dtype)

    monkeypatch.setattr(step_module, "autocast", recording)
    return calls


@pytest.mark.parametrize(("amp", "dtype"), [("true", torch.bfloat16), ("false", None)])
def test_budget_probe_and_loop_take_the_same_step_with_the_same_autocast(
    compose_train,
    tmp_path: Path,
    autocast_calls: list,
    amp: str,
    dtype: torch.dtype | None,
) -> None:
    cfg = compose_train([*TINY, f"trainer.amp={amp}", "trainer.time_budget=2s"])
    autocast_calls[0][0] = "probe"
    run = prepare_run(cfg, tmp_path)  # the time budget makes it time the step first
    autocast_calls[0][0] = "loop"
    with run.tracker:
        run.trainer.fit(run.data.train, run.data.val, epochs=1)  # the budget's plan, not `epochs`, sets the length
    probe = {(device, d) for phase, device, d in autocast_calls[1:] if phase == "probe"}
    loop = {(device, d) for phase, device, d in autocast_calls[1:] if phase == "loop"}
    assert probe == loop == {("cpu", dtype)}
    assert sum(phase == "loop" for phase, *_ in autocast_calls[1:]) == run.trainer.global_step  # one per step


def test_bench_measures_through_the_run_step(compose_train, autocast_calls: list) -> None:
    from cnnlab.data.build import build_data
    from cnnlab.training.bench import measure_variant

    cfg = compose_train([*TINY, "trainer.amp=true", "+bench.seconds=0.01", "+bench.compile=false"])
    data = build_data(cfg.dataset, cfg.batch_size, cfg.trainer.eval_batch_size, torch.device("cpu"), cfg.seed, False)
    autocast_calls[0][0] = "bench"
    row = measure_variant(cfg, data, torch.device("cpu"), "eager")
    assert row["train_images_per_s"] > 0
    assert {(device, d) for _, device, d in autocast_calls[1:]} == {("cpu", torch.bfloat16)}


def test_step_trains_and_steps_the_schedule_once_per_batch() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    step = TrainStep(
        model, optimizer, nn.CrossEntropyLoss(), device=torch.device("cpu"), amp_dtype=None, scheduler=scheduler
    )
    images, labels = torch.randn(16, 4), torch.randint(0, 3, (16,))
    first, _ = step(images, labels)
    for _ in range(20):
        loss, logits = step(images, labels)
    assert loss < first and not loss.requires_grad and logits.shape == (16, 3)
    assert scheduler.last_epoch == 21 and optimizer.param_groups[0]["lr"] == pytest.approx(0.5 / 22)
    assert not step.scaler.is_enabled()  # loss scaling is for float16 only


def test_budget_plan_counts_steps_and_a_validation_per_epoch() -> None:
    """100 s, 10 steps per epoch at 1 s plus a 5 s validation: six whole epochs (90 s), then 5 steps and their
    validation fill the last 10 s: the schedule ends with the budget, inside a partial seventh epoch."""
    from cnnlab.training.budget import BudgetPlan

    plan = BudgetPlan(budget_s=100.0, steps_per_epoch=10, step_s=1.0, eval_s=5.0, final_eval_s=5.0)
    assert plan.cost_s(0, 65) == 65 + 7 * 5 == 100
    assert plan.total_steps(used_s=0.0, done_steps=0) == 65
    assert plan.total_steps(used_s=98.0, done_steps=60) == 60  # nothing more fits
    assert plan.cost_s(15, 10) == 10 + 2 * 5  # from mid-epoch: that epoch's validation and the next one's
    # trainer.tta_every_epoch=false: plain 5 s validations, the last one with TTA takes 20 s
    tta_last = BudgetPlan(budget_s=100.0, steps_per_epoch=10, step_s=1.0, eval_s=5.0, final_eval_s=20.0)
    assert tta_last.cost_s(0, 52) == 52 + 5 * 5 + 20  # six validations, the last one with TTA
    assert tta_last.total_steps(used_s=0.0, done_steps=0) == 55  # 55 + 5 x 5 + 20 = 100


def test_budget_replans_from_the_measured_epoch() -> None:
    """A first epoch slowed down by a busy machine is not taken as the pace of the run, and a schedule a few
    steps from its end is finished rather than cut at a high learning rate."""
    from cnnlab.training.budget import BudgetPlan, StepBudget

    budget = StepBudget(
        BudgetPlan(budget_s=100.0, steps_per_epoch=10, step_s=2.0, eval_s=5.0, final_eval_s=5.0), total_steps=35
    )
    # epoch 1 took 30 s (the probe's pace), but its steady steps ran at 1 s: 70 s left hold 4 epochs + 5 steps
    assert budget.replan(used_s=30.0, done_steps=10, step_s=1.0, eval_s=5.0) == 55
    assert budget.replan(used_s=30.0, done_steps=10, step_s=1.0) == 55  # mid-epoch: the last validation time holds
    # the machine slowed: after epoch 5 only the end of the plan is left and nothing more fits
    small = StepBudget(
        BudgetPlan(budget_s=100.0, steps_per_epoch=10, step_s=1.0, eval_s=0.5, final_eval_s=0.5), total_steps=52
    )
    assert small.replan(used_s=99.5, done_steps=50, step_s=1.0, eval_s=0.5) == 52  # 2.5 s over: finished
    # the probe ran on a busy machine: 10 s per validation, 40 s for the last one with TTA. The first epoch's
    # validation took 2.5 s, so the last one is expected to take 10 s, not 40 s (which left room for 50 steps)
    busy = StepBudget(
        BudgetPlan(budget_s=100.0, steps_per_epoch=10, step_s=1.0, eval_s=10.0, final_eval_s=40.0), total_steps=20
    )
    assert busy.replan(used_s=12.5, done_steps=10, step_s=1.0, eval_s=2.5) == 72  # 62 steps + 6 x 2.5 + 10 = 87 s
    assert busy.plan.final_eval_s == 10.0
    assert busy.replan(used_s=20.0, done_steps=15, step_s=1.0) == 70  # mid-epoch: the validation times hold
    large = StepBudget(
        BudgetPlan(budget_s=100.0, steps_per_epoch=10, step_s=1.0, eval_s=0.5, final_eval_s=0.5), total_steps=60
    )
    assert large.replan(used_s=99.5, done_steps=50, step_s=1.0, eval_s=0.5) == 50  # 10.5 s over: stopped
