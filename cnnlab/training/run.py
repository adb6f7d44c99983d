"""Assemble one training run from the composed config - data, model, optimizer, schedule, sinks, trainer - and run it.

A fresh run and a resumed one share this path; resuming only adds a `Resume` (the checkpoint, checked
against the config, and the history before it), and continues the same folder, log, TensorBoard run
and metrics.json.
"""

import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from cnnlab.checkpoints.store import CheckpointStore, load_checkpoint
from cnnlab.config.choices import tta_level
from cnnlab.config.duration import parse_duration
from cnnlab.data.build import DataBundle, Shard, build_data, overfit_subset
from cnnlab.data.loader import BatchLoader
from cnnlab.device import flush_denormals, resolve_device, set_deterministic
from cnnlab.errors import UserError
from cnnlab.models.stats import count_macs, count_parameters, measure_latency_ms
from cnnlab.run_folder import BEST_CHECKPOINT, RunStatus, checkpoints_dir
from cnnlab.tracking.loggers import RunContext, SweepInfo, build_loggers, current_sweep
from cnnlab.tracking.metrics_file import MetricsFileSink
from cnnlab.tracking.picture import confusion_picture
from cnnlab.tracking.plot_files import PlotFilesSink
from cnnlab.tracking.terminal import TerminalSink
from cnnlab.tracking.tracker import Tracker
from cnnlab.training.budget import StepBudget, probe_plan
from cnnlab.training.components import (
    build_model,
    configured_finetune,
    configured_optimizer,
    configured_step,
    step_batch_size,
)
from cnnlab.training.diagnosis import diagnose
from cnnlab.training.finetune import init_from
from cnnlab.training.ranks import Ranks, rank_seed
from cnnlab.training.resume import Resume
from cnnlab.training.signals import graceful_stop
from cnnlab.training.trainer import PruneRule, RunDiverged, RunInterrupted, StopRules, Trainer

log = logging.getLogger("cnnlab")

HPARAM_KEYS = (
    "lr",
    "batch_size",
    "epochs",
    "weight_decay",
    "seed",
    "dataset.name",
    "model._target_",
    "optimizer._target_",
    "scheduler._target_",
    "trainer.label_smoothing",
)
# A data-parallel run's processes take a second Ctrl-C or SIGTERM within this many seconds as the first one repeated
# by the launcher (torchrun forwards the signal its workers already got from the terminal)
REPEATED_SIGNAL_S = 3.0
# Pixels per channel of the sample a model computes data-derived weights from (a whitening stem): about 4,000
# 32x32 images, plenty for a covariance of 2x2 patches, and 50 MB as float RGB whatever the image size
SAMPLE_PIXELS = 2**22


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def hparam_values(cfg: DictConfig) -> dict[str, Any]:
    """The run's headline settings for TensorBoard's HParams tab (scalars and strings only)."""
    values: dict[str, Any] = {key: OmegaConf.select(cfg, key) for key in HPARAM_KEYS}
    values.update({f"model.{k}": v for k, v in cfg.model.items() if k != "_target_"})
    return {k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in values.items() if v is not None}


def augmented_samples(data: DataBundle, count: int = 32) -> torch.Tensor:
    """The first augmented training images (NCHW in [0, 1]), drawn without touching the run's random state."""
    with torch.random.fork_rng(devices=[]):
        images, _ = next(iter(data.train.iterate()))
    return (images[:count].float() * data.train.std + data.train.mean).clamp(0, 1).cpu()


def training_sample(data: DataBundle, pixels: int = SAMPLE_PIXELS) -> torch.Tensor:
    """The first training images, normalised as the model sees them: a random sample (the split is shuffled),
    drawn without touching any random state, of about `pixels` pixels per channel."""
    height, width = data.input_shape[1:]
    count = min(len(data.train.data), max(1, pixels // (height * width)))
    return data.train.normalize(data.train.data.gather(torch.arange(count)).to(data.train.device))


def split_sizes(data: DataBundle, ranks: Ranks) -> dict[str, int | None]:
    """Images per split, over all the processes' shards."""
    test = len(data.test.data) if data.test is not None else 0
    sizes = ranks.sum(torch.tensor([len(data.train.data), len(data.val.data), test])).tolist()
    return {"train_size": sizes[0], "val_size": sizes[1], "test_size": sizes[2] if data.test is not None else None}


@dataclass
class PreparedRun:
    """A run ready to fit: what `train` builds from the config (benchmarks time its parts on their own)."""

    trainer: Trainer
    tracker: Tracker
    data: DataBundle
    epochs: int
    info: dict[str, Any]
    history: list[dict[str, Any]]  # every epoch's metrics so far (a resumed run's included), growing as it trains
    overfit_batches: int = 0  # the overfit sanity check's batches (trainer.overfit_batches); 0: a normal run


def train(
    cfg: DictConfig,
    run_dir: Path,
    prune: PruneRule | None = None,
    ranks: Ranks | None = None,
    sweep: SweepInfo | None = None,
) -> float:
    """Train, validate every epoch, test once at the end; return the best validation accuracy.

    Expects a config that passed validate_train_config (the train task checks it first). `prune`, in a
    search, sees each epoch's metrics and may stop the run early (RunStatus.PRUNED). `ranks`: the processes of a
    data-parallel run, which this one is one of (rank 0 alone writes the run folder). `sweep`: the search the run
    is a trial of, for its loggers (by default, Hydra's runtime config says).
    """
    run = prepare_run(cfg, run_dir, prune, ranks, sweep)
    return run_fit(run, run_dir)


def prepare_run(
    cfg: DictConfig,
    run_dir: Path,
    prune: PruneRule | None = None,
    ranks: Ranks | None = None,
    sweep: SweepInfo | None = None,
) -> PreparedRun:
    """Data, model, optimizer, schedule, sinks and trainer from the config; a resumed run's state loaded."""
    ranks = ranks or Ranks()
    config = OmegaConf.to_container(cfg, resolve=True)
    # rank 0 reads the checkpoint and hands it to the others: no process but rank 0 needs the run folder's files
    resume = ranks.lead(lambda: Resume.load(cfg.resume, config)) if cfg.resume else None
    parallel = ranks.world_size > 1
    device = resolve_device(str(cfg.device), ranks.local_rank if parallel else None)
    flush_denormals(device)
    set_deterministic(bool(cfg.trainer.get("deterministic", False)))
    seed_everything(cfg.seed)
    channels_last = bool(cfg.trainer.channels_last)
    batch = step_batch_size(cfg)
    data = ranks.first(  # rank 0 downloads or decodes into the cache first; the others then read what it wrote
        lambda: build_data(
            cfg.dataset,
            batch,
            cfg.trainer.eval_batch_size,
            device,
            rank_seed(cfg.seed, ranks.rank),
            channels_last,
            Shard(ranks.rank, ranks.world_size),
        )
    )
    if overfit := cfg.trainer.get("overfit_batches", 0):
        data = overfit_subset(data, overfit)
        log.info(
            "overfit check: training on %d images (%d batches), validating on the same", len(data.train.data), overfit
        )
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model(cfg, data.input_shape, len(data.classes))
    if resume is None and hasattr(model, "init_from_data"):  # on resume, the checkpoint holds what it computes
        model.init_from_data(training_sample(data))
    if resume is None and cfg.init_from:
        init_from(model, cfg.init_from)
    finetune = configured_finetune(cfg)
    finetune.apply(model, resume.epoch if resume else 0)  # the probe and the optimizer see what trains first
    if parallel and cfg.trainer.get("sync_batchnorm", False):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group=ranks.group)
    model = model.to(device, memory_format=memory_format)
    if parallel:
        seed_everything(rank_seed(cfg.seed, ranks.rank))  # the same initial weights; each rank's own dropout, mixing
    info: dict[str, Any] = {
        "model": cfg.model._target_.rsplit(".", 1)[-1],
        "params": count_parameters(model),
        "macs": count_macs(model, data.input_shape),
        "dataset": cfg.dataset.name,
        **split_sizes(data, ranks),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "processes": ranks.world_size,
    }

    budget_s = parse_duration(cfg.trainer.time_budget) if cfg.trainer.time_budget is not None else None
    total_steps, budget = ranks.lead(lambda: plan_run_length(cfg, resume, budget_s, model, data, device))
    steps = len(data.train)
    epochs = -(-total_steps // steps)
    optimizer = configured_optimizer(cfg, model)
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=total_steps, steps_per_epoch=steps)
    if budget is not None and not hasattr(scheduler, "total_steps"):  # a schedule whose horizon cannot move
        budget = None
    history = resume.history if resume else []
    context = RunContext(
        run_dir,
        config,
        hparam_values(cfg),
        list(history),
        resumed=resume is not None,
        purge_step=resume.purge_step if resume else None,
        sweep=sweep or current_sweep(),
    )
    metrics_file = MetricsFileSink(
        run_dir, list(history), resume.started_at if resume else None, resume.epoch if resume else 0
    )
    sinks = [TerminalSink(), metrics_file, PlotFilesSink(run_dir, list(history))]
    tracker = Tracker([*sinks, *build_loggers(cfg.get("logger"), context)] if ranks.leader else [])
    try:
        net = data_parallel(model, device, ranks) if parallel else model
        net = torch.compile(net) if cfg.compile else net
        trainer = Trainer(
            configured_step(cfg, net, device, len(data.classes), optimizer, scheduler),
            tracker=tracker,
            log_every=cfg.trainer.log_every,
            histograms=cfg.trainer.histograms and ranks.leader,
            tta=tta_level(cfg.trainer.tta),
            tta_every_epoch=cfg.trainer.tta_every_epoch,
            finetune=finetune if finetune.mode != "full" else None,
            checkpoints=CheckpointStore(
                checkpoints_dir(run_dir), config, {"planned_epochs": epochs, "data": data.card()}
            )
            if ranks.leader
            else None,
            rules=StopRules(cfg.trainer.patience, cfg.trainer.divergence_factor, budget_s, prune),
            budget=budget,
            ranks=ranks,
        )
        if resume:
            resume.restore(trainer)
            log.info(
                "resuming %s at epoch %d%s",
                run_dir,
                trainer.epoch + 1,
                f" step {trainer.position.step + 1}" if trainer.position.step else "",
            )
        elif ranks.leader:
            log_start_images(tracker, data, model, cfg)
    except BaseException:
        tracker.close()  # loggers already started (a W&B or MLflow run) end rather than stay open
        raise
    return PreparedRun(trainer, tracker, data, epochs, info, metrics_file.history, overfit)


def plan_run_length(
    cfg: DictConfig,
    resume: Resume | None,
    budget_s: float | None,
    model: torch.nn.Module,
    data: DataBundle,
    device: torch.device,
) -> tuple[int, StepBudget | None]:
    """The schedule's length in steps (`epochs`, or what fits the time budget), and under a budget the plan that
    re-fits it as it trains; a resumed run continues its checkpoint's plan (`epochs` may raise it)."""
    steps = len(data.train)
    if budget_s is None:
        return steps * (resume.planned_epochs(cfg.epochs, time_budget=False) if resume else int(cfg.epochs)), None
    plan = probe_plan(
        model,
        lambda probe: configured_step(cfg, probe, device, len(data.classes)),
        data.train,
        data.val,
        budget_s,
        tta=tta_level(cfg.trainer.tta),
        tta_every_epoch=cfg.trainer.tta_every_epoch,
    )
    if resume is not None:
        total = resume.checkpoint.get("total_steps") or steps * resume.planned_epochs(cfg.epochs, time_budget=True)
        return total, StepBudget(plan, total)
    total = plan.total_steps(0.0, 0)
    log.info(
        "time budget %.0f s: %.3f s per step and %.1f s per validation%s, so %d steps (%.2f epochs); "
        "re-planned as it trains, the schedule ends with the budget",
        budget_s,
        plan.step_s,
        plan.eval_s,
        f" ({plan.final_eval_s:.1f} s for the last, with TTA)" if plan.final_eval_s != plan.eval_s else "",
        total,
        total / steps,
    )
    return total, StepBudget(plan, total)


def log_start_images(tracker: Tracker, data: DataBundle, model: torch.nn.Module, cfg: DictConfig) -> None:
    tracker.images("train/augmented_samples", augmented_samples(data), 0)
    if cfg.trainer.log_graph:
        tracker.graph(model, next(iter(data.val))[0][:2])


def data_parallel(model: torch.nn.Module, device: torch.device, ranks: Ranks) -> torch.nn.Module:
    """`model` wrapped so that every backward averages its gradients over the run's processes (and rank 0's
    weights and BatchNorm statistics are everyone's to start from)."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, process_group=ranks.group)


def score_best_and_last(
    trainer: Trainer, loader: BatchLoader, num_classes: int, run_dir: Path
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The report of the best-validation weights (best.pt), and of the final weights when they differ (else None).

    The model is selected on the validation split and reported on the test split; the evaluated model (the
    average, under weight averaging) is left holding the best weights.
    """
    final = trainer.report(loader, num_classes)
    best = checkpoints_dir(run_dir) / BEST_CHECKPOINT
    if trainer.best_epoch in (None, trainer.epoch) or not trainer.ranks.share(best.is_file()):
        return final, None
    trainer.evaluated_model.load_state_dict(trainer.ranks.lead(lambda: load_checkpoint(best)["model"]))
    return trainer.report(loader, num_classes), final


def run_fit(run: PreparedRun, run_dir: Path) -> float:
    """fit + final evaluation, with the run's status and the diagnosis of its curves recorded whatever happens."""
    trainer, tracker, data, epochs, info = run.trainer, run.tracker, run.data, run.epochs, run.info
    summary: dict[str, Any] = {**info, "run_dir": str(run_dir), "status": RunStatus.FAILED}
    resume_hint = f"continue with: cnnlab train resume={run_dir}"
    with tracker:
        tracker.run_started(info)
        try:
            with graceful_stop(trainer, REPEATED_SIGNAL_S if trainer.ranks.world_size > 1 else 0.0):
                result = trainer.fit(data.train, data.val, epochs)
            if result.stopped_by == "pruned":  # a search stopped it: the test split is not worth the time
                summary.update(status=RunStatus.PRUNED, stopped_by="pruned", pruned_at_epoch=result.epochs_completed)
                return trainer.best_val_acc or 0.0
            split, loader = ("test", data.test) if data.test is not None else ("val", data.val)
            report, last_report = score_best_and_last(trainer, loader, len(data.classes), run_dir)
            tracker.evaluation(
                split, report, data.classes, result.epochs_completed, confusion_picture(report, data.classes)
            )
            summary.update(
                status=RunStatus.COMPLETED,
                stopped_by=result.stopped_by,
                tested_epoch=trainer.best_epoch if last_report is not None else trainer.epoch,
                latency_ms=(
                    measure_latency_ms(trainer.plain_model, next(iter(data.val))[0]) if trainer.ranks.leader else None
                ),
            )
            if split == "test":
                summary.update(test_acc=report["acc"], test_loss=report["loss"])
                if last_report is not None:
                    summary.update(test_acc_last=last_report["acc"])
        except RunDiverged as e:
            summary.update(status=RunStatus.DIVERGED, message=str(e))
            raise
        except RunInterrupted as e:
            summary.update(status=RunStatus.INTERRUPTED, message=f"{e}; {resume_hint}")
            raise RunInterrupted(summary["message"]) from e
        except KeyboardInterrupt:
            summary.update(
                status=RunStatus.INTERRUPTED,
                message=f"stopped at once; checkpoints/last.pt is the last finished epoch; {resume_hint}",
            )
            raise
        except UserError as e:  # after the more specific ones above; e.g. a checkpoint that could not be written
            summary.update(message=str(e))
            raise
        finally:
            summary.update(
                best_val_acc=trainer.best_val_acc,
                epochs_completed=trainer.epoch,
                train_time_s=trainer.train_time_s,
                time_budget_s=trainer.rules.time_budget_s,
                diagnosis=diagnose(
                    run.history, summary["status"], run.overfit_batches, run.trainer.train_step.mix is not None
                ),
            )
            tracker.run_ended(summary)
    return trainer.best_val_acc or 0.0
