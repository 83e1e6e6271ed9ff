"""Keep bearer tokens out of access logs.

The dashboard's live feed (`GET /api/live`) takes its token as ``?token=`` because a browser's EventSource
cannot send headers; uvicorn's access log would otherwise write every dashboard user's token to disk.
`install()` adds a filter to the ``uvicorn.access`` logger that replaces the value with ``***``.

Does not: touch any other logger or the request itself.
"""

from __future__ import annotations

import logging
import re

_TOKEN = re.compile(r"((?:^|[?&])token=)[^&\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    """`text` with every ``token=`` query value replaced by ``***``."""
    return _TOKEN.sub(r"\1***", text)


class RedactTokens(logging.Filter):
    """Rewrites the request line of uvicorn access-log records (and any plain message) in place."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install(logger_name: str = "uvicorn.access") -> None:
    """Add the filter once (idempotent: apps created repeatedly, e.g. in tests, do not stack filters)."""
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, RedactTokens) for f in logger.filters):
        logger.addFilter(RedactTokens())
