"""optimizer=muon: torch's Muon for the hidden layers' filters and matrices, Nesterov SGD for the rest, as one
optimizer that schedules, checkpoints and resumes exactly."""

import io
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from cnnlab.config.validate import validate_train_config
from cnnlab.errors import UserError
from cnnlab.training.components import build_model, configured_optimizer
from cnnlab.training.finetune import head_module
from cnnlab.training.muon import MUON, Muon, MuonWithSGD, orthogonalise


def schedule(step: int) -> float:
    return 1.0 / (1 + step)


def random_grads(*params: torch.Tensor) -> None:
    for p in params:
        p.grad = torch.randn_like(p)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_filters_get_muons_update_and_the_rest_sgds_under_one_schedule(memory_format: torch.memory_format) -> None:
    torch.manual_seed(0)
    filters = nn.Parameter(torch.randn(8, 3, 3, 3).contiguous(memory_format=memory_format))
    bias = nn.Parameter(torch.randn(8))
    # the matrix Muon sees: rows are output channels, columns the filter in the order it lies in memory
    order = (0, 1, 2, 3) if memory_format == torch.contiguous_format else (0, 2, 3, 1)
    matrix = nn.Parameter(filters.detach().permute(order).reshape(8, -1).clone())
    bias_ref = nn.Parameter(bias.detach().clone())
    adapter = MuonWithSGD(
        [{"params": [bias]}, {"params": [filters], MUON: True}], lr=0.1, muon_lr=0.03, weight_decay=0.01
    )
    muon = Muon([matrix], lr=0.03, momentum=0.95, weight_decay=0.01)
    sgd = torch.optim.SGD([bias_ref], lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01)
    schedules = [LambdaLR(opt, schedule) for opt in (adapter, muon, sgd)]
    for _ in range(3):
        random_grads(filters, bias)
        matrix.grad = filters.grad.permute(order).reshape(8, -1).clone()
        bias_ref.grad = bias.grad.clone()
        for opt in (adapter, muon, sgd):
            opt.step()
        for s in schedules:
            s.step()
        assert torch.equal(filters.detach().permute(order).reshape(8, -1), matrix.detach())
        assert torch.equal(bias.detach(), bias_ref.detach())
    assert [g["lr"] for g in adapter.param_groups] == [0.1 * schedule(3), 0.03 * schedule(3)]


@pytest.mark.parametrize("shape", [(8, 27), (27, 8)])
def test_muon_follows_torchs_muon_in_float32(shape: tuple[int, int]) -> None:
    """The same steps as torch.optim.Muon up to its bfloat16 rounding, and computed in float32 on the CPU: a float64
    run of the same iterations agrees to float32 precision, which bfloat16 (8 bits of mantissa) cannot."""
    torch.manual_seed(0)
    start = torch.randn(*shape)
    ours, torchs = nn.Parameter(start.clone()), nn.Parameter(start.clone())
    optimizers = [Muon([ours], lr=0.02, weight_decay=0.01), torch.optim.Muon([torchs], lr=0.02, weight_decay=0.01)]
    for _ in range(3):
        grad = torch.randn(*shape)
        for param, optimizer in zip((ours, torchs), optimizers):
            param.grad = grad.clone()
            optimizer.step()
    assert torch.allclose(ours, torchs, atol=2e-3) and not torch.equal(ours, torchs)
    assert optimizers[0].state_dict()["state"][0].keys() == optimizers[1].state_dict()["state"][0].keys()
    update = torch.randn(*shape)
    coefficients = (3.4445, -4.775, 2.0315)
    result = orthogonalise(update, coefficients, 5, 1e-7)
    assert result.dtype == torch.float32 and result.shape == shape
    exact = orthogonalise(update.double(), coefficients, 5, 1e-7)
    assert exact.dtype == torch.float64 and torch.allclose(result.double(), exact, atol=1e-5)
    singular = torch.linalg.svdvals(result)
    assert singular.min() > 0.5 and singular.max() < 1.5  # pushed towards 1 from a spread-out start


def test_normalized_weights_take_the_same_steps_whatever_the_filters_scale() -> None:
    """Behind BatchNorm a filter's scale is free: with normalize_weights the step depends only on its direction, and
    the matrix keeps a norm of sqrt(rows) (plus the step); without it a larger matrix takes relatively smaller steps."""
    torch.manual_seed(0)
    start = torch.randn(8, 27)
    for normalize in (True, False):
        small, large = nn.Parameter(start.clone()), nn.Parameter(7 * start)
        optimizers = [Muon([p], normalize_weights=normalize, lr=0.05, momentum=0.6) for p in (small, large)]
        for _ in range(3):
            grad = torch.randn(8, 27)
            for param, optimizer in zip((small, large), optimizers):
                param.grad = grad.clone()
                optimizer.step()
        assert torch.allclose(small, large, atol=1e-5) == normalize
        if normalize:  # rescaled to sqrt(8) before the last step, which moved it by at most lr x sqrt(8)
            assert abs(small.norm() - 8**0.5) <= 0.05 * 8**0.5 * 1.1
    assert optimizers[0].state_dict()["param_groups"][0]["normalize_weights"] is False


def test_configured_groups_send_hidden_filters_to_muon_and_head_to_sgd(compose_train) -> None:
    cfg = compose_train(["experiment=smoke", "optimizer=muon", "trainer.backbone_lr_factor=0.5"])
    model = build_model(cfg, (3, 32, 32), 10)
    optimizer = configured_optimizer(cfg, model)
    head = {id(p) for p in head_module(model).parameters()}
    filters = {id(m.weight) for m in model.modules() if isinstance(m, nn.Conv2d)}
    muon_ids = {id(p) for g in optimizer.param_groups if g[MUON] for p in g["params"]}
    assert muon_ids == filters and not muon_ids & head
    assert all(p.ndim == 4 for g in optimizer.param_groups if g[MUON] for p in g["params"])
    assert optimizer.param_groups[0]["lr"] == cfg.lr and not optimizer.param_groups[0][MUON]  # what the log shows
    muon_lrs = {g["lr"] for g in optimizer.param_groups if g[MUON]}
    assert muon_lrs == {cfg.optimizer.muon_lr * 0.5}  # backbone_lr_factor scales Muon's part as well
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))


@pytest.mark.parametrize("normalize", ["false", "true"])
def test_state_dict_round_trip_continues_identically(compose_train, normalize: str) -> None:
    cfg = compose_train(["experiment=smoke", "optimizer=muon", f"optimizer.muon_normalize_weights={normalize}"])
    torch.manual_seed(0)
    models = [build_model(cfg, (3, 16, 16), 10) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    first = configured_optimizer(cfg, models[0])
    for _ in range(2):
        random_grads(*models[0].parameters())
        first.step()
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    models[1].load_state_dict(models[0].state_dict())
    second = configured_optimizer(cfg, models[1])
    second.load_state_dict(torch.load(buffer, weights_only=True))  # what a checkpoint can hold
    for _ in range(2):
        random_grads(*models[0].parameters())
        for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
            b.grad = a.grad.clone()
        first.step()
        second.step()
    for a, b in zip(models[0].parameters(), models[1].parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optimizer.muon_lr=0", "optimizer.muon_lr=0 is invalid: must be a number > 0"),
        ("optimizer.muon_momentum=1.5", "optimizer.muon_momentum=1.5 is invalid: must be a number in [0, 1)"),
        ("optimizer.muon_normalize_weights=maybe", "optimizer.muon_normalize_weights='maybe' is invalid: must be true"),
    ],
)
def test_bad_muon_settings_are_one_line_errors(compose_train, override: str, message: str) -> None:
    with pytest.raises(UserError, match=re.escape(message)):
        validate_train_config(compose_train(["optimizer=muon", override]))


def interrupt_after_first_epoch(run: subprocess.Popen, folder: Path) -> None:
    """SIGINT once the first epoch's checkpoint is written: the run stops after its current step."""
    deadline = time.monotonic() + 180
    while not (folder / "checkpoints" / "last.pt").exists():
        assert run.poll() is None and time.monotonic() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    assert run.wait(timeout=120) == 130
