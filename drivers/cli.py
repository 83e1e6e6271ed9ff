"""`kuaijian gateway scan`: find the analyzers attached to this station.

Does: list serial ports (pyserial's `serial.tools.list_ports` — without the on-board UARTs /dev/ttyS*, which
are consoles, modems or nothing at all on most station PCs, unless `--builtin-ports` — plus every
`--serial PATH`), probe each
with every registered family's serial probe (`drivers.registry`, in probe order: gold-serial, Modbus RTU,
ASTM, …), probe each `--modbus HOST[:PORT]` given with the families' TCP probes, all in parallel with short per-endpoint timeouts; print a table of what answered and a TOML snippet for
`[[instruments]]` in the station config (or JSON with `--json`).

Does not: scan networks. Only explicitly given Modbus TCP endpoints are probed (no ranges, no CIDR,
no broadcast); by default none.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from drivers import registry
from drivers.errors import DeviceNotFound
from drivers.readings import DeviceInfo
from drivers.registry import Probed, ProbeOptions

BY_ID_DIR = Path("/dev/serial/by-id")
BUILTIN_UART = re.compile(r"^/dev/ttyS\d+$")  # on-board 8250/16550 UARTs: probed only when asked


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add `scan` to the `kuaijian gateway` group."""
    p = subparsers.add_parser(
        "scan",
        help="find analyzers on serial ports and given Modbus TCP endpoints",
        description="Probe serial ports (every registered family: gold-serial, Modbus RTU, ASTM …) and explicitly given Modbus TCP "
        "endpoints for analyzers; print a table and a TOML snippet for the station config. "
        "Never scans networks.",
    )
    p.add_argument(
        "--serial",
        action="append",
        default=[],
        metavar="PATH",
        help="also probe this serial port (repeatable)",
    )
    p.add_argument(
        "--modbus",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="probe this Modbus TCP endpoint (repeatable; port default 502)",
    )
    p.add_argument("--no-system-ports", action="store_true", help="skip the ports pyserial lists")
    p.add_argument(
        "--builtin-ports",
        action="store_true",
        help="also probe the on-board UARTs /dev/ttyS* pyserial lists (skipped by default: often a console)",
    )
    p.add_argument("--unit", type=int, default=1, help="Modbus unit id to probe (default 1)")
    p.add_argument("--baudrate", type=int, default=19200, help="Modbus RTU baud rate (default 19200)")
    p.add_argument(
        "--timeout", type=float, default=0.3, metavar="S", help="per-request timeout (default 0.3)"
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table and TOML")
    p.set_defaults(func=_run)


@dataclass(frozen=True, slots=True)
class Found:
    """One analyzer that answered a probe."""

    endpoint: str  # "serial:/dev/ttyUSB0" or "tcp:127.0.0.1:502"
    address: str  # port path, or host:port
    stable_path: str | None  # /dev/serial/by-id/… for the port, when one exists
    probed: Probed

    @property
    def info(self) -> DeviceInfo:
        return self.probed.info

    def settings(self) -> dict[str, Any]:
        """The `[[instruments]]` keys (besides name and driver), with the stable port name if any."""
        out = dict(self.probed.settings)
        if self.probed.port_key is not None and self.stable_path is not None:
            out[self.probed.port_key] = self.stable_path
        return out


def parse_modbus_endpoint(text: str) -> tuple[str, int]:
    """ "HOST", "HOST:PORT", "[v6]:PORT" → (host, port). Refuses ranges, wildcards and CIDR blocks."""
    if any(ch in text for ch in "/*,") or not text.strip():
        raise ValueError(f"{text!r}: give one host[:port]; networks and ranges are never scanned")
    m = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\](?::(\d+))?", text)
    if m:
        host, port = m.group(1), m.group(2)
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif ":" in text:  # bare IPv6 address
        host, port = text, None
    else:
        host, port = text, None
    number = int(port) if port else 502
    if not 0 < number < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return host, number


def system_serial_ports(*, builtin: bool = False) -> list[str]:
    """Serial ports pyserial lists; the on-board UARTs (/dev/ttyS*) only with `builtin` (writing probe
    bytes to a serial console or a modem is not harmless, and analyzers sit on USB adapters)."""
    from serial.tools import list_ports

    ports = {p.device for p in list_ports.comports()}
    return sorted(p for p in ports if builtin or not BUILTIN_UART.match(p))


def stable_names() -> dict[str, str]:
    """Resolved device → /dev/serial/by-id/… link (stable across re-plugging), where udev made one."""
    out: dict[str, str] = {}
    if BY_ID_DIR.is_dir():
        for link in sorted(BY_ID_DIR.iterdir()):
            out.setdefault(str(link.resolve()), str(link))
    return out


def _probe_serial_port(path: str, options: ProbeOptions) -> Probed | str:
    """Every family's serial probe in registry order; the first that answers, or why none did."""
    reasons: list[str] = []
    for fam in registry.families():
        if fam.probe_serial is None:
            continue
        try:
            return fam.probe_serial(path, options)
        except DeviceNotFound as exc:
            reasons.append(f"{fam.name}: {exc}")
    return "; ".join(reasons)


def _probe_tcp(host: str, port: int, options: ProbeOptions) -> Probed | str:
    reasons: list[str] = []
    for fam in registry.families():
        if fam.probe_tcp is None:
            continue
        try:
            return fam.probe_tcp(host, port, options)
        except DeviceNotFound as exc:
            reasons.append(f"{fam.name}: {exc}")
    return "; ".join(reasons) or "no driver family probes TCP endpoints"


def scan(
    serial_paths: Sequence[str],
    modbus: Sequence[tuple[str, int]],
    *,
    unit: int = 1,
    baudrate: int = 19200,
    timeout: float = 0.3,
) -> tuple[list[Found], dict[str, str]]:
    """Probe everything in parallel; returns (found, {endpoint: why nothing answered})."""
    by_id = stable_names()
    options = ProbeOptions(timeout_s=timeout, unit=unit, baudrate=baudrate)
    jobs: dict[str, Callable[[], Found | str]] = {}
    for path in dict.fromkeys(serial_paths):

        def serial_job(path: str = path) -> Found | str:
            res = _probe_serial_port(path, options)
            if isinstance(res, str):
                return res
            return Found(f"serial:{path}", path, by_id.get(str(Path(path).resolve())), res)

        jobs[f"serial:{path}"] = serial_job
    for host, port in dict.fromkeys(modbus):

        def tcp_job(host: str = host, port: int = port) -> Found | str:
            res = _probe_tcp(host, port, options)
            if isinstance(res, str):
                return res
            return Found(f"tcp:{host}:{port}", f"{host}:{port}", None, res)

        jobs[f"tcp:{host}:{port}"] = tcp_job
    found: list[Found] = []
    missing: dict[str, str] = {}
    if not jobs:
        return found, missing
    with ThreadPoolExecutor(max_workers=min(16, len(jobs)), thread_name_prefix="scan") as pool:
        results = {name: pool.submit(job) for name, job in jobs.items()}
        for name, fut in results.items():
            res = fut.result()
            if isinstance(res, str):
                missing[name] = res
            else:
                found.append(res)
    return found, missing


def _instrument_name(f: Found) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{f.info.method}-{f.info.serial}").strip("-")[:64] or "analyzer"


def _toml_str(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)  # a JSON string is a valid TOML basic string


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return _toml_str(str(value))


def toml_snippet(found: Sequence[Found]) -> str:
    """`[[instruments]]` tables for gateway config (see docs/config.md)."""
    blocks: list[str] = []
    used: set[str] = set()
    for f in found:
        name = base = _instrument_name(f)
        n = 1
        while name in used:  # the same analyzer on two links, or two with the same serial
            n += 1
            name = f"{base[:60]}-{n}"
        used.add(name)
        lines = [
            "[[instruments]]",
            f"name = {_toml_str(name)}",
            f"driver = {_toml_str(f.info.driver)}",
        ]
        lines += [f"{key} = {_toml_value(value)}" for key, value in f.settings().items()]
        lines.append(
            f"# {f.info.model} serial {f.info.serial}, firmware {f.info.firmware}, {f.info.channels} ch"
        )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + ("\n" if blocks else "")


def format_table(found: Sequence[Found]) -> str:
    header = ("endpoint", "driver", "model", "serial", "firmware", "channels")
    rows = [
        (f.endpoint, f.info.driver, f.info.model, f.info.serial, f.info.firmware, str(f.info.channels))
        for f in found
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *rows]
    )


def _run(args: argparse.Namespace) -> int:
    import logging

    # probing endpoints where nothing answers is the point of a scan: keep pymodbus' error log quiet
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        modbus = [parse_modbus_endpoint(m) for m in args.modbus]
    except ValueError as exc:
        print(f"kuaijian gateway scan: {exc}", flush=True)
        return 2
    ports = [] if args.no_system_ports else system_serial_ports(builtin=args.builtin_ports)
    paths = [*ports, *args.serial]
    found, missing = scan(paths, modbus, unit=args.unit, baudrate=args.baudrate, timeout=args.timeout)
    if args.json:
        doc = {
            "found": [
                {
                    "endpoint": f.endpoint,
                    "transport": f.probed.transport,
                    "address": f.address,
                    "stable_path": f.stable_path,
                    "settings": f.settings(),
                    **asdict(f.info),
                }
                for f in found
            ],
            "not_found": missing,
            "toml": toml_snippet(found),
        }
        print(json.dumps(doc, ensure_ascii=False, indent=2), flush=True)
    else:
        print(f"probed {len(paths)} serial port(s), {len(modbus)} Modbus TCP endpoint(s)", flush=True)
        if found:
            print(format_table(found), flush=True)
            print("\n# station config (gateway.toml):\n" + toml_snippet(found), flush=True)
        else:
            print("no analyzers found", flush=True)
        for name, why in missing.items():
            print(f"  {name}: nothing answered ({why})", flush=True)
    return 0 if found else 1
