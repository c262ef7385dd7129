"""Showing the package's log lines to a person: the CLI and the notebooks call `show_logs`.

Library code only logs (`logging.getLogger(__name__)`); what is shown, and where, is up to
the program. `show_logs()` writes the `captioning` loggers' lines on stderr: INFO lines as
their plain message, warnings and errors prefixed with their level (`WARNING: ...`).
"""

from __future__ import annotations

import logging
import sys

PACKAGE_LOGGER = "captioning"


class _Formatter(logging.Formatter):
    """The plain message; `LEVEL: message` from WARNING up."""

    def format(self, record):
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname}: {message}"
        return message


class LogDisplay(logging.StreamHandler):
    """The handler `show_logs` adds: it writes to the `sys.stderr` of the moment.

    `close()` (or leaving it as a context manager) removes it and gives the package logger
    back the level and propagation it had before.
    """

    def __init__(self, logger, level, propagate):
        super().__init__()
        self.setFormatter(_Formatter("%(message)s"))
        self._logger = logger
        self._saved = (level, propagate)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass  # always the current sys.stderr (a notebook or a test may replace it)

    def close(self):
        if self in self._logger.handlers:
            self._logger.removeHandler(self)
            self._logger.setLevel(self._saved[0])
            self._logger.propagate = self._saved[1]
        super().close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def show_logs(level=logging.INFO, *, quiet: bool = False) -> LogDisplay:
    """Shows the package's log lines at `level` and above on stderr.

    Calling it again replaces the earlier display, so a notebook cell can run it twice.

    Args:
        level: the lowest level shown (`logging.INFO`: progress and results; `logging.DEBUG`
            for more).
        quiet: show warnings and errors only, whatever `level` says.

    Returns:
        The handler; `close()` it (or use it in a `with` block) to stop showing the lines.

    Example:
    >>> from captioning.utils.logs import show_logs
    >>> display = show_logs()
    >>> display.close()
    """
    logger = logging.getLogger(PACKAGE_LOGGER)
    for handler in list(logger.handlers):
        if isinstance(handler, LogDisplay):
            handler.close()
    level = max(level, logging.WARNING) if quiet else level
    display = LogDisplay(logger, logger.level, logger.propagate)
    logger.addHandler(display)
    logger.setLevel(level)
    logger.propagate = False  # shown here once, not again by a handler on the root logger
    return display
