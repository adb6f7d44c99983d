"""Hydra finds launchers only under the hydra_plugins namespace; these classes are cnnlab.sweeps' launchers."""

from cnnlab.sweeps.parallel import ParallelLauncher
from cnnlab.sweeps.slurm import SlurmLauncher


class CnnlabParallelLauncher(ParallelLauncher):
    """launcher=parallel: local processes, one GPU share each, the next trial started as soon as one ends."""


class CnnlabSlurmLauncher(SlurmLauncher):
    """launcher=slurm: one SLURM job per trial; a trial SLURM stops is submitted again and resumes."""
