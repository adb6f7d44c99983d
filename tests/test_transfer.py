"""Transfer learning: init_from= another run, trainer.finetune=head|gradual, and torchvision backbones, offline."""

from pathlib import Path

import pytest
import torch

from cnnlab.training.components import build_model

from conftest import call_cli

SMALL = [
    "experiment=smoke",
    "device=cpu",
    "dataset.train_size=250",
    "dataset.val_size=50",
    "dataset.test_size=50",
    "batch_size=50",
    "trainer.histograms=false",
]
HEAD = ("head.",)  # the efficient CNN's classifier


def weights(run: Path, name: str = "last.pt") -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / name, weights_only=True)["model"]


def backbone(state: dict[str, torch.Tensor], head: tuple[str, ...] = HEAD) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.startswith(head)}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 10-class run to start from, trained once for the module."""
    folder = tmp_path_factory.mktemp("source")
    code, _ = call_cli(["train", *SMALL, "epochs=1", f"hydra.run.dir={folder / 'run'}"], folder)
    assert code == 0, "the source run failed: see the captured output"
    return folder / "run"


def test_init_from_another_class_count_loads_the_body_and_replaces_the_head(
    cnnlab_in_process, source_run, tmp_path
) -> None:
    run = tmp_path / "five"
    result = cnnlab_in_process(
        "train",
        *SMALL,
        "epochs=1",
        "dataset.source.num_classes=5",
        f"init_from={source_run}",
        "trainer.finetune=head",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr
    assert "loaded 48 of this model's 50 tensors; skipped 2 (head.3.weight (shape (10, 64) there, (5, 64) here)" in (
        result.stdout + result.stderr
    )
    after = weights(run)
    assert after["head.3.weight"].shape == (5, 64)
    # head-only: every backbone tensor, BatchNorm running statistics and counters included, is the source's
    assert same(backbone(after), backbone(weights(source_run, "best.pt")))
    assert any("running_mean" in k for k in backbone(after))


@pytest.mark.slow  # 7 s: three runs, one stopped across the unfreeze and resumed
def test_gradual_trains_the_head_first_then_everything_and_resumes_across_the_unfreeze(
    cnnlab_in_process, source_run, tmp_path
) -> None:
    # a constant lr, so that 1 epoch resumed to 2 follows the same schedule as 2 epochs straight
    common = [
        "train",
        *SMALL,
        f"init_from={source_run}",
        "trainer.finetune=gradual",
        "trainer.head_epochs=1",
        "scheduler=none",
    ]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert cnnlab_in_process(*common, "epochs=2", f"hydra.run.dir={straight}").returncode == 0
    first = cnnlab_in_process(*common, "epochs=1", f"hydra.run.dir={split}")
    assert first.returncode == 0, first.stderr
    assert same(backbone(weights(split)), backbone(weights(source_run, "best.pt")))  # epoch 1: head only
    resumed = cnnlab_in_process("train", f"resume={split}", "epochs=2")
    assert resumed.returncode == 0, resumed.stderr
    assert not same(backbone(weights(split)), backbone(weights(source_run, "best.pt")))  # epoch 2: everything
    assert same(weights(split), weights(straight))  # the unfreeze resumes exactly


def test_a_torchvision_backbone_trains_from_a_local_weights_file(compose_train, cnnlab_in_process, tmp_path) -> None:
    torchvision = pytest.importorskip("torchvision")
    file = tmp_path / "shufflenet.pth"
    torch.manual_seed(1)
    torch.save(torchvision.models.get_model("shufflenet_v2_x0_5", weights=None).state_dict(), file)
    overrides = ["model=torchvision", "model.name=shufflenet_v2_x0_5", f"model.weights={file}"]
    cfg = compose_train([*SMALL, *overrides])
    assert cfg.dataset.normalization == "imagenet"
    built = build_model(cfg, (3, 32, 32), 10).state_dict()
    saved = torch.load(file, weights_only=True)
    assert same(backbone(built, ("backbone.fc.",)), {f"backbone.{k}": v for k, v in saved.items() if "fc." not in k})
    assert built["backbone.fc.weight"].shape == (10, 1024)
    result = cnnlab_in_process("train", *SMALL, *overrides, "epochs=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr


def test_default_weights_offline_fail_in_one_line(cnnlab_in_process, tmp_path) -> None:
    offline = {"HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "TORCH_HOME": str(tmp_path)}
    result = cnnlab_in_process("train", *SMALL, "model=torchvision", "model.name=shufflenet_v2_x0_5", env=offline)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
    assert "shufflenet_v2_x0_5's weights could not be downloaded" in lines[0]
    assert f"{tmp_path}/hub/checkpoints" in lines[0] and "model.weights=<path to a state dict>" in lines[0]


def test_batches_are_resized_on_the_device_to_the_input_size(compose_train) -> None:
    from cnnlab.data.build import build_data

    cfg = compose_train([*SMALL, "dataset.input_size=48", "dataset.normalization=imagenet"])
    data = build_data(cfg.dataset, 50, 100, torch.device("cpu"), 0, False)
    images, _ = next(iter(data.train))
    assert images.shape == (50, 3, 48, 48) and data.input_shape == (3, 48, 48)
    assert data.train.data.images.shape[-2:] == (32, 32)  # stored at their own size
    assert data.card()["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_dataset_classes_keeps_and_relabels_a_subset() -> None:
    from cnnlab.data.build import chosen_classes
    from cnnlab.data.types import ImageSet, SourceData
    from cnnlab.errors import UserError

    labels = torch.tensor([0, 1, 2, 3, 2, 1])
    images = labels.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).to(torch.uint8)
    source = SourceData(ImageSet(images, labels), ImageSet(images[:3], labels[:3]), ["a", "b", "c", "d"])
    kept = source.keep_classes(chosen_classes(["c", 1], source.classes))  # names or indices, any order
    assert kept.classes == ["b", "c"]
    assert kept.train.labels.tolist() == [0, 1, 1, 0]
    assert kept.train.gather(torch.arange(4))[:, 0, 0, 0].tolist() == [1, 2, 2, 1]
    assert kept.test is not None and kept.test.labels.tolist() == [0, 1]
    with pytest.raises(UserError, match="'e' is not one of its classes; choose from a, b, c, d"):
        chosen_classes(["a", "e"], source.classes)
