"""The fast-training options of the efficient CNN: whitening stem, dirac init, maxpool_all, BatchNorm settings,
trainer.bias_lr_factor and the linear schedule."""

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from cnnlab.checkpoints.store import load_checkpoint
from cnnlab.config.validate import validate_train_config
from cnnlab.errors import UserError
from cnnlab.models.blocks import ConvBNAct, init_identity
from cnnlab.models.efficient import EfficientCNN
from cnnlab.models.whitening import EPS, PatchWhitening, patch_covariance
from cnnlab.training.components import build_model, configured_optimizer
from cnnlab.training.run import prepare_run
from cnnlab.training.schedules import linear

from conftest import TINY

# The fast CIFAR-10 recipes' layout: whitening stem, three stages of two dense convs, each stage max-pooled
FAST_LAYOUT = {
    "in_channels": 3,
    "num_classes": 10,
    "image_size": [32, 32],
    "stem": "whiten",
    "widths": [64, 256, 256],
    "depths": [2, 2, 2],
    "blocks": ["conv", "conv", "conv"],
    "downsample": "maxpool_all",
    "activation": "gelu",
    "se_ratio": 0,
}


def correlated_images(count: int = 300, seed: int = 0) -> torch.Tensor:
    """Smooth images whose colour channels and neighbouring pixels are strongly correlated, like photographs."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, 16, 16, generator=generator)
    smooth = F.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    mixing = torch.tensor([[1.0, 0.8, 0.6], [0.8, 1.0, 0.8], [0.6, 0.8, 1.0]])
    colour = torch.einsum("oc,nchw->nohw", mixing, smooth) + 0.05 * torch.randn(count, 3, 32, 32, generator=generator)
    return 3 * (colour - 1.2)  # about zero mean and unit scale, as normalised inputs are


def test_whitening_filters_whiten_the_patches_and_are_frozen() -> None:
    images = correlated_images()
    layer = PatchWhitening(3)
    layer.init_from_data(images)
    assert layer.weight.shape == (24, 3, 2, 2)
    out = F.conv2d(images.double(), layer.weight.double())
    assert out.shape == (300, 24, 31, 31)
    assert torch.equal(out[:, 12:], -out[:, :12])  # each direction with both signs
    values = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)
    covariance = torch.cov(values.T)
    eigenvalues = torch.linalg.eigvalsh(patch_covariance(images)[1]).flip(0)
    # each direction ends at variance eigenvalue / (eigenvalue + eps): 1 where the data has variance
    expected = torch.diag(eigenvalues / (eigenvalues + EPS))
    assert torch.allclose(covariance, expected, atol=1e-4)
    kept = int((eigenvalues > 200 * EPS).sum())  # the directions eps barely damps
    assert kept >= 4
    assert torch.allclose(covariance[:kept, :kept], torch.eye(kept, dtype=torch.float64), atol=5e-3)
    # frozen: a buffer, so no optimizer ever holds it, and a training step leaves it as it is
    model = EfficientCNN(**{**FAST_LAYOUT, "widths": [8, 16, 16]})
    model.init_from_data(images)
    assert not layer.weight.requires_grad and "features.0.weight" not in dict(model.named_parameters())
    before = model.features[0].weight.clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    F.cross_entropy(model(images[:16]), torch.arange(16) % 10).backward()
    optimizer.step()
    assert torch.equal(model.features[0].weight, before)
    assert "features.0.weight" in model.state_dict()


def test_whitening_stem_is_computed_for_a_new_run_and_restored_on_resume(cnnlab_in_process, tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = cnnlab_in_process("train", *TINY, "model.stem=whiten", f"hydra.run.dir={run}")
    assert first.returncode == 0, first.stderr
    assert "whitening stem: filters from the 2x2 patches of 500 training images" in first.stdout + first.stderr
    trained = load_checkpoint(run / "checkpoints" / "last.pt")
    weight = trained["model"]["features.0.weight"]
    assert weight.shape == (24, 3, 2, 2) and weight.abs().sum() > 0
    resumed = cnnlab_in_process("train", f"resume={run}", "epochs=3")
    assert resumed.returncode == 0, resumed.stderr
    assert "whitening stem" not in resumed.stdout + resumed.stderr
    final = load_checkpoint(run / "checkpoints" / "last.pt")
    assert final["epoch"] == 3
    assert torch.equal(final["model"]["features.0.weight"], weight)


@pytest.mark.parametrize(("in_channels", "out_channels", "groups"), [(8, 12, 1), (12, 8, 1), (6, 6, 6)])
def test_dirac_init_makes_a_conv_the_identity_on_its_first_channels(
    in_channels: int, out_channels: int, groups: int
) -> None:
    torch.manual_seed(0)
    block = ConvBNAct(in_channels, out_channels, 3, groups=groups)
    init_identity(block)
    x = torch.randn(2, in_channels, 7, 7)
    shared = min(in_channels, out_channels)
    out = block[0](x)
    assert torch.allclose(out[:, :shared], x[:, :shared])
    if out_channels > in_channels:  # the other output channels keep their default (random) init
        assert block[0].weight[shared:].abs().sum() > 0


def test_dirac_init_applies_to_every_conv_followed_by_batchnorm() -> None:
    model = EfficientCNN(**{**FAST_LAYOUT, "stem": "conv", "blocks": ["conv", "ds", "ds"], "init": "dirac"})
    convs = [m[0] for m in model.modules() if isinstance(m, ConvBNAct)]
    assert len(convs) == 1 + 2 + 2 * 2 * 2  # the stem, two dense blocks, four depthwise-separable ones
    for conv in convs:
        x = torch.randn(1, conv.in_channels, 5, 5)
        shared = min(conv.in_channels, conv.out_channels)
        assert torch.allclose(conv(x)[:, :shared], x[:, :shared])


def test_maxpool_all_pools_every_stage() -> None:
    model = EfficientCNN(**FAST_LAYOUT)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    shapes = []
    x = torch.randn(2, 3, 32, 32)
    for layer in model.features:
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes[0] == (24, 31, 31)  # the whitening stem: 2x2 filters without padding, 2 x 3 x 4 channels
    assert [s for s, layer in zip(shapes, model.features) if isinstance(layer, nn.MaxPool2d)] == [
        (64, 15, 15),
        (256, 7, 7),
        (256, 3, 3),
    ]
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    conv_stem = EfficientCNN(**{**FAST_LAYOUT, "stem": "conv"})
    assert conv_stem.features(torch.randn(1, 3, 32, 32)).shape == (1, 256, 4, 4)
    # the map-size check counts the first stage's pooling and the whitening stem's lost pixel
    EfficientCNN(**{**FAST_LAYOUT, "stem": "conv", "image_size": [16, 16]})
    with pytest.raises(UserError, match=r"3 max-pooled stages, too many for \(16, 16\) inputs .*whitening stem"):
        EfficientCNN(**{**FAST_LAYOUT, "image_size": [16, 16]})


def test_pool_before_norm_pools_inside_the_opening_blocks() -> None:
    """The same maps and weights as pooling after the block, with BatchNorm and the activation on the pooled maps:
    with frozen BN scales (positive) and ReLU, both orders compute the same function in eval mode."""
    # (widths that change at every opening: a residual opening block would add its input before the outer pool)
    layout = {**FAST_LAYOUT, "widths": [64, 128, 256], "activation": "relu", "bn_frozen_scale": True}
    after = EfficientCNN(**layout)
    inside = EfficientCNN(**layout, pool_before_norm=True)
    assert sum(isinstance(m, nn.MaxPool2d) for m in inside.modules()) == 3
    assert not any(isinstance(layer, nn.MaxPool2d) for layer in inside.features)  # all inside the blocks
    openings = [block for block in inside.features if getattr(block, "residual", None) is False]
    assert len(openings) == 3 and all(not b.residual for b in openings)
    # the same parameters under new names: copy them across in order, then compare outputs
    for norm in (m for m in after.modules() if isinstance(m, nn.BatchNorm2d)):
        norm.running_mean.uniform_(-0.5, 0.5)
        norm.bias.data.uniform_(-0.5, 0.5)
    assert [p.shape for p in after.state_dict().values()] == [p.shape for p in inside.state_dict().values()]
    inside.load_state_dict(dict(zip(inside.state_dict(), after.state_dict().values())))
    after.eval(), inside.eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(after(x), inside(x), atol=1e-5)
    # a depthwise-separable opening pools after its depthwise conv: the pointwise conv runs on the pooled maps
    separable = EfficientCNN(**{**layout, "blocks": ["conv", "ds", "ds"]}, pool_before_norm=True)
    opening = separable.features[4]
    assert isinstance(opening.depthwise[1], nn.MaxPool2d) and not opening.residual
    assert opening(torch.randn(1, 64, 15, 15)).shape == (1, 128, 7, 7)


def test_max_head_takes_the_largest_response() -> None:
    model = EfficientCNN(**FAST_LAYOUT, head_pool="max").eval()
    features = model.features(torch.randn(2, 3, 32, 32))
    expected = model.head[-1](features.flatten(2).max(dim=2).values)
    assert torch.allclose(model.head(features), expected)


def test_batchnorm_momentum_and_frozen_scale_reach_every_batchnorm() -> None:
    model = EfficientCNN(**{**FAST_LAYOUT, "blocks": ["conv", "ds", "ds"], "bn_momentum": 0.6, "bn_frozen_scale": True})
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 2 + 2 * 2 * 2
    trained = {id(p) for p in model.parameters()}
    for norm in norms:
        assert norm.momentum == 0.6
        assert torch.equal(norm.weight, torch.ones(norm.num_features)) and not norm.weight.requires_grad
        assert id(norm.weight) not in trained and id(norm.bias) in trained
    default = EfficientCNN(**{**FAST_LAYOUT, "blocks": ["conv", "ds", "ds"]})
    assert all(m.momentum == 0.1 and m.weight.requires_grad for m in default.modules() if isinstance(m, nn.BatchNorm2d))
    assert default.state_dict().keys() == model.state_dict().keys()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"stem": "patch"}, "model.stem='patch' is unknown"),
        ({"init": "zeros"}, "model.init='zeros' is unknown"),
        ({"downsample": "pool"}, "model.downsample='pool' is unknown; choose one of stride, maxpool, maxpool_all"),
        ({"bn_momentum": 0}, r"model.bn_momentum=0 is invalid: must be a number in \(0, 1\]"),
        ({"bn_momentum": 1.5}, "model.bn_momentum=1.5 is invalid"),
        ({"bn_frozen_scale": "no"}, "model.bn_frozen_scale='no' is invalid"),
        ({"pool_before_norm": 1}, "model.pool_before_norm=1 is invalid: must be true or false"),
        ({"head_pool": "mean"}, "model.head_pool='mean' is unknown; choose one of avg, max"),
    ],
)
def test_bad_model_values_are_user_errors(override: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        EfficientCNN(**{**FAST_LAYOUT, **override})


def test_bad_trainer_values_are_user_errors(compose_train) -> None:
    with pytest.raises(UserError, match="trainer.bias_lr_factor=0 is invalid: must be a number > 0"):
        validate_train_config(compose_train(["experiment=smoke", "trainer.bias_lr_factor=0"]))
    with pytest.raises(UserError, match="model.bn_frozen_scale='maybe' is invalid: must be true or false"):
        validate_train_config(compose_train(["experiment=smoke", "model.bn_frozen_scale=maybe"]))


def group_of(optimizer: torch.optim.Optimizer, param: nn.Parameter) -> dict:
    return next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))


@pytest.mark.parametrize("no_decay_norm_bias", [False, True])
def test_bias_lr_factor_groups(compose_train, no_decay_norm_bias: bool) -> None:
    overrides = ["experiment=smoke", "lr=0.1", "weight_decay=5e-4", "trainer.bias_lr_factor=64"]
    cfg = compose_train([*overrides, f"trainer.no_decay_norm_bias={no_decay_norm_bias}"])
    model = build_model(cfg, (3, 32, 32), 10)
    optimizer = configured_optimizer(cfg, model)
    named = dict(model.named_parameters())
    biases = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(biases) > 5
    assert sorted(id(p) for g in optimizer.param_groups for p in g["params"]) == sorted(map(id, named.values()))
    for bias in biases:
        group = group_of(optimizer, bias)
        assert group["lr"] == pytest.approx(6.4)
        assert group["weight_decay"] == (0.0 if no_decay_norm_bias else pytest.approx(5e-4 / 64))
    # the head's bias moves the logits directly: it keeps the base learning rate
    assert group_of(optimizer, model.head[-1].bias)["lr"] == 0.1
    conv = named["features.0.0.weight"]
    assert group_of(optimizer, conv)["lr"] == 0.1 and group_of(optimizer, conv)["weight_decay"] == 5e-4
    norm_weight = named["features.0.1.weight"]
    assert group_of(optimizer, norm_weight)["lr"] == 0.1
    # the schedule scales every group alike: biases stay at 64x the others' learning rate
    scheduler = instantiate(compose_train(["scheduler=linear"]).scheduler)(optimizer, total_steps=10, steps_per_epoch=5)
    for _ in range(4):
        optimizer.step()
        scheduler.step()
    assert group_of(optimizer, biases[0])["lr"] == pytest.approx(64 * group_of(optimizer, conv)["lr"])
    assert group_of(optimizer, conv)["lr"] == pytest.approx(0.1 * (1 - 4 / 9))


def test_a_checkpoint_whose_optimizer_groups_differ_is_a_one_line_error(compose_train, tmp_path: Path) -> None:
    """Checkpoints written when the bias factor also covered the head's bias group the parameters differently:
    resuming one names init_from instead of torch's ValueError."""
    run = prepare_run(compose_train([*TINY, "trainer.bias_lr_factor=8"]), tmp_path)
    state = run.trainer.state_dict()
    groups = state["optimizer"]["param_groups"]
    groups[-1]["params"].append(groups[0]["params"].pop())  # a parameter in another group, as then
    with pytest.raises(UserError, match="does not fit this run's parameter groups.*init_from=<run folder>"):
        run.trainer.load_state_dict(state)


def test_bias_lr_factor_composes_with_the_backbone_factor(compose_train) -> None:
    cfg = compose_train(["experiment=smoke", "lr=0.1", "trainer.bias_lr_factor=8", "trainer.backbone_lr_factor=0.5"])
    model = build_model(cfg, (3, 32, 32), 10)
    optimizer = configured_optimizer(cfg, model)
    assert group_of(optimizer, model.head[-1].bias)["lr"] == pytest.approx(0.1)
    assert group_of(optimizer, model.head[-1].weight)["lr"] == pytest.approx(0.1)
    assert group_of(optimizer, model.features[0][1].bias)["lr"] == pytest.approx(0.4)
    assert group_of(optimizer, model.features[0][0].weight)["lr"] == pytest.approx(0.05)
    plain = configured_optimizer(compose_train(["experiment=smoke"]), model)  # factor 1: the groups as before
    assert [len(g["params"]) for g in plain.param_groups] == [
        sum(p.ndim > 1 for p in model.parameters()),
        sum(p.ndim <= 1 for p in model.parameters()),
    ]


def learning_rates(steps: int, **kwargs: float) -> list[float]:
    """The learning rate each of `steps` steps trains with (lr 1), and the one after the last step."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = linear(optimizer, total_steps=steps, steps_per_epoch=5, **kwargs)
    rates = []
    for _ in range(steps + 1):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_linear_schedule_reaches_end_factor_at_the_last_step() -> None:
    rates = learning_rates(20, end_factor=0.1)
    assert rates[0] == 1.0 and rates[19] == pytest.approx(0.1) and rates[20] == pytest.approx(0.1)
    steps = [b - a for a, b in zip(rates[:19], rates[1:20])]
    assert steps == pytest.approx([-0.9 / 19] * 19)
    warm = learning_rates(20, warmup_fraction=0.1, end_factor=0.0)
    assert warm[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert warm[19] == 0.0
    decay = [b - a for a, b in zip(warm[2:19], warm[3:20])]
    assert decay == pytest.approx([-1 / 17] * 17)
