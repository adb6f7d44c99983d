"""The one exception type for mistakes a user can fix.

It subclasses Hydra's CompactHydraException so that Hydra prints only its message (one line, no
traceback) and exits non-zero; `HYDRA_FULL_ERROR=1` still shows the traceback.
"""

from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """A problem with the user's input; the message says what is wrong and how to fix it."""
