"""HTTP hardening of the cloud: CSV exports cannot carry spreadsheet formulas, and oversized request bodies
are refused (413) before they are read — checked on a real `kuaijian cloud serve` process."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import select
import socket
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from cloud import report_render
from cloud.db import Database
from cloud.ingest import Inbound, process_batch
from cloud.settings import Settings
from tests.cloud.factories import T0, Grid, batch_payload, bearer
from tests.helpers import free_port, port_open, wait_for

A1 = "370214101203-01"
NASTY = ['=HYPERLINK("http://x","y")', "+1+2", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def test_to_csv_neutralises_formula_cells() -> None:
    rows = [{"name": text, "tests": -3, "score": -0.5} for text in NASTY] + [{"name": "菠菜", "tests": 1}]
    out = report_render.to_csv(rows, (("name", "name"), ("tests", "tests"), ("score", "score")))
    parsed = list(csv.DictReader(io.StringIO(out.decode("utf-8-sig"), newline="")))
    assert [p["name"] for p in parsed] == ["'" + t for t in NASTY] + ["菠菜"]
    assert [p["tests"] for p in parsed[:-1]] == ["-3"] * len(NASTY)  # numbers stay numbers
    assert parsed[0]["score"] == "-0.5"


def test_positivity_csv_export_neutralises_product_names(
    api: Any, grid: Grid, db: Database, settings: Settings
) -> None:
    results = [grid.result(A1, sample={"id": f"S{i}", "product": p}) for i, p in enumerate(NASTY[:4])]
    out = process_batch(db, [Inbound(f"kj/v1/{A1}/result", batch_payload(results), T0)], settings)
    assert out.rejected == 0
    resp = api.get(
        "/api/reports/positivity",
        params={"start": "2026-11-01", "end": "2026-11-30", "format": "csv"},
        headers=bearer(grid.tokens["admin"]),
    )
    assert resp.status_code == 200, resp.text
    products = {row["样品 product"] for row in csv.DictReader(io.StringIO(resp.content.decode("utf-8-sig")))}
    assert products == {"'" + p for p in NASTY[:4]}


@pytest.fixture
def served(tmp_path: Path) -> Any:
    """`kuaijian cloud serve` (no broker) on a random loopback port; yields (port, pid); stopped afterwards."""
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    env = {**os.environ, "KJ_CLOUD_SCHEDULER_ENABLED": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kuaijian.cli", "cloud", "serve", "--db", str(tmp_path / "c.db"),
         "--port", str(port), "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    try:
        wait_for(lambda: port_open(port) or proc.poll() is not None, 30, "serve did not listen")
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _status(sock: socket.socket) -> int:
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, f"connection closed without a response: {head!r}"
        head += chunk
    return int(head.split(b" ", 2)[1])


def test_declared_oversized_body_refused_before_it_is_sent(served: tuple[int, int]) -> None:
    port, _ = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        # only the headers: the server must answer without waiting for the 200 MB it was promised
        sock.sendall(
            b"POST /api/configs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 209715200\r\n\r\n"
        )
        assert _status(sock) == 413


def test_chunked_oversized_body_refused_without_growing_the_server(served: tuple[int, int]) -> None:
    port, pid = served
    before = _rss_kib(pid)
    chunk = b"x" * (64 * 1024)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    status = None
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/cases/1/actions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        try:
            while sent < 200 * 1024 * 1024:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                sock.sendall(frame)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending
        status = _status(sock)
    assert status == 413
    assert sent < 50 * 1024 * 1024, f"the server let {sent} bytes in before refusing"
    grown = _rss_kib(pid) - before
    assert grown < 20 * 1024, f"the server grew by {grown} KiB"


def _csp(value: str) -> dict[str, str]:
    return {d.split()[0]: d.partition(" ")[2] for d in (p.strip() for p in value.split(";")) if d}


@pytest.mark.parametrize(
    "path", ["/dashboard/", "/dashboard/app.js", "/dashboard/app.css", "/api/health", "/api/results"]
)
def test_security_headers_on_every_response(api: Any, path: str) -> None:
    resp = api.get(path)
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["referrer-policy"] == "no-referrer"
    csp = _csp(resp.headers["content-security-policy"])
    assert csp["frame-ancestors"] == "'none'"
    assert csp["script-src"] == "'self'"  # no 'unsafe-inline', no third-party origin
    assert csp["object-src"] == "'none'"


def test_weekly_html_report_runs_no_script_and_cannot_be_framed(api: Any, grid: Grid) -> None:
    resp = api.get("/api/reports/weekly", params={"format": "html"}, headers=bearer(grid.tokens["admin"]))
    assert resp.status_code == 200, resp.text
    csp = _csp(resp.headers["content-security-policy"])
    assert csp["default-src"] == "'none'"  # no script source at all
    assert csp["frame-ancestors"] == "'none'"
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["x-content-type-options"] == "nosniff"
    # the one inline stylesheet is the one the policy's hash allows
    style = re.search(r"<style>(.*?)</style>", resp.text, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert csp["style-src"] == f"'sha256-{digest}'"
    assert "<script" not in resp.text.lower()


def test_no_third_party_script_pages(api: Any) -> None:
    assert api.get("/docs").status_code == 404
    assert api.get("/redoc").status_code == 404
    assert api.get("/openapi.json").status_code == 200  # the schema itself stays available


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.handlers: list[str] = []
        self.srcs: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handlers += [f"<{tag} {k}>" for k, _ in attrs if k.startswith("on") or k == "style"]
        if tag == "script":
            self._in_script = True
            self.srcs.append(dict(attrs).get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append(data)


def test_dashboard_page_has_no_inline_script_or_handlers() -> None:
    from cloud.api.routes.dashboard import STATIC_DIR

    for page in STATIC_DIR.glob("*.html"):
        parser = _Scripts()
        parser.feed(page.read_text(encoding="utf-8"))
        assert parser.inline == [], page
        assert parser.handlers == [], page
        assert all(src.startswith("/") for src in parser.srcs), parser.srcs  # same origin only
