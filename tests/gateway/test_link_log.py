"""An unreachable broker is not silent (issue 9 item 16, gateway half): the first failed connect is a
WARNING with the reason, further failures are summarised at most every `mqtt.unreachable_log_s`, the
connection (to a real Mosquitto started later) is logged with how long it was down, and losing it again is
a WARNING."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from tests.gateway.conftest import RunningService, write_station
from tests.helpers import Mosquitto, free_port, wait_for


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.link" and r.levelno == level]


def test_connection_state_changes_are_logged_with_rate_limiting(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.link")
    port = free_port()
    cfg = write_station(tmp_path, port, [])
    cfg.write_text(cfg.read_text().replace("[link]", "unreachable_log_s = 2.5\n\n[link]"))
    broker = Mosquitto(workdir=tmp_path, port=port)
    with RunningService(cfg) as svc:
        link = svc.link
        assert link is not None
        conn = link.connection_log
        wait_for(lambda: conn.failures >= 1, 10, "no failed connect was seen")
        first = _messages(caplog, logging.WARNING)
        assert len(first) == 1, first
        assert first[0].startswith(f"cannot reach mqtt://127.0.0.1:{port}: ConnectionRefusedError")
        # reconnect_max_s = 1: about one attempt per second; the warning repeats only every 2.5 s
        wait_for(lambda: conn.failures >= 7, 20, f"only {conn.failures} attempts")
        warnings = _messages(caplog, logging.WARNING)
        assert conn.failures >= 7
        assert 2 <= len(warnings) <= 1 + conn.failures // 2, warnings
        still = [w for w in warnings if w.startswith("still cannot reach")]
        assert still, warnings
        m = re.search(r"(\d+) failed attempt\(s\)", still[-1])
        assert m is not None
        assert int(m.group(1)) >= 2
        assert "ConnectionRefusedError" in still[-1]
        broker.start()
        try:
            wait_for(lambda: link.connected, 15, "gateway never connected to the broker")
            wait_for(lambda: _messages(caplog, logging.INFO), 5, "the connection was not logged")
            connected = [m for m in _messages(caplog, logging.INFO) if m.startswith("connected to")]
            assert len(connected) == 1
            assert re.search(r"after \d+ failed attempt\(s\), \d+ s without a connection", connected[0])
        finally:
            broker.stop()
        wait_for(
            lambda: any(m.startswith("disconnected from") for m in _messages(caplog, logging.WARNING)),
            15,
            "losing the broker was not logged",
        )
