"""`kuaijian gateway scan` against real simulators: the enzyme analyzer over Modbus TCP and RTU on a pty,
the colloidal-gold reader on its pty, an empty pty and a closed TCP port."""

from __future__ import annotations

import json
import logging
import os
import re
import tomllib
import tty
from collections.abc import Iterator

import pytest
from pydantic import TypeAdapter

from drivers.cli import parse_modbus_endpoint
from firmware_sim.enzyme_modbus import EnzymeSimulator
from gateway.config import InstrumentConfig
from kuaijian.cli import main
from kuaijian_schema.specs import GB_T_5009_199
from tests.helpers import free_port


@pytest.fixture
def quiet_pymodbus_restored() -> Iterator[None]:
    logger = logging.getLogger("pymodbus")
    level = logger.level
    try:
        yield
    finally:
        logger.setLevel(level)


@pytest.fixture(scope="module")
def enzyme() -> Iterator[EnzymeSimulator]:
    sim = EnzymeSimulator(serial="EN-0300", profile=GB_T_5009_199)
    try:
        sim.start_tcp()
        sim.start_rtu()
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def empty_pty() -> Iterator[str]:
    master, slave = os.openpty()
    tty.setraw(slave)
    try:
        yield os.ttyname(slave)
    finally:
        os.close(slave)
        os.close(master)


def test_scan_finds_both_families(
    enzyme: EnzymeSimulator, empty_pty: str, capsys: pytest.CaptureFixture[str], quiet_pymodbus_restored: None
) -> None:
    gold_mod = pytest.importorskip("firmware_sim.gold_serial", reason="gold simulator not available yet")
    assert enzyme.tcp_address is not None
    assert enzyme.rtu_path is not None
    host, port = enzyme.tcp_address
    closed = free_port()
    gold = gold_mod.GoldSimulator(serial="GR-0300")
    gold.start()
    try:
        gold_link = gold.link_path
        argv = ["gateway", "scan", "--no-system-ports", "--json", "--timeout", "0.2"]
        argv += ["--serial", gold_link, "--serial", enzyme.rtu_path, "--serial", empty_pty]
        argv += ["--modbus", f"{host}:{port}", "--modbus", f"127.0.0.1:{closed}"]
        assert main(argv) == 0
    finally:
        gold.stop()
    doc = json.loads(capsys.readouterr().out)
    found = {f["endpoint"]: f for f in doc["found"]}
    assert set(found) == {f"serial:{gold_link}", f"serial:{enzyme.rtu_path}", f"tcp:{host}:{port}"}
    g = found[f"serial:{gold_link}"]
    assert (g["driver"], g["serial"], g["method"]) == ("gold-serial", "GR-0300", "gold")
    rtu = found[f"serial:{enzyme.rtu_path}"]
    assert (rtu["driver"], rtu["transport"], rtu["serial"], rtu["channels"]) == (
        "enzyme-modbus",
        "modbus-rtu",
        "EN-0300",
        12,
    )
    tcp = found[f"tcp:{host}:{port}"]
    assert (tcp["model"], tcp["firmware"], tcp["settings"]["unit"]) == ("KJ-E12", "1.4.2", 1)
    assert set(doc["not_found"]) == {f"serial:{empty_pty}", f"tcp:127.0.0.1:{closed}"}
    # the TOML snippet is valid station config, one instrument per analyzer found, unique names
    instruments = tomllib.loads(doc["toml"])["instruments"]
    adapter: TypeAdapter[InstrumentConfig] = TypeAdapter(InstrumentConfig)
    parsed = [adapter.validate_python(i) for i in instruments]
    assert len({p.name for p in parsed}) == 3
    by_driver = sorted(
        (p.driver, getattr(p, "host", None) or getattr(p, "serial_port", None) or p.port) for p in parsed
    )
    assert by_driver == sorted(
        [("gold-serial", gold_link), ("enzyme-modbus", enzyme.rtu_path), ("enzyme-modbus", host)]
    )


def test_scan_table_and_exit_codes(
    enzyme: EnzymeSimulator, capsys: pytest.CaptureFixture[str], quiet_pymodbus_restored: None
) -> None:
    assert enzyme.tcp_address is not None
    host, port = enzyme.tcp_address
    assert main(["gateway", "scan", "--no-system-ports", "--modbus", f"{host}:{port}"]) == 0
    out = capsys.readouterr().out
    assert "endpoint" in out
    assert "channels" in out
    row = next(line for line in out.splitlines() if line.startswith(f"tcp:{host}:{port}"))
    assert row.split() == [f"tcp:{host}:{port}", "enzyme-modbus", "KJ-E12", "EN-0300", "1.4.2", "12"]
    assert "[[instruments]]" in out
    # nothing there → exit 1; a network instead of an address → refused, exit 2
    assert main(["gateway", "scan", "--no-system-ports", "--modbus", f"127.0.0.1:{free_port()}"]) == 1
    assert main(["gateway", "scan", "--no-system-ports", "--modbus", "192.168.1.0/24"]) == 2
    assert "never scanned" in capsys.readouterr().out


def test_parse_modbus_endpoint() -> None:
    assert parse_modbus_endpoint("127.0.0.1") == ("127.0.0.1", 502)
    assert parse_modbus_endpoint("localhost:5020") == ("localhost", 5020)
    assert parse_modbus_endpoint("[::1]:1502") == ("::1", 1502)
    assert parse_modbus_endpoint("::1") == ("::1", 502)
    for bad in ("10.0.0.0/8", "10.0.0.*", "a,b", "", "h:0"):
        with pytest.raises(ValueError, match=r"never scanned|out of range"):
            parse_modbus_endpoint(bad)


def test_onboard_uarts_are_probed_only_when_asked(
    empty_pty: str, capsys: pytest.CaptureFixture[str], quiet_pymodbus_restored: None
) -> None:
    """/dev/ttyS0 (a console or modem on most PCs) is not probed by a plain scan; `--builtin-ports` or
    `--serial /dev/ttyS0` probes it."""
    from serial.tools import list_ports

    uarts = sorted(p.device for p in list_ports.comports() if re.fullmatch(r"/dev/ttyS\d+", p.device))
    if not uarts:
        pytest.skip("pyserial lists no on-board UART on this machine")
    argv = ["gateway", "scan", "--json", "--timeout", "0.1", "--serial", empty_pty]
    main(argv)
    probed = set(json.loads(capsys.readouterr().out)["not_found"])
    assert f"serial:{empty_pty}" in probed
    assert not probed & {f"serial:{u}" for u in uarts}, f"a plain scan probed {probed}"
    main([*argv, "--builtin-ports"])
    probed = set(json.loads(capsys.readouterr().out)["not_found"])
    assert {f"serial:{u}" for u in uarts} <= probed
    main(["gateway", "scan", "--json", "--timeout", "0.1", "--no-system-ports", "--serial", uarts[0]])
    assert set(json.loads(capsys.readouterr().out)["not_found"]) == {f"serial:{uarts[0]}"}
