"""`kuaijian cloud …` verbs: serve, ingest, import-grid, enrol-station, mosquitto-auth, create-user, tick,
migrate-db (and user, producers, report from their own modules).

Every verb takes --db (a SQLite file or a postgresql:// URL; default: KJ_CLOUD_DB_URL, KJ_CLOUD_DB_PATH or
kuaijian-cloud.db); verbs that talk to the broker take
--broker (default: KJ_CLOUD_BROKER_URL). Heavy imports happen inside the verb functions.
Exit codes: 0 ok, 2 invalid input / not found / conflict (message on stderr), 1 other failure.

Does not: business logic (cloud.grid, cloud.enrol, cloud.auth, cloud.ingest, cloud.cases).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cloud.settings import Settings


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    from cloud.settings import Settings, db_setting

    overrides: dict[str, Any] = dict(extra)
    if getattr(args, "db", None) is not None:
        overrides.update(db_setting(args.db))
    if getattr(args, "broker", None) is not None:
        overrides["broker_url"] = args.broker
    for name in (
        "mqtt_username",
        "mqtt_password",
        "mqtt_password_file",
        "ingest_shared_group",
        "mqtt_protocol",
        "ingest_client_id",
    ):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    # a secret given on the command line wins over one in the environment, whichever form each takes
    if overrides.get("mqtt_password") is not None:
        overrides["mqtt_password_file"] = None
    elif overrides.get("mqtt_password_file") is not None:
        overrides["mqtt_password"] = None
    try:
        return Settings(**overrides)
    except ValueError as exc:  # pydantic's ValidationError: a bad value or an unreadable password file
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


def _add_db(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default=None,
        help="database: a SQLite file or postgresql://user@host:port/db (default: $KJ_CLOUD_DB_URL or $KJ_CLOUD_DB_PATH)",
    )


def _add_broker(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", default=None, help="mqtt://host:port (default: $KJ_CLOUD_BROKER_URL)")
    p.add_argument("--mqtt-username", dest="mqtt_username", default=None, help="broker user of the ingest")
    p.add_argument(
        "--mqtt-password",
        dest="mqtt_password",
        default=None,
        help="its password (visible to other users in the process list: prefer the file or $KJ_CLOUD_MQTT_PASSWORD)",
    )
    p.add_argument(
        "--mqtt-password-file",
        dest="mqtt_password_file",
        type=Path,
        default=None,
        help="file holding its password (default $KJ_CLOUD_MQTT_PASSWORD_FILE)",
    )
    p.add_argument(
        "--shared-group",
        dest="ingest_shared_group",
        default=None,
        help="MQTT 5 shared-subscription group ('' = plain subscription)",
    )
    p.add_argument("--mqtt-protocol", dest="mqtt_protocol", choices=("5", "3.1.1"), default=None)
    p.add_argument(
        "--client-id",
        dest="ingest_client_id",
        default=None,
        help="client id of the ingest worker's persistent session (default: derived from the config, stable"
        " across restarts; give each extra worker its own)",
    )


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def _now() -> Any:
    from cloud.clock import SystemClock

    return SystemClock().now()


def _log_to_stderr(level: str) -> None:
    """Send the cloud's own log lines (MQTT connection state, ingest errors, …) to stderr at `level`."""
    import logging

    logger = logging.getLogger("cloud")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(level.upper())


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cloud.app import create_app

    _log_to_stderr(args.log_level)
    settings = _settings(args)
    if settings.broker_url is None:
        print("note: no --broker: serving without MQTT ingest / config publishing", file=sys.stderr)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level=args.log_level)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    import signal
    import threading

    from cloud.clock import SystemClock
    from cloud.db import open_db
    from cloud.ingest_worker import IngestWorker

    settings = _settings(args)
    if not settings.broker_url:
        return _fail(ValueError("--broker (or KJ_CLOUD_BROKER_URL) is required"))
    open_db(settings.database).close()
    _log_to_stderr(args.log_level)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker = IngestWorker(settings, SystemClock())
    worker.start()
    print(
        f"ingest worker connected to {settings.broker_url}, db {settings.database}",
        file=sys.stderr,
        flush=True,
    )
    try:
        stop.wait()
    finally:
        worker.stop()
    return 0


def cmd_import_grid(args: argparse.Namespace) -> int:
    from cloud.db import open_db
    from cloud.errors import CloudError
    from cloud.grid import import_grid_csv

    db = open_db(_settings(args).database)
    try:
        report = import_grid_csv(db, Path(args.file).read_text(encoding="utf-8"))
    except (CloudError, OSError, UnicodeDecodeError) as exc:
        return _fail(exc)
    finally:
        db.close()
    print(f"grid imported: {report.created} created, {report.updated} updated")
    return 0


def cmd_enrol_station(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from cloud.db import open_db
    from cloud.enrol import enrol_station
    from cloud.errors import CloudError

    settings = _settings(args)
    db = open_db(settings.database)
    try:
        enrolment = enrol_station(
            db,
            args.station,
            args.node,
            _now(),
            name=args.name,
            rotate=args.rotate,
            grace=timedelta(days=settings.key_rotation_grace_days),
        )
    except CloudError as exc:
        return _fail(exc)
    finally:
        db.close()
    print(f"station:       {enrolment.station}")
    print(f"mqtt username: {enrolment.mqtt_username}")
    print(f"mqtt password: {enrolment.mqtt_password}   (shown once; only its hash is stored)")
    print(f"hmac key:      {enrolment.key_hex}")
    print(
        "\n# station.toml snippet\n"
        + enrolment.station_toml(settings.broker_url or "mqtt://broker.example:1883")
    )
    print(
        "# then regenerate the broker's files: kuaijian cloud mosquitto-auth --out DIR, and restart mosquitto"
    )
    return 0


def cmd_mosquitto_auth(args: argparse.Namespace) -> int:
    from cloud import mosquitto
    from cloud.db import open_db
    from cloud.enrol import broker_users
    from cloud.errors import CloudError
    from cloud.settings import read_secret_file

    settings = _settings(args)
    user = args.ingest_user or settings.mqtt_username
    try:
        from_file = None if args.ingest_password_file is None else read_secret_file(args.ingest_password_file)
    except ValueError as exc:
        return _fail(exc)
    password = args.ingest_password or from_file or settings.mqtt_password
    if not user or not password:
        return _fail(
            ValueError(
                "--ingest-user and --ingest-password-file (or KJ_CLOUD_MQTT_USERNAME and KJ_CLOUD_MQTT_PASSWORD"
                " / _PASSWORD_FILE) are required"
            )
        )
    group = None if args.group == "" else (args.group or mosquitto.default_group())
    db = open_db(settings.database)
    try:
        dynsec, conf, limits = mosquitto.write_mosquitto_auth(
            broker_users(db), Path(args.out), user, password, group=group, plugin=args.plugin
        )
    except (CloudError, OSError) as exc:
        return _fail(exc)
    finally:
        db.close()
    access = f"0640, group {group}" if group else "0600"
    print(f"已写入 wrote {dynsec} and {conf} ({access})")
    print(
        f"mosquitto.conf: include_dir the directory, or add these lines:\n{mosquitto.render_conf(dynsec.resolve(), args.plugin)}"
    )
    print(
        f"file-descriptor limit for the stations: install {limits} as"
        " /etc/systemd/system/mosquitto.service.d/kuaijian-limits.conf and run systemctl daemon-reload"
    )
    print("then restart mosquitto (Mosquitto 2.0 reads the Dynamic Security file at start only)")
    return 0


def cmd_create_user(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from cloud.auth import create_user
    from cloud.db import open_db
    from cloud.errors import CloudError

    settings = _settings(args)
    db = open_db(settings.database)
    try:
        token = create_user(
            db, args.name, args.role, args.node, _now(), timedelta(days=settings.machine_token_days)
        )
    except CloudError as exc:
        return _fail(exc)
    finally:
        db.close()
    print(token)
    return 0


def cmd_push_config(args: argparse.Namespace) -> int:
    """Store a new config version for every station under --target; publish it now if --broker is given,
    else a running `kuaijian cloud serve` publishes it on its next scheduler pass."""
    import json
    from pathlib import Path

    from pydantic import BaseModel, ConfigDict, ValidationError

    from cloud import configs
    from cloud.auth import operator
    from cloud.clock import SystemClock
    from cloud.db import open_db
    from cloud.errors import CloudError
    from cloud.services import Services
    from kuaijian_schema.specs import EnzymeSpec, StripSpec

    class ConfigFile(BaseModel):
        model_config = ConfigDict(extra="forbid")
        gold_kits: tuple[StripSpec, ...] = ()
        enzyme_profiles: tuple[EnzymeSpec, ...] = ()

    try:
        doc = ConfigFile.model_validate(json.loads(Path(args.file).read_text(encoding="utf-8")))
    except (OSError, ValueError, ValidationError) as exc:
        return _fail(ValueError(f"{args.file}: {exc}"))
    if not doc.gold_kits and not doc.enzyme_profiles:
        return _fail(ValueError(f"{args.file}: neither gold_kits nor enzyme_profiles given"))
    settings = _settings(args, ingest_enabled=False)
    by = operator(args.issued_by)
    db = open_db(settings.database)
    try:
        push = configs.push_config(db, by, args.target, doc.gold_kits, doc.enzyme_profiles, _now())
    except CloudError as exc:
        return _fail(exc)
    finally:
        db.close()
    print(f"config version {push.version} stored for {len(push.stations)} station(s) under {push.target}")
    if settings.broker_url is None:
        print(
            "not published yet: the running cloud publishes it on its next scheduler pass (or use --broker)"
        )
        return 0
    services = Services(settings, SystemClock())
    services.start()
    try:
        if services.link is not None and not services.link.connected.wait(10):
            return _fail(
                ConnectionError(f"broker {settings.broker_url} not reachable; the config stays pending")
            )
        publisher = services.publisher
        if publisher is None:
            return _fail(ConnectionError("no MQTT publisher (is the broker URL set?)"))
        db = open_db(settings.database)
        try:
            published = configs.publish_pending(db, publisher, _now())
        finally:
            db.close()
    finally:
        services.stop()
    print(f"published (retained) to {published} station(s)")
    return 0


def cmd_tick(args: argparse.Namespace) -> int:
    from cloud.clock import SystemClock
    from cloud.db import open_db
    from cloud.services import Services

    settings = _settings(args, ingest_enabled=False)  # publish pending configs only; no ingest
    open_db(settings.database).close()
    services = Services(settings, SystemClock())
    services.start()
    try:
        if services.link is not None:
            services.link.connected.wait(5)
        report = services.scheduler_step()
        sent = services.notify_step()
    finally:
        services.stop()
    print(
        f"reminded {report.reminded}, escalated {report.escalated}; notifications sent {sent.sent}, "
        f"waiting {sent.failed}, expired {sent.expired}"
    )
    if services.partitions_created:
        print(f"results partitions created: {', '.join(services.partitions_created)}")
    return 0


def cmd_migrate_db(args: argparse.Namespace) -> int:
    """Copy a cloud database to another (empty) one — typically a county's SQLite file to PostgreSQL — and
    verify the counts (cloud.dbcopy). Exit 0 verified, 1 counts differ, 2 refused (target not empty …)."""
    from cloud.dbcopy import copy_database
    from cloud.errors import CloudError

    try:
        report = copy_database(args.source, args.target)
    except CloudError as exc:
        return _fail(exc)
    print(f"{report.source} → {report.target}")
    print(f"{'表 table':<16} {'源 source':>10} {'目标 target':>12}")
    for t in report.tables:
        print(f"{t.table:<16} {t.source:>10} {t.target:>12}{'' if t.ok else '  ≠'}")
    if not report.verified:
        print("计数不一致 counts differ: the target is NOT a faithful copy", file=sys.stderr)
        return 1
    print("已核对 verified: every table holds the same number of rows, result ids match")
    return 0


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the `kuaijian cloud` verbs to `subparsers`."""
    p = subparsers.add_parser("serve", help="run the REST API + dashboard with ingest and the case scheduler")
    _add_db(p)
    _add_broker(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)

    p = subparsers.add_parser("ingest", help="run an extra MQTT ingest worker (shared subscription)")
    _add_db(p)
    _add_broker(p)
    p.add_argument("--log-level", default="info", help="log level of the worker's lines on stderr")
    p.set_defaults(func=cmd_ingest)

    p = subparsers.add_parser("import-grid", help="import/update grid nodes from a CSV (see docs/cloud.md)")
    _add_db(p)
    p.add_argument("file", help="CSV: level,code,name,parent_code,grid_head,information_officer,co_manager")
    p.set_defaults(func=cmd_import_grid)

    p = subparsers.add_parser("enrol-station", help="issue a station's MQTT credentials and HMAC key")
    _add_db(p)
    p.add_argument("--station", required=True, help="station id, e.g. 370214101203-01")
    p.add_argument("--node", required=True, help="code of its village")
    p.add_argument("--name", default=None, help="display name")
    p.add_argument("--rotate", action="store_true", help="re-issue credentials of an enrolled station")
    p.add_argument("--broker", default=None, help="broker URL for the printed station.toml")
    p.set_defaults(func=cmd_enrol_station)

    p = subparsers.add_parser(
        "mosquitto-auth", help="write Mosquitto's access control (Dynamic Security plugin) from the database"
    )
    _add_db(p)
    p.add_argument("--out", required=True, help="directory for passwd and acl")
    p.add_argument(
        "--ingest-user", default=None, help="broker user of the cloud (default $KJ_CLOUD_MQTT_USERNAME)"
    )
    p.add_argument(
        "--ingest-password",
        default=None,
        help="its password (visible in the process list: prefer --ingest-password-file or the environment)",
    )
    p.add_argument(
        "--ingest-password-file",
        type=Path,
        default=None,
        help="file holding its password (default $KJ_CLOUD_MQTT_PASSWORD or $KJ_CLOUD_MQTT_PASSWORD_FILE)",
    )
    p.add_argument(
        "--group",
        default=None,
        help="group the broker runs as, given read access (0640; default: mosquitto if it exists; '' = 0600)",
    )
    p.add_argument("--plugin", default=None, help="path of mosquitto_dynamic_security.so (default: found)")
    p.set_defaults(func=cmd_mosquitto_auth)

    p = subparsers.add_parser(
        "create-user",
        help="create a user for a system and print its machine token (valid cloud.machine_token_days); "
        "people log in with a password: `user add`",
    )
    _add_db(p)
    p.add_argument("--name", required=True)
    p.add_argument("--role", required=True, choices=("admin", "county", "town", "village", "station"))
    p.add_argument("--node", default=None, help="grid node code the user is scoped to (not for admin)")
    p.set_defaults(func=cmd_create_user)

    p = subparsers.add_parser(
        "push-config", help="push kits / enzyme profiles (JSON file) to every station under a grid node"
    )
    _add_db(p)
    _add_broker(p)
    p.add_argument("--target", required=True, help="station id or grid node code (county, town, village)")
    p.add_argument("--issued-by", default="operator", help="name recorded with the config version")
    p.add_argument("file", help='JSON: {"gold_kits": [StripSpec, ...], "enzyme_profiles": [EnzymeSpec, ...]}')
    p.set_defaults(func=cmd_push_config)

    p = subparsers.add_parser(
        "tick",
        help="run one scheduler pass now (reminders, escalation, results partitions ahead, risk scan, notifications,"
        " configs)",
    )
    _add_db(p)
    _add_broker(p)
    p.set_defaults(func=cmd_tick)

    p = subparsers.add_parser(
        "migrate-db",
        help="copy the cloud database to another, empty one (e.g. SQLite → PostgreSQL), verified",
    )
    p.add_argument("--from", dest="source", required=True, help="source: a SQLite file or URL")
    p.add_argument(
        "--to", dest="target", required=True, help="target (empty): postgresql://… or a SQLite file"
    )
    p.set_defaults(func=cmd_migrate_db)

    from cloud import producer_cli, report_cli, user_cli

    report_cli.register(subparsers)
    producer_cli.register(subparsers)
    user_cli.register(subparsers)
