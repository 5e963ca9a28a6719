"""User-facing errors.

Every error a user can cause by bad input (a missing dataset, a wrong shape, a bad config value) is raised as a
:class:`UserError` subclass whose message names the problem and the fix. The ``dlscience`` CLI prints such an
error as one line, without a traceback, and exits with status 2.
"""


class UserError(Exception):
    """Bad input from the user: the message names the problem and how to fix it."""


class DatasetNotFoundError(UserError, FileNotFoundError):
    """A dataset is missing or unreadable; the message says where it was looked for and how to get it."""


class InputValidationError(UserError, ValueError):
    """An argument has the wrong shape, dtype, range or value."""
