"""model=timm: timm backbones (an optional extra), offline: weights from the Hub cache or a local file, the
one-line errors when timm or the network is missing, and inputs mapped to the weights' own statistics."""

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cnnlab.errors import find_user_error
from cnnlab.training.components import build_model

from test_transfer import SMALL, backbone, same, weights

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

MODEL = "resnet10t"  # timm's smallest ResNet: 5 M parameters, its classifier is `fc`
NO_HUB = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_ETAG_TIMEOUT": "2"}  # nothing listens on port 9


def hub_env(tmp_path: Path) -> dict[str, str]:
    return {**NO_HUB, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}


def fill_hub_cache(cache: Path, name: str) -> dict[str, torch.Tensor]:
    """Weights for `name` laid out as the Hub client stores a download (refs/main -> a snapshot folder)."""
    config = timm.models.get_pretrained_cfg(name)
    repo = cache / f"models--{config.hf_hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    torch.manual_seed(3)
    state = {k: v.contiguous() for k, v in timm.create_model(name, pretrained=False).state_dict().items()}
    safetensors_torch.save_file(state, snapshot / "model.safetensors")
    return state


def user_error(build: Callable[[], object]) -> str:
    """The UserError message that `build` fails with (Hydra wraps what a _target_ raises)."""
    with pytest.raises(Exception) as info:
        build()
    found = find_user_error(info.value)
    assert found is not None, info.value
    return str(found)


def test_default_weights_come_from_the_hub_cache_and_head_only_keeps_them(run_cnnlab, tmp_path) -> None:
    """Already downloaded weights load with no network; trainer.finetune=head leaves every body tensor as loaded."""
    env = hub_env(tmp_path)
    saved = fill_hub_cache(Path(env["HF_HUB_CACHE"]), MODEL)
    run = tmp_path / "run"
    overrides = ["model=timm", f"model.name={MODEL}", "trainer.finetune=head", "epochs=1", f"hydra.run.dir={run}"]
    result = run_cnnlab("train", *SMALL, *overrides, env=env)
    assert result.returncode == 0, result.stderr
    assert f"timm's {MODEL} with its pretrained weights from {env['HF_HUB_CACHE']}" in result.stdout + result.stderr
    trained = weights(run)
    assert trained["backbone.fc.weight"].shape == (10, 512)
    assert same(backbone(trained, ("backbone.fc.",)), {f"backbone.{k}": v for k, v in saved.items() if "fc." not in k})


def test_default_weights_offline_fail_fast_in_one_line(run_cnnlab, tmp_path) -> None:
    result = run_cnnlab("train", *SMALL, "model=timm", f"model.name={MODEL}", env=hub_env(tmp_path), timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stdout + result.stderr, result.stderr
    assert f"timm's {MODEL} weights could not be downloaded (http://127.0.0.1:9: " in lines[0]
    assert str(tmp_path / "hf" / "hub") in lines[0] and "model.weights=<path to a state dict>" in lines[0]


def test_missing_timm_is_one_line_naming_the_extra(run_cnnlab, tmp_path) -> None:
    """As on a machine without the extra: an importable `timm` that fails to import."""
    (tmp_path / "shadow" / "timm").mkdir(parents=True)
    (tmp_path / "shadow" / "timm" / "__init__.py").write_text("raise ImportError('No module named timm')\n")
    result = run_cnnlab("train", *SMALL, "model=timm", env={"PYTHONPATH": str(tmp_path / "shadow")})
    assert result.returncode == 2
    expected = 'model=timm needs timm, not installed here: pip install -e ".[timm]" (or pip install cnnlab[timm])'
    assert result.stderr.strip() == f"cnnlab: error: {expected}"


def test_a_local_weights_file_loads_the_body_for_grayscale_and_new_classes(compose_train, tmp_path) -> None:
    file = tmp_path / "weights.pth"
    torch.manual_seed(4)
    torch.save(timm.create_model(MODEL, pretrained=False, in_chans=1).state_dict(), file)
    cfg = compose_train([*SMALL, "model=timm", f"model.name={MODEL}", f"model.weights={file}"])
    built = build_model(cfg, (1, 32, 32), 7).state_dict()
    saved = torch.load(file, weights_only=True)
    assert same(backbone(built, ("backbone.fc.",)), {f"backbone.{k}": v for k, v in saved.items() if "fc." not in k})
    assert built["backbone.fc.weight"].shape == (7, 512)
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    cfg = compose_train([*SMALL, "model=timm", f"model.name={MODEL}", f"model.weights={other}"])
    message = user_error(lambda: build_model(cfg, (3, 8, 8), 2))
    assert f"does not hold {MODEL}'s weights (1 unexpected and 84 missing" in message


def test_inputs_are_mapped_to_the_statistics_the_weights_expect(compose_train) -> None:
    """mobilevit_xxs expects pixels in [0, 1] (mean 0, std 1): ImageNet-normalised inputs are mapped back exactly."""
    from cnnlab.data.statistics import IMAGENET_MEAN, IMAGENET_STD

    model = build_model(compose_train(["model=timm", "model.name=mobilevit_xxs", "model.weights=none"]), (3, 64, 64), 3)
    pixels = torch.rand(2, 3, 8, 8)
    normalised = (pixels - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert model.remap
    torch.testing.assert_close(normalised * model.input_scale + model.input_shift, pixels)
    same_stats = build_model(compose_train(["model=timm", f"model.name={MODEL}", "model.weights=none"]), (3, 8, 8), 3)
    assert not same_stats.remap


def test_fixed_size_models_ask_for_their_input_size(compose_train) -> None:
    cfg = compose_train(["model=timm", "model.name=vit_tiny_patch16_224", "model.weights=none"])
    assert user_error(lambda: build_model(cfg, (3, 32, 32), 10)) == (
        "model.name=vit_tiny_patch16_224 takes only 224x224 inputs and these are 32x32: set dataset.input_size=224"
    )


def test_missing_timm_is_caught_before_any_data_is_loaded(compose_train, monkeypatch) -> None:
    from cnnlab.config.validate import validate_train_config

    monkeypatch.setitem(sys.modules, "timm", None)  # what an environment without timm looks like to the import system
    assert 'pip install -e ".[timm]"' in user_error(
        lambda: validate_train_config(compose_train([*SMALL, "model=timm"]))
    )
