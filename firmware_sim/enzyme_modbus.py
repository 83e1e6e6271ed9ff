"""Simulated enzyme-inhibition analyzer serving the kuaijian register map over Modbus.

Does: runs pymodbus' asyncio server in a background thread with its own event loop, on TCP
(127.0.0.1 by default) and/or Modbus RTU over a real pseudo-terminal; keeps a memory of completed runs
(kinetics from `firmware_sim.signal_model`, ground truth in `.truth[run_no]`); answers the start
command, run paging and FC 43/14 Read Device Identification; injects faults at runtime
(`ModbusFaults`: exception responses, silence, slow replies, line noise on RTU, pages that change
mid-read) and unplug/replug (`unplug()` / `replug()`: the TCP listener stops and restarts on the same
port, the RTU line goes dead and comes back on the same pty path).

Does not: implement a second signal model, or listen on anything but the address it is given.

RTU wiring: the pymodbus serial server opens the slave of pty A; a relay in the simulator's event
loop copies bytes between master A and master B; the driver opens the slave of pty B (the path
`start_rtu()` returns). The relay is the "cable": unplugging stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import threading
import time
import tty
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU, ReadDeviceInformationRequest
from pymodbus.pdu.device import DeviceInformationFactory, ModbusDeviceIdentification
from pymodbus.pdu.mei_message import ReadDeviceInformationResponse
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from drivers.enzyme_codec import (
    Identity,
    RunPage,
    StatusBlock,
    decode_u32,
    encode_identity,
    encode_page,
    encode_status,
    identity_block,
    status_block,
)
from drivers.enzyme_map import ENZYME_MAP, MAP_VERSION, Command, RegisterMap, Status
from kuaijian_schema.specs import EnzymeSpec

T = TypeVar("T")


@dataclass
class ModbusFaults:
    """Faults applied to requests as they arrive; mutate the fields at runtime (thread-safe enough:
    each request takes one snapshot).

    exception_code: answer every request with this Modbus exception (e.g. 6 SLAVE_DEVICE_BUSY,
        2 ILLEGAL_DATA_ADDRESS).
    silent: receive but never answer (a hung device).
    delay_s: answer this much later (a slow device).
    garble: RTU only — flip one bit of every reply on the wire, so its CRC fails (line noise).
    torn_reads: the run page alternates between the selected run and another one between
        consecutive reads, as if the memory page changed mid-read.
    for_requests: if set, the faults apply to this many more requests, then clear themselves.
    """

    exception_code: int | None = None
    silent: bool = False
    delay_s: float = 0.0
    garble: bool = False
    torn_reads: bool = False
    for_requests: int | None = None

    def active(self) -> bool:
        return bool(
            self.exception_code is not None or self.silent or self.delay_s or self.garble or self.torn_reads
        )

    def clear(self) -> None:
        self.exception_code = None
        self.silent = False
        self.delay_s = 0.0
        self.garble = False
        self.torn_reads = False
        self.for_requests = None


@dataclass(frozen=True, slots=True)
class _Verdict:
    exception_code: int | None
    silent: bool
    delay_s: float
    garble: bool
    torn_reads: bool


@dataclass(frozen=True, slots=True)
class RunTruth:
    """Ground truth of one simulated run (what the signal model was asked to produce)."""

    run_no: int
    sample_ids: tuple[str, ...]
    products: tuple[str, ...]
    control_channel: int
    model_truth: Any  # whatever the signal model reports (true inhibition per channel, slopes, ...)


class _ControlBlock:
    """Per-simulator stand-in for pymodbus' process-global ModbusControlBlock (FC 43 identity)."""

    def __init__(self, identity: ModbusDeviceIdentification) -> None:
        self.Identity = identity


class EnzymeSimulator:
    """A simulated C-channel enzyme-inhibition analyzer (see module docstring)."""

    def __init__(
        self,
        *,
        serial: str = "EN-0001",
        model: str = "KJ-E12",
        channels: int = 12,
        profile: EnzymeSpec,
        seed: int = 0,
        faults: ModbusFaults | None = None,
        unit: int = 1,
        vendor: str = "Kuaijian Sim",
        firmware: str = "1.4.2",
        memory_runs: int = 200,
        run_duration_s: float = 0.2,
        rmap: RegisterMap = ENZYME_MAP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not 2 <= channels <= rmap.max_channels:
            raise ValueError(f"channels must be 2..{rmap.max_channels}")
        self.serial = serial
        self.model = model
        self.channels = channels
        self.profile = profile
        self.unit = unit
        self.faults = faults if faults is not None else ModbusFaults()
        self.rmap = rmap
        self.run_duration_s = run_duration_s
        self.clock = clock
        self.rng = np.random.default_rng(seed)
        self.identity = Identity(
            map_version=MAP_VERSION,
            vendor=vendor,
            model=model,
            serial=serial,
            firmware=firmware,
            channels=channels,
            max_points=rmap.max_points,
            memory_runs=memory_runs,
        )
        self.truth: dict[int, RunTruth] = {}
        self.requests = 0  # requests received (all servers)
        self.in_flight = 0  # requests received and not yet answered (e.g. delayed by `delay_s`)
        self._runs: OrderedDict[int, RunPage] = OrderedDict()
        self._memory_runs = memory_runs
        self._counter = 0
        self._status = Status.IDLE
        self._error_code = 0
        self._selected = 0
        self._pending_samples: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._lock = threading.RLock()
        self._regs = [0] * rmap.top
        self._write_identity()
        self._write_status()
        self._torn_flip = False
        self._torn = False  # set per request (loop thread) when the torn_reads fault applies to it
        # runtime (loop thread)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tcp: ModbusTcpServer | None = None
        self._tcp_addr: tuple[str, int] | None = None
        self._rtu: ModbusSerialServer | None = None
        self._pty_fds: list[int] = []
        self._rtu_path: str | None = None
        self._masters: tuple[int, int] | None = None
        self._plugged = True
        self._auto_task: asyncio.Task[None] | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._drop_reply = False
        self._garble_reply = False

    # ------------------------------------------------------------------ memory / registers

    def _put(self, address: int, words: Sequence[int]) -> None:
        self._regs[address : address + len(words)] = list(words)

    def _write_identity(self) -> None:
        self._put(identity_block(self.rmap)[0], encode_identity(self.identity, self.rmap))

    def _write_status(self) -> None:
        oldest = next(iter(self._runs)) if self._runs else 0
        st = StatusBlock(
            status=self._status,
            error_code=self._error_code,
            run_counter=self._counter,
            oldest_run=oldest,
            clock=int(self.clock()) & 0xFFFF_FFFF,
        )
        self._put(status_block(self.rmap)[0], encode_status(st, self.rmap))

    def _write_page(self, regs: list[int], run_no: int) -> None:
        self._write_page_of(regs, self._runs.get(run_no) if run_no else None)

    def _write_page_of(self, regs: list[int], page: RunPage | None) -> None:
        # clear the whole page area, then write the run's blocks (an empty page reads run 0)
        base = self.rmap.page_header[0]
        regs[base : self.rmap.top] = [0] * (self.rmap.top - base)
        if page is not None:
            for address, words in encode_page(page, self.rmap).items():
                regs[address : address + len(words)] = words

    def add_run(self, page: RunPage, truth: RunTruth | None = None) -> int:
        """Store a completed run (its `run_no` is assigned here) and return its number."""
        with self._lock:
            self._counter += 1
            run_no = self._counter
            page = dataclasses.replace(page, run_no=run_no)
            encode_page(page, self.rmap)  # validate before storing
            self._runs[run_no] = page
            while len(self._runs) > self._memory_runs:
                evicted, _ = self._runs.popitem(last=False)
                self.truth.pop(evicted, None)
                if self._selected == evicted:
                    self._selected = 0
                    self._write_page(self._regs, 0)
            if truth is not None:
                self.truth[run_no] = dataclasses.replace(truth, run_no=run_no)
            self._status = Status.DONE
            self._write_status()
            return run_no

    def run(self, run_no: int) -> RunPage:
        with self._lock:
            return self._runs[run_no]

    def measure(
        self,
        sample_ids: Sequence[str],
        products: Sequence[str],
        inhibition: float | Sequence[float] | None = None,
        *,
        control_channel: int = 0,
    ) -> int:
        """Measure one run now (kinetics from the signal model) and return its run number.

        `sample_ids` / `products` describe either all channels or all channels except the control;
        the control channel's entries are stored as "". `inhibition` (%, one value for all channels
        or one per channel, control ignored) fixes the true inhibitions; None draws them at random.
        """
        from firmware_sim.signal_model import one_enzyme_run

        inh: list[float] | None
        if inhibition is None:
            inh = None
        elif isinstance(inhibition, int | float):
            inh = [float(inhibition)] * self.channels
        else:
            inh = [float(v) for v in inhibition]
        with self._lock:
            result = one_enzyme_run(
                self.profile, self.channels, self.rng, inhibition=inh, control_channel=control_channel
            )
        times: npt.NDArray[np.float64] = np.asarray(result.times_s, dtype=np.float64)
        absorbance = np.clip(np.asarray(result.absorbance, dtype=np.float64), -3.2767, 3.2767)
        control = int(result.control_channel)
        ids = _per_channel(sample_ids, self.channels, control, "sample_ids")
        prods = _per_channel(products, self.channels, control, "products")
        interval = float(np.round(times[1] - times[0], 1))
        page = RunPage(
            run_no=0,
            started_at=int(self.clock()),
            interval_s=interval,
            first_point_s=float(np.round(times[0], 1)),
            control_channel=control,
            profile=self.profile.name,
            sample_ids=ids,
            products=prods,
            absorbance=absorbance,
        )
        truth = RunTruth(0, ids, prods, control, result)
        return self.add_run(page, truth)

    def load_samples(self, sample_ids: Sequence[str], products: Sequence[str]) -> None:
        """What the operator typed for the next run started with the Modbus start command."""
        with self._lock:
            self._pending_samples = (tuple(sample_ids), tuple(products))

    def set_error(self, code: int) -> None:
        """Put the instrument in the error state (e.g. lamp failure) until `clear error`."""
        with self._lock:
            self._status = Status.ERROR
            self._error_code = code
            self._write_status()

    @property
    def status(self) -> Status:
        with self._lock:
            return self._status

    @property
    def run_counter(self) -> int:
        with self._lock:
            return self._counter

    def _start_command(self) -> ExcCodes | None:
        with self._lock:
            if self._status == Status.MEASURING:
                return ExcCodes.DEVICE_BUSY
            if self._status == Status.ERROR:
                return ExcCodes.DEVICE_FAILURE
            self._status = Status.MEASURING
            self._write_status()
        assert self._loop is not None  # noqa: S101 — commands arrive through the running loop
        handle = self._loop.call_later(self.run_duration_s, self._finish_started_run)
        self._timers.add(handle)
        return None

    def finish_run_now(self) -> None:
        """Complete a started run now instead of after `run_duration_s` (a test's "the run is done")."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the simulator is not serving")

        def finish() -> None:
            for handle in self._timers:
                handle.cancel()
            self._timers.clear()
            self._finish_started_run()

        loop.call_soon_threadsafe(finish)

    def _finish_started_run(self) -> None:
        with self._lock:
            pending, self._pending_samples = self._pending_samples, None
            n = self._counter + 1
        if pending is None:
            ids = tuple(f"S{n:04d}-{c + 1:02d}" for c in range(self.channels - 1))
            pending = (ids, ("",) * (self.channels - 1))
        self.measure(*pending)

    # ------------------------------------------------------------------ request handling

    def _take_verdict(self) -> _Verdict | None:
        with self._lock:
            self.requests += 1
            f = self.faults
            if not f.active():
                return None
            if f.for_requests is not None:
                if f.for_requests <= 0:
                    f.clear()
                    return None
                f.for_requests -= 1
            return _Verdict(f.exception_code, f.silent, f.delay_s, f.garble, f.torn_reads)

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            self._drop_reply = bool(getattr(pdu, "_kj_silent", False))
            self._garble_reply = bool(getattr(pdu, "_kj_garble", False))
            return pdu
        verdict = self._take_verdict()
        with self._lock:
            self.in_flight += 1
        inner: Callable[[Any, int], Coroutine[Any, Any, ModbusPDU]] = pdu.datastore_update
        if isinstance(pdu, ReadDeviceInformationRequest):
            inner = self._device_information(pdu)
        fc = pdu.function_code
        foreign = pdu.dev_id != self.unit  # on a multi-drop line other units' requests get no answer

        async def update(context: Any, device_id: int) -> ModbusPDU:
            try:
                if foreign:
                    ignored = ExceptionResponse(fc, ExcCodes.GATEWAY_NO_RESPONSE)
                    ignored._kj_silent = True  # type: ignore[attr-defined]
                    return ignored
                if verdict is not None and verdict.delay_s:
                    await asyncio.sleep(verdict.delay_s)
                if verdict is not None and verdict.exception_code is not None:
                    rsp: ModbusPDU = ExceptionResponse(fc, verdict.exception_code)
                else:
                    self._torn = verdict is not None and verdict.torn_reads
                    rsp = await inner(context, device_id)
                if verdict is not None:
                    rsp._kj_silent = verdict.silent  # type: ignore[attr-defined]
                    rsp._kj_garble = verdict.garble  # type: ignore[attr-defined]
                return rsp
            finally:
                with self._lock:
                    self.in_flight -= 1  # the reply is sent (or dropped) right after this returns

        pdu.datastore_update = update  # type: ignore[method-assign]
        return pdu

    def _device_information(
        self, req: ReadDeviceInformationRequest
    ) -> Callable[[Any, int], Coroutine[Any, Any, ModbusPDU]]:
        ident = ModbusDeviceIdentification(  # type: ignore[no-untyped-call]
            info_name={
                "VendorName": self.identity.vendor,
                "ProductCode": self.identity.model,
                "MajorMinorRevision": self.identity.firmware,
                "ProductName": "enzyme-inhibition analyzer",
                "ModelName": self.identity.model,
                "UserApplicationName": self.identity.serial,
            }
        )

        async def update(context: Any, device_id: int) -> ModbusPDU:
            _ = context
            if not 0 <= req.read_code <= 4 or not 0 <= req.object_id <= 0xFF:
                return ExceptionResponse(req.function_code, ExcCodes.ILLEGAL_VALUE)
            info = DeviceInformationFactory.get(  # type: ignore[no-untyped-call]
                _ControlBlock(ident), req.read_code, req.object_id
            )
            return ReadDeviceInformationResponse(
                read_code=req.read_code, information=info, dev_id=device_id, transaction_id=req.transaction_id
            )

        return update

    def _trace_packet_for(self, serial_line: bool) -> Callable[[bool, bytes], bytes]:
        def trace(sending: bool, data: bytes) -> bytes:
            if not sending:
                return data
            if self._drop_reply:
                self._drop_reply = False
                return b""
            if self._garble_reply and serial_line and data:
                self._garble_reply = False
                i = len(data) // 2
                return data[:i] + bytes([data[i] ^ 0x10]) + data[i + 1 :]
            return data

        return trace

    async def _action(
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        _ = function_code
        if start_address != 0:
            return ExcCodes.DEVICE_FAILURE
        with self._lock:
            if set_values is not None:
                exc = self._handle_write(address, [int(v) for v in set_values])
                if exc is not None:
                    return exc
            self._regs[self.rmap["clock"].address : self.rmap["clock"].end] = [
                (int(self.clock()) >> 16) & 0xFFFF,
                int(self.clock()) & 0xFFFF,
            ]
            registers[: len(self._regs)] = self._regs
            page_base = self.rmap.page_header[0]
            torn, self._torn = self._torn, False
            if torn and set_values is None and address + count > page_base:
                self._torn_flip = not self._torn_flip
                if self._torn_flip:
                    self._write_page_of(registers, self._torn_page(self._selected))
        return None

    def _torn_page(self, run_no: int) -> RunPage | None:
        """What a torn read shows instead of `run_no`: another run, or this one being rewritten."""
        others = [n for n in self._runs if n != run_no]
        if others:
            return self._runs[others[-1]]
        if run_no in self._runs:
            page = self._runs[run_no]
            return dataclasses.replace(page, absorbance=page.absorbance + 0.01)
        return None

    def _handle_write(self, address: int, values: list[int]) -> ExcCodes | None:
        rmap = self.rmap
        cmd = rmap["command"]
        sel = rmap["select_run"]
        end = address + len(values)
        if address < cmd.end and end > cmd.address:
            value = values[cmd.address - address]
            if value == Command.START_RUN:
                exc = self._start_command()
                if exc is not None:
                    return exc
            elif value == Command.CLEAR_ERROR:
                self._status = Status.IDLE if self._counter == 0 else Status.DONE
                self._error_code = 0
                self._write_status()
            elif value != Command.NONE:
                return ExcCodes.ILLEGAL_VALUE
            self._put(cmd.address, [value])  # reads back the last command accepted
        if address < sel.end and end > sel.address:
            words = list(self._regs[sel.address : sel.end])
            for i, v in enumerate(values):
                a = address + i
                if sel.address <= a < sel.end:
                    words[a - sel.address] = v
            run_no = decode_u32(words)
            if run_no != 0 and run_no not in self._runs:
                return ExcCodes.ILLEGAL_VALUE
            self._put(sel.address, words)
            self._selected = run_no
            self._write_page(self._regs, run_no)
        return None

    # ------------------------------------------------------------------ servers

    def _sim_device(self) -> SimDevice:
        rmap = self.rmap
        data: list[SimData] = [
            SimData(f.address, count=f.count, datatype=DataType.REGISTERS, readonly=f.access == "r")
            for f in rmap.fields
        ]
        for arr in (rmap.sample_ids, rmap.products):
            data.append(
                SimData(
                    arr.base,
                    count=arr.regs_per_item * arr.max_items,
                    datatype=DataType.REGISTERS,
                    readonly=True,
                )
            )
        data.append(
            SimData(
                rmap.absorbance.base,
                count=rmap.max_channels * rmap.max_points,
                datatype=DataType.REGISTERS,
                readonly=True,
            )
        )
        return SimDevice(self.unit, simdata=data, action=self._action)

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            self._loop = loop
            self._thread = threading.Thread(
                target=self._run_loop, args=(loop, ready), name=f"enzyme-sim-{self.serial}", daemon=True
            )
            self._thread.start()
            ready.wait(5)
        return self._loop

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        loop = self._ensure_loop()
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def start_tcp(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Serve Modbus TCP on (host, port) (port 0 = pick a free one); returns the bound address."""
        if self._tcp is not None:
            raise RuntimeError("TCP server already running")
        self._tcp_addr = self._run(self._start_tcp(host, port))
        return self._tcp_addr

    async def _start_tcp(self, host: str, port: int) -> tuple[str, int]:
        server = ModbusTcpServer(
            self._sim_device(),
            address=(host, port),
            trace_pdu=self._trace_pdu,
            trace_packet=self._trace_packet_for(serial_line=False),
        )
        await server.serve_forever(background=True)
        listener = server.transport
        sockets = getattr(listener, "sockets", None)
        if not sockets:
            await _shutdown(server)
            raise OSError(f"Modbus TCP server did not bind {host}:{port}")
        bound = sockets[0].getsockname()
        self._tcp = server
        return str(bound[0]), int(bound[1])

    def start_rtu(self, baudrate: int = 19200) -> str:
        """Serve Modbus RTU on a fresh pseudo-terminal; returns the path the driver opens."""
        if self._rtu is not None:
            raise RuntimeError("RTU server already running")
        return self._run(self._start_rtu(baudrate))

    async def _start_rtu(self, baudrate: int) -> str:
        master_a, slave_a = os.openpty()
        master_b, slave_b = os.openpty()
        self._pty_fds = [master_a, slave_a, master_b, slave_b]
        for fd in (slave_a, slave_b):
            tty.setraw(fd)
        for fd in (master_a, master_b):
            os.set_blocking(fd, False)
        self._masters = (master_a, master_b)
        server = ModbusSerialServer(
            self._sim_device(),
            framer=FramerType.RTU,
            port=os.ttyname(slave_a),
            baudrate=baudrate,
            trace_pdu=self._trace_pdu,
            trace_packet=self._trace_packet_for(serial_line=True),
        )
        await server.serve_forever(background=True)
        loop = asyncio.get_running_loop()
        loop.add_reader(master_a, self._relay, master_a, master_b)
        loop.add_reader(master_b, self._relay, master_b, master_a)
        self._rtu = server
        self._rtu_path = os.ttyname(slave_b)
        return self._rtu_path

    def _relay(self, src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
        except OSError:
            return
        if not self._plugged or not data:
            return
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(dst, data)

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return self._tcp_addr

    @property
    def rtu_path(self) -> str | None:
        return self._rtu_path

    def unplug(self) -> None:
        """Pull the cable: TCP listener and its connections close; the RTU line goes silent."""
        self._run(self._unplug())

    async def _unplug(self) -> None:
        self._plugged = False
        if self._tcp is not None:
            await _shutdown(self._tcp)
            self._tcp = None

    def replug(self) -> None:
        """Plug back in: TCP listens again on the same port; the RTU line carries bytes again."""
        self._run(self._replug())

    async def _replug(self) -> None:
        if self._tcp_addr is not None and self._tcp is None:
            await self._start_tcp(*self._tcp_addr)
        self._plugged = True

    # ------------------------------------------------------------------ auto measure

    def auto_measure(self, interval_s: float | None) -> None:
        """Measure a run every `interval_s` seconds with generated sample ids (None stops it)."""
        self._run(self._set_auto(interval_s))

    async def _set_auto(self, interval_s: float | None) -> None:
        if self._auto_task is not None:
            self._auto_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._auto_task
            self._auto_task = None
        if interval_s is not None:
            if interval_s <= 0:
                raise ValueError("interval_s must be positive")
            self._auto_task = asyncio.create_task(self._auto_loop(interval_s))

    async def _auto_loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            self._finish_started_run()

    # ------------------------------------------------------------------ lifecycle

    def stop(self) -> None:
        """Stop servers, close ptys, stop the loop thread (idempotent)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(TimeoutError, RuntimeError):
            self._run(self._stop())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = None
        self._thread = None

    async def _stop(self) -> None:
        await self._set_auto(None)
        for handle in self._timers:
            handle.cancel()
        self._timers.clear()
        if self._tcp is not None:
            await _shutdown(self._tcp)
            self._tcp = None
        if self._rtu is not None:
            await _shutdown(self._rtu)
            self._rtu = None
        loop = asyncio.get_running_loop()
        if self._masters is not None:
            for fd in self._masters:
                loop.remove_reader(fd)
            self._masters = None
        for fd in self._pty_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._pty_fds = []
        await asyncio.sleep(0)

    def __enter__(self) -> EnzymeSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _shutdown(server: ModbusTcpServer | ModbusSerialServer) -> None:
    await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it unannotated


def _per_channel(values: Sequence[str], channels: int, control: int, what: str) -> tuple[str, ...]:
    vals = [str(v) for v in values]
    if len(vals) == channels - 1:
        vals.insert(control, "")
    elif len(vals) == channels:
        vals[control] = ""
    else:
        raise ValueError(f"{what}: need {channels - 1} (non-control) or {channels} values, got {len(vals)}")
    return tuple(vals)
