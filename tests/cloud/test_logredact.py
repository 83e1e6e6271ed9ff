"""Tokens given as ?token= (the dashboard's live feed) never reach the access log."""

from __future__ import annotations

import logging

import pytest

from cloud import logredact
from cloud.app import create_app
from cloud.settings import Settings


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/live?token=kjc_SECRET", "/api/live?token=***"),
        ("/api/live?after=5&token=kjc_SECRET&x=1", "/api/live?after=5&token=***&x=1"),
        ("/api/live?TOKEN=kjc_SECRET", "/api/live?TOKEN=***"),
        ("/api/results?station=370214101203-01", "/api/results?station=370214101203-01"),
        ("/api/results?mytoken=abc", "/api/results?mytoken=abc"),
        # the server decodes query keys: these are all the `token` parameter
        ("/api/live?%74oken=kjc_SECRET", "/api/live?%74oken=***"),
        ("/api/live?after=1&tok%65n=kjc_SECRET", "/api/live?after=1&tok%65n=***"),
        ("/api/live?%54%4F%4B%45%4E=kjc_SECRET&x=1", "/api/live?%54%4F%4B%45%4E=***&x=1"),
        ("/api/live?x=%74oken&token=kjc_SECRET", "/api/live?x=%74oken&token=***"),
    ],
)
def test_redact(path: str, expected: str) -> None:
    assert logredact.redact(path) == expected


def test_access_log_record_is_redacted(caplog: pytest.LogCaptureFixture, tmp_path: object) -> None:
    create_app(Settings(db_path=str(tmp_path) + "/c.db", broker_url=None))
    create_app(Settings(db_path=str(tmp_path) + "/c.db", broker_url=None))
    logger = logging.getLogger("uvicorn.access")
    assert sum(isinstance(f, logredact.RedactTokens) for f in logger.filters) == 1  # installed once
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        # the record shape uvicorn's access logger emits
        logger.info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "GET", "/api/live?token=kjc_SECRET", "1.1", 200
        )
    assert "kjc_SECRET" not in caplog.text
    assert "/api/live?token=***" in caplog.text
