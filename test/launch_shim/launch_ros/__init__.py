from . import actions  # noqa: F401
