"""The `cnnlab` command: pick the task, hand every other argument to Hydra.

    cnnlab train [overrides]      one run (train is also the default task)
    cnnlab -m [overrides]         a sweep, e.g. cnnlab -m lr=0.01,0.1 batch_size=256,512
"""

import importlib
import sys
from importlib.resources import files

TASKS = {
    "train": ("cnnlab.tasks.train", "train a model (default task); add -m to sweep"),
}
GROUPS = ("dataset", "model", "optimizer", "scheduler", "trainer", "sweeper", "experiment")


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
        "top-level keys: lr, batch_size, epochs, weight_decay, seed, device (auto|cpu|cuda|cuda:N), compile",
        "",
        "examples:",
        "  cnnlab train model=efficient",
        "  cnnlab train dataset=imagefolder dataset.root=/data/my-images",
        "  cnnlab -m lr=0.01,0.1 batch_size=256,512",
        "  cnnlab train experiment=smoke",
        "  cnnlab train --cfg job          print the composed config and exit",
        "  cnnlab train --help             Hydra's help with the full config",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        if not args:
            args = ["train"]
        else:
            print(usage())
            return
    task = args.pop(0) if args[0] in TASKS else "train"
    module = importlib.import_module(TASKS[task][0])
    sys.argv = [f"cnnlab-{task}", *args]
    module.main()


if __name__ == "__main__":
    main()
