"""What every task does around its work: find the run folder, record failures in the run's log."""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cnnlab.errors import UserError

log = logging.getLogger("cnnlab")
T = TypeVar("T")


def run_task(work: Callable[[DictConfig, Path], T], cfg: DictConfig) -> T:
    """Run `work(cfg, run_dir)`; a user error goes to the log file (Hydra prints it once on the terminal)."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return work(cfg, run_dir)
    except UserError as e:
        log.error("%s", e, extra={"file_only": True})
        raise
    except Exception:
        log.exception("run failed; its folder is %s", run_dir)
        raise
