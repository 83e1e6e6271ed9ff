"""The Mosquitto broker's access control, generated from the cloud database.

Does: `render_dynsec` builds the configuration of Mosquitto's Dynamic Security plugin (shipped with the
Debian package, Mosquitto ≥ 2.0) from the enrolled stations; `write_mosquitto_auth` writes it, with a
``kuaijian.conf`` snippet that loads it, so that

* a station logs in only with its own user name **and** client id ``kj-gw-<station>``: it cannot take over
  another station's or the cloud's connection by connecting with their client id (a plain password file
  cannot bind a client id to a user, and ``use_username_as_clientid`` would force every cloud worker of the
  one ingest user onto a single client id);
* a station may publish only ``kj/v1/<station>/result`` and ``…/status`` and subscribe only to its own
  ``…/ack`` and ``…/config``. Every other subscription — ``$share/kj-ingest/kj/v1/+/result`` included — is
  refused in the SUBACK (0x87), so a station cannot join the cloud's shared subscription and take results
  away from it (with ``acl_file`` Mosquitto grants any SUBSCRIBE and only filters on delivery, which loses
  the shared-subscription messages it hands to such a member);
* the cloud user (no fixed client id) reads every station's results and status, directly or through any
  ``$share/<group>/…`` group, and writes acks and configs.

The files are created 0640 with the broker's group (default ``mosquitto``, which Mosquitto drops to when
started as root), never world-readable: they hold password hashes.

`mosquitto-limits.conf` is a systemd drop-in that raises the broker's file-descriptor limit (``LimitNOFILE``)
to fit the enrolled stations (one connection each, `fd_limit`).

Does not: talk to the broker. Mosquitto 2.0 reads the plugin's file at start only (SIGHUP does not reload
it): restart the broker after enrolling a station (with ``persistence true`` sessions and queued messages
survive; gateways reconnect and resend from their outboxes).
"""

from __future__ import annotations

import base64
import glob
import grp
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloud.errors import Conflict, Invalid

MOSQUITTO_ITERATIONS = 101  # mosquitto_passwd's default for $7$ (PBKDF2-SHA512)
DYNSEC_FILE = "dynamic-security.json"
CONF_FILE = "kuaijian.conf"
LIMITS_FILE = "mosquitto-limits.conf"
DEFAULT_GROUP = "mosquitto"
_PLUGIN_GLOBS = ("/usr/lib/*/mosquitto_dynamic_security.so", "/usr/lib/mosquitto_dynamic_security.so")


def gateway_client_id(station: str) -> str:
    """The one client id a station's gateway may connect with (the broker refuses any other)."""
    return f"kj-gw-{station}"


def mosquitto_hash(password: str, salt: bytes | None = None, iterations: int = MOSQUITTO_ITERATIONS) -> str:
    """Hash `password` the way `mosquitto_passwd` does (``$7$iterations$salt$hash``, base64)."""
    salt = salt if salt is not None else os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def _dynsec_password(hashed: str) -> dict[str, Any]:
    """A ``$7$`` hash as the plugin's password fields (same PBKDF2-SHA512, split into parts)."""
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        raise Invalid("a stored MQTT password hash is not in mosquitto's $7$ format")
    return {"iterations": int(parts[2]), "salt": parts[3], "password": parts[4]}


@dataclass(frozen=True)
class BrokerUser:
    username: str
    password_hash: str  # $7$ format


def _acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}


def render_dynsec(stations: list[BrokerUser], ingest: BrokerUser) -> dict[str, Any]:
    """The Dynamic Security plugin's configuration (see the module docstring for what it allows)."""
    roles: list[dict[str, Any]] = [
        {
            "rolename": "kj-cloud",
            "textname": "云端接收 cloud ingest",
            "acls": [
                _acl("subscribePattern", "kj/v1/+/result"),
                _acl("subscribePattern", "kj/v1/+/status"),
                _acl("subscribePattern", "$share/+/kj/v1/+/result"),
                _acl("subscribePattern", "$share/+/kj/v1/+/status"),
                _acl("publishClientReceive", "kj/v1/+/result"),
                _acl("publishClientReceive", "kj/v1/+/status"),
                _acl("publishClientSend", "kj/v1/+/ack"),
                _acl("publishClientSend", "kj/v1/+/config"),
            ],
        }
    ]
    clients: list[dict[str, Any]] = [
        {
            "username": ingest.username,
            "roles": [{"rolename": "kj-cloud"}],
            **_dynsec_password(ingest.password_hash),
        }
    ]
    for user in stations:
        station = user.username
        role = f"kj-station-{station}"
        roles.append(
            {
                "rolename": role,
                "acls": [
                    _acl("publishClientSend", f"kj/v1/{station}/result"),
                    _acl("publishClientSend", f"kj/v1/{station}/status"),
                    _acl("subscribeLiteral", f"kj/v1/{station}/ack"),
                    _acl("subscribeLiteral", f"kj/v1/{station}/config"),
                    _acl("publishClientReceive", f"kj/v1/{station}/ack"),
                    _acl("publishClientReceive", f"kj/v1/{station}/config"),
                ],
            }
        )
        clients.append(
            {
                "username": station,
                "clientid": gateway_client_id(station),
                "roles": [{"rolename": role}],
                **_dynsec_password(user.password_hash),
            }
        )
    return {
        # everything not granted above is refused, subscriptions included
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": True,
        },
        "clients": clients,
        "groups": [],
        "roles": roles,
    }


def dynsec_plugin_path() -> str:
    """Where the Debian package installs the Dynamic Security plugin (its usual path if not found)."""
    for pattern in _PLUGIN_GLOBS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    return "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"


def render_conf(dynsec_path: Path, plugin: str | None = None) -> str:
    """The mosquitto.conf lines that load the generated access control (include them in the broker's config)."""
    return (
        "# generated by `kuaijian cloud mosquitto-auth` — do not edit\n"
        "allow_anonymous false\n"
        "# no Nagle delay on small packets (PUBACK, acks): ~43 ms less per ack round trip\n"
        "set_tcp_nodelay true\n"
        f"plugin {plugin or dynsec_plugin_path()}\n"
        f"plugin_opt_config_file {dynsec_path}\n"
    )


def fd_limit(stations: int) -> int:
    """File descriptors the broker needs for `stations`: one connection each, plus the cloud's workers,
    listeners, persistence and room to grow — never below 65536."""
    return max(65536, 2 * stations + 1024)


def render_limits(stations: int) -> str:
    """A systemd drop-in raising the broker's file-descriptor limit to fit `stations`."""
    return (
        "# generated by `kuaijian cloud mosquitto-auth` — do not edit\n"
        "# Install as /etc/systemd/system/mosquitto.service.d/kuaijian-limits.conf, then\n"
        "# `systemctl daemon-reload && systemctl restart mosquitto`. Every station holds one connection, i.e. one\n"
        "# file descriptor in the broker: at the usual limit of 1024 Mosquitto stops accepting at about 1,013\n"
        "# connections and logs nothing.\n"
        "[Service]\n"
        f"LimitNOFILE={fd_limit(stations)}\n"
    )


def _group_id(group: str | None) -> int | None:
    if group is None:
        return None
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise Invalid(f"no group {group!r} on this machine (the group the broker runs as)") from None


def default_group() -> str | None:
    """``mosquitto`` if that group exists here (the Debian package creates it), else None."""
    try:
        grp.getgrnam(DEFAULT_GROUP)
    except KeyError:
        return None
    return DEFAULT_GROUP


def write_private(path: Path, text: str, group: str | None = None) -> None:
    """Write `text` to `path` atomically, created 0600 — or 0640 with group `group` (readable by a service
    running in that group) — never world-readable, not even for an instant."""
    gid = _group_id(group)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            if gid is not None:
                try:
                    os.fchown(f.fileno(), -1, gid)
                except PermissionError as exc:
                    raise Invalid(
                        f"cannot give {path} to group {group!r}: {exc} (run as root or in that group)"
                    ) from exc
                os.fchmod(f.fileno(), 0o640)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_mosquitto_auth(
    stations: list[BrokerUser],
    out_dir: Path,
    ingest_user: str,
    ingest_password: str,
    *,
    group: str | None = None,
    plugin: str | None = None,
) -> tuple[Path, Path, Path]:
    """Write ``dynamic-security.json``, ``kuaijian.conf`` and the systemd drop-in ``mosquitto-limits.conf``
    (file-descriptor limit for the number of stations) into `out_dir`; returns their paths.

    `group`: the broker's group, given read access (0640); None = 0600 (for a broker running as this user).
    """
    if not ingest_user or ":" in ingest_user or not ingest_password:
        raise Invalid("an ingest user name (without ':') and password are required")
    if any(s.username == ingest_user for s in stations):
        raise Conflict(f"ingest user {ingest_user!r} collides with a station")
    out_dir.mkdir(parents=True, exist_ok=True)
    dynsec = out_dir / DYNSEC_FILE
    conf = out_dir / CONF_FILE
    config = render_dynsec(stations, BrokerUser(ingest_user, mosquitto_hash(ingest_password)))
    write_private(dynsec, json.dumps(config, ensure_ascii=False, indent=1) + "\n", group)
    write_private(conf, render_conf(dynsec.resolve(), plugin), group)
    limits = out_dir / LIMITS_FILE
    write_private(limits, render_limits(len(stations)), group)
    return dynsec, conf, limits
