"""Errors caused by the user's input (configs, names, files): reported as one line, never a traceback."""


class UserError(ValueError):
    """A bad value supplied by the user; the message names the value and what is allowed.

    A ValueError too, so library callers that catch ValueError for bad arguments keep working.
    """


class RunFailed(UserError):
    """A run that started and then failed in a way the user must act on (its losses diverged): exit status 1.

    Reported as one line like every UserError; the status tells scripts it is not a rejected configuration.
    """

    exit_status = 1
