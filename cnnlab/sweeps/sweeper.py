"""The cnnlab sweep: ask Optuna for trials, launch them through Hydra's launcher, tell Optuna what they reached.

Up to `n_jobs` trials run at once: with cnnlab's launchers (parallel, slurm) the next trial is asked as
soon as any one ends; Hydra's own launchers (joblib, submitit_local) run them in batches of n_jobs. Each
trial's folder is named by its trial number. Everything the sweep knows is in the study's storage: run
the same command with the same hydra.sweep.dir to continue a stopped sweep.
"""

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.storages import BaseStorage
from optuna.trial import Trial, TrialState

from cnnlab.cli_errors import describe
from cnnlab.errors import UserError, find_user_error
from cnnlab.folder_lock import exclusive
from cnnlab.run_folder import SWEEP_LOCK, SWEEP_ONLY, RunStatus, override_key, read_metrics
from cnnlab.sweeps.launch import BatchLaunch, TrialLauncher, job_run_dir, trial_launcher, whole_setting
from cnnlab.sweeps.optuna_internals import job_error, live_trial
from cnnlab.sweeps.space import SearchSpace, parse_search_space
from cnnlab.sweeps.study import check_objectives, counts_toward_budget, objective_values, requeue, storage_for
from cnnlab.sweeps.trial import prunes

log = logging.getLogger("cnnlab")
# The per-epoch metrics a trial can report to a pruner, and the direction in which each improves.
EPOCH_METRICS = {"val/acc": "maximize", "val/loss": "minimize", "train/acc": "maximize", "train/loss": "minimize"}
MISTAKE_TRIALS = 3  # trials failing with a user error, and none succeeding, before the sweep stops
INTERRUPTED = "the sweep was interrupted; run the same command again to continue it"


class SweepInterrupted(UserError):
    exit_code = 130


def _first_value(distribution: optuna.distributions.BaseDistribution) -> Any:
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return distribution.choices[0]
    return distribution.low


def _failure(ret: JobReturn) -> str | None:
    """A failed job's reason in one line: the user error's message, or the crash's type and first line."""
    if ret.status != JobStatus.FAILED:
        return None
    error = job_error(ret)
    if error is None:
        return "the job failed without an exception"
    described = describe(error)  # a user's mistake, or a config that cannot be built, as cnnlab prints it
    if described is not None:
        return described
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"


class OptunaSweep:
    """The sweeper's work; hydra_plugins.cnnlab_sweeper wraps it so Hydra can find it as a plugin.

    The arguments are conf/hydra/sweeper/cnnlab.yaml; the trials read `report_metric` there too.
    """

    def __init__(
        self,
        sampler: DictConfig,
        objectives: Sequence[str],
        directions: Sequence[str],
        n_trials: int,
        n_jobs: int,
        seed: int,
        storage: str | None,
        study_name: str,
        report_metric: str,
        params: DictConfig | None = None,
    ) -> None:
        self.sampler_cfg = sampler
        self.objectives = check_objectives(objectives, directions)
        self.n_trials = whole_setting(n_trials, "hydra.sweeper.n_trials", 1)
        self.n_jobs = whole_setting(n_jobs, "hydra.sweeper.n_jobs", 1)
        self.seed = whole_setting(seed, "hydra.sweeper.seed", 0)
        self.storage = storage
        self.study_name = str(study_name)
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        self.report_metric = str(report_metric)
        self.failures_at_start: list[JobReturn] = []

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the sweep logs each trial itself
        space = parse_search_space(arguments, self.params)
        self._check_pruning()
        self._check_composes(space)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        # a database or journal named by the user is opened first, so a bad URL leaves no sweep folder behind
        given_storage = storage_for(self.storage, sweep_dir) if self.storage not in (None, "") else None
        with exclusive(
            sweep_dir,
            SWEEP_LOCK,
            f"another sweep is running in {sweep_dir}; wait for it or use another hydra.sweep.dir",
        ):
            study = self._open_study(sweep_dir, space, given_storage or storage_for(None, sweep_dir))
            OmegaConf.save(self.config, sweep_dir / "multirun.yaml")  # only once the study is known to match
            return self._run(study, space, sweep_dir)

    def _check_pruning(self) -> None:
        if not prunes(self.config.pruner):
            return
        try:
            instantiate(self.config.pruner)  # each trial builds it again; a bad setting should stop the sweep first
        except Exception as e:  # noqa: BLE001 - Optuna's pruners raise ValueError or TypeError
            reason = str(e.__cause__ or e).strip().splitlines()[0][:160]
            raise UserError(f"the pruner cannot be built ({reason}); fix the pruner.* overrides") from e
        if len(self.objectives) > 1:
            raise UserError("pruning needs a single objective: use pruner=none with several hydra.sweeper.objectives")
        direction = EPOCH_METRICS.get(self.report_metric)
        if direction is None:
            raise UserError(
                f"hydra.sweeper.report_metric={self.report_metric!r} is unknown; "
                f"choose one of {', '.join(EPOCH_METRICS)}"
            )
        metric, wanted = next(iter(self.objectives.items()))
        if direction != wanted:
            raise UserError(
                f"hydra.sweeper.report_metric={self.report_metric} improves in the other direction than the objective "
                f"{metric} ({wanted}): report a metric that moves like it, e.g. "
                f"{next(k for k, d in EPOCH_METRICS.items() if d == wanted)}"
            )

    def _check_composes(self, space: SearchSpace) -> None:
        """Compose one trial's config now, so a mistyped key fails before any trial starts."""
        sample = space.trial_overrides({k: _first_value(d) for k, d in space.distributions.items()})
        self.hydra_context.config_loader.load_sweep_config(master_config=self.config, sweep_overrides=sample)

    def _open_study(self, sweep_dir: Path, space: SearchSpace, storage: BaseStorage) -> optuna.Study:
        directions = list(self.objectives.values())
        study = optuna.create_study(
            storage=storage, study_name=self.study_name, directions=directions, load_if_exists=True
        )
        recorded = {
            "space": space.describe(),
            "objectives": [[metric, direction] for metric, direction in self.objectives.items()],  # order matters
            "fixed settings": sorted(o for o in space.fixed if override_key(o) not in SWEEP_ONLY),
        }
        if self.storage not in (None, ""):  # a shared database: one study name, one sweep folder
            recorded["sweep folder"] = str(sweep_dir.resolve())
        if study.user_attrs.get("space") is None:
            for key, value in recorded.items():
                study.set_user_attr(key, value)
        for key, value in recorded.items():
            if study.user_attrs.get(key) != value:
                raise UserError(
                    f"study '{self.study_name}' in {sweep_dir if self.storage is None else self.storage} was made with "
                    f"other {key} ({study.user_attrs.get(key)}); repeat its command to continue it, or give a new "
                    "hydra.sweep.dir (or hydra.sweeper.study_name)"
                )
        # A resumed sweep must not replay the first sweep's random draws: offset the seed by the trials so far.
        try:
            study.sampler = instantiate(self.sampler_cfg, seed=self.seed + len(study.trials))
        except Exception as e:  # noqa: BLE001 - a sampler refuses its settings with ValueError or TypeError
            reason = str(e.__cause__ or e).strip().splitlines()[0][:160]
            raise UserError(f"the sampler cannot be built ({reason}); fix the hydra.sweeper.sampler.* overrides") from e
        retried = self._recover(study, sweep_dir)
        if (sweep_dir / str(len(study.trials))).exists():
            raise UserError(f"{sweep_dir} already holds run folders of another study: give a new hydra.sweep.dir")
        done = sum(counts_toward_budget(t) for t in study.trials)
        if done or retried:
            log.info(
                "continuing the sweep in %s: %d of %d trials done%s",
                sweep_dir,
                done,
                self.n_trials,
                f", retrying interrupted trials {retried}" if retried else "",
            )
        return study

    def _recover(self, study: optuna.Study, sweep_dir: Path) -> list[int]:
        """Trials still RUNNING after a sweep died or stopped: record those whose run ended, requeue the rest."""
        retried = []
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            run_dir = sweep_dir / str(frozen.number)
            if RunStatus.of(read_metrics(run_dir), RunStatus.RUNNING).is_final:
                self._record(study, live_trial(study, frozen.number), run_dir, failure=None)
            else:
                requeue(study, frozen)
                retried.append(frozen.number)
        return retried

    def _run(self, study: optuna.Study, space: SearchSpace, sweep_dir: Path) -> list[JobReturn]:
        """Keep up to n_jobs trials running: ask the next one as soon as one ends (a batch at a time with Hydra's
        own launchers, which return only when a whole batch has ended)."""
        launch = trial_launcher(self.launcher, self.n_jobs)
        in_flight = min(self.n_jobs, launch.capacity)
        running: dict[int, Trial] = {}
        returns: list[JobReturn] = []
        try:
            while True:
                left = self.n_trials - sum(counts_toward_budget(t) for t in study.trials) - len(running)
                for _ in range(min(in_flight - len(running), left)):
                    trial = study.ask(space.distributions)
                    running[trial.number] = trial
                    launch.submit(trial.number, space.trial_overrides(trial.params))
                if not running:
                    break
                finished = launch.wait_any()
                outcomes = [
                    self._record(study, running.pop(number), job_run_dir(ret, sweep_dir, number), _failure(ret))
                    for number, ret in finished
                ]
                returns.extend(ret for _, ret in finished)
                if RunStatus.INTERRUPTED in outcomes:  # Ctrl-C (or SIGTERM) reached a trial: stop the whole sweep
                    raise SweepInterrupted(INTERRUPTED)
                self._stop_if_misconfigured(study, [ret for _, ret in finished])
        except KeyboardInterrupt:  # in this process: the trials in other processes are stopped here
            self._stop(launch, study, sweep_dir)
            raise SweepInterrupted(INTERRUPTED) from None
        except BaseException:
            self._stop(launch, study, sweep_dir)
            raise
        self._log_best(study)
        return returns

    def _stop(self, launch: TrialLauncher | BatchLaunch, study: optuna.Study, sweep_dir: Path) -> None:
        """Stop the trials still running (they save their checkpoints); they run again when the sweep continues."""
        launch.stop()
        self._recover(study, sweep_dir)

    def _record(self, study: optuna.Study, trial: Trial, run_dir: Path, failure: str | None) -> RunStatus:
        """Tell the study how the trial ended; return its status (completed, pruned, failed, diverged, interrupted).

        `failure` is the job's error when it raised; the rest is read from the run's metrics.json.
        """
        trial.set_user_attr("run_dir", str(run_dir))
        metrics = read_metrics(run_dir) or {}
        for key in ("train_time_s", "epochs_completed", "pruned_at_epoch", "macs", "latency_ms"):
            if metrics.get(key) is not None:  # for people who open the study itself (optuna-dashboard)
                trial.set_user_attr(key, metrics[key])
        status = RunStatus.of(metrics, RunStatus.FAILED)
        if failure is not None and status not in (RunStatus.INTERRUPTED, RunStatus.DIVERGED):
            trial.set_user_attr("error", failure)
            status = RunStatus.FAILED
        values = objective_values(metrics, self.objectives) if status == RunStatus.COMPLETED else None
        if isinstance(values, str):
            trial.set_user_attr("error", values)
            status = RunStatus.FAILED
        trial.set_user_attr("status", status.value)
        if not status.is_final:
            return RunStatus.INTERRUPTED  # the run never ended (Ctrl-C, SIGTERM): the caller requeues it
        if status == RunStatus.COMPLETED:
            study.tell(trial, values)
            shown = ", ".join(f"{m}={v:.4g}" for m, v in zip(self.objectives, values))
            log.info("trial %d: %s in %.1f s", trial.number, shown, metrics.get("train_time_s", math.nan))
        elif status == RunStatus.PRUNED:
            study.tell(trial, state=TrialState.PRUNED)
            log.info("trial %d: pruned after epoch %s", trial.number, metrics.get("pruned_at_epoch"))
        else:
            message = trial.user_attrs.get("error") or metrics.get("message") or status
            study.tell(trial, state=TrialState.FAIL)
            log.warning("trial %d %s: %s; the sweep goes on (log: %s)", trial.number, status, message, run_dir)
        return status

    def _stop_if_misconfigured(self, study: optuna.Study, results: Sequence[JobReturn]) -> None:
        """Stop when the first trials all failed: the rest would fail the same way (a typo, a model that cannot
        be built). A few failures are tolerated first, since a search space may hold some invalid points.
        """
        self.failures_at_start.extend(ret for ret in results if ret.status == JobStatus.FAILED)
        if any(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials):
            return
        needed = min(MISTAKE_TRIALS, self.n_trials)
        if len(self.failures_at_start) < needed:
            return
        first = self.failures_at_start[0]
        user_error = find_user_error(job_error(first))
        if user_error is not None and all(find_user_error(job_error(r)) for r in self.failures_at_start):
            raise user_error
        raise UserError(
            f"the first {len(self.failures_at_start)} trials failed ({_failure(first)}); the others would fail the "
            f"same way: fix it and run the same command again (trial logs: {self.config.hydra.sweep.dir})"
        )

    def _log_best(self, study: optuna.Study) -> None:
        if not any(t.state == TrialState.COMPLETE for t in study.trials):
            log.warning("no trial completed; see the trials' logs in %s", self.config.hydra.sweep.dir)
        elif len(self.objectives) == 1:
            best = study.best_trial
            log.info("best trial %d: %s=%.4g", best.number, next(iter(self.objectives)), best.value)
        else:
            log.info("%d trials on the Pareto front", len(study.best_trials))
