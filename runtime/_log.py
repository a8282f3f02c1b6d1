"""``SYNCCL_DEBUG``: synccl's log lines on stderr, in the spirit of ``NCCL_DEBUG``.

``WARN`` shows failures; ``INFO`` also the settings in force at ``init`` and one line per
distinct Program chosen (collective, size range, Program and where it came from, engine).
Each line starts with ``host:pid [rank] synccl LEVEL``. Without ``SYNCCL_DEBUG`` synccl
installs no handler, so an application's own logging configuration decides.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = ["enable_debug_log"]

_HANDLER_NAME = "synccl-debug"

# A library's records go nowhere unless the application or SYNCCL_DEBUG configures logging
# (errors are raised anyway; logging's last-resort handler would print them twice).
logging.getLogger("synccl").addHandler(logging.NullHandler())


def enable_debug_log(level: str, rank: int) -> None:
    """Send the ``synccl`` loggers' records at ``level`` and above to stderr, prefixed with the rank.

    >>> enable_debug_log("WARN", 0)
    >>> logger = logging.getLogger("synccl")
    >>> [h.name for h in logger.handlers if h.name == "synccl-debug"], logger.level == logging.WARNING
    (['synccl-debug'], True)
    >>> logger.handlers = [h for h in logger.handlers if h.name != "synccl-debug"]
    """
    logger = logging.getLogger("synccl")
    for handler in list(logger.handlers):
        if handler.name == _HANDLER_NAME:
            logger.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.name = _HANDLER_NAME
    handler.setFormatter(logging.Formatter(f"{socket.gethostname()}:{os.getpid()} [{rank}] synccl %(levelname)s %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if level == "INFO" else logging.WARNING)
