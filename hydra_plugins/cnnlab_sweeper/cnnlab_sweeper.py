"""Hydra finds sweepers only under the hydra_plugins namespace; this class hands all work to cnnlab.sweeps."""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class CnnlabSweeper(Sweeper):
    """Optuna-backed sweeper (random, TPE, GP, NSGA-II) with pruning and resumable studies."""

    def __init__(self, **config: Any) -> None:
        from cnnlab.sweeps.sweeper import OptunaSweep  # imported only when a search runs: optuna is slow to import

        self.sweep_impl = OptunaSweep(**config)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.sweep_impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweep_impl.sweep(arguments)
