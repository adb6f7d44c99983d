"""The speed presets, flip TTA in validation, the throughput helpers and `cnnlab bench` (figures live in benchmarks)."""

import itertools
import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from torch import nn

from cnnlab.config.duration import parse_duration
from cnnlab.config.validate import validate_train_config
from cnnlab.data.loader import BatchLoader
from cnnlab.data.types import ImageSet
from cnnlab.errors import UserError
from cnnlab.models.blocks import ConvBlock, DepthwiseSeparable, SqueezeExcite
from cnnlab.models.efficient import EfficientCNN
from cnnlab.models.stats import count_macs
from cnnlab.training.bench import RunWork, choose_fastest
from cnnlab.training.components import build_model, configured_optimizer
from cnnlab.training.resume import config_changes
from cnnlab.training.run import prepare_run
from cnnlab.training.step import TrainStep
from cnnlab.training.throughput import endless, time_steps
from cnnlab.training.trainer import Trainer

from conftest import run_dirs


@pytest.mark.parametrize(("experiment", "budget_s"), [("cifar10_fast", 1800), ("cifar10_10min", 600), (None, None)])
def test_speed_presets_and_the_default_put_dense_convs_early(
    compose_train, experiment: str | None, budget_s: int | None
) -> None:
    cfg = compose_train([f"experiment={experiment}"] if experiment else [])
    validate_train_config(cfg)
    assert cfg.dataset.name == "cifar10"
    if budget_s is not None:
        assert parse_duration(cfg.trainer.time_budget) == budget_s and cfg.trainer.tta == "flip_translate"
        assert cfg.model.stem == "whiten" and cfg.optimizer._target_.endswith("MuonWithSGD")
    net = instantiate(cfg.model, in_channels=3, num_classes=10, image_size=[32, 32])
    assert isinstance(net, EfficientCNN)
    blocks = [m for m in net.features if isinstance(m, ConvBlock | DepthwiseSeparable)]
    assert isinstance(blocks[0], ConvBlock)  # dense where the maps are large: depthwise layers are memory-bound
    assert all(isinstance(b.se, nn.Identity) for b in blocks if isinstance(b, ConvBlock))  # SE only on small maps
    if experiment is None:  # the default layout ends separable with squeeze-excitation on the small maps
        assert isinstance(blocks[-1], DepthwiseSeparable) and isinstance(blocks[-1].se, SqueezeExcite)


def test_se_ratio_per_stage_needs_one_entry_per_stage() -> None:
    layout = {
        "in_channels": 3,
        "num_classes": 10,
        "image_size": [32, 32],
        "widths": [8, 16],
        "depths": [1, 1],
        "blocks": ["conv", "ds"],
    }
    net = EfficientCNN(**layout, se_ratio=[0, 0.5])
    assert [type(m).__name__ for m in net.modules() if isinstance(m, SqueezeExcite)] == ["SqueezeExcite"]
    with pytest.raises(UserError, match="one per stage"):
        EfficientCNN(**layout, se_ratio=[0.25])
    with pytest.raises(UserError, match="fractions in"):
        EfficientCNN(**layout, se_ratio=[0, 2])
    for wrong in (None, True, "abc", [0, "x"], [0, [1]]):
        with pytest.raises(UserError, match="one number per stage"):
            EfficientCNN(**layout, se_ratio=wrong)


def test_maxpool_downsampling_pools_after_a_full_resolution_block() -> None:
    layout = {
        "in_channels": 3,
        "num_classes": 10,
        "image_size": [32, 32],
        "stem_channels": 8,
        "widths": [8, 16, 32],
        "depths": [1, 1, 1],
        "blocks": ["conv", "conv", "ds"],
        "se_ratio": 0,
    }
    pooled, strided = EfficientCNN(**layout, downsample="maxpool"), EfficientCNN(**layout)
    assert sum(isinstance(m, nn.MaxPool2d) for m in pooled.modules()) == 2
    x = torch.randn(2, 3, 32, 32)
    assert pooled.features(x).shape == strided.features(x).shape == (2, 32, 8, 8)
    assert count_macs(pooled, (3, 32, 32)) > 1.5 * count_macs(strided, (3, 32, 32))  # its convs see full resolution
    with pytest.raises(UserError, match="model.downsample='avg' is unknown"):
        EfficientCNN(**layout, downsample="avg")


def plain_step(model: nn.Module) -> TrainStep:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return TrainStep(
        model,
        optimizer,
        nn.CrossEntropyLoss(),
        device=torch.device("cpu"),
        amp_dtype=None,
        scheduler=torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0),
    )


def test_flip_tta_validation_averages_each_image_with_its_mirror() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    images = torch.randint(0, 256, (20, 3, 8, 8), dtype=torch.uint8)
    data = ImageSet(images, torch.randint(0, 10, (20,)))
    loader = BatchLoader(data, 8, torch.zeros(3), torch.ones(3), shuffle=False, drop_last=False)
    trainer = Trainer(plain_step(model), tracker=None, tta="flip")
    logits, labels = trainer.predict(loader)
    x = images.float() / 255
    with torch.no_grad():
        expected = (model(x) + model(x.flip(3))) / 2
    assert torch.allclose(logits, expected, atol=1e-5)
    assert torch.equal(labels, data.labels)
    plain = Trainer(plain_step(model), tracker=None)
    assert not torch.allclose(plain.predict(loader)[0], expected, atol=1e-5)


def test_time_steps_warms_up_then_times_at_least_the_minimum_steps() -> None:
    calls = []
    timing = time_steps(lambda: calls.append(1) or 5, torch.device("cpu"), seconds=0.0, warmup=2, min_steps=3)
    assert len(calls) == 5 and timing.steps == 3 and timing.images_per_s > 0
    assert list(itertools.islice(endless([1, 2]), 5)) == [1, 2, 1, 2, 1]  # a time box may outlast an epoch


def test_bench_weighs_compile_time_and_validation_against_the_run_length() -> None:
    results = {
        "channels_last": {"train_images_per_s": 1000.0, "inference_images_per_s": 3000.0, "warmup_s": 1.0},
        "compiled": {"train_images_per_s": 1250.0, "inference_images_per_s": 3000.0, "warmup_s": 30.0},
    }
    assert choose_fastest(results, RunWork(10_000)) == "channels_last"  # 11 s against 38 s
    assert choose_fastest(results, RunWork(1_000_000)) == "compiled"  # 1001 s against 830 s
    results["compiled"]["inference_images_per_s"] = 500.0  # slow validation can outweigh faster training
    assert choose_fastest(results, RunWork(1_000_000, predict_images=200_000)) == "channels_last"


def test_resume_treats_settings_added_later_as_their_old_behaviour() -> None:
    current = {"model": {"downsample": "stride"}, "trainer": {"tta": "none"}}
    assert config_changes({"model": {}, "trainer": {}}, current) == []
    changed = config_changes(
        {"model": {}, "trainer": {}}, {"model": {"downsample": "maxpool"}, "trainer": {"tta": "flip"}}
    )
    assert changed == ["model.downsample: stride -> maxpool", "trainer.tta: none -> flip"]


def test_run_passes_the_tta_level_to_the_trainer(compose_train, tmp_path: Path) -> None:
    overrides = ["experiment=smoke", "dataset.train_size=300", "dataset.val_size=100", "dataset.test_size=100"]
    for tta, level in (("true", "flip"), ("false", "none")):  # the older true/false name flip and none
        run = prepare_run(compose_train([*overrides, f"trainer.tta={tta}"]), tmp_path / tta)
        run.tracker.close()
        assert run.trainer.tta == level


def test_bench_measures_each_variant_and_recommends_the_fastest(run_cnnlab, tmp_path: Path) -> None:
    result = run_cnnlab("bench", "experiment=smoke", "bench.seconds=0.3", "bench.compile=false")
    assert result.returncode == 0, result.stderr
    (folder,) = [p.parent for p in (tmp_path / "outputs" / "bench").rglob("bench.json")]
    summary = json.loads((folder / "bench.json").read_text())
    assert set(summary["variants"]) == {"eager", "channels_last"}
    for row in summary["variants"].values():
        assert row["train_images_per_s"] > 0 and row["inference_images_per_s"] > 0
    fastest = summary["fastest"]
    epochs = summary["epochs"]
    assert epochs == 3  # experiment=smoke
    work = RunWork(summary["train_images_per_epoch"] * epochs, summary["predict_images_per_epoch"] * epochs)
    assert fastest == choose_fastest(summary["variants"], work)
    expected = (
        "trainer.channels_last=true compile=false" if fastest == "channels_last" else "trainer.channels_last=false"
    )
    assert summary["overrides"].startswith(expected)
    assert (
        f"fastest for 3 epochs with validation, warm-up included: {fastest}; "
        f"train with  cnnlab train ... {summary['overrides']}" in result.stdout
    )
    assert f"{fastest} *" in result.stdout  # the table marks the row it recommends
    assert not run_dirs(tmp_path / "outputs" / "runs")  # measuring trains nothing for keeps


@pytest.mark.parametrize("experiment", ["cifar10_10min", "cifar10_fast"])
def test_every_rung_of_the_ablation_ladder_is_a_config_that_builds(experiment: str, monkeypatch) -> None:
    """bench_ablation.py runs for an hour before its table: each rung must compose, pass the checks and build its
    model and optimizer (switching the preset's Muon to SGD also has to drop the Muon-only settings)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "benchmarks"))
    from bench_ablation import check_ladder, compose_train, ladder, rung_overrides

    rungs = ladder(experiment)
    check_ladder(experiment, rungs)
    for rung in range(len(rungs)):
        cfg = compose_train([f"experiment={experiment}", *rung_overrides(rungs, rung)])
        validate_train_config(cfg)
        optimizer = configured_optimizer(cfg, build_model(cfg, (3, 32, 32), 10))
        assert ("Muon" in type(optimizer).__name__) == (rung == len(rungs) - 1), (rung, type(optimizer).__name__)
