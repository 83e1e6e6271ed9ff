"""Test data for the cloud: a small grid (1 county, 2 towns, 3 villages, 4 stations) and signed results.

Grid (codes):
    370214 county 城阳区
    ├── 370214101 town 棘洪滩街道
    │   ├── 370214101203 village 南万社区 ── stations 370214101203-01, 370214101203-02
    │   └── 370214101204 village 北万社区 ── station 370214101204-01
    └── 370214102 town 上马街道
        └── 370214102001 village 东程社区 ── station 370214102001-01
"""

from __future__ import annotations

import itertools
import json
import warnings
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cloud.auth import create_user
from cloud.db import Database
from cloud.enrol import Enrolment, enrol_station
from cloud.grid import import_grid_csv
from kuaijian_schema import new_result_id, sign_payload

T0 = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)

GRID_CSV = """level,code,name,parent_code,grid_head,information_officer,co_manager
county,370214,城阳区,,区网格长 张伟,区信息员 李娜,
town,370214101,棘洪滩街道,370214,王强 13800000001,赵敏,钱军
town,370214102,上马街道,370214,孙丽,周杰,
village,370214101203,南万社区,370214101,吴刚,郑洁,
village,370214101204,北万社区,370214101,冯涛,陈静,
village,370214102001,东程社区,370214102,褚英,卫东,
"""

STATIONS = {
    "370214101203-01": "370214101203",
    "370214101203-02": "370214101203",
    "370214101204-01": "370214101204",
    "370214102001-01": "370214102001",
}


@dataclass
class Grid:
    enrolments: dict[str, Enrolment]
    tokens: dict[str, str] = field(default_factory=dict)
    _seq: dict[str, itertools.count[int]] = field(default_factory=dict)

    def key(self, station: str) -> bytes:
        return bytes.fromhex(self.enrolments[station].key_hex)

    def next_seq(self, station: str) -> int:
        return next(self._seq.setdefault(station, itertools.count(1)))

    def result(self, station: str, /, **overrides: Any) -> dict[str, Any]:
        """A signed result for `station` (next seq unless given); overrides are applied before signing."""
        seq = overrides.pop("seq", None) or self.next_seq(station)
        return signed_result(station, self.key(station), seq=seq, **overrides)


def signed_result(station: str, key: bytes, /, *, seq: int, **overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": str(new_result_id()),
        "seq": seq,
        "station": station,
        "instrument": {"serial": "GR-0001", "model": "KJ-G8", "driver": "gold-serial"},
        "sample": {"id": f"S-{seq}", "product": "菠菜", "producer": "李家农场"},
        "method": "gold",
        "analyte": "imidacloprid",
        "channel": 1,
        "measured_at": T0.isoformat(),
        "verdict": "negative",
        "values": {"ratio": 1.21, "control_signal": 3.4, "test_signal": 4.1},
        "qc": [],
        "algorithm": "gold/1.0",
        "config_version": "1",
        "operator": "op1",
    }
    doc.update(overrides)
    doc["sig"] = sign_payload(doc, key)
    return doc


def batch_payload(results: list[dict[str, Any]]) -> bytes:
    return json.dumps({"results": results}, ensure_ascii=False).encode()


def build_grid(db: Database, *, users: bool = True) -> Grid:
    import_grid_csv(db, GRID_CSV)
    grid = Grid({s: enrol_station(db, s, v, T0) for s, v in STATIONS.items()})
    if users:
        for name, role, node in (
            ("admin", "admin", None),
            ("county", "county", "370214"),
            ("town_a", "town", "370214101"),
            ("town_b", "town", "370214102"),
            ("village_a", "village", "370214101203"),
            ("station_a", "station", "370214101203-01"),
        ):
            grid.tokens[name] = create_user(db, name, role, node, T0)
    return grid


def api_client_class() -> Any:
    """starlette's TestClient warns about httpx at import; import it with that one warning silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx.*")
        from fastapi.testclient import TestClient

    return TestClient


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
