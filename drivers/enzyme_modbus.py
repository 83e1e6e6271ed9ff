"""Enzyme-inhibition analyzer (AChE, 412 nm) over Modbus TCP or Modbus RTU: the driver and its family.

Does: `EnzymeModbusAnalyzer`, the `drivers.readings.Analyzer` of this family (identify, run counter,
consistent run-page reads, start command), `probe_tcp` / `probe_rtu` for `gateway scan`, and the
family's registration (`FAMILY`: the `driver = "enzyme-modbus"` instrument table). Its layers live in
their own modules: the register map (`drivers.enzyme_map`), pure codecs (`drivers.enzyme_codec`) and
the session (`drivers.modbus_session`, which owns every retry and reconnect).

Does not: interpret kinetics (that is `gateway.interpret.enzyme`), retry (the session does, and the
gateway worker across calls), or scan networks.

Consistency guard: a run is read as ONE session transaction — select run → header → sample ids →
products → absorbance blocks → header again. The page carries a CRC-16/MODBUS over all its words; the
run number, header and CRC must be identical before and after and the CRC must match the data,
otherwise the transaction fails (`TornRead` / `ChecksumError`) and the session repeats it whole. A
page that changed mid-read (another client selected a different run, memory rolled over) is thus
never returned half-mixed.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, Literal, Self

from pydantic import Field as PydanticField
from pydantic import model_validator

from drivers.enzyme_codec import (
    Identity,
    RunPage,
    StatusBlock,
    absorbance_block,
    array_block,
    decode_header,
    decode_identity,
    decode_page,
    decode_status,
    decode_u32,
    encode_u32,
    identity_block,
    status_block,
    validate_header,
)
from drivers.enzyme_map import ENZYME_MAP, Command, RegisterMap
from drivers.errors import ChecksumError, DeviceNotFound, DriverError, ProtocolError, TornRead
from drivers.modbus_session import ModbusSession, Registers
from drivers.readings import Analyzer, DeviceInfo, EnzymeReading
from drivers.registry import DriverFamily, InstrumentSettings, Probed, ProbeOptions
from drivers.timeouts import Timeouts

DRIVER_NAME: Final = "enzyme-modbus"


class EnzymeModbusAnalyzer:
    """`drivers.readings.Analyzer` for the kuaijian enzyme-inhibition register map (exactly one of
    `host` (Modbus TCP) or `serial_port` (Modbus RTU))."""

    def __init__(
        self,
        *,
        host: str | None = None,
        port: int = 502,
        serial_port: str | None = None,
        baudrate: int = 19200,
        unit: int = 1,
        timeouts: Timeouts = Timeouts(),  # noqa: B008 — frozen, immutable default
        rmap: RegisterMap = ENZYME_MAP,
    ) -> None:
        self.session = ModbusSession(
            host=host, port=port, serial_port=serial_port, baudrate=baudrate, unit=unit, timeouts=timeouts
        )
        self.rmap = rmap
        self.timeouts = timeouts
        self._identity: Identity | None = None

    @property
    def endpoint(self) -> str:
        return self.session.endpoint

    def open(self) -> None:
        self.session.open()

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> EnzymeModbusAnalyzer:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def identity(self) -> Identity:
        address, count = identity_block(self.rmap)
        ident = decode_identity(self.session.read(address, count), self.rmap)
        self._identity = ident
        return ident

    def identify(self) -> DeviceInfo:
        ident = self.identity()
        return DeviceInfo(
            serial=ident.serial,
            model=ident.model,
            firmware=ident.firmware,
            driver=DRIVER_NAME,
            method="enzyme",
            channels=ident.channels,
        )

    def status(self) -> StatusBlock:
        address, count = status_block(self.rmap)
        return decode_status(self.session.read(address, count), self.rmap)

    def latest_record(self) -> int:
        f = self.rmap["run_counter"]
        return decode_u32(self.session.read(f.address, f.count))

    def start_run(self) -> None:
        """Press "start": the instrument measures its loaded cuvettes; poll `latest_record` for the run."""
        self.session.write(self.rmap["command"].address, [int(Command.START_RUN)])

    def clear_error(self) -> None:
        self.session.write(self.rmap["command"].address, [int(Command.CLEAR_ERROR)])

    def read_page(self, record_no: int) -> RunPage:
        """Select run `record_no` and read its page consistently (see module docstring)."""
        if not 1 <= record_no <= 0xFFFF_FFFF:
            raise ValueError("record numbers start at 1")
        try:
            return self.session.transaction(
                f"read run {record_no}", lambda regs: self._read_page_once(regs, record_no)
            )
        except (ChecksumError, TornRead) as exc:
            raise ProtocolError(
                f"run {record_no}: no consistent page after {self.timeouts.retries + 1} reads: {exc}"
            ) from exc

    def _read_page_once(self, regs: Registers, record_no: int) -> RunPage:
        rmap = self.rmap
        regs.write(rmap["select_run"].address, encode_u32(record_no))
        h_addr, h_count = rmap.page_header
        header_regs = regs.read(h_addr, h_count)
        header = decode_header(header_regs, rmap)
        if header.run_no != record_no:
            raise TornRead(f"page shows run {header.run_no}, selected {record_no}")
        validate_header(header, rmap)
        ids = regs.read(*array_block(rmap.sample_ids, header.channels))
        prods = regs.read(*array_block(rmap.products, header.channels))
        absorb = regs.read(*absorbance_block(header.channels, header.points, rmap))
        again = regs.read(h_addr, h_count)
        if list(again) != list(header_regs):
            raise TornRead(f"run {record_no}: page header changed during the read")
        return decode_page(header, header_regs, ids, prods, absorb, rmap)

    def read_record(self, record_no: int) -> EnzymeReading:
        page = self.read_page(record_no)
        ident = self._identity
        extra = {"endpoint": self.endpoint}
        if ident is not None:
            extra["serial"] = ident.serial
        return EnzymeReading(
            record_no=page.run_no,
            profile=page.profile,
            control_channel=page.control_channel,
            times_s=page.times_s,
            absorbance=page.absorbance,
            sample_ids=page.sample_ids,
            products=page.products,
            measured_at=datetime.fromtimestamp(page.started_at, tz=UTC),
            extra=extra,
        )


# --------------------------------------------------------------------------------------------------
# Probing
# --------------------------------------------------------------------------------------------------

PROBE_TIMEOUTS: Final = Timeouts(response_s=0.3, retries=1, reconnect_initial_s=0.05, reconnect_max_s=0.1)


def _probe(analyzer: EnzymeModbusAnalyzer) -> DeviceInfo:
    try:
        analyzer.open()
        return analyzer.identify()
    except DriverError as exc:
        raise DeviceNotFound(f"{analyzer.endpoint}: no enzyme analyzer: {exc}") from exc
    finally:
        analyzer.close()


def probe_tcp(host: str, port: int, unit: int = 1, timeouts: Timeouts | None = None) -> DeviceInfo:
    """Identify an enzyme analyzer at a Modbus TCP endpoint, or raise DeviceNotFound."""
    return _probe(EnzymeModbusAnalyzer(host=host, port=port, unit=unit, timeouts=timeouts or PROBE_TIMEOUTS))


def probe_rtu(
    path: str, baudrate: int = 19200, unit: int = 1, timeouts: Timeouts | None = None
) -> DeviceInfo:
    """Identify an enzyme analyzer on a Modbus RTU serial line, or raise DeviceNotFound."""
    return _probe(
        EnzymeModbusAnalyzer(
            serial_port=path, baudrate=baudrate, unit=unit, timeouts=timeouts or PROBE_TIMEOUTS
        )
    )


# --------------------------------------------------------------------------------------------------
# Registration (drivers.registry)
# --------------------------------------------------------------------------------------------------


class EnzymeModbusInstrument(InstrumentSettings):
    """`driver = "enzyme-modbus"`: an enzyme-inhibition analyzer over Modbus TCP (`host`) or RTU
    (`serial_port`)."""

    driver: Literal["enzyme-modbus"]
    host: str | None = None
    port: int = PydanticField(default=502, gt=0, lt=65536)
    serial_port: str | None = None
    baudrate: int = PydanticField(default=19200, gt=0)
    unit: int = PydanticField(default=1, ge=0, le=247)
    default_profile: str | None = PydanticField(
        default=None, description="profile when the analyzer reports none"
    )

    @model_validator(mode="after")
    def _one_transport(self) -> Self:
        if (self.host is None) == (self.serial_port is None):
            raise ValueError("set exactly one of host (Modbus TCP) or serial_port (Modbus RTU)")
        return self

    def default_profile_name(self) -> str | None:
        return self.default_profile


def _make(settings: EnzymeModbusInstrument, timeouts: Timeouts) -> Callable[[], Analyzer]:
    def enzyme() -> Analyzer:
        return EnzymeModbusAnalyzer(
            host=settings.host,
            port=settings.port,
            serial_port=settings.serial_port,
            baudrate=settings.baudrate,
            unit=settings.unit,
            timeouts=timeouts,
        )

    return enzyme


def _probe_serial(path: str, options: ProbeOptions) -> Probed:
    info = probe_rtu(path, baudrate=options.baudrate, unit=options.unit, timeouts=options.timeouts())
    settings: dict[str, Any] = {"serial_port": path, "unit": options.unit}
    if options.baudrate != 19200:
        settings["baudrate"] = options.baudrate
    return Probed(info, "modbus-rtu", settings, port_key="serial_port")


def _probe_tcp(host: str, port: int, options: ProbeOptions) -> Probed:
    info = probe_tcp(host, port, unit=options.unit, timeouts=options.timeouts())
    return Probed(info, "modbus-tcp", {"host": host, "port": port, "unit": options.unit})


FAMILY: DriverFamily[EnzymeModbusInstrument] = DriverFamily(
    name=DRIVER_NAME,
    settings=EnzymeModbusInstrument,
    factory=_make,
    probe_serial=_probe_serial,
    probe_tcp=_probe_tcp,
    probe_order=20,
    doc="enzyme-inhibition analyzer, Modbus TCP / RTU register map",
)
