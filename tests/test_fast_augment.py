"""Fast-training augmentation and test-time augmentation: alternating flips, reflect-padded crops, TTA levels."""

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from cnnlab.config.choices import TTA_LEVELS, tta_level
from cnnlab.config.validate import validate_eval_config, validate_train_config
from cnnlab.data.augment import BatchAugment, image_coins, random_crop, translate
from cnnlab.data.build import DataBundle
from cnnlab.data.loader import BatchLoader
from cnnlab.data.types import ImageSet
from cnnlab.errors import UserError
from cnnlab.training.bench import work_per_epoch
from cnnlab.training.budget import probe_plan
from cnnlab.training.metrics import TTA_VIEWS, predict, tta_views
from cnnlab.training.resume import config_changes
from cnnlab.training.run import prepare_run, run_fit
from cnnlab.training.step import TrainStep

from conftest import TINY

SIZE = 6


def position_coded(n: int, channels: int = 2) -> torch.Tensor:
    """Images whose pixels are unique within the image and never 0, so any window or mirror is recognisable."""
    base = 1 + torch.arange(channels * SIZE * SIZE).view(channels, SIZE, SIZE)
    return (base[None] + torch.arange(n)[:, None, None, None] % 100).to(torch.uint8)


def identity_loader(
    images: torch.Tensor, augment: BatchAugment | None, batch_size: int = 16, seed: int = 0, shuffle: bool = True
) -> BatchLoader:
    """A loader whose batches are the augmented pixels / 255 (mean 0, std 1), labelled with each image's position."""
    data = ImageSet(images, torch.arange(len(images)))
    zeros, ones = torch.zeros(images.shape[1]), torch.ones(images.shape[1])
    return BatchLoader(data, batch_size, zeros, ones, shuffle=shuffle, drop_last=False, augment=augment, seed=seed)


def as_pixels(batch: torch.Tensor) -> torch.Tensor:
    return (batch * 255).round().to(torch.uint8)


def mirrored_per_image(loader: BatchLoader, epoch: int) -> dict[int, bool]:
    """Position -> whether the epoch served that image mirrored (each one must be served as it is or mirrored)."""
    loader.set_epoch(epoch)
    images = loader.data.images
    seen = {}
    for batch, labels in loader:
        for shown, position in zip(as_pixels(batch), labels.tolist()):
            original = images[position]
            assert torch.equal(shown, original) or torch.equal(shown, original.flip(-1))
            seen[position] = bool(torch.equal(shown, original.flip(-1)))
    assert sorted(seen) == list(range(len(images)))
    return seen


def alternate(**kwargs: object) -> BatchAugment:
    return BatchAugment(crop_padding=0, flip=True, flip_mode="alternate", **kwargs)


def test_alternating_flip_shows_every_image_both_ways_in_any_two_consecutive_epochs() -> None:
    loader = identity_loader(position_coded(200), alternate())
    epochs = [mirrored_per_image(loader, epoch) for epoch in range(4)]
    assert 60 < sum(epochs[0].values()) < 140, "epoch 0 mirrors a random half"
    for before, after in zip(epochs, epochs[1:]):
        assert all(after[i] != before[i] for i in before), "each image flips its view from one epoch to the next"
    # Tied to (seed, position, epoch) only: another batch size and batch order decide the same way...
    regrouped = identity_loader(position_coded(200), alternate(), batch_size=7)
    assert mirrored_per_image(regrouped, 2) == epochs[2]
    # ...and another seed draws another first epoch.
    reseeded = identity_loader(position_coded(200), alternate(), seed=1)
    assert mirrored_per_image(reseeded, 0) != epochs[0]


def test_image_coins_are_fair_and_differ_between_seeds() -> None:
    positions = torch.arange(20_000)
    coins = image_coins(0, positions)
    assert abs(coins.float().mean().item() - 0.5) < 0.02
    assert abs((coins[1:] == coins[:-1]).float().mean().item() - 0.5) < 0.02, "neighbours must not be correlated"
    assert abs((coins != image_coins(1, positions)).float().mean().item() - 0.5) < 0.02
    assert torch.equal(image_coins(0, positions[5_000:7_000]), coins[5_000:7_000])


@pytest.mark.parametrize("flip_mode", ["random", "alternate"])
def test_resumed_epoch_repeats_the_same_batches(flip_mode: str) -> None:
    """Stopping after k batches and continuing from (k, generator state) in a new loader gives the rest exactly."""

    def fresh() -> BatchLoader:
        augment = BatchAugment(crop_padding=2, flip=True, flip_mode=flip_mode, pad_mode="reflect")
        loader = identity_loader(position_coded(90), augment, batch_size=16, seed=3)
        loader.set_epoch(1)
        return loader

    full = list(fresh())
    batches = fresh().iterate()
    stream = iter(batches)
    for _ in range(2):
        next(stream)
    resumed = list(fresh().iterate(2, batches.generator_state()))
    assert len(resumed) == len(full) - 2
    for (images, labels), (again, again_labels) in zip(full[2:], resumed):
        assert torch.equal(images, again) and torch.equal(labels, again_labels)


def unique_windows(out: torch.Tensor, padded: torch.Tensor, padding: int) -> list[tuple[int, int]]:
    """The one (dy, dx) window of each padded image that each output equals."""
    offsets = []
    for i in range(len(out)):
        matches = [
            (dy, dx)
            for dy in range(2 * padding + 1)
            for dx in range(2 * padding + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + SIZE, dx : dx + SIZE])
        ]
        assert len(matches) == 1, f"image {i} is not exactly one window of its padded input"
        offsets.append(matches[0])
    return offsets


def test_reflect_crop_is_a_window_of_the_reflect_padded_image_at_the_zero_crops_offset() -> None:
    images, padding = position_coded(40), 2
    out = random_crop(images, padding, torch.Generator().manual_seed(0), pad_mode="reflect")
    assert out.shape == images.shape and out.dtype == torch.uint8
    reflected = F.pad(images.float(), (padding,) * 4, mode="reflect").to(torch.uint8)
    offsets = unique_windows(out, reflected, padding)
    assert len(set(offsets)) >= 8
    zeros = random_crop(images, padding, torch.Generator().manual_seed(0))
    assert unique_windows(zeros, F.pad(images, (padding,) * 4), padding) == offsets
    assert not (out == 0).any(), "a reflected border has no zero pixels"


def test_translate_is_a_window_of_the_reflect_padded_image() -> None:
    images = torch.rand(3, 2, 5, 7)
    padded = F.pad(images, (2,) * 4, mode="reflect")
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            assert torch.equal(translate(images, dy, dx), padded[:, :, 2 + dy : 7 + dy, 2 + dx : 9 + dx])


def small_model() -> nn.Module:
    torch.manual_seed(0)
    classes = 64  # one per image position: the loaders label images with their positions
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * SIZE * SIZE, classes))


def test_flip_translate_tta_is_the_weighted_mean_of_six_views() -> None:
    model = small_model()
    images = torch.randint(0, 256, (20, 2, SIZE, SIZE), dtype=torch.uint8)
    loader = identity_loader(images, None, batch_size=8, shuffle=False)
    x = images.float() / 255
    with torch.no_grad():
        centre = (model(x) + model(x.flip(3))) / 2
        shifted = []
        for view in (x, x.flip(3)):
            padded = F.pad(view, (1, 1, 1, 1), mode="reflect")
            shifted += [model(padded[:, :, :SIZE, :SIZE]), model(padded[:, :, 2:, 2:])]  # up-left, down-right
        expected = 0.5 * centre + 0.5 * torch.stack(shifted).mean(0)
    logits, labels = predict(model, loader, tta="flip_translate")
    assert torch.allclose(logits, expected, atol=1e-5) and torch.equal(labels, torch.arange(20))
    assert torch.allclose(predict(model, loader, tta="flip")[0], centre, atol=1e-5)
    assert torch.equal(predict(model, loader, tta=True)[0], predict(model, loader, tta="flip")[0])
    assert torch.equal(predict(model, loader, tta=False)[0], predict(model, loader)[0])
    assert not torch.allclose(logits, centre, atol=1e-5)


def test_tta_levels_name_their_views_and_true_false_stay_aliases() -> None:
    assert tuple(TTA_VIEWS) == TTA_LEVELS
    assert [len(tta_views(level)) for level in TTA_LEVELS] == [1, 2, 6]
    assert all(sum(v.weight for v in tta_views(level)) == 1.0 for level in TTA_LEVELS)
    assert (tta_level(True), tta_level(False), tta_level("flip_translate")) == ("flip", "none", "flip_translate")
    with pytest.raises(ValueError, match="none, flip, flip_translate"):
        tta_level("mirror")


def sgd_step(model: nn.Module) -> TrainStep:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    return TrainStep(model, optimizer, nn.CrossEntropyLoss(), device=torch.device("cpu"), amp_dtype=None)


def eval_forwards_of_the_probe(train: BatchLoader, val: BatchLoader, tta: str) -> int:
    """Forwards in eval mode while probe_plan times a run (the hook travels with the model into its copy)."""
    model, calls = small_model(), []
    model.register_forward_hook(lambda module, args, out: None if module.training else calls.append(1))
    probe_plan(model, sgd_step, train, val, budget_s=60.0, steps=2, tta=tta)
    return len(calls)


def test_time_budget_probe_times_every_tta_forward() -> None:
    """The planner's validation timing runs each view: 2 timed predicts (warm-up and timed) x the view count."""
    images = torch.randint(0, 256, (32, 2, SIZE, SIZE), dtype=torch.uint8)
    train, val = identity_loader(images, None, batch_size=8), identity_loader(images, None, batch_size=16)
    assert [eval_forwards_of_the_probe(train, val, level) for level in TTA_LEVELS] == [2, 4, 12]


def test_bench_counts_one_predicted_image_per_tta_view() -> None:
    images = torch.zeros(50, 2, SIZE, SIZE, dtype=torch.uint8)
    data = DataBundle(
        train=identity_loader(images[:40], None, batch_size=8),
        val=identity_loader(images[40:], None),
        test=None,
        classes=["a"],
        input_shape=(2, SIZE, SIZE),
    )
    predicted = [work_per_epoch(data, 8, tta).predict_images for tta in ("none", False, "flip", True, "flip_translate")]
    assert predicted == [10, 10, 20, 20, 60]
    assert work_per_epoch(data, 8, "flip").train_images == 40


def test_bad_augment_and_tta_values_are_one_line_errors(compose_train: Callable[..., DictConfig]) -> None:
    for override, valid in (
        ("dataset.augment.flip_mode=sometimes", "random, alternate"),
        ("dataset.augment.pad_mode=edge", "zeros, reflect"),
        ("trainer.tta=yes", "none, flip, flip_translate"),
    ):
        with pytest.raises(UserError, match=f"must be one of {valid}") as error:
            validate_train_config(compose_train(["experiment=smoke", override]))
        assert "\n" not in str(error.value) and override.split("=")[0] in str(error.value)
    good = ["dataset.augment.flip_mode=alternate", "dataset.augment.pad_mode=reflect", "trainer.tta=flip_translate"]
    validate_train_config(compose_train(["experiment=smoke", *good]))
    for tta in ("true", "false", "none"):  # the default, and the true/false of older configs
        validate_train_config(compose_train(["experiment=smoke", f"trainer.tta={tta}"]))


def test_eval_takes_the_same_tta_levels(tmp_path: Path) -> None:
    checkpoint = tmp_path / "run.pt"
    with zipfile.ZipFile(checkpoint, "w") as archive:
        archive.writestr("data.pkl", b"")

    def eval_config(tta: object) -> DictConfig:
        settings = {"split": "val", "device": "cpu", "trust_code": False, "batch_size": None, "data_root": None}
        return OmegaConf.create({"ckpt": str(checkpoint), "tta": tta, **settings})

    for tta in (*TTA_LEVELS, True, False):
        validate_eval_config(eval_config(tta))
    with pytest.raises(UserError, match="tta='crops' is invalid: must be one of none, flip, flip_translate"):
        validate_eval_config(eval_config("crops"))


def test_resume_reads_old_tta_switches_and_missing_augment_modes_as_before() -> None:
    saved = {"trainer": {"tta": True}, "dataset": {"augment": {"flip": True}}}
    current = {"trainer": {"tta": "flip"}, "dataset": {"augment": {"flip": True, "flip_mode": "random"}}}
    assert config_changes(saved, current) == []
    changed = {"trainer": {"tta": "flip_translate"}, "dataset": {"augment": {"flip": True, "flip_mode": "alternate"}}}
    assert config_changes(saved, changed) == [
        "dataset.augment.flip_mode: random -> alternate",
        "trainer.tta: flip -> flip_translate",
    ]


def test_a_run_trains_with_the_new_keys(compose_train: Callable[..., DictConfig], tmp_path: Path) -> None:
    overrides = [
        *TINY,
        "dataset.train_size=300",
        "dataset.augment.flip_mode=alternate",
        "dataset.augment.pad_mode=reflect",
        "trainer.tta=flip_translate",
    ]
    run = prepare_run(compose_train(overrides), tmp_path)
    augment = run.data.train.augment
    assert isinstance(augment, BatchAugment) and (augment.flip_mode, augment.pad_mode) == ("alternate", "reflect")
    assert run.trainer.tta == "flip_translate"
    best_val_acc = run_fit(run, tmp_path)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs_completed"] == 2 and best_val_acc > 0


@pytest.mark.parametrize("every_epoch, views_per_validation", [(True, [6, 6, 6]), (False, [1, 1, 6])])
def test_tta_every_epoch_false_keeps_the_views_for_the_last_validation(
    compose_train: Callable[..., DictConfig], tmp_path: Path, every_epoch: bool, views_per_validation: list[int]
) -> None:
    overrides = [*TINY, "epochs=3", "trainer.tta=flip_translate", f"trainer.tta_every_epoch={every_epoch}"]
    run = prepare_run(compose_train(overrides), tmp_path)
    trainer, epochs_of_forwards = run.trainer, []  # the epoch (0-based) each eval-mode forward validates
    trainer.model.register_forward_hook(
        lambda module, args, out: None if module.training else epochs_of_forwards.append(trainer.epoch)
    )
    trainer.fit(run.data.train, run.data.val, epochs=3)
    per_epoch = [epochs_of_forwards.count(epoch) // len(run.data.val) for epoch in range(3)]
    assert per_epoch == views_per_validation
