"""Station TOML: validation errors name the key; paths resolve against the file; secrets from files."""

from __future__ import annotations

from pathlib import Path

import pytest

from drivers.enzyme_modbus import EnzymeModbusInstrument
from drivers.gold_serial import GoldSerialInstrument
from gateway.config import load_config
from gateway.errors import ConfigError

GOOD = """
[station]
id = "370214101203-01"
key_file = "secrets/station.key"
data_dir = "var"

[mqtt]
url = "mqtts://broker.example.cn"
username = "370214101203-01"
password_file = "secrets/broker.pw"
ca_file = "ca.pem"

[link]
batch_max = 20

[[instruments]]
name = "gold-1"
driver = "gold-serial"
port = "/dev/serial/by-id/usb-Kuaijian_KJ-G8_GR-0001"
default_kit = "imidacloprid-v1"

[[instruments]]
name = "enzyme-1"
driver = "enzyme-modbus"
host = "192.168.10.20"
unit = 3
[instruments.timeouts]
response_s = 2.0
"""


def test_good_config(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "station.key").write_text("ab" * 32 + "\n")
    (tmp_path / "secrets" / "broker.pw").write_text("pw\n")
    path = tmp_path / "station.toml"
    path.write_text(GOOD)
    cfg = load_config(path)
    assert cfg.data_dir == tmp_path / "var"
    assert cfg.db_path == tmp_path / "var" / "outbox.db"
    assert cfg.station_key() == b"\xab" * 32
    assert cfg.mqtt.tls
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("broker.example.cn", 8883)
    assert cfg.mqtt.ca_file == tmp_path / "ca.pem"
    assert cfg.mqtt.resolved_password() == "pw"
    assert cfg.link.batch_max == 20
    gold, enzyme = cfg.instruments
    assert isinstance(gold, GoldSerialInstrument)
    assert isinstance(enzyme, EnzymeModbusInstrument)
    assert enzyme.port == 502
    assert enzyme.timeouts.to_timeouts().response_s == 2.0
    assert cfg.acquisition.gold_median == 0
    path.write_text(GOOD.replace("[link]", "[acquisition]\ngold_median = 5\n[link]"))
    assert load_config(path).acquisition.gold_median == 5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ('driver = "gold-serial"\nport = "/dev/serial', 'driver = "gold-serial"\nportx = "/dev/serial'),
            "instruments[0].port",
        ),
        (('url = "mqtts://broker.example.cn"', 'url = "http://broker"'), "mqtt: Value error, url scheme"),
        (
            ("unit = 3", 'unit = 3\nserial_port = "/dev/ttyS0"'),
            "instruments[1]: Value error, set exactly one",
        ),
        (("batch_max = 20", "batch_max = 0"), "link.batch_max"),
        (('id = "370214101203-01"', 'id = "3702-01"'), "station.id:"),
        (('key_file = "secrets/station.key"', 'key = "not hex"'), "station.key:"),
        (('name = "enzyme-1"', 'name = "gold-1"'), "duplicate instrument names: gold-1"),
        (('driver = "enzyme-modbus"', 'driver = "enzyme-rs485"'), "instruments[1]"),
        (("[link]", "[acquisition]\ngold_median = 4\n[link]"), "acquisition.gold_median"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    path = tmp_path / "station.toml"
    assert change[0] in GOOD
    path.write_text(GOOD.replace(change[0], change[1]))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_unreadable_or_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("station = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    (tmp_path / "station.toml").write_text(GOOD)
    cfg = load_config(tmp_path / "station.toml")
    with pytest.raises(ConfigError, match="key_file: cannot read"):
        cfg.station_key()


def test_flat_spelling_and_broker_alias(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(
        'station = "370214101203-01"\nkey = "00112233445566778899aabbccddeeff"\ndata_dir = "d"\noperator = "demo"\n'
        '[broker]\nurl = "mqtt://127.0.0.1:1883"\nprotocol = "3.1.1"\n'
    )
    cfg = load_config(path)
    assert cfg.station_id == "370214101203-01"
    assert cfg.data_dir == tmp_path / "d"
    assert cfg.station.operator == "demo"
    assert cfg.mqtt.protocol == "3.1.1"
    assert cfg.station_key() == bytes.fromhex("00112233445566778899aabbccddeeff")


def test_enrolment_snippet_layout(tmp_path: Path) -> None:
    """The `[station]` + `[mqtt]` tables `kuaijian cloud enrol-station` prints are a complete config."""
    path = tmp_path / "station.toml"
    path.write_text(
        '[station]\nid = "370214101203-01"\nkey = "' + "ab" * 32 + '"\n\n[mqtt]\n'
        'url = "mqtt://broker.example:1883"\nusername = "370214101203-01"\npassword = "pw"\n'
    )
    cfg = load_config(path)
    assert cfg.mqtt.resolved_password() == "pw"
    assert cfg.data_dir == Path("/var/lib/kuaijian")
