"""`cnnlab report <sweep folder>`: rank a sweep's trials and write report.md, trials.csv and plots."""

import sys
from pathlib import Path

from cnnlab.errors import UserError


def main() -> None:
    args = sys.argv[1:]
    if len(args) != 1 or args[0].startswith("-"):
        raise UserError(
            "usage: cnnlab report <sweep folder>, for example cnnlab report outputs/sweeps/2026-11-23/10-00-00_ab12cd"
        )
    import logging

    from cnnlab.sweeps.report import write_report

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    write_report(Path(args[0]))
