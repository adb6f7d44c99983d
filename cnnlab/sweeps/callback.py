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
        from cnnlab.tracking.mlflow_sink import PARENT_ID_FILE, end_parent_run

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            write_report(sweep_dir)
        except Exception:  # the trials' results are safe in their folders; say how to retry the report
            log.exception("the sweep finished but its report failed; retry with: cnnlab report %s", sweep_dir)
        if (sweep_dir / PARENT_ID_FILE).is_file() and (settings := config.get("logger", {}).get("mlflow")):
            try:
                end_parent_run(sweep_dir, settings.tracking_uri)
            except Exception as e:  # noqa: BLE001 - the trials are recorded; only the parent's end state is missing
                log.warning("the sweep's MLflow parent run could not be closed (%s)", e)
