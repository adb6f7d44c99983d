"""The logging handler behind every console line; kept free of torch so that a config typo fails fast."""

import logging

from rich import get_console


class ConsoleLogHandler(logging.Handler):
    """Logging handler printing plain messages through Rich's console, one line each (no wrapping).

    Going through Rich's console keeps log lines from tearing the live progress bar.
    """

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "file_only", False):
            return
        try:
            message = self.format(record)
            if record.levelno >= logging.WARNING:
                message = f"{record.levelname.lower()}: {message}"
            get_console().print(message, markup=False, highlight=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)
