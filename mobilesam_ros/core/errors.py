"""Errors that mean "the request is wrong", as opposed to a bug.

Front ends tell them apart by type: the CLI prints a `UsageError` (and the other input errors
listed in `cli/common.py`) as one line and exits 2; anything else is a bug and exits 1 with its
traceback. Raise these only for what a user can fix (an option, a file, an input).
"""
from __future__ import annotations


class UsageError(Exception):
    """A bad request: an option, a path or an input the user can fix."""


class ConfigError(UsageError, ValueError):
    """An option value that is out of range or inconsistent with another option."""


class MissingDependencyError(UsageError, ImportError):
    """An optional package this request needs is not installed (the message says how to get it)."""
