"""Ctrl-C and SIGTERM ask the trainer to stop after the current step instead of killing it mid-write."""

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType

log = logging.getLogger("cnnlab")


@contextlib.contextmanager
def graceful_stop(trainer: object, repeat_window_s: float = 0.0) -> Iterator[None]:
    """Within the block, the first SIGINT/SIGTERM sets `trainer.stop_requested`; a second one stops at once.

    A second signal within `repeat_window_s` of the first is the same request: a launcher that forwards the
    terminal's Ctrl-C to its workers (torchrun does) delivers it twice to each of them.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be installed from the main thread
        return
    first_at: list[float] = []

    def handle(signum: int, frame: FrameType | None) -> None:
        if getattr(trainer, "stop_requested", False):
            if first_at and time.monotonic() - first_at[0] < repeat_window_s:
                return
            raise KeyboardInterrupt
        trainer.stop_requested = True  # type: ignore[attr-defined]
        first_at.append(time.monotonic())
        log.warning(
            "%s received: stopping after this step and saving checkpoints/last.pt (again to stop now)",
            signal.Signals(signum).name,
        )

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
