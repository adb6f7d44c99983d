"""Writes the sweep report when a multirun ends, whichever sweeper ran it (grid included)."""

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger("cnnlab")


class SweepReportCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from cnnlab.sweeps.report import write_report

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            write_report(sweep_dir)
        except Exception:  # the trials' results are safe in their folders; say how to retry the report
            log.exception("the sweep finished but its report failed; retry with: cnnlab report %s", sweep_dir)
