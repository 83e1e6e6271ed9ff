"""A private PostgreSQL server for tests and benchmarks, from Debian's postgresql package.

Does: `initdb` into a fresh temporary directory, start the server with `pg_ctl` on a random 127.0.0.1 port
(its unix socket in that directory, fsync and synchronous_commit on, like production), create and drop
databases, restart it (outage tests), and stop it and delete the directory. initdb refuses to run as root,
so as root every server command runs as the unprivileged ``postgres`` user (``runuser``) and the directory
is chowned to it; as a normal user the commands run directly.

Does not: use or touch the system's PostgreSQL service or its clusters, or reach any host but 127.0.0.1.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import free_port

SUPERUSER = "kj"


def pg_bindir() -> Path:
    """The newest /usr/lib/postgresql/<ver>/bin with initdb (Debian's layout)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not found:
        raise RuntimeError(
            "PostgreSQL server binaries not found: run scripts/bootstrap (installs postgresql)"
        )
    return Path(found[-1]).parent


def _run_as() -> list[str]:
    if os.geteuid() != 0:
        return []
    for user in ("postgres", "nobody"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            continue
        return ["runuser", "-u", user, "--"]
    raise RuntimeError("running as root and no unprivileged user (postgres/nobody) to run PostgreSQL as")


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; `url(db)` gives a SQLAlchemy URL to a database."""

    port: int = field(default_factory=free_port)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="kj-pg-")))
    extra_conf: tuple[str, ...] = ()
    bindir: Path = field(default_factory=pg_bindir)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _cmd(self, *args: str) -> None:
        proc = subprocess.run([*_run_as(), *args], capture_output=True, text=True, check=False, cwd=self.root)
        if proc.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {proc.stderr}{proc.stdout}\n{tail}")

    def init(self) -> None:
        if os.geteuid() == 0:
            user = _run_as()[2]
            entry = pwd.getpwnam(user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        os.chmod(self.root, 0o700)
        self._cmd(
            str(self.bindir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",  # the throwaway cluster's own files; the server itself runs with fsync on
        )
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.socket_dir}'",
            "fsync = on",
            "synchronous_commit = on",
            "max_connections = 60",
            "shared_buffers = 128MB",
            "timezone = 'UTC'",
            *self.extra_conf,
        ]
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as f:
            f.write("\n".join(conf) + "\n")

    def start(self) -> None:
        """Start and wait until it accepts connections (pg_ctl -w)."""
        self._cmd(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._cmd(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def cleanup(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str, template: str | None = None) -> str:
        """CREATE DATABASE `name` (optionally from `template`); returns its URL."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            tmpl = "" if template is None else f' TEMPLATE "{template}"'
            conn.execute(f'CREATE DATABASE "{name}"{tmpl}')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_postgres(extra_conf: tuple[str, ...] = ()) -> PostgresServer:
    """initdb + start; the caller must `cleanup()`."""
    server = PostgresServer(extra_conf=extra_conf)
    try:
        server.init()
        server.start()
    except BaseException:
        server.cleanup()
        raise
    return server
