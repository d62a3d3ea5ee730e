"""User-facing errors: the CLI prints them as one line and exits non-zero, without a traceback."""


class UserError(Exception):
    """A mistake the user can fix (bad name, bad option, missing or malformed data).

    The message names the problem and the fix in one line.
    """


class DivergedError(UserError):
    """Training produced a non-finite loss."""


class MissingModelError(UserError):
    """A model that was to be measured, not trained, is not in the cache."""
