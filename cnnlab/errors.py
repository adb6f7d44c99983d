"""The exception types for mistakes a user can fix.

Free of Hydra and torch, so that any module (a model, a data loader) can raise a UserError without
pulling them in; `cnnlab` prints every user error as one line (see cnnlab.cli_errors).
"""

import errno

DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
PATH_PROBLEMS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.EACCES, errno.EPERM, errno.EROFS}
PATH_PROBLEMS |= DISK_FULL


class UserError(Exception):
    """A problem with the user's input; the message says what is wrong and how to fix it."""


def install_extra(extra: str) -> str:
    """How to install one of cnnlab's optional extras, from a checkout or from the package index."""
    return f'pip install -e ".[{extra}]" (or pip install cnnlab[{extra}])'


def timm_missing() -> UserError:
    return UserError(f"model=timm needs timm, not installed here: {install_extra('timm')}")


class UserErrorExit(BaseException):
    """Carries a UserError raised inside a job out through Hydra's job runner.

    A BaseException, so Hydra's `except Exception` handlers let it pass without printing their
    own multi-line banner; the CLI turns it into one line and a non-zero exit.
    """

    def __init__(self, error: UserError) -> None:
        super().__init__(str(error))
        self.error = error


def file_problem(exc: OSError) -> UserError | None:
    """A full disk or an unusable path, said as what to do about it; None for other OS errors."""
    if exc.errno not in PATH_PROBLEMS:
        return None
    where = exc.filename or "the run's files"
    if exc.errno in DISK_FULL:
        return UserError(
            f"no space left to write {where} ({exc.strerror}); free some space or point hydra.run.dir "
            "(hydra.sweep.dir with -m) elsewhere; checkpoints already written are kept"
        )
    return UserError(
        f"cannot use {where}: {exc.strerror}; check that the folder exists and is writable, or choose "
        "another with hydra.run.dir=... (hydra.sweep.dir=... with -m)"
    )


def find_user_error(exc: BaseException | None) -> UserError | None:
    """The UserError behind `exc`, following `raise ... from` and implicit chaining (instantiate wraps).

    A full disk or an unusable output folder counts too: the user can fix those, and a traceback
    would not tell them how.
    """
    seen: set[int] = set()
    first_file_problem = None
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        if isinstance(exc, OSError) and first_file_problem is None:
            first_file_problem = file_problem(exc)
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return first_file_problem
