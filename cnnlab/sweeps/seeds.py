"""Repeated runs over seeds, summarised: one configuration's result is a mean and a spread, not one draw.

`cnnlab -m seed=0,1,2 lr=0.05,0.1` runs every configuration with each seed; the report groups the
completed trials by their parameters other than `seed` and gives each objective's mean and sample
standard deviation per group.
"""

import statistics
from dataclasses import dataclass

from cnnlab.run_folder import RunStatus
from cnnlab.sweeps.results import SweepResults

SEED_KEY = "seed"


@dataclass
class SeedGroup:
    params: dict[str, str]  # the configuration: every swept key but the seed
    seeds: list[str]
    means: dict[str, float]  # objective -> mean over the seeds
    stds: dict[str, float]  # objective -> sample standard deviation (n - 1)
    mean_time_s: float


def seed_groups(results: SweepResults) -> list[SeedGroup]:
    """Configurations run with two or more seeds that completed, best mean of the first objective first."""
    if SEED_KEY not in results.searched:
        return []
    others = [k for k in results.searched if k != SEED_KEY]
    grouped: dict[tuple[str, ...], list] = {}
    for row in results.rows:
        if row.status == RunStatus.COMPLETED and all(row.value(m) is not None for m in results.objectives):
            grouped.setdefault(tuple(row.params.get(k, "") for k in others), []).append(row)
    groups = []
    for key, rows in grouped.items():
        if len(rows) < 2:
            continue
        values = {m: [row.value(m) for row in rows] for m in results.objectives}
        groups.append(
            SeedGroup(
                params=dict(zip(others, key)),
                seeds=[row.params.get(SEED_KEY, "") for row in rows],
                means={m: statistics.fmean(v) for m, v in values.items()},
                stds={m: statistics.stdev(v) for m, v in values.items()},
                mean_time_s=statistics.fmean(float(row.metrics.get("train_time_s", 0.0)) for row in rows),
            )
        )
    first, direction = next(iter(results.objectives.items()))
    return sorted(groups, key=lambda g: g.means[first], reverse=direction == "maximize")


def seed_table(results: SweepResults, groups: list[SeedGroup]) -> tuple[list[str], list[list[str]]]:
    """Header and cells: the configuration, the seeds it ran, each objective as mean ± std, mean time."""
    others = [k for k in results.searched if k != SEED_KEY]
    header = [*others, "seeds", *(f"{m} (mean ± std)" for m in results.objectives), "time_s (mean)"]
    cells = [
        [
            *(group.params[k] for k in others),
            str(len(group.seeds)),
            *(f"{group.means[m]:.4f} ± {group.stds[m]:.4f}" for m in results.objectives),
            f"{group.mean_time_s:.1f}",
        ]
        for group in groups
    ]
    return header, cells
