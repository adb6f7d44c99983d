"""A non-editable install ships the configs: build the wheel and compose from it, away from the source tree."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import cnnlab, hydra
from hydra import compose, initialize_config_module
import cnnlab.config.resolvers
with initialize_config_module(config_module="cnnlab.conf", version_base="1.3"):
    cfg = compose(config_name="train", overrides=["experiment=smoke"])
print(cnnlab.__file__)
print(cfg.dataset.name, cfg.model.widths)
import inspect
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
print(*[inspect.getfile(p) for p in Plugins.instance().discover(Sweeper) if p.__name__ == "CnnlabSweeper"])
"""


def test_wheel_ships_every_config(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("cnnlab-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {f"cnnlab/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert sources and sources <= names

    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    probe = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=elsewhere,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert probe.returncode == 0, probe.stderr
    location, composed, sweeper = probe.stdout.strip().splitlines()
    assert location.startswith(str(site))
    assert composed == "synthetic [16, 32, 64]"
    # Hydra's own plugin scan finds the search sweeper in the installed wheel (no help from the cnnlab CLI)
    assert sweeper.startswith(str(site / "hydra_plugins" / "cnnlab_sweeper"))
