"""A plugin driver with a bug, for the supervisor tests (driver = "plugin").

The real gold-serial driver over a real pty (`params.port`), except that while the file `params.bug_flag`
exists, `read_record` raises `RuntimeError` — an exception outside `drivers.errors`, as a third-party
driver with a bug would. Deleting the file "fixes" the driver.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drivers.gold_serial import GoldSerialAnalyzer
from drivers.readings import GoldReading
from drivers.timeouts import Timeouts


class BuggyGoldAnalyzer(GoldSerialAnalyzer):
    def __init__(self, port: str, bug_flag: Path, timeouts: Timeouts) -> None:
        super().__init__(port, timeouts=timeouts)
        self.bug_flag = bug_flag

    def read_record(self, record_no: int) -> GoldReading:
        if self.bug_flag.exists():
            raise RuntimeError(f"driver bug while reading record {record_no}")
        return super().read_record(record_no)


def make(params: dict[str, Any], timeouts: Timeouts) -> BuggyGoldAnalyzer:
    """Plugin factory (`factory = "tests.gateway.buggy_driver:make"`)."""
    return BuggyGoldAnalyzer(str(params["port"]), Path(str(params["bug_flag"])), timeouts)
