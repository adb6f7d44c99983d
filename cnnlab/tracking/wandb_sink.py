"""Weights & Biases (`logger=wandb`, the `wandb` extra): the run's curves, config, figures and checkpoints in W&B.

W&B's own settings apply (`wandb login`, WANDB_MODE=offline, WANDB_PROJECT, ...). The W&B run id is kept in the
run folder, so `resume=<run>` continues the same W&B run; the trials of a search share a W&B group named after
the search. Epoch metrics are plotted against `epoch`, the per-step running means against `global_step`.
"""

import json
import secrets
from typing import Any

import torch

from cnnlab.run_folder import BEST_CHECKPOINT, RunStatus, checkpoints_dir
from cnnlab.tracking.loggers import RunContext, require_extra, resumed_record
from cnnlab.tracking.picture import Picture
from cnnlab.tracking.tracker import PER_CLASS, Sink, norm_scalars

ID_FILE = "wandb_run.json"  # in the run folder: the W&B run's id, name and group
HISTOGRAM_BINS = 64


class WandbSink(Sink):
    """One W&B run per cnnlab run; checkpoints become a `model` artifact when the run ends."""

    def __init__(
        self,
        context: RunContext,
        project: str = "cnnlab",
        entity: str | None = None,
        tags: list[str] | None = None,
        log_checkpoints: bool = True,
    ) -> None:
        self.wandb = require_extra("wandb", "wandb", "wandb")
        self.run_dir = context.run_dir
        self.log_checkpoints = log_checkpoints
        # the W&B run's id, name and group, kept in the run folder before W&B starts: a resumed run (a sweep trial
        # resumed on its own included) continues the same W&B run under the same name and group
        recorded = resumed_record(context, ID_FILE)
        identity = (
            json.loads(recorded)
            if recorded
            else {
                "id": secrets.token_hex(6),  # lowercase letters and digits, like W&B's own ids
                "name": context.name,
                "group": context.sweep.name if context.sweep else None,
            }
        )
        (context.run_dir / ID_FILE).write_text(json.dumps(identity) + "\n")
        self.run = self.wandb.init(
            project=project,
            entity=entity,
            dir=str(context.run_dir),
            id=identity["id"],
            name=identity["name"],
            group=identity["group"],
            resume="allow",
            job_type="train",
            tags=list(tags or []),
            config=context.config,
            reinit="create_new",
        )
        self.run.define_metric("epoch")
        self.run.define_metric("global_step")
        self.run.define_metric("step/*", step_metric="global_step")
        for prefix in ("train", "val", "test", "lr", "throughput", "time", "weight", "grad", "samples"):
            self.run.define_metric(f"{prefix}*", step_metric="epoch")
        self.finished = False

    def step(self, step: int, stats: dict[str, float]) -> None:
        values = {f"step/{k}": v for k, v in stats.items() if k != "global_step"}
        self.run.log({**values, "global_step": int(stats["global_step"])})

    def epoch_ended(self, epoch: int, metrics: dict[str, float]) -> None:
        self.run.log({**metrics, "epoch": epoch})

    def tensors(self, epoch: int, weights: dict[str, torch.Tensor], grad_norms: dict[str, torch.Tensor]) -> None:
        def histogram(values: torch.Tensor) -> Any:
            return self.wandb.Histogram(values.detach().float().cpu().numpy(), num_bins=HISTOGRAM_BINS)

        logged: dict[str, Any] = {f"weights/{name}": histogram(v) for name, v in weights.items()}
        logged.update({f"grad_norm/{name}": histogram(v) for name, v in grad_norms.items()})
        logged.update(norm_scalars(weights, grad_norms))
        self.run.log({**logged, "epoch": epoch})

    def images(self, tag: str, images: torch.Tensor, step: int) -> None:
        shown = 3 if images.shape[1] >= 3 else 1
        pictures = [self.wandb.Image(image[:shown].permute(1, 2, 0).cpu().numpy()) for image in images]
        self.run.log({f"samples/{tag}": pictures, "epoch": step})

    def evaluation(self, split: str, report: dict[str, Any], classes: list[str], step: int, confusion: Picture) -> None:
        self.run.summary[f"{split}/acc"] = report["acc"]
        self.run.summary[f"{split}/loss"] = report["loss"]
        for key in PER_CLASS:
            for name, value in zip(classes, report[key]):
                self.run.summary[f"{split}/{key.replace('per_class_', 'class_')}/{name}"] = value
        self.run.log({f"{split}/confusion_matrix": self.wandb.Image(confusion.pixels), "epoch": step})

    def run_ended(self, summary: dict[str, Any]) -> None:
        for key in ("status", "best_val_acc", "test_acc", "epochs_completed", "train_time_s", "stopped_by"):
            if summary.get(key) is not None:
                value = summary[key]
                self.run.summary[key] = str(value) if isinstance(value, RunStatus) else value
        folder = checkpoints_dir(self.run_dir)
        files = sorted(folder.glob("*.pt")) if self.log_checkpoints and folder.is_dir() else []
        if files:
            artifact = self.wandb.Artifact(f"model-{self.run.id}", type="model", metadata={"best": BEST_CHECKPOINT})
            for path in files:
                artifact.add_file(str(path))
            self.run.log_artifact(artifact)
        failed = summary["status"] not in (RunStatus.COMPLETED, RunStatus.PRUNED)
        self._finish(1 if failed else 0)

    def _finish(self, exit_code: int) -> None:
        if not self.finished:
            self.finished = True
            self.run.finish(exit_code=exit_code)

    def close(self) -> None:
        self._finish(1)  # only reached unfinished when the run stopped without ending (an error, an interrupt)
