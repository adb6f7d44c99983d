"""The process a launcher=parallel trial runs in: `python -m cnnlab.sweeps.worker JOB_FILE RESULT_FILE`.

It runs the pickled TrialJob and writes how it ended. A trial whose sweep process has died stops itself
(after its current step, saving its checkpoint), so a sweep continued later never trains beside it.
"""

import os
import pickle
import signal
import sys
import threading
import time
from pathlib import Path

from hydra.core.utils import JobReturn
from omegaconf import DictConfig, OmegaConf

from cnnlab.atomic import atomic_bytes_write
from cnnlab.sweeps.launch import TrialJob, failed_return
from cnnlab.sweeps.optuna_internals import job_error

PARENT_CHECK_S = 2.0


def stop_when_orphaned(parent: int) -> None:
    """Send this process the Ctrl-C the sweep can no longer send once it has died."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_S)
    os.kill(os.getpid(), signal.SIGINT)


def plain(config: DictConfig | None) -> DictConfig | None:
    return None if config is None else OmegaConf.create(OmegaConf.to_container(config))


def result_bytes(ret: JobReturn) -> bytes:
    """The job's result, its configs made plain: Hydra's plugin scan in this process defined their structured
    classes (BasicSweeperConf, ...) anew, and pickle cannot name a class that is not the one its module holds."""
    ret.cfg, ret.hydra_cfg = plain(ret.cfg), plain(ret.hydra_cfg)
    try:
        return pickle.dumps(ret)
    except Exception as e:  # noqa: BLE001 - what a task raised may not pickle; its text still says what happened
        error = job_error(ret) or e
        return pickle.dumps(failed_return(ret.overrides or [], RuntimeError(f"{type(error).__name__}: {error}")))


def main(job_file: str, result_file: str) -> None:
    threading.Thread(target=stop_when_orphaned, args=(os.getppid(),), daemon=True).start()
    job: TrialJob = pickle.loads(Path(job_file).read_bytes())
    try:
        ret = job()
    except Exception as e:  # noqa: BLE001 - the trial could not even start (its config): the sweep records why
        ret = failed_return(job.overrides, e)
    atomic_bytes_write(result_bytes(ret), Path(result_file))


if __name__ == "__main__":
    main(*sys.argv[1:])
