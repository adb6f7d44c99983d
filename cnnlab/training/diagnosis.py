"""A learning-curve diagnosis: what a run's per-epoch history says about what to change next.

Each rule reads only the recorded history (train/val loss and accuracy per epoch) and the run's status, and
gives one line when it applies. The thresholds are constants here and stated in docs/outputs.md, so a user can
tell why a line was (or was not) printed.
"""

from collections.abc import Sequence
from typing import Any

# lr too high: an epoch's training loss at least this multiple of the epoch before (a spike), or a divergence
SPIKE_FACTOR = 1.5
# lr too low: the training loss fell by less than this fraction from the first epoch to the last
MIN_LOSS_DROP = 0.1
# still improving: the last epoch is the best, and validation accuracy rose at least this much over the last
# IMPROVING_WINDOW epochs
IMPROVING_GAIN = 0.005
IMPROVING_WINDOW = 2
# overfitting: validation loss at least this fraction above its minimum (reached before the last epoch) while the
# training loss kept falling
OVERFIT_RISE = 0.05
# underfitting: training accuracy below this at the end, with validation accuracy within UNDERFIT_GAP of it
UNDERFIT_TRAIN_ACC = 0.9
UNDERFIT_GAP = 0.05


# the overfit sanity check passes when the loss on its few training images (plain cross-entropy) falls below this
OVERFIT_LOSS = 0.1


def diagnose(
    history: Sequence[dict[str, Any]], status: str | None = None, overfit_batches: int = 0, mixed: bool = False
) -> list[str]:
    """One line per finding, most urgent first; empty when the curves show nothing to act on. A run of the overfit
    sanity check (`overfit_batches` > 0) gets its verdict instead. With MixUp/CutMix (`mixed`) training accuracy is
    counted on blended images, so it says nothing about underfitting."""
    if not history:
        return []
    if overfit_batches:
        return [_overfit_verdict(history, overfit_batches)]
    findings = [_too_high(history, status), _too_low(history), _overfitting(history), _still_improving(history)]
    if not mixed:
        findings.append(_underfitting(history))
    return [line for line in findings if line]


def _too_high(history: Sequence[dict[str, Any]], status: str | None) -> str | None:
    if status == "diverged":
        return "learning rate likely too high: the loss diverged (lower lr, or add warmup)"
    losses = [h["train/loss"] for h in history]
    for epoch, (before, after) in enumerate(zip(losses, losses[1:]), start=2):
        if after >= SPIKE_FACTOR * before:
            return (
                f"learning rate likely too high: the training loss jumped from {before:.3f} to {after:.3f} at "
                f"epoch {epoch} (lower lr, or add warmup)"
            )
    return None


def _too_low(history: Sequence[dict[str, Any]]) -> str | None:
    if len(history) < 2:
        return None
    first, last = history[0]["train/loss"], history[-1]["train/loss"]
    if first > 0 and (first - last) / first < MIN_LOSS_DROP:
        return (
            f"learning rate likely too low: the training loss fell only {100 * (first - last) / first:.1f}% over "
            f"{len(history)} epochs, {first:.3f} to {last:.3f} (raise lr; `cnnlab lr-find` suggests one)"
        )
    return None


def _overfitting(history: Sequence[dict[str, Any]]) -> str | None:
    val = [h["val/loss"] for h in history]
    best = min(range(len(val)), key=val.__getitem__)
    if best == len(val) - 1 or val[-1] < (1 + OVERFIT_RISE) * val[best]:
        return None
    train_then, train_now = history[best]["train/loss"], history[-1]["train/loss"]
    if train_now >= train_then:
        return None
    return (
        f"overfitting since epoch {best + 1}: validation loss rose from {val[best]:.3f} to {val[-1]:.3f} while the "
        f"training loss fell from {train_then:.3f} to {train_now:.3f} (more regularisation or augmentation: "
        "weight_decay, model.dropout, dataset.augment.*; or fewer epochs)"
    )


def _still_improving(history: Sequence[dict[str, Any]]) -> str | None:
    if len(history) <= IMPROVING_WINDOW:
        return None
    accs = [h["val/acc"] for h in history]
    gain = accs[-1] - accs[-1 - IMPROVING_WINDOW]
    if accs[-1] < max(accs) or gain < IMPROVING_GAIN:
        return None
    return (
        f"still improving at the end: validation accuracy rose {100 * gain:.1f} points over the last "
        f"{IMPROVING_WINDOW} epochs (train longer: more epochs or a larger time budget)"
    )


def _underfitting(history: Sequence[dict[str, Any]]) -> str | None:
    train, val = history[-1]["train/acc"], history[-1]["val/acc"]
    if train >= UNDERFIT_TRAIN_ACC or abs(train - val) > UNDERFIT_GAP:
        return None
    return (
        f"underfitting: training accuracy {100 * train:.1f}% and validation {100 * val:.1f}%, a small gap "
        "(a bigger model, less regularisation or augmentation, or longer training)"
    )


def _overfit_verdict(history: Sequence[dict[str, Any]], batches: int) -> str:
    first, last = history[0]["val/loss"], history[-1]["val/loss"]
    scores = f"from {first:.3f} to {last:.3f} (accuracy {100 * history[-1]['val/acc']:.1f}%)"
    if last < OVERFIT_LOSS:
        return (
            f"overfit check passed: on {batches} training batches the loss fell {scores}; the model and data can learn"
        )
    return (
        f"overfit check failed: on {batches} training batches the loss went {scores}, not below {OVERFIT_LOSS}; "
        "check the labels, the learning rate and the model, or give it more epochs"
    )
