"""Keep bearer tokens out of access logs.

The dashboard's live feed (`GET /api/live`) takes its token as ``?token=`` because a browser's EventSource
cannot send headers; uvicorn's access log would otherwise write every dashboard user's token to disk.
`install()` adds a filter to the ``uvicorn.access`` logger that replaces the value with ``***``.
A query key is compared after percent-decoding it, as the server does: ``?%74oken=`` and ``?tok%65n=`` are
the same parameter as ``?token=`` and are redacted too.

Does not: touch any other logger or the request itself.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

# one query parameter: its separator, its raw key, and its raw value (up to the next & or whitespace)
_PARAM = re.compile(r"(?P<sep>[?&])(?P<key>[^=&\s?#]*)=(?P<value>[^&\s#]*)")
_SECRET_KEYS = frozenset({"token"})


def _redact_param(m: re.Match[str]) -> str:
    if unquote_plus(m["key"]).strip().lower() in _SECRET_KEYS:
        return f"{m['sep']}{m['key']}=***"
    return m.group(0)


def redact(text: str) -> str:
    """`text` with the value of every query parameter named ``token`` (once decoded) replaced by ``***``."""
    return _PARAM.sub(_redact_param, text)


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
