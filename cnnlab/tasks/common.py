"""What every task does around its work: find the run folder, record failures in the run's log."""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from cnnlab.errors import UserErrorExit, find_user_error
from cnnlab.sweeps.trial import in_cnnlab_sweep

log = logging.getLogger("cnnlab")
T = TypeVar("T")


def run_task(work: Callable[[DictConfig, Path], T], cfg: DictConfig) -> T:
    """Run `work(cfg, run_dir)`; a user error goes to the log file and leaves as UserErrorExit for the CLI.

    Inside a cnnlab search the error stays an ordinary exception: the launcher records the trial as
    failed and the search goes on (Hydra's grid sweeper stops at it, as before).
    """
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        return work(cfg, run_dir)
    except Exception as e:
        user_error = find_user_error(e)
        if user_error is None:
            log.exception("run failed; its folder is %s", run_dir)
            raise
        log.error("%s", user_error, extra={"file_only": True})
        if in_cnnlab_sweep():
            # the error itself, not its wrapper: joblib and submitit pickle it back, and pickling drops __cause__
            raise user_error from None
        raise UserErrorExit(user_error) from e
