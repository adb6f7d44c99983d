"""The only place cnnlab touches private attributes of Optuna and Hydra; everything else uses their public API.

Two things have no public form:
- a live `optuna.trial.Trial` for a trial that another process asked (a sweep's trial reports its epochs
  from its own process; a restarted sweep records trials the dead one left RUNNING);
- the exception of a failed Hydra job as a value (`JobReturn.return_value` re-raises it).
A newer Optuna or Hydra that renames them fails here with a message that says so, and
tests/test_optuna_internals.py checks them against the installed versions.
"""

from importlib.metadata import version

import optuna
from hydra.core.utils import JobReturn, JobStatus


class InternalsChanged(RuntimeError):
    """An installed Optuna or Hydra no longer has an internal cnnlab relies on."""


def _changed(package: str, what: str, error: AttributeError) -> InternalsChanged:
    return InternalsChanged(
        f"cnnlab needs {what}, which {package} {version(package)} no longer has ({error}); "
        f"install the {package} version in cnnlab's requirements (pip install -e .)"
    )


def live_trial(study: optuna.Study, number: int) -> optuna.trial.Trial:
    """A Trial handle for the study's trial `number`, to report to, prune, or tell, from any process."""
    try:
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    except AttributeError as e:
        raise _changed("optuna", "Study._storage and Study._study_id", e) from e
    return optuna.trial.Trial(study, trial_id)


def job_error(ret: JobReturn) -> BaseException | None:
    """The exception a failed job raised, or None when it did not fail."""
    if ret.status != JobStatus.FAILED:
        return None
    try:
        error = ret._return_value
    except AttributeError as e:
        raise _changed("hydra-core", "JobReturn._return_value", e) from e
    return error if isinstance(error, BaseException) else None
