"""Logging filters used by the settings' LOGGING."""

from __future__ import annotations

import logging


class WithoutTraceback(logging.Filter):
    """Keep the record's message, drop its traceback and log it as a warning.

    Django logs each refused Host header at ERROR with the full stack; bots send thousands, and the
    stack says nothing the message does not.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        record.stack_info = None
        if record.levelno > logging.WARNING:
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
        return True
