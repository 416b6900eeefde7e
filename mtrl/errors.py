"""Errors caused by the user's input (configs, names, files): reported as one line, never a traceback."""


class UserError(Exception):
    """A bad value supplied by the user; the message names the value and what is allowed."""
