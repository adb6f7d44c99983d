"""The terminal: a Rich progress bar per epoch, one summary line per epoch, a final table.

Everything goes through Rich's console, so log lines never tear the live bar; when stdout is not a
terminal (CI logs, files) the bar is off and the output is plain lines without control codes.
"""

import logging
from typing import Any

from rich import get_console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from cnnlab.run_folder import RunStatus
from cnnlab.tracking.tracker import PER_CLASS, Sink

log = logging.getLogger("cnnlab")


def _format_macs(macs: int) -> str:
    return f"{macs / 1e6:.2f} M" if macs < 1e9 else f"{macs / 1e9:.2f} G"


class TerminalSink(Sink):
    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def run_started(self, info: dict[str, Any]) -> None:
        log.info(
            "model %s: %s parameters, %s MACs per image | data %s: %d train, %d val, %s test | device %s, %d threads",
            info["model"],
            f"{info['params']:,}",
            _format_macs(info["macs"]),
            info["dataset"],
            info["train_size"],
            info["val_size"],
            info["test_size"] if info["test_size"] is not None else "no",
            info["device"] if info.get("processes", 1) == 1 else f"{info['device']} x {info['processes']} processes",
            info["threads"],
        )

    def epoch_started(self, epoch: int, epochs: int, steps: int) -> None:
        if not get_console().is_terminal:
            return
        self.progress = Progress(
            TextColumn(f"epoch {epoch}/{epochs}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeRemainingColumn(),
            console=get_console(),
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=steps, stats="")

    def step(self, step: int, stats: dict[str, float]) -> None:
        if self.progress is not None and self.task is not None:
            text = (
                f"loss {stats['loss']:.3f} acc {stats['acc']:.3f} lr {stats['lr']:.2e} "
                f"{stats['images_per_s']:,.0f} img/s"
            )
            self.progress.update(self.task, completed=step, stats=text)

    def _stop_progress(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None:
        self._stop_progress()
        log.info(
            "epoch %d | train loss %.4f acc %.4f | val loss %.4f acc %.4f | lr %.2e | %.0f img/s | %.1f s",
            epoch,
            metrics["train/loss"],
            metrics["train/acc"],
            metrics["val/loss"],
            metrics["val/acc"],
            metrics["lr"],
            metrics["throughput/images_per_s"],
            metrics["time/epoch_s"],
        )

    def run_ended(self, summary: dict[str, Any]) -> None:
        self._stop_progress()
        table = Table(title=f"cnnlab run: {summary['status']}", show_header=False)
        test_acc, epoch = summary.get("test_acc"), summary.get("tested_epoch")
        weights = f" (weights of epoch {epoch}, the best on validation)" if epoch is not None else ""
        untested = "- (no test split)" if summary["status"] == RunStatus.COMPLETED else "- (not tested)"
        rows = [
            ("best val acc", f"{summary['best_val_acc']:.4f}" if summary.get("best_val_acc") is not None else "-"),
            ("test acc", f"{test_acc:.4f}{weights}" if test_acc is not None else untested),
            ("epochs", str(summary["epochs_completed"])),
            ("train time", _train_time(summary["train_time_s"], summary.get("time_budget_s"))),
            ("params", f"{summary['params']:,}"),
            ("MACs / image", _format_macs(summary["macs"])),
            ("run dir", summary["run_dir"]),
        ]
        if summary.get("test_acc_last") is not None:
            rows.insert(2, ("test acc, final", f"{summary['test_acc_last']:.4f} (weights of the last epoch)"))
        if summary.get("stopped_by"):
            rows.insert(3, ("stopped by", summary["stopped_by"].replace("_", " ")))
        for name, value in rows:
            table.add_row(name, value)
        get_console().print(table)
        for line in summary.get("diagnosis") or []:
            log.info("diagnosis: %s", line)

    def close(self) -> None:
        self._stop_progress()


def _train_time(seconds: float, budget_s: float | None) -> str:
    """Seconds trained, and under a time budget how much of it went unused (or how far it ran over)."""
    if not budget_s:
        return f"{seconds:.1f} s"
    share = 100 * (budget_s - seconds) / budget_s
    return f"{seconds:.1f} s of a {budget_s:g} s budget ({abs(share):.1f}% {'unused' if share >= 0 else 'over'})"


def print_evaluation(result: dict[str, Any], classes: list[str], title: str) -> None:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    console = get_console()
    console.print(
        f"{title}: accuracy {result['acc']:.4f}, loss {result['loss']:.4f}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    table = Table(title="confusion matrix (rows: true, columns: predicted)")
    table.add_column("class")
    for index in range(len(classes)):
        table.add_column(str(index), justify="right")
    table.add_column("acc", justify="right")
    for index, (name, row) in enumerate(zip(classes, result["confusion"])):
        cells = [f"[bold]{n}[/bold]" if i == index else str(n) for i, n in enumerate(row)]
        table.add_row(f"{index} {name}", *cells, f"{result['per_class_acc'][name]:.3f}")
    console.print(table)
    if all(key in result for key in PER_CLASS):  # a table of its own: beside the matrix it would not fit 80 columns
        scores = {"precision": "per_class_precision", "recall": "per_class_acc", "f1": "per_class_f1"}
        metrics = {label: [result[key][name] for name in classes] for label, key in scores.items()}
        print_class_metrics(
            "per class (recall is the class's accuracy)", classes, metrics, [sum(r) for r in result["confusion"]]
        )


def print_overview(name: str, summary: dict[str, Any]) -> None:
    """Two Rich tables: images per class in each split, then size, channels and pixel statistics."""
    splits = [split for split in ("train", "test") if summary[split] is not None]
    counts = Table(title=f"{name}: images per class")
    counts.add_column("#", justify="right")
    counts.add_column("class")
    for split in splits:
        counts.add_column(split, justify="right")
        counts.add_column("%", justify="right")
    for index, cls in enumerate(summary["classes"]):
        cells = []
        for split in splits:
            count, total = summary[split]["per_class"][cls], summary[split]["total"]
            cells += [f"{count:,}", f"{100 * count / max(total, 1):.1f}"]
        counts.add_row(str(index), Text(cls), *cells)  # Text: a folder name like "[x]" is not markup
    counts.add_section()
    counts.add_row("", "total", *(cell for split in splits for cell in (f"{summary[split]['total']:,}", "100.0")))

    stats = Table(title=f"{name}: images", show_header=False)
    height, width = summary["image_size"]
    rows = [
        ("image size", f"{height}x{width}"),
        ("channels", str(summary["channels"])),
        ("train pool", f"{summary['train']['total']:,}"),
        ("test split", f"{summary['test']['total']:,}" if summary["test"] is not None else "none"),
        ("total images", f"{summary['total_images']:,}"),
        ("mean per channel (train, 0-1)", ", ".join(f"{v:.4f}" for v in summary["mean"])),
        ("std per channel (train, 0-1)", ", ".join(f"{v:.4f}" for v in summary["std"])),
    ]
    for row in rows:
        stats.add_row(*row)
    console = get_console()
    console.print(counts)
    console.print(stats)


def print_predictions(columns: list[str], rows: list[list[str]], hidden: int, csv_path: str) -> None:
    """The first predictions, one row per image; `hidden` more are only in the CSV file."""
    table = Table(title="predictions")
    for name in columns:  # a long path wraps rather than losing its file name to an ellipsis
        table.add_column(name, justify="right" if name == "prob" else "left", overflow="fold")
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))  # Text: a file or class name like "[x]" is not markup
    console = get_console()
    console.print(table)
    if hidden:
        console.print(f"... and {hidden:,} more in {csv_path}", markup=False, highlight=False, soft_wrap=True)


def print_class_metrics(title: str, classes: list[str], metrics: dict[str, list[float]], support: list[int]) -> None:
    """Precision, recall and F1 per class, with how many images of the class there were."""
    table = Table(title=title)
    table.add_column("class")
    for name in ("images", "precision", "recall", "F1"):
        table.add_column(name, justify="right")
    for index, name in enumerate(classes):
        scores = (f"{metrics[key][index]:.3f}" for key in ("precision", "recall", "f1"))
        table.add_row(Text(name), f"{support[index]:,}", *scores)
    get_console().print(table)
