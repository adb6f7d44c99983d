"""Search pieces without training anything: the space grammar, the report's ranking, recovery after a kill."""

import json
from pathlib import Path

import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from cnnlab.errors import UserError
from cnnlab.sweeps.results import best_command, best_trial_dir, load_sweep
from cnnlab.sweeps.space import format_value, parse_search_space

from conftest import random_search


def test_overrides_become_distributions_and_fixed_values() -> None:
    space = parse_search_space(
        [
            "lr=tag(log,interval(1e-4,1))",
            "weight_decay=interval(0,0.01)",
            "model.depths.1=tag(int,interval(1,4))",
            "model.widths.0=range(16,64,step=16)",
            "batch_size=choice(128,256)",
            "optimizer=adam,sgd",
            "epochs=3",
            "+trainer.extra=choice(a,b)",
        ]
    )
    d = space.distributions
    assert d["lr"] == FloatDistribution(1e-4, 1.0, log=True)
    assert d["weight_decay"] == FloatDistribution(0.0, 0.01)
    assert d["model.depths.1"] == IntDistribution(1, 4)
    assert d["model.widths.0"] == IntDistribution(16, 48, step=16)  # range() excludes its stop, as Hydra's grid does
    assert d["batch_size"] == CategoricalDistribution([128, 256])
    assert d["optimizer"] == CategoricalDistribution(["adam", "sgd"])
    assert space.fixed == ["epochs=3"]
    overrides = space.trial_overrides({"lr": 0.001, "batch_size": 256, "optimizer": "adam", "trainer.extra": "a"})
    assert overrides == ["epochs=3", "lr=0.001", "batch_size=256", "optimizer=adam", "+trainer.extra=a"]


def test_command_line_replaces_the_configs_params() -> None:
    space = parse_search_space(["lr=choice(0.1,0.2)"], params={"lr": "interval(0,1)", "batch_size": "choice(64,128)"})
    assert space.distributions["lr"] == CategoricalDistribution([0.1, 0.2])
    assert space.distributions["batch_size"] == CategoricalDistribution([64, 128])


@pytest.mark.parametrize(
    "value, text",
    [
        (0.1, "0.1"),
        (1e-05, "1e-05"),
        (3, "3"),
        (True, "true"),
        (None, "null"),
        ("ds", "ds"),
        ("a b", "'a b'"),
        ("null", "'null'"),
        ("it's", "'it\\'s'"),
    ],
)
def test_values_are_written_back_in_override_syntax(value, text: str) -> None:
    assert format_value(value) == text


@pytest.mark.parametrize(
    "arguments, words",
    [
        (["epochs=3"], "nothing to search"),
        (["lr=tag(log,interval(0,1))"], "lower bound > 0"),
        (["lr=interval(2,1)"], "is empty"),
        (["x=tag(int,interval(1.5,3))"], "whole numbers"),
        (["x=tag(cosine,interval(1,3))"], "unknown tag"),
        (["x=choice(1,1)"], "twice"),
        (["hydra.job.name=choice(a,b)"], "cannot be searched"),
    ],
)
def test_bad_spaces_are_user_errors(arguments: list[str], words: str) -> None:
    with pytest.raises(UserError, match=words):
        parse_search_space(arguments)


def make_sweep(root: Path, trials: dict[int, tuple[str, dict]], objectives: dict | None = None) -> Path:
    """A sweep folder as the sweeper leaves it: multirun.yaml plus one folder per trial."""
    hydra: dict = {"overrides": {"task": ["lr=tag(log,interval(1e-3,1))", "epochs=2"]}}
    if objectives:
        hydra["sweeper"] = {
            "_target_": "hydra_plugins.cnnlab_sweeper.cnnlab_sweeper.CnnlabSweeper",
            "objectives": list(objectives),
            "directions": list(objectives.values()),
            "sampler": {"_target_": "optuna.samplers.NSGAIISampler"},
        }
    root.mkdir()
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": hydra}))
    for number, (lr, metrics) in trials.items():
        (root / str(number) / ".hydra").mkdir(parents=True)
        overrides = ["sweeper=tpe", "pruner=median", "epochs=2", f"lr={lr}"]
        (root / str(number) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        if metrics:
            (root / str(number) / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_trials_rank_completed_by_objective_then_pruned_then_the_rest(tmp_path: Path) -> None:
    sweep = make_sweep(
        tmp_path / "s",
        {
            0: ("0.1", {"status": "completed", "best_val_acc": 0.7}),
            1: ("0.5", {"status": "pruned", "best_val_acc": 0.9, "pruned_at_epoch": 1}),
            2: ("0.01", {"status": "completed", "best_val_acc": 0.8}),
            3: ("2.0", {"status": "diverged", "best_val_acc": None}),
            4: ("0.02", {"status": "running", "best_val_acc": 0.95}),  # its sweep died: interrupted
            5: ("0.03", {}),  # died before writing metrics.json
        },
    )
    results = load_sweep(sweep)
    assert [(r.number, r.status) for r in results.rows] == [
        (2, "completed"),
        (0, "completed"),
        (1, "pruned"),
        (4, "interrupted"),
        (3, "diverged"),
        (5, "failed"),
    ]
    assert results.searched == ["lr"] and results.rows[0].params == {"lr": "0.01"}
    # the best command leaves out the sweep-only groups, and from_sweep finds that trial
    assert best_command(results.best) == "cnnlab train epochs=2 lr=0.01"
    assert best_trial_dir(str(sweep)) == sweep / "2"
    assert best_trial_dir(str(sweep / "0")) == sweep / "0"


def test_pareto_front_of_two_objectives(tmp_path: Path) -> None:
    sweep = make_sweep(
        tmp_path / "s",
        {
            0: ("0.1", {"status": "completed", "best_val_acc": 0.9, "macs": 100}),
            1: ("0.2", {"status": "completed", "best_val_acc": 0.8, "macs": 50}),
            2: ("0.3", {"status": "completed", "best_val_acc": 0.7, "macs": 80}),  # beaten by trial 1 on both
            3: ("0.4", {"status": "completed", "best_val_acc": 0.9, "macs": 120}),  # beaten by trial 0
            4: ("0.5", {"status": "pruned", "best_val_acc": 0.95, "macs": 10}),  # not completed: not on the front
        },
        objectives={"best_val_acc": "maximize", "macs": "minimize"},
    )
    results = load_sweep(sweep)
    assert sorted(r.number for r in results.pareto_front()) == [0, 1]
    assert results.sampler == "NSGAIISampler"


def test_best_trial_needs_a_completed_trial(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "s", {0: ("0.1", {"status": "diverged"})})
    with pytest.raises(UserError, match="no trial .* completed"):
        best_trial_dir(str(sweep))


def test_a_missing_launcher_plugin_names_the_extra_to_install() -> None:
    from hydra.errors import MissingConfigException

    from cnnlab.cli_errors import describe

    error = MissingConfigException("Could not find 'hydra/launcher/joblib'", "hydra/launcher/joblib", ["basic"])
    assert (
        describe(error)
        == 'Hydra\'s joblib launcher is not installed: pip install -e ".[cluster]" (or pip install cnnlab[cluster])'
    )


def test_a_dead_sweeps_finished_trials_are_recorded_and_the_rest_requeued(tmp_path: Path) -> None:
    """A sweep killed mid-batch (n_jobs=2): trial 0 had finished, trial 1 was still training."""
    import optuna

    from cnnlab.sweeps.study import counts_toward_budget, storage_for

    sweep = random_search(n_trials=2, n_jobs=2)
    study = optuna.create_study(storage=storage_for(None, tmp_path), study_name="cnnlab", direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-3, 1, log=True)
    first, second = study.ask({"lr": lr}), study.ask({"lr": lr})
    for trial, metrics in ((first, {"status": "completed", "best_val_acc": 0.9}), (second, {"status": "running"})):
        (tmp_path / str(trial.number)).mkdir()
        (tmp_path / str(trial.number) / "metrics.json").write_text(json.dumps(metrics))

    reopened = optuna.load_study(study_name="cnnlab", storage=storage_for(None, tmp_path))
    assert sweep._recover(reopened, tmp_path) == [1]
    trials = reopened.get_trials()
    assert trials[0].state == optuna.trial.TrialState.COMPLETE and trials[0].value == 0.9
    assert trials[1].state == optuna.trial.TrialState.FAIL and trials[1].user_attrs["interrupted"]
    assert trials[2].state == optuna.trial.TrialState.WAITING  # queued again with the same parameters:
    assert trials[2].system_attrs["fixed_params"] == trials[1].params
    assert [counts_toward_budget(t) for t in trials[:2]] == [True, False]


def test_repeated_seeds_are_summarised_as_mean_and_std_per_configuration(tmp_path: Path) -> None:
    """`cnnlab -m seed=0,1,2 lr=0.1,0.2`: per lr, the mean and sample std of the seeds that completed."""
    from cnnlab.sweeps.report import write_report
    from cnnlab.sweeps.seeds import seed_groups

    root = tmp_path / "s"
    root.mkdir()
    task = ["seed=0,1,2", "lr=0.1,0.2"]
    (root / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": task}}}))
    accuracy = {("0", "0.1"): 0.80, ("1", "0.1"): 0.82, ("2", "0.1"): 0.84, ("0", "0.2"): 0.90, ("1", "0.2"): 0.86}
    for number, ((seed, lr), acc) in enumerate([*accuracy.items(), (("2", "0.2"), None)]):
        (root / str(number) / ".hydra").mkdir(parents=True)
        (root / str(number) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"seed={seed}", f"lr={lr}"]))
        metrics = {"status": "completed", "best_val_acc": acc, "train_time_s": 10.0 * (number + 1)}
        (root / str(number) / "metrics.json").write_text(json.dumps(metrics if acc else {"status": "diverged"}))
    results = load_sweep(root)
    groups = seed_groups(results)
    assert [(g.params, sorted(g.seeds)) for g in groups] == [
        ({"lr": "0.2"}, ["0", "1"]),
        ({"lr": "0.1"}, ["0", "1", "2"]),
    ]
    assert groups[0].means["best_val_acc"] == pytest.approx(0.88) and groups[0].stds["best_val_acc"] == pytest.approx(
        0.02828, abs=1e-5
    )
    assert groups[1].means["best_val_acc"] == pytest.approx(0.82) and groups[1].stds["best_val_acc"] == pytest.approx(
        0.02
    )
    assert groups[1].mean_time_s == pytest.approx(20.0)
    write_report(root, show=False)
    report = (root / "report.md").read_text()
    assert "## Over seeds" in report
    assert "| 0.2 | 2 | 0.8800 ± 0.0283 | 45.0 |" in report and "| 0.1 | 3 | 0.8200 ± 0.0200 | 20.0 |" in report
