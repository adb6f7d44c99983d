"""Model shapes for MNIST and CIFAR inputs, the efficient CNN's building blocks, and the cost report."""

import pytest
import torch
from hydra.utils import instantiate

from cnnlab.errors import UserError
from cnnlab.models.blocks import DepthwiseSeparable, SqueezeExcite
from cnnlab.models.efficient import EfficientCNN
from cnnlab.models.stats import count_macs, count_parameters


@pytest.mark.parametrize("model", ["efficient", "simple_cnn", "mlp"])
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32)])
def test_output_shape(compose_train, model: str, channels: int, size: int) -> None:
    cfg = compose_train([f"model={model}"])
    net = instantiate(cfg.model, in_channels=channels, num_classes=10, image_size=[size, size])
    net.eval()
    out = net(torch.randn(4, channels, size, size))
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()


def two_stage_efficient(kernel_size: int, se_ratio: float) -> EfficientCNN:
    return EfficientCNN(
        in_channels=3,
        num_classes=10,
        image_size=[32, 32],
        stem_channels=16,
        widths=[16, 32],
        depths=[2, 1],
        blocks=["ds", "ds"],
        kernel_size=kernel_size,
        se_ratio=se_ratio,
        activation="relu",
        dropout=0.0,
    )


def test_efficient_structure() -> None:
    net = two_stage_efficient(kernel_size=5, se_ratio=0.25)
    separable = [m for m in net.modules() if isinstance(m, DepthwiseSeparable)]
    assert len(separable) == 3
    depthwise = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels and m.kernel_size == (5, 5) for m in depthwise)
    assert any(isinstance(m, SqueezeExcite) for m in net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    no_se = two_stage_efficient(kernel_size=3, se_ratio=0.0)
    assert not any(isinstance(m, SqueezeExcite) for m in no_se.modules())


def test_squeeze_excite_rescales_channels() -> None:
    se = SqueezeExcite(8, 0.25)
    x = torch.randn(2, 8, 5, 5)
    y = se(x)
    scale = y / x
    # one factor in (0, 1) per (image, channel), constant over the spatial positions
    flat = scale.flatten(2)
    assert torch.allclose(flat, flat[..., :1].expand_as(flat), atol=1e-5)
    assert ((flat > 0) & (flat < 1)).all()


def test_too_many_downsamplings_is_a_user_error() -> None:
    with pytest.raises(UserError, match="28"):
        EfficientCNN(
            in_channels=1,
            num_classes=10,
            image_size=[28, 28],
            stem_channels=8,
            widths=[8] * 7,
            depths=[1] * 7,
            blocks=["conv"] * 7,
            kernel_size=3,
            se_ratio=0.0,
            activation="relu",
            dropout=0.0,
        )


def test_cost_report() -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1, bias=False))
    assert count_parameters(net) == 8 * 3 * 9
    assert count_macs(net, (3, 32, 32)) == 8 * 3 * 9 * 32 * 32
