"""`kuaijian demo` end to end: it starts, results reach the cloud, the dashboard answers, Ctrl-C stops it."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

from tests.helpers import free_port, wait_for
from tests.postgres import PostgresServer


def _get(url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return int(resp.status), resp.read()


def _start_demo(*args: str) -> tuple[subprocess.Popen[str], list[str], threading.Thread]:
    """`kuaijian demo *args` as a child process; its output lines are collected into the returned list by the
    returned (started) reader thread."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "kuaijian.cli", "demo", *args],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        text=True, encoding="utf-8", errors="replace",  # universal newlines: the "\r" status line is a line too
    )  # fmt: skip
    out: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in iter(proc.stdout.readline, ""):  # each line visible to the test as it comes
            out.append(line)

    reader = threading.Thread(target=read)
    reader.start()
    return proc, out, reader


def _stop_demo(proc: subprocess.Popen[str], reader: threading.Thread) -> int:
    """Ctrl-C the demo and return its exit code; killed if it has not stopped within 60 s."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        reader.join(10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_demo_delivers_results_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc, out, reader = _start_demo(
        "--port", str(port), "--data-dir", str(tmp_path), "--towns", "1", "--stations-per-town", "2",
        "--rate", "120", "--positive-rate", "0.3", "--duration", "150", "--case-minutes", "0.5",
    )  # fmt: skip
    try:
        token_line = wait_for(
            lambda: next((line for line in out if "login token:" in line), None) or proc.poll() is not None,
            60,
            "demo did not print its dashboard URL and token",
        )
        assert isinstance(token_line, str), f"demo exited early with {proc.returncode}: {''.join(out)}"
        token = token_line.split("login token:")[1].strip()
        assert any(f"http://127.0.0.1:{port}/dashboard/" in line for line in out)

        def results_in_cloud() -> int:
            _, body = _get(f"http://127.0.0.1:{port}/api/health", token)  # counts only with a token
            return int(json.loads(body)["results"])

        wait_for(lambda: results_in_cloud() >= 5, 60, "no results reached the cloud within 60 s")
        status, page = _get(f"http://127.0.0.1:{port}/dashboard/")
        assert status == 200
        assert b"<html" in page.lower()
        _, body = _get(f"http://127.0.0.1:{port}/api/stations", token)
        stations = json.loads(body)
        assert stations["total"] == 2
        wait_for(
            lambda: all(
                s["online"]
                for s in json.loads(_get(f"http://127.0.0.1:{port}/api/stations", token)[1])["items"]
            ),
            30,
            "both demo stations should report online",
        )
        wait_for(
            lambda: any(re.search(r"results in cloud [1-9]", line) for line in out),
            30,
            "the live status line did not show delivered results",
        )

        # producers, registered samples, held batches with cases naming them, certificates that verify
        def api(path: str) -> Any:
            return json.loads(_get(f"http://127.0.0.1:{port}{path}", token)[1])

        producers = api("/api/producers?limit=100")
        assert producers["total"] == 10  # 5 per village
        assert {p["kind"] for p in producers["items"]} == {"企业", "合作社", "家庭农场", "种养大户", "个人"}
        wait_for(
            lambda: (
                api("/api/samples?status=held&limit=1")["total"] >= 1
                and api("/api/samples?status=released&limit=1")["total"] >= 1
            ),
            90,
            "the demo should show a held batch and a released one within 90 s",
        )
        held = api("/api/samples?status=held&limit=1")["items"][0]
        assert held["producer_name"] in {p["name"] for p in producers["items"]}
        cases = api("/api/cases?limit=200")["items"]
        details = [api(f"/api/cases/{c['id']}") for c in cases]
        assert any(d["sample"] and d["sample"]["producer_name"] == held["producer_name"] for d in details)
        assert any(r["signal"] for d in details for r in d["results"])  # raw signals for the case plot
        number = api("/api/samples?status=released&limit=1")["items"][0]["certificate"]
        status, page = _get(f"http://127.0.0.1:{port}/verify/{number}")  # public: no token
        assert status == 200
        assert "核验通过" in page.decode()
        assert any("station page" in line for line in out)

        # one password login per level, each with a one-click link that opens a session at once
        text = "".join(out)
        found = re.findall(r"user (demo-\w+)  password (\S+)\n\s+one-click: \S+#refresh=(\S+)", text)
        logins = {user: password for user, password, _ in found}
        links = {user: refresh for user, _, refresh in found}
        assert set(logins) == {"demo-county", "demo-town", "demo-village", "demo-station"}, text
        for user, password in logins.items():
            doc = _post(f"http://127.0.0.1:{port}/api/auth/login", {"username": user, "password": password})
            me = json.loads(_get(f"http://127.0.0.1:{port}/api/me", doc["access_token"])[1])
            assert me["role"] == user.removeprefix("demo-")
            clicked = _post(f"http://127.0.0.1:{port}/api/auth/refresh", {"refresh_token": links[user]})
            assert (
                json.loads(_get(f"http://127.0.0.1:{port}/api/me", clicked["access_token"])[1])["name"]
                == user
            )

        # 30 s deadlines: the scheduler reminds and escalates within the run, on its own
        def system_actions() -> set[str]:
            found: set[str] = set()
            for c in api("/api/cases?limit=50")["items"]:
                found |= {
                    a["action"] for a in api(f"/api/cases/{c['id']}")["actions"] if a["actor"] == "system"
                }
            return found

        wait_for(
            lambda: {"remind", "escalate"} <= system_actions(), 90, "no automatic reminder and escalation"
        )
    finally:
        rc = _stop_demo(proc, reader)
    text = "".join(out)
    assert rc == 0, text
    assert "demo: stopped" in text
    assert f"demo: data kept in {tmp_path}" in text  # --data-dir is never removed
    assert (tmp_path / "cloud.db").exists()


def _post(url: str, body: dict[str, str]) -> Any:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def test_busy_port_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "kuaijian.cli", "demo", "--port", str(port), "--data-dir", str(tmp_path)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.returncode == 2
    assert f"port {port} on 127.0.0.1 is in use" in proc.stderr


def test_demo_on_postgresql_stores_in_the_server(tmp_path: Path, postgres: PostgresServer) -> None:
    """``--db postgresql://…``: the cloud's results land in that server (no SQLite file), and a second demo
    into the same database is refused."""
    import psycopg

    url = postgres.create_database("kj_demo").replace("postgresql+psycopg://", "postgresql://")
    proc, out, reader = _start_demo(  # --port 0: any free port, the one chosen in the banner
        "--port", "0", "--data-dir", str(tmp_path / "run"), "--db", url, "--towns", "1",
        "--stations-per-town", "1", "--rate", "120", "--duration", "120",
    )  # fmt: skip

    def stored() -> int:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT COUNT(*) FROM results").fetchone()
        return int(row[0]) if row else 0

    try:
        token_line = wait_for(
            lambda: next((line for line in out if "login token:" in line), None) or proc.poll() is not None,
            60,
            "demo --db did not print its token",
        )
        assert isinstance(token_line, str), f"demo exited early with {proc.returncode}: {''.join(out)}"
        token = token_line.split("login token:")[1].strip()
        urls = [m.group(1) for line in out if (m := re.search(r"http://127\.0\.0\.1:(\d+)/dashboard/", line))]
        assert urls, "".join(out)
        port = int(urls[0])
        assert port != 0
        wait_for(lambda: stored() >= 3, 60, "no results reached the PostgreSQL database within 60 s")
        _, body = _get(f"http://127.0.0.1:{port}/api/health", token)
        assert int(json.loads(body)["results"]) >= 3
    finally:
        rc = _stop_demo(proc, reader)
    assert rc == 0, "".join(out)
    assert not (tmp_path / "run" / "cloud.db").exists()
    again = subprocess.run(
        [sys.executable, "-m", "kuaijian.cli", "demo", "--port", str(free_port()), "--db", url,
         "--data-dir", str(tmp_path / "again")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert again.returncode == 2, again.stdout + again.stderr
    assert "already holds a grid" in again.stderr
    postgres.drop_database("kj_demo")
