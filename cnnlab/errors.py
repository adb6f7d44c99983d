"""The exception types for mistakes a user can fix.

UserError subclasses Hydra's CompactHydraException so that Hydra, when it sees one at config time,
prints only its message; `cnnlab` prints every user error as one line (see cnnlab.cli_errors).
"""

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """A problem with the user's input; the message says what is wrong and how to fix it."""


class UserErrorExit(BaseException):
    """Carries a UserError raised inside a job out through Hydra's job runner.

    A BaseException, so Hydra's `except Exception` handlers let it pass without printing their
    own multi-line banner; the CLI turns it into one line and a non-zero exit.
    """

    def __init__(self, error: UserError) -> None:
        super().__init__(str(error))
        self.error = error


def find_user_error(exc: BaseException | None) -> UserError | None:
    """The UserError behind `exc`, following `raise ... from` and implicit chaining (instantiate wraps)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
