"""Errors caused by the user's input (configs, names, files): reported as one line, never a traceback."""


class UserError(ValueError):
    """A bad value supplied by the user; the message names the value and what is allowed.

    A ValueError too, so library callers that catch ValueError for bad arguments keep working.
    """
