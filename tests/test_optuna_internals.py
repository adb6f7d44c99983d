"""The private Optuna and Hydra attributes cnnlab relies on (cnnlab.sweeps.optuna_internals) still exist.

When one of these fails after an upgrade, the adapter module is the one place to change.
"""

import optuna
import pytest
from hydra.core.utils import JobReturn, JobStatus

from cnnlab.errors import UserError
from cnnlab.sweeps.optuna_internals import InternalsChanged, job_error, live_trial


def test_live_trial_reaches_a_trial_asked_elsewhere() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.ask()
    asked = study.ask()  # trial 1, as a sweep's process would have asked it
    trial = live_trial(study, asked.number)
    trial.report(0.5, step=1)
    trial.set_user_attr("status", "running")
    frozen = study.trials[asked.number]
    assert frozen.intermediate_values == {1: 0.5} and frozen.user_attrs["status"] == "running"


def test_job_error_returns_a_failed_jobs_exception_as_a_value() -> None:
    failed, ran = JobReturn(), JobReturn()
    failed.status, failed._return_value = JobStatus.FAILED, UserError("lr=-1 is invalid")
    ran.status, ran._return_value = JobStatus.COMPLETED, 0.9
    assert isinstance(job_error(failed), UserError) and job_error(ran) is None
    with pytest.raises(UserError):  # the public accessor re-raises, which is why the adapter reads the field
        failed.return_value  # noqa: B018


def test_a_missing_internal_names_itself_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    study = optuna.create_study()
    study.ask()
    monkeypatch.delattr(optuna.study.Study, "_study_id", raising=False)
    monkeypatch.setattr(study, "__dict__", {k: v for k, v in vars(study).items() if k != "_study_id"})
    with pytest.raises(
        InternalsChanged, match=r"cnnlab needs Study._storage and Study._study_id, which optuna .* no longer"
    ):
        live_trial(study, 0)
