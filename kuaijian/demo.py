"""`kuaijian demo`: the whole system on one machine, from a clean checkout.

Starts, in order: an MQTT broker (embedded amqtt, or the one given with ``--broker``); a cloud database (an
embedded SQLite file in the data directory, or the empty PostgreSQL database given with ``--db``) with a
generated demo grid (one county, several towns, one village per station), enrolled stations and an admin
user; the cloud service (``kuaijian cloud serve``: ingest, case scheduler, REST API, dashboard); per station
a simulated colloidal-gold reader on a real pseudo-terminal and a simulated enzyme-inhibition analyzer on
Modbus TCP; and per station a gateway process (``kuaijian gateway run``) configured exactly as a real station
would be, with its local sample-registration page on. Each village gets a generated producer list
(``kuaijian.demo_people``: cooperatives, family farms, enterprises, large growers, individuals), pushed to its
station on the retained config topic. A workload thread plays the technicians: most samples are registered on
the station's page first (producer, product, batch, plot, quantity, market date) and the analyzer record
carries the code the page gave; some are measured without registration (未登记); a few are retests of an
earlier sample. Occasional positives hold their batch and open a case; negative batches get a certificate.
Cases run on short deadlines (``--case-minutes`` per level, default 3), so automatic reminders (催办) and
escalation level by level (逐级上报) happen while one watches. The demo makes one password user at each level
(county, town, village, station: `DemoLogin`) and prints, for each, the user name, the password and a
one-click link (``#refresh=``, a login session opened for it), then a live status line until Ctrl-C (or
``--duration``), and shuts everything down in reverse order. Its data directory (databases, configs, logs)
is a temporary one removed on stop unless ``--keep``, or ``--data-dir`` (kept).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kuaijian.demo_people import DemoProducer

COUNTY = ("370214", "城阳区")
TOWNS = ("流亭街道", "夏庄街道", "惜福镇街道", "上马街道", "河套街道", "红岛街道", "棘洪滩街道", "城阳街道")
VILLAGES = ("东村", "西村", "南庄", "北庄", "前屯", "后屯", "河崖", "山前", "王家", "李家")
PEOPLE = ("王强", "李娜", "张伟", "刘洋", "陈静", "杨帆", "赵磊", "黄敏", "周杰", "吴霞")
PRODUCTS = ("菠菜", "芹菜", "韭菜", "豇豆", "黄瓜", "番茄", "小白菜", "生菜", "茄子", "辣椒")


LEVEL_NAMES = {
    "county": "县/区 county",
    "town": "乡镇 town",
    "village": "村 village",
    "station": "服务站 station",
}


class DemoError(RuntimeError):
    """The demo could not start: a clear message for the console."""


@dataclass(frozen=True)
class DemoLogin:
    """A person at one grid level: name + password for the login page, and a one-click refresh token."""

    level: str
    user: str
    password: str
    node: str
    node_name: str
    refresh_token: str


@dataclass
class DemoStation:
    station: str
    key_hex: str
    mqtt_password: str
    gold: Any = None
    enzyme: Any = None
    gateway: subprocess.Popen[bytes] | None = None
    web_port: int = 0
    producers: list[DemoProducer] = field(default_factory=list)
    registered: list[str] = field(default_factory=list)

    @property
    def page(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"


@dataclass
class Demo:
    """The running demo; `start()` then `stop()` (idempotent), or use as a context manager."""

    data_dir: Path
    http_port: int = 8800
    broker_url: str | None = None
    towns: int = 3
    stations_per_town: int = 2
    rate_per_min: float = 6.0
    positive_rate: float = 0.08
    seed: int = 1
    log: Any = field(default=sys.stderr)
    stations: list[DemoStation] = field(default_factory=list)
    case_minutes: float = 3.0
    admin_token: str = ""
    logins: list[DemoLogin] = field(default_factory=list)
    producers_per_village: int = 5
    db_url: str | None = None
    _broker: Any = None
    _cloud: subprocess.Popen[bytes] | None = None
    _workload: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _measured: int = 0
    _registered: int = 0

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dashboard/"

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        if not 1 <= self.towns <= len(TOWNS):
            raise DemoError(f"--towns must be between 1 and {len(TOWNS)}")
        if not 1 <= self.stations_per_town <= len(VILLAGES):
            raise DemoError(f"--stations-per-town must be between 1 and {len(VILLAGES)}")
        if self.rate_per_min <= 0:
            raise DemoError("--rate must be positive")
        if not 0 <= self.positive_rate <= 1:
            raise DemoError("--positive-rate must be between 0 and 1")
        if not 0 < self.case_minutes <= 7 * 24 * 60:
            raise DemoError("--case-minutes must be positive (at most a week)")
        if self.db_url is None and self.cloud_db_file.exists():
            raise DemoError(
                f"{self.data_dir} already holds a demo ({self.cloud_db_file.name}); choose an empty --data-dir"
            )
        if not 0 <= self.http_port <= 65535:
            raise DemoError("--port must be between 0 and 65535 (0: any free port)")
        if self.http_port == 0:
            self.http_port = _free_port()  # as the broker's and the station pages' ports are chosen
        if not _port_free(self.http_port):
            raise DemoError(
                f"port {self.http_port} on 127.0.0.1 is in use; choose another with --port (0: any free port)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_broker()
            self._prepare_cloud_db()
            self._start_cloud()
            self._start_instruments()
            self._start_gateways()
            self._start_workload()
        except BaseException:
            self.stop()
            raise

    def _say(self, text: str) -> None:
        print(text, file=self.log, flush=True)

    def _start_broker(self) -> None:
        if self.broker_url is not None:
            self._say(f"demo: using broker {self.broker_url}")
            return
        from kuaijian.broker import BrokerStartError, EmbeddedBroker

        port = _free_port()
        self._broker = EmbeddedBroker(port=port)
        try:
            self._broker.start()
        except BrokerStartError as exc:
            raise DemoError(str(exc)) from exc
        self.broker_url = self._broker.url
        self._say(f"demo: embedded MQTT broker (amqtt) on {self.broker_url}")

    @property
    def cloud_db_file(self) -> Path:
        """The embedded SQLite file (the default when no ``--db`` URL is given)."""
        return self.data_dir / "cloud.db"

    @property
    def cloud_db(self) -> str:
        """Where the demo cloud keeps its data: the ``--db`` URL (a PostgreSQL server), else the SQLite file."""
        return self.db_url if self.db_url is not None else str(self.cloud_db_file)

    def one_click(self, login: DemoLogin) -> str:
        """The dashboard link that logs `login` in at once (its refresh token; usable once: it rotates)."""
        return f"{self.dashboard_url}#refresh={login.refresh_token}"

    def _cloud_env(self) -> dict[str, str]:
        """Settings of the demo cloud: a 5 s scheduler and case deadlines of `case_minutes` at every level,
        reminded a third of that before they pass."""
        hours = self.case_minutes / 60
        return {
            "KJ_CLOUD_SCHEDULER_INTERVAL_S": "5",
            "KJ_CLOUD_CASE_DEADLINE_HOURS": json.dumps(dict.fromkeys(LEVEL_NAMES, hours)),
            "KJ_CLOUD_REMIND_BEFORE_HOURS": repr(hours / 3),
        }

    def _prepare_cloud_db(self) -> None:
        from cloud.accounts import Policy, add_user, login
        from cloud.auth import User, create_user
        from cloud.configs import push_producers
        from cloud.db import open_db, redacted
        from cloud.enrol import enrol_station
        from cloud.grid import import_grid_csv
        from cloud.producers import ref_of, upsert
        from cloud.settings import Settings, db_setting
        from kuaijian.demo_people import DemoProducer, village_producers

        rng = random.Random(self.seed)
        rows = ["level,code,name,parent_code,grid_head,information_officer,co_manager"]
        county_code, county_name = COUNTY
        rows.append(f"county,{county_code},{county_name},,{PEOPLE[0]},{PEOPLE[1]},{PEOPLE[2]}")
        plan: list[tuple[str, str, str]] = []  # (station id, village code, village name)
        for t in range(self.towns):
            town_code = f"{county_code}{t + 1:03d}"
            rows.append(f"town,{town_code},{TOWNS[t]},{county_code},{_people(rng)}")
            for v in range(self.stations_per_town):
                village_code = f"{town_code}{v + 201:03d}"
                base = f"{TOWNS[t][:2]}{VILLAGES[v]}"
                village_name = base if base.endswith("村") else f"{base}村"
                rows.append(f"village,{village_code},{village_name},{town_code},{_people(rng)}")
                plan.append((f"{village_code}-01", village_code, village_name))
        now = datetime.now(UTC)
        admin = User(id=0, name="demo", role="admin", node_id=None, node_code=None, node_path="/")
        db = open_db(self.cloud_db)
        try:
            if db.scalar("SELECT COUNT(*) FROM grid_nodes"):
                raise DemoError(
                    f"{redacted(self.cloud_db)} already holds a grid; give the demo an empty database"
                )
            import_grid_csv(db, "\n".join(rows) + "\n")
            village_ids: list[int] = []
            for station, village, village_name in plan:
                enrolment = enrol_station(db, station, village, now)
                st = DemoStation(station, enrolment.key_hex, enrolment.mqtt_password, web_port=_free_port())
                for item in village_producers(rng, village, village_name, self.producers_per_village):
                    pid, village_id, _ = upsert(db, admin, item, now)
                    st.producers.append(DemoProducer(ref_of(pid), item.name, item.products, item.plots))
                village_ids.append(village_id)
                self.stations.append(st)
            push_producers(db, village_ids, "demo", now)  # published by the cloud's scheduler once it runs
            self.admin_token = create_user(db, "demo-admin", "admin", None, now)
            policy = Policy.from_settings(Settings(**db_setting(self.cloud_db)))
            first_town, (first_station, first_village, village_name) = f"{county_code}001", plan[0]
            for level, node, node_name in (
                ("county", county_code, county_name),
                ("town", first_town, TOWNS[0]),
                ("village", first_village, village_name),
                ("station", first_station, f"{village_name} {first_station[-2:]}号站"),
            ):
                name, password = f"demo-{level}", f"kj-{secrets.token_hex(4)}"
                add_user(db, None, name, level, node, password, now, policy, display_name=node_name)
                session = login(db, name, password, now, policy)
                self.logins.append(DemoLogin(level, name, password, node, node_name, session.refresh_token))
        finally:
            db.close()
        self._say(
            f"demo: grid of 1 county, {self.towns} towns, {len(plan)} stations,"
            f" {len(plan) * self.producers_per_village} producers in {redacted(self.cloud_db)}"
        )

    def _start_cloud(self) -> None:
        log = (self.data_dir / "cloud.log").open("ab")
        cmd = [
            sys.executable, "-m", "kuaijian.cli", "cloud", "serve",
            "--db", self.cloud_db, "--broker", str(self.broker_url),
            "--mqtt-protocol", "3.1.1", "--shared-group", "",
            "--host", "127.0.0.1", "--port", str(self.http_port),
        ]  # fmt: skip
        env = {**os.environ, **self._cloud_env()}
        self._cloud = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._cloud.poll() is not None:
                raise DemoError(
                    f"the cloud exited with {self._cloud.returncode}; see {self.data_dir / 'cloud.log'}"
                )
            if self._api("/api/health") is not None:
                self._say(f"demo: cloud serving on http://127.0.0.1:{self.http_port}")
                return
            time.sleep(0.2)
        raise DemoError(f"the cloud did not answer within 60 s; see {self.data_dir / 'cloud.log'}")

    def _start_instruments(self) -> None:
        from firmware_sim.enzyme_modbus import EnzymeSimulator
        from firmware_sim.gold_serial import GoldSimulator
        from kuaijian_schema.specs import GB_T_5009_199

        for i, st in enumerate(self.stations):
            st.gold = GoldSimulator(
                serial=f"GR-{st.station[6:12]}",
                seed=self.seed * 1000 + i,
                link_path=str(self.data_dir / f"tty-gold-{st.station}"),
            )
            st.gold.start()
            st.enzyme = EnzymeSimulator(
                serial=f"EN-{st.station[6:12]}",
                channels=4,  # a control and three samples per run
                profile=GB_T_5009_199,
                seed=self.seed * 1000 + i,
            )
            st.enzyme.start_tcp("127.0.0.1", 0)
        self._say(
            f"demo: {len(self.stations)} gold readers on ptys, {len(self.stations)} enzyme analyzers on Modbus TCP"
        )

    def _station_toml(self, st: DemoStation) -> str:
        from kuaijian_schema.mqtt_client import parse_broker_url

        url = parse_broker_url(str(self.broker_url))
        host, port = st.enzyme.tcp_address or ("127.0.0.1", 0)
        data = self.data_dir / f"gw-{st.station}"
        return f"""# generated by kuaijian demo — the same layout `kuaijian cloud enrol-station` prints
[station]
id = "{st.station}"
key = "{st.key_hex}"
data_dir = "{data}"
operator = "demo"

[mqtt]
url = "{url.endpoint}"
username = "{st.station}"
password = "{st.mqtt_password}"
protocol = "3.1.1"

[link]
ack_timeout_s = 15
status_interval_s = 5

[acquisition]
poll_interval_s = 0.5
include_raw = true

[[instruments]]
name = "gold"
driver = "gold-serial"
port = "{st.gold.link_path}"

[instruments.timeouts]
reconnect_max_s = 5

[[instruments]]
name = "enzyme"
driver = "enzyme-modbus"
host = "{host}"
port = {port}

[instruments.timeouts]
reconnect_max_s = 5

[web]
enabled = true
host = "127.0.0.1"
port = {st.web_port}
"""

    def _start_gateways(self) -> None:
        for st in self.stations:
            config_path = self.data_dir / f"station-{st.station}.toml"
            config_path.write_text(self._station_toml(st), encoding="utf-8")
            log = (self.data_dir / f"gateway-{st.station}.log").open("ab")
            st.gateway = subprocess.Popen(
                [sys.executable, "-m", "kuaijian.cli", "gateway", "run", "--config", str(config_path)],
                stdout=log,
                stderr=log,
            )
            log.close()
        self._say(f"demo: {len(self.stations)} gateways started (configs and logs in {self.data_dir})")

    def _start_workload(self) -> None:
        self._workload = threading.Thread(target=self._work, name="demo-workload", daemon=True)
        self._workload.start()

    def _work(self) -> None:
        """Technicians at every station register and measure samples at a Poisson rate; some are positive."""
        rng = random.Random(self.seed)
        mean_gap = 60.0 / self.rate_per_min / max(1, len(self.stations))
        n = 0
        while not self._stop.wait(rng.expovariate(1.0 / mean_gap)):
            st = rng.choice(self.stations)
            n += 1
            positive = rng.random() < self.positive_rate
            try:
                if rng.random() < 0.7:
                    kit_name = rng.choice(sorted(st.gold.store.kits))
                    spec = st.gold.store.kits[kit_name]
                    cal = spec.lines[0].calibration
                    conc = (cal.c * 4.0 if cal is not None else 5.0) if positive else 0.0
                    code, product = self._sample(st, rng, f"{st.station[-9:-3]}-{n:05d}")
                    st.gold.measure(kit_name, rng.randrange(1, 9), code, product, conc)
                else:
                    channels = st.enzyme.channels
                    picked = [
                        self._sample(st, rng, f"{st.station[-9:-3]}-{n:05d}-{c}") for c in range(channels - 1)
                    ]
                    inhibition = [  # one per channel; the control channel's value is ignored
                        rng.uniform(55, 90) if rng.random() < self.positive_rate / 4 else rng.uniform(0, 30)
                        for _ in range(channels)
                    ]
                    st.enzyme.measure([c for c, _ in picked], [p for _, p in picked], inhibition)
                self._measured += 1
            except Exception as exc:  # noqa: BLE001 - a simulator hiccup must not stop the workload
                self._say(f"demo: workload: {exc}")

    def _sample(self, st: DemoStation, rng: random.Random, keypad_id: str) -> tuple[str, str]:
        """(sample id the analyzer record carries, product): mostly a code from the station's registration
        page — now and then a retest of an earlier sample — else an unregistered keypad id (未登记)."""
        from kuaijian.demo_people import VEGETABLES, RegistrationRefused, register_on_page

        producer = rng.choice(st.producers) if st.producers else None
        if producer is None or rng.random() < 0.1:
            return keypad_id, rng.choice(VEGETABLES)
        product = rng.choice(producer.products)
        retest_of = rng.choice(st.registered) if st.registered and rng.random() < 0.1 else None
        try:
            code = register_on_page(st.page, producer, product, rng, retest_of)
        except RegistrationRefused:  # e.g. the producer list has not reached the station yet
            return keypad_id, product
        st.registered = [*st.registered[-50:], code]
        self._registered += 1
        return code, product

    # ------------------------------------------------------------------ status
    def _api(self, path: str) -> Any:
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http_port}{path}",
            headers={"Authorization": f"Bearer {self.admin_token}"},
        )
        try:
            with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310 - loopback http only
                return json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def status(self) -> dict[str, Any]:
        """Counts for the status line, read from the cloud's REST API."""
        health = self._api("/api/health") or {}
        stations = self._api("/api/stations?limit=1000") or {}
        cases = self._api("/api/cases?status=open&limit=1") or {}
        items = stations.get("items", []) if isinstance(stations, dict) else []
        samples = self._api("/api/samples?limit=1") or {}
        held = self._api("/api/samples?status=held&limit=1") or {}
        released = self._api("/api/samples?status=released&limit=1") or {}
        return {
            "measured": self._measured,
            "registered": self._registered,
            "samples_in_cloud": samples.get("total", 0),
            "held": held.get("total", 0),
            "released": released.get("total", 0),
            "delivered": health.get("results", 0),
            "online": sum(1 for s in items if s.get("online")),
            "stations": len(self.stations),
            "backlog": sum(int(s.get("backlog") or 0) for s in items),
            "open_cases": cases.get("total", 0) if isinstance(cases, dict) else 0,
        }

    # ------------------------------------------------------------------ stop
    def stop(self) -> None:
        self._stop.set()
        if self._workload is not None:
            self._workload.join(5)
            self._workload = None
        for st in self.stations:
            if st.gateway is not None and st.gateway.poll() is None:
                st.gateway.send_signal(signal.SIGTERM)
        for st in self.stations:
            if st.gateway is not None:
                _reap(st.gateway)
                st.gateway = None
        if self._cloud is not None:
            if self._cloud.poll() is None:
                self._cloud.send_signal(signal.SIGTERM)
            _reap(self._cloud)
            self._cloud = None
        for st in self.stations:
            for sim in (st.gold, st.enzyme):
                if sim is not None:
                    with contextlib.suppress(Exception):
                        sim.stop()
            st.gold = st.enzyme = None
        if self._broker is not None:
            self._broker.stop()
            self._broker = None

    def __enter__(self) -> Demo:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _reap(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _people(rng: random.Random) -> str:
    a, b, c = rng.sample(PEOPLE, 3)
    return f"{a} 1380000{rng.randrange(1000, 9999)},{b},{c}"


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
