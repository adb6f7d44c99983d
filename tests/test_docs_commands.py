"""Every `cnnlab ...` command shown in README.md and docs/*.md composes with the packaged configs.

The commands are taken from fenced code blocks (one command per line) and from inline `code` spans,
split like a shell would (shlex), and their overrides are composed with Hydra's compose API, so a
renamed option, key or preset breaks this test instead of silently breaking the documentation.
Sweep overrides (`lr=0.01,0.1`, `choice(...)`, `range(...)`, `tag(log,interval(...))`) are replaced by
one of their values first; placeholders the reader fills in (`<run folder>`) are dropped or pointed at
a temporary folder. Nothing is run and nothing is resolved: composing is the check.
"""

import ast
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_LIMIT = 15_000

# The config each task composes (conf/<name>.yaml); `report` reads a sweep folder and composes nothing.
CONFIG_NAMES = {
    "train": "train",
    "eval": "eval",
    "data": "data",
    "bench": "bench",
    "lr-find": "lr_find",
    "predict": "predict",
    "export": "export",
}
# Values that name an existing folder or checkpoint: a placeholder there is dropped (resume/from_sweep
# rewrite the command line from the folder, which does not exist here; ckpt is read at run time).
PATH_KEYS = {"resume", "from_sweep", "ckpt"}
# Hydra's command-line flags: those taking a value, and those standing alone.
FLAGS_WITH_VALUE = set("--cfg -c --package -p --config-path -cp --config-name -cn --config-dir -cd --info -i".split())
FLAGS_ALONE = set("--help -h --hydra-help --resolve --debug --version --run -r".split())
SWEEP_FLAGS = {"-m", "--multirun"}
LAUNCHER_PLUGINS = {
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "slurm": "hydra_plugins.hydra_submitit_launcher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
}
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
PLACEHOLDER = re.compile(r"<[^<>\n]*>")
SHELL_VARIABLE = re.compile(r"\$\{?[A-Z_][A-Z0-9_]*\}?")  # $HOME/data: the shell expands it before cnnlab sees it


class DocCommandError(Exception):
    """A documented command that the real `cnnlab` would refuse."""


def known_tasks() -> list[str]:
    """The task names of `cnnlab` (the keys of TASKS in cnnlab/cli.py), read without importing the CLI."""
    tree = ast.parse((ROOT / "cnnlab" / "cli.py").read_text())
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "TASKS" for t in targets) and isinstance(node.value, ast.Dict):
            return [ast.literal_eval(key) for key in node.value.keys]
    raise AssertionError("cnnlab/cli.py no longer defines TASKS = {...}")


TASKS = known_tasks()


# --- extraction ---------------------------------------------------------------------------------------


@dataclass
class DocCommand:
    line: str  # the command as written (comment removed)
    places: list[str] = field(default_factory=list)  # file:line where it appears


def _command_text(text: str) -> str | None:
    """`text` if it is a cnnlab command line (a `$ ` prompt and VAR=value prefixes allowed), else None."""
    text = text.strip()
    text = text.removeprefix("$ ").strip()
    text = re.sub(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)+", "", text)  # HYDRA_FULL_ERROR=1 cnnlab ...
    return text if re.match(r"cnnlab(\s|$)", text) else None


def _strip_comment(line: str) -> str:
    """The command without a trailing `# comment` (a # outside quotes after whitespace, as in bash)."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def extract_commands(files: list[Path], root: Path = ROOT) -> list[DocCommand]:
    found: dict[str, DocCommand] = {}

    def add(text: str, place: str) -> None:
        command = _command_text(text)
        if command is None:
            return
        command = _strip_comment(command)
        found.setdefault(command, DocCommand(command)).places.append(place)

    for path in files:
        name = path.relative_to(root).as_posix()
        in_fence = False
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if line.lstrip().startswith("```"):
                in_fence = not in_fence
                continue
            if in_fence:
                add(line, f"{name}:{number}")
            else:
                for span in re.findall(r"(?<!`)`([^`\n]+)`(?!`)", line):
                    add(span, f"{name}:{number}")
    return list(found.values())


COMMANDS = extract_commands(DOC_FILES)


# --- the check ----------------------------------------------------------------------------------------


@dataclass
class Parsed:
    task: str
    sweep: bool
    overrides: list[str]  # as they would reach Hydra, placeholders handled
    help_only: bool = False


def parse_command(line: str, scratch: Path) -> Parsed:
    """Split a documented command as `cnnlab` does: task, flags, overrides."""
    try:
        words = shlex.split(SHELL_VARIABLE.sub("/home/user", PLACEHOLDER.sub("<value>", line)))
    except ValueError as exc:
        raise DocCommandError(f"cannot split {line!r} like a shell: {exc}") from exc
    assert words[0] == "cnnlab"
    args = words[1:]
    if args and args[0] in ("-h", "--help", "help"):
        return Parsed("train", False, [], help_only=True)
    task = "train"
    if args and args[0] in TASKS:
        task = args.pop(0)
    elif args and "=" not in args[0] and not args[0].startswith(("-", "~", "+")):
        raise DocCommandError(f"unknown task {args[0]!r}; cnnlab's tasks are {', '.join(TASKS)}")
    sweep, overrides, rest = False, [], iter(args)
    for word in rest:
        if word in SWEEP_FLAGS:
            sweep = True
        elif word in FLAGS_WITH_VALUE:
            next(rest, None)
        elif word in FLAGS_ALONE:
            continue
        elif word.startswith("-"):
            raise DocCommandError(f"unknown flag {word!r}")
        elif task == "report":
            continue  # cnnlab report <sweep folder>: positional folders, nothing to compose
        elif "=" not in word and not word.startswith("~"):
            raise DocCommandError(f"{word!r} is neither a key=value override nor a flag")
        elif "<" in word:  # a value the reader supplies
            key, _, _ = word.partition("=")
            if key.lstrip("+~") in PATH_KEYS:
                continue
            overrides.append(f"{key}={scratch.as_posix()}")
        else:
            overrides.append(word)
    if task == "report" and sweep:
        raise DocCommandError("cnnlab report takes a sweep folder, not -m")
    return Parsed(task, sweep, overrides)


def concrete_overrides(overrides: list[str], sweep: bool) -> tuple[list[str], bool]:
    """Each sweep override replaced by one of its values; also whether any is an interval (search sweepers only)."""
    parsed = OverridesParser.create().parse_overrides(overrides=overrides)
    result, needs_search = [], False
    for raw, override in zip(overrides, parsed, strict=True):
        if not override.is_sweep_override():
            result.append(raw)
            continue
        if not sweep:
            raise DocCommandError(f"{raw!r} is a sweep; it needs -m (cnnlab -m ...)")
        value = override.value()
        if isinstance(value, IntervalSweep):
            needs_search = True
            first = int(value.start) if "int" in value.tags else value.start
            result.append(f"{override.get_key_element()}={first}")
        elif isinstance(value, ChoiceSweep | RangeSweep):
            result.append(f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}")
        else:
            raise DocCommandError(f"{raw!r}: this checker does not know {type(value).__name__}")
    return result, needs_search


def check_command(line: str, scratch: Path) -> None:
    """Raise if `line` would not compose; returns quietly when it does."""
    parsed = parse_command(line, scratch)
    if parsed.help_only or parsed.task == "report":
        return
    overrides, needs_search = concrete_overrides(parsed.overrides, parsed.sweep)
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") == "launcher" and value in LAUNCHER_PLUGINS:
            pytest.importorskip(LAUNCHER_PLUGINS[value], reason='needs the cluster extra: pip install -e ".[cluster]"')
    with initialize_config_module(config_module="cnnlab.conf", version_base="1.3"):
        cfg = compose(config_name=CONFIG_NAMES[parsed.task], overrides=overrides, return_hydra_config=True)
    if needs_search and cfg.hydra.sweeper.get("_target_") == BASIC_SWEEPER:
        raise DocCommandError(
            "interval() needs a search sweeper (sweeper=random|tpe|gp|nsga2); "
            "the grid sweeper takes comma-separated values, choice() or range()"
        )


# --- tests --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=[c.line for c in COMMANDS])
def test_documented_command_composes(command: DocCommand, tmp_path: Path) -> None:
    try:
        check_command(command.line, tmp_path)
    except (DocCommandError, HydraException, OmegaConfBaseException) as exc:
        pytest.fail(f"{command.line}\n  (in {', '.join(command.places)})\n  does not compose: {exc}")


def test_commands_were_found() -> None:
    assert len(COMMANDS) >= 10, f"only {len(COMMANDS)} cnnlab commands found in {[p.name for p in DOC_FILES]}"
    readme = [c for c in COMMANDS if any(p.startswith("README.md:") for p in c.places)]
    assert len(readme) >= 5, "README.md should show the quickstart commands"
    assert len(DOC_FILES) > 1, "docs/*.md is missing"


def test_readme_is_short() -> None:
    size = (ROOT / "README.md").stat().st_size
    assert size < README_LIMIT, f"README.md is {size} bytes; keep it under {README_LIMIT} and move detail to docs/"


@pytest.mark.parametrize(
    "line",
    [
        "cnnlab train model=nonexistent",  # unknown option
        "cnnlab train trainer.nope=1",  # unknown key
        "cnnlab trian lr=0.1",  # unknown task
        "cnnlab train lr=0.01,0.1",  # a sweep without -m
        "cnnlab -m 'lr=tag(log,interval(1e-3,1))'",  # a search space under the grid sweeper
        "cnnlab -m sweeper=grid hydra.sweeper.n_trials=20",  # a cnnlab-sweeper knob under Hydra's basic sweeper
        "cnnlab eval split=test nope=1",  # unknown key in another task's config
        "cnnlab train dataset.root=~/data",  # Hydra refuses an unquoted ~ (write $HOME/data)
        "cnnlab train --nope",  # unknown flag
    ],
)
def test_checker_rejects_broken_commands(line: str, tmp_path: Path) -> None:
    with pytest.raises((DocCommandError, HydraException, OmegaConfBaseException)):
        check_command(line, tmp_path)


def test_extraction_reads_fences_spans_and_placeholders(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Run `cnnlab train lr=0.1` or:\n\n```bash\n$ cnnlab eval ckpt=<run folder>   # comment\n"
        "not a command\n```\n`cnnlab: error:` is not one.\n"
    )
    found = {c.line for c in extract_commands([page], root=tmp_path)}
    assert found == {"cnnlab train lr=0.1", "cnnlab eval ckpt=<run folder>"}
    assert parse_command("cnnlab eval ckpt=<run folder>", tmp_path).overrides == []
    assert (
        parse_command("cnnlab data dataset=imagefolder dataset.root=<images>", tmp_path).overrides[1]
        == f"dataset.root={tmp_path.as_posix()}"
    )
