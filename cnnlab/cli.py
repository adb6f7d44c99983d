"""The `cnnlab` command: pick the task, hand every other argument to Hydra.

cnnlab train [overrides]      one run (train is also the default task)
cnnlab -m [overrides]         a sweep, e.g. cnnlab -m lr=0.01,0.1 batch_size=256,512
"""

import importlib
import os
import sys
from importlib.resources import files

from cnnlab.cli_errors import describe
from cnnlab.cli_overrides import with_saved_overrides
from cnnlab.errors import UserError, UserErrorExit
from cnnlab.placement import Placement

TASKS = {
    "train": ("cnnlab.tasks.train", "train a model (default task); add -m to sweep"),
    "eval": ("cnnlab.tasks.eval", "evaluate a checkpoint: cnnlab eval ckpt=<run folder or .pt> [split=val] [tta=flip]"),
    "data": ("cnnlab.tasks.data", "class counts, image statistics and sample plots of a dataset"),
    "bench": (
        "cnnlab.tasks.bench",
        "training and inference images/s per variant (eager, channels_last, compiled), fastest recommended",
    ),
    "lr-find": (
        "cnnlab.tasks.lr_find",
        "learning-rate range test: a suggested lr and a search range, lr_find.png (takes train overrides)",
    ),
    "report": (
        "cnnlab.tasks.report",
        "rank a sweep's trials, write report.md, trials.csv and plots: cnnlab report <sweep folder>",
    ),
    "predict": (
        "cnnlab.tasks.predict",
        "classify image files with a trained model: cnnlab predict ckpt=<run folder> inputs=<file, folder or glob>",
    ),
    "export": (
        "cnnlab.tasks.export",
        "a trained model as an ONNX, TorchScript or torch.export file, checked: cnnlab export ckpt=<run> format=onnx",
    ),
}
GROUPS = (
    "dataset", "model", "optimizer", "scheduler", "trainer", "logger", "sweeper", "pruner", "launcher", "experiment",
)  # fmt: skip


def config_options(group: str) -> list[str]:
    """The options of a config group: its YAML file names in the packaged conf folder."""
    folder = files("cnnlab.conf").joinpath(group)
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def usage() -> str:
    lines = [
        "usage: cnnlab [TASK] [-m] [key=value ...] [Hydra flags]",
        "",
        "tasks:",
        *(f"  {name:<10}{about}" for name, (_, about) in TASKS.items()),
        "",
        "config groups (pick one option with group=option):",
        *(f"  {group:<11}{', '.join(config_options(group))}" for group in GROUPS),
        "",
        "top-level keys: lr, batch_size, epochs, weight_decay, seed, device (auto|cpu|cuda|cuda:N|mps), compile,\n"
        "                resume=<run folder>, from_sweep=<sweep folder>",
        "",
        "errors are reported in one line; add --debug (or set HYDRA_FULL_ERROR=1) for the full traceback",
        "",
        "examples:",
        "  cnnlab train model=efficient",
        "  cnnlab train dataset=imagefolder dataset.root=/data/my-images",
        "  cnnlab -m lr=0.01,0.1 batch_size=256,512",
        "  cnnlab -m sweeper=tpe 'lr=tag(log,interval(1e-3,1))' hydra.sweeper.n_trials=20",
        "  cnnlab report outputs/sweeps/<date>/<time>      cnnlab train from_sweep=<that folder>",
        "  cnnlab predict ckpt=<run folder> inputs=photos/   predictions.csv; a labelled folder is scored too",
        "  cnnlab export ckpt=<run folder> format=onnx     export/model.onnx and model.json, checked against PyTorch",
        "  cnnlab train experiment=smoke",
        "  cnnlab train experiment=cifar10_fast         cnnlab bench experiment=cifar10_fast",
        "  cnnlab train --cfg job          print the composed config and exit",
        "  cnnlab train --help             Hydra's help with the full config",
    ]
    return "\n".join(lines)


def expose_sweeper_plugin() -> None:
    """Let Hydra's plugin scan see cnnlab's sweeper in an editable install too.

    Hydra lists plugins by walking the `hydra_plugins` folders on disk; an editable install
    (`pip install -e .`) maps our folder through an import hook the walk cannot see, so the folder
    is added to the package's search path here. A regular install needs nothing and is left alone.
    """
    import hydra_plugins
    import hydra_plugins.cnnlab_sweeper

    folder = os.path.dirname(os.path.dirname(hydra_plugins.cnnlab_sweeper.__file__))
    if folder not in list(hydra_plugins.__path__):
        hydra_plugins.__path__ = [*hydra_plugins.__path__, folder]


# Hydra's command-line flags that take a value, then all of them (cnnlab's own --debug is removed before)
FLAGS_WITH_VALUE = {
    "-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn", "--config-name", "-cd", "--config-dir",
    "--experimental-rerun", "-sc", "--shell-completion",
}  # fmt: skip
HYDRA_FLAGS = FLAGS_WITH_VALUE | {
    "-m", "--multirun", "-r", "--run", "-h", "--help", "--hydra-help", "--version", "--resolve", "-i", "--info",
}  # fmt: skip
INFO_TOPICS = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def argument_problem(args: list[str]) -> str | None:
    """What is wrong with a task's arguments before Hydra sees them (Hydra would print its usage block)."""
    skip_value = False
    for index, arg in enumerate(args):
        following = args[index + 1] if index + 1 < len(args) else None
        if skip_value:
            skip_value = False
        elif arg.startswith("-"):
            flag = arg.split("=", 1)[0]
            if flag not in HYDRA_FLAGS:
                return f"unknown option {arg}; cnnlab takes key=value overrides and Hydra's flags (see cnnlab --help)"
            skip_value = (flag in FLAGS_WITH_VALUE and "=" not in arg) or (
                flag in ("-i", "--info") and following in INFO_TOPICS
            )
            if skip_value and following is None:
                hint = " (job, hydra or all)" if flag in ("-c", "--cfg") else ""
                return f"{arg} needs a value{hint}; see cnnlab --help"
        elif "=" not in arg and not arg.startswith("~"):  # ~key deletes a key and takes no value
            example = f"{arg}={following}" if following is not None and "=" not in following else f"{arg}=..."
            return f"{arg!r} is not an override: write key=value without spaces (for example {example})"
    return None


def shell_completion(args: list[str]) -> str | None:
    """For Hydra's tab completion (`-sc install=bash`, then `-sc query=bash` at every Tab): the task whose config to
    complete, with COMP_LINE rewritten so that Hydra sees `cnnlab <overrides>` without the task word; None when
    these are not completion arguments."""
    if not any(a.split("=", 1)[0] in ("-sc", "--shell-completion") for a in args):
        return None
    words = os.environ.get("COMP_LINE", "").split(" ")
    if len(words) > 1 and words[1] in TASKS and words[1] != "report":  # report takes a folder: the shell completes it
        os.environ["COMP_LINE"] = " ".join([words[0], *words[2:]])
        return words[1]
    return "train"


def follow_torchrun_leader(placement: Placement, task: str, args: list[str]) -> None:
    """Under torchrun: rank 0 goes on to compose and run the training run; every other rank takes its part from
    rank 0 (cnnlab.training.launch) and exits here."""
    if task != "train" or any(arg in ("-m", "--multirun") for arg in args):
        print(
            "cnnlab: error: under torchrun cnnlab runs one training run (torchrun ... -m cnnlab train <overrides>); "
            "run sweeps with cnnlab -m, each trial may itself use trainer.devices",
            file=sys.stderr,
        )
        sys.exit(2)
    if placement.rank == 0:
        return
    from cnnlab.training.launch import follow_torchrun

    try:
        code = follow_torchrun(placement)
    except UserError as e:
        print(f"cnnlab: error: {e}", file=sys.stderr)
        code = getattr(e, "exit_code", 2)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("HYDRA_FULL_ERROR") == "1"
    args = [a for a in args if a != "--debug"]
    if not args or args[0] in ("-h", "--help", "help"):
        if not args:
            args = ["train"]
        else:
            try:
                print(usage())
            except BrokenPipeError:  # `cnnlab --help | head`
                sys.stderr.close()
            return
    if args[0] not in TASKS and "=" not in args[0] and not args[0].startswith(("-", "~", "+")):
        print(
            f"cnnlab: error: unknown task '{args[0]}'; choose one of {', '.join(TASKS)}, "
            "or give overrides as key=value (see cnnlab --help)",
            file=sys.stderr,
        )
        sys.exit(2)
    task = args.pop(0) if args[0] in TASKS else "train"
    if completing := shell_completion(args):
        task = completing
    if task != "report" and (problem := argument_problem(args)):
        print(f"cnnlab: error: {problem}", file=sys.stderr)
        sys.exit(2)
    if (placement := Placement.from_environment()) is not None:
        follow_torchrun_leader(placement, task, args)
    module = importlib.import_module(TASKS[task][0])
    expose_sweeper_plugin()
    # Hydra then re-raises instead of printing its own multi-line report; we print one line below.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        if task == "train":
            args = with_saved_overrides(args)
        sys.argv = ["cnnlab" if completing else f"cnnlab-{task}", *args]  # the completion script names the command
        module.main()
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside a training loop
        if debug:
            raise
        print("cnnlab: interrupted", file=sys.stderr)
        sys.exit(130)
    except (Exception, UserErrorExit) as exc:
        message = None if debug else describe(exc, task)
        if message is None:
            raise
        print(f"cnnlab: error: {message}", file=sys.stderr)
        error = exc.error if isinstance(exc, UserErrorExit) else exc
        sys.exit(getattr(error, "exit_code", 2))


if __name__ == "__main__":
    main()
