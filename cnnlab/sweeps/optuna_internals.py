"""The only place cnnlab touches private attributes of Optuna, Hydra and OmegaConf; everything else uses their
public API.

Three things have no public form:
- a live `optuna.trial.Trial` for a trial that another process asked (a sweep's trial reports its epochs
  from its own process; a restarted sweep records trials the dead one left RUNNING);
- the exception of a failed Hydra job as a value (`JobReturn.return_value` re-raises it);
- Hydra's global state for a job in another process without OmegaConf's resolvers, which are closures that
  pickle cannot carry (Hydra's own launchers use cloudpickle); that process registers its own.
A newer Optuna, Hydra or OmegaConf that renames them fails here with a message that says so, and
tests/test_optuna_internals.py and tests/test_launchers.py check them against the installed versions.
Optuna is imported only where needed: cnnlab's launchers use this module while Hydra scans its plugins.
"""

from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from omegaconf.basecontainer import BaseContainer

if TYPE_CHECKING:
    import optuna


class InternalsChanged(RuntimeError):
    """An installed Optuna or Hydra no longer has an internal cnnlab relies on."""


def _changed(package: str, what: str, error: AttributeError) -> InternalsChanged:
    return InternalsChanged(
        f"cnnlab needs {what}, which {package} {version(package)} no longer has ({error}); "
        f"install the {package} version in cnnlab's requirements (pip install -e .)"
    )


def live_trial(study: "optuna.Study", number: int) -> "optuna.trial.Trial":
    """A Trial handle for the study's trial `number`, to report to, prune, or tell, from any process."""
    import optuna

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


def hydra_state() -> dict[Any, Any]:
    """Hydra's singletons (config store, runtime, ...) for a job in another process, picklable."""
    return Singleton.get_state()["instances"]


def set_hydra_state(instances: dict[Any, Any]) -> None:
    """Hydra's singletons from `hydra_state()`, keeping this process's own resolvers (registered on import)."""
    try:
        resolvers = BaseContainer._resolvers
    except AttributeError as e:
        raise _changed("omegaconf", "BaseContainer._resolvers", e) from e
    Singleton.set_state({"instances": instances, "omegaconf_resolvers": resolvers})
