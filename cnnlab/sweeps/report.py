"""The sweep report: a ranked Rich table, report.md, trials.csv and plots, written into the sweep folder.

Parameter importances and plots come from Optuna, on an in-memory study rebuilt from the run folders
(the same for a grid sweep as for a Bayesian one). This module is imported only when a report is
written, so Optuna and matplotlib cost nothing to a plain training run.
"""

import csv
import io
import logging
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from cnnlab.atomic import atomic_bytes_write
from cnnlab.run_folder import RunStatus
from cnnlab.sweeps.results import SweepResults, TrialRow, best_command, load_sweep
from cnnlab.sweeps.seeds import seed_groups, seed_table

log = logging.getLogger("cnnlab")


def _number(value: str) -> Any:
    """An override's value as a number where it is one (so plots get numeric axes)."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _as(distribution: BaseDistribution, value: str) -> Any:
    """An override's text as the type the distribution holds."""
    if isinstance(distribution, FloatDistribution):
        return float(value)
    return int(value) if isinstance(distribution, IntDistribution) else _number(value)


def rebuild_study(results: SweepResults) -> optuna.Study:
    """An in-memory Optuna study holding the completed and pruned trials, for importances and plots."""
    rows = sorted(
        (r for r in results.rows if r.status in (RunStatus.COMPLETED, RunStatus.PRUNED)), key=lambda r: r.number
    )
    observed: dict[str, set] = {
        key: {_number(r.params[key]) for r in rows if key in r.params} for key in results.searched
    }
    distributions = {}
    for key, values in observed.items():
        searched = results.space.get(key)
        if isinstance(searched, FloatDistribution | IntDistribution):
            distributions[key] = searched  # keeps the log scale, which the importances depend on
        elif len(values) >= 2:
            numeric = all(isinstance(v, int | float) for v in values)
            distributions[key] = (
                FloatDistribution(min(values), max(values))
                if numeric
                else CategoricalDistribution(sorted(values, key=str))
            )
    study = optuna.create_study(directions=list(results.objectives.values()))
    for row in rows:
        params = {k: _as(d, row.params[k]) for k, d in distributions.items() if k in row.params}
        dists = {k: distributions[k] for k in params}
        if row.status == RunStatus.COMPLETED:
            values = [row.value(m) for m in results.objectives]
            if None in values:
                continue
            study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, values=values))
        elif len(results.objectives) == 1:
            history = {h["epoch"]: h[results.report_metric] for h in row.metrics.get("history", [])}
            study.add_trial(
                optuna.trial.create_trial(
                    params=params,
                    distributions=dists,
                    state=optuna.trial.TrialState.PRUNED,
                    intermediate_values=history,
                )
            )
    return study


def importances(results: SweepResults, study: optuna.Study) -> dict[str, float]:
    """PED-ANOVA importance of each searched parameter for the first objective ({} with too few trials)."""
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if len(complete) < 3 or not study.trials[0].distributions:
        return {}
    target = None if len(results.objectives) == 1 else (lambda t: t.values[0])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "importances will be equal" on flat results: the table shows that
            return optuna.importance.get_param_importances(study, target=target)  # PED-ANOVA, Optuna's default
    except (RuntimeError, ValueError) as e:  # e.g. every trial has the same value
        log.info("parameter importances skipped: %s", e)
        return {}


def _short(value: str) -> str:
    """A parameter value for the table: floats to 4 significant digits (trials.csv keeps every digit)."""
    number = _number(value)
    return f"{number:.4g}" if isinstance(number, float) else value


def _cell(row: TrialRow, metric: str, exact: bool = False) -> str:
    """An objective's value: rounded and with thousands separators for people, every digit for trials.csv."""
    value = row.value(metric)
    if value is None:
        return ""
    if exact:
        return str(int(value)) if value.is_integer() else repr(value)
    return f"{value:.4f}" if abs(value) < 100 else f"{value:,.0f}"


def table_rows(results: SweepResults, short: bool = True) -> tuple[list[str], list[list[str]]]:
    """Header and cells shared by the terminal table, report.md and trials.csv (`short=False`: exact values)."""
    shown = _short if short else str
    pareto = {r.number for r in results.pareto_front()} if len(results.objectives) > 1 else set()
    header = ["#", "trial", "status", *results.objectives, *results.searched, "epochs", "time_s"]
    if pareto:
        header.append("pareto")
    cells = []
    for rank, row in enumerate(results.rows, start=1):
        status = row.status.value + (f" @{row.metrics['pruned_at_epoch']}" if row.status == RunStatus.PRUNED else "")
        line = [
            str(rank),
            str(row.number),
            status,
            *(_cell(row, m, exact=not short) for m in results.objectives),
            *(shown(row.params.get(k, "")) for k in results.searched),
            str(row.metrics.get("epochs_completed", "")),
            f"{row.metrics.get('train_time_s', 0.0):.1f}",
        ]
        if pareto:
            line.append("*" if row.number in pareto else "")
        cells.append(line)
    return header, cells


def print_table(results: SweepResults, limit: int = 20) -> None:
    """The top trials with their parameters folded into one column, to fit a terminal (report.md has all)."""
    from rich import get_console
    from rich.table import Table
    from rich.text import Text

    header, cells = table_rows(results)
    params_at = header.index(results.searched[0]) if results.searched else len(header)
    params_end = params_at + len(results.searched)
    shown = f"top {limit} of " if len(cells) > limit else ""
    table = Table(title=f"sweep {results.sweep_dir} ({results.sampler}, {shown}{len(cells)} trials)")
    kept = [i for i, name in enumerate(header) if not params_at <= i < params_end and name != "epochs"]
    for i in kept:
        table.add_column(header[i], justify="left" if header[i] == "status" else "right", no_wrap=True)
    table.add_column("parameters", overflow="fold", min_width=24)
    for line in cells[:limit]:
        params = " ".join(f"{k}={v}" for k, v in zip(results.searched, line[params_at:params_end]) if v)
        table.add_row(*(Text(line[i]) for i in kept), Text(params))
    console = get_console()
    console.print(table)
    seed_header, seed_cells = seed_table(results, seed_groups(results))
    if seed_cells:
        over_seeds = Table(title="over seeds (completed trials per configuration)")
        for name in seed_header:
            over_seeds.add_column(name, justify="right", no_wrap=True)
        for line in seed_cells:
            over_seeds.add_row(*(Text(cell) for cell in line))
        console.print(over_seeds)
    if results.best is not None:
        console.print(Text(f"best: {best_command(results.best)}"))


def _markdown(results: SweepResults, importance: dict[str, float], plots: list[str]) -> str:
    header, cells = table_rows(results)
    lines = [
        f"# Sweep report: {results.sweep_dir.name}",
        "",
        f"- sampler: {results.sampler}",
        f"- trials: {len(results.rows)} "
        f"({', '.join(f'{s}: {n}' for s, n in Counter(r.status for r in results.rows).items())})",
        "- objectives: " + ", ".join(f"{m} ({d})" for m, d in results.objectives.items()),
        "",
    ]
    if results.best is not None:
        lines += [
            "## Best configuration",
            "",
            f"trial {results.best.number} ({results.best.run_dir.name}/):",
            "",
            "```",
            best_command(results.best),
            "```",
            "",
            f"or: `cnnlab train from_sweep={results.sweep_dir}`",
            "",
        ]
    lines += ["## Trials", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells]
    seed_header, seed_cells = seed_table(results, seed_groups(results))
    if seed_cells:
        lines += ["", "## Over seeds", "", "Completed trials grouped by every parameter but `seed`.", ""]
        lines += ["| " + " | ".join(seed_header) + " |", "|" + "---|" * len(seed_header)]
        lines += ["| " + " | ".join(line) + " |" for line in seed_cells]
    diagnosed = [(row, row.metrics.get("diagnosis")) for row in results.rows if row.metrics.get("diagnosis")]
    if diagnosed:
        note = "What each trial's learning curves say (the others had nothing to act on)."
        lines += ["", "## Diagnosis", "", note, ""]
        lines += [f"- trial {row.number}: " + "; ".join(found) for row, found in diagnosed]
    if importance:
        lines += ["", "## Parameter importances (PED-ANOVA)", "", "| parameter | importance |", "|---|---|"]
        lines += [f"| {k} | {v:.3f} |" for k, v in importance.items()]
    if len(results.objectives) > 1:
        front = sorted(results.pareto_front(), key=lambda r: r.value(next(iter(results.objectives))) or 0)
        lines += [
            "",
            "## Pareto front",
            "",
            "| trial | " + " | ".join(results.objectives) + " |",
            "|---|" + "---|" * len(results.objectives),
        ]
        lines += [f"| {r.number} | " + " | ".join(_cell(r, m) for m in results.objectives) + " |" for r in front]
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _csv(results: SweepResults) -> str:
    header, cells = table_rows(results, short=False)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([*header, "diagnosis", "run_dir"])
    for line, row in zip(cells, results.rows):
        writer.writerow([*line, "; ".join(row.metrics.get("diagnosis") or []), str(row.run_dir)])
    return buffer.getvalue()


def save_plots(results: SweepResults, study: optuna.Study, importance: dict[str, float]) -> list[str]:
    """PNG plots next to report.md; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as vis

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return []
    first = next(iter(results.objectives))
    single = len(results.objectives) == 1
    target = None if single else (lambda t: t.values[0])
    wanted = [("objective_history.png", lambda: vis.plot_optimization_history(study, target=target, target_name=first))]
    if importance:
        wanted.append(
            ("param_importances.png", lambda: vis.plot_param_importances(study, target=target, target_name=first))
        )
    if len(complete) >= 2 and complete[0].distributions:
        wanted.append(
            ("parallel_coordinates.png", lambda: vis.plot_parallel_coordinate(study, target=target, target_name=first))
        )
    if not single:
        wanted.append(("pareto_front.png", lambda: vis.plot_pareto_front(study, target_names=list(results.objectives))))
    saved = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        for name, draw in wanted:
            try:
                axes = draw()
            except (ValueError, RuntimeError) as e:
                log.info("%s skipped: %s", name, e)
                continue
            figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            figure.savefig(results.sweep_dir / name, dpi=110)
            plt.close(figure)
            saved.append(name)
    return saved


def write_report(sweep_dir: Path, show: bool = True) -> SweepResults:
    """Build every report file in the sweep folder (and print the table when `show`)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    results = load_sweep(sweep_dir)
    study = rebuild_study(results)
    importance = importances(results, study)
    plots = save_plots(results, study, importance)
    atomic_bytes_write(_markdown(results, importance, plots).encode(), results.sweep_dir / "report.md")
    atomic_bytes_write(_csv(results).encode(), results.sweep_dir / "trials.csv")
    if show:
        print_table(results)
        log.info("report.md, trials.csv and %d plots are in %s", len(plots), results.sweep_dir)
    return results
