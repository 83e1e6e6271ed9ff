"""Simulated colloidal-gold reader with ASTM LIS output (E1381 link, E1394 records) on a real pty.

Does: `AstmFirmware` — the instrument's E1381 state machine (bytes in → bytes out): it receives the
host's query message (ACK/NAK per frame, checksum and frame number checked), answers with H, P, O,
R (reflectance counts, repeat-delimited), R (CRC-32 of the profile), L — or H, L with code I when the
record is not in memory — and sends it frame by frame, waiting for each ACK and re-sending NAKed
frames (six sends at most). Fault injection (`AstmFaults`): corrupt checksums, a busy analyzer (NAK
to ENQ), silence, line noise, slow replies. Record memory, identity, clock and profiles are the
`firmware_sim.record_store.RecordStore` the gold-serial reader has too (the same signal model and ground
truth). `AstmGoldSimulator` serves it on a pty (`firmware_sim.record_store.RecordSimulator`).

Does not: push results on its own (the host asks), or use the driver's session (it shares only the
pure framing and record codecs, whose bytes are pinned by the vectors in docs/protocols/astm.md).
"""

from __future__ import annotations

import random
import threading
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np

from drivers.astm_framing import (
    ACK,
    ENQ,
    EOT,
    NAK,
    BadChecksum,
    BadFrame,
    Control,
    Frame,
    Reassembler,
    decode,
    encode_frame,
    frames_for,
)
from drivers.astm_records import (
    Header,
    Order,
    Patient,
    Query,
    Record,
    Result,
    Terminator,
    decode_record,
    encode_record,
)
from drivers.errors import DriverError
from firmware_sim.record_store import FULL_SCALE, RecordSimulator, RecordStore, SimRecord
from firmware_sim.signal_model import DEMO_KITS
from kuaijian_schema.specs import StripSpec

LOCAL_TZ = ZoneInfo("Asia/Shanghai")
VENDOR = "Kuaijian"


@dataclass(frozen=True, slots=True)
class AstmFaults:
    """Faults the simulated analyzer injects (probabilities per frame it sends / per query).

    bad_checksum: a frame goes out with a wrong checksum (the host NAKs; the analyzer re-sends)
    busy:         per ENQ from the host: NAK (not ready)
    silence:      per query: no answer at all
    noise:        per frame: 1–8 random printable bytes of line noise before it
    delay_s:      every byte string is sent this late
    """

    bad_checksum: float = 0.0
    busy: float = 0.0
    silence: float = 0.0
    noise: float = 0.0
    delay_s: float = 0.0


@dataclass
class AstmSimStats:
    queries: int = 0
    answered: int = 0
    naks_received: int = 0
    frames_sent: int = 0
    bad_frames_in: int = 0
    corrupted: int = 0
    busy: int = 0
    silenced: int = 0


class AstmFirmware:
    """The analyzer's E1381/E1394 logic; thread-safe (`measure` runs beside the serving thread)."""

    def __init__(self, store: RecordStore) -> None:
        self.store = store
        self.faults = AstmFaults()
        self.stats = AstmSimStats()
        self._rng = random.Random(store.seed ^ 0xA57)
        self._lock = threading.RLock()
        self._buf = bytearray()
        self._state: Literal["idle", "receiving", "sending"] = "idle"
        self._rea = Reassembler()
        self._out: list[Frame] = []  # frames of the answer being sent; [0] awaits its ACK
        self._sends = 0
        self._enq_pending = False

    def reply_delay_s(self) -> float:
        return self.faults.delay_s

    def reset_link(self) -> None:
        with self._lock:
            self._buf.clear()
            self._state = "idle"
            self._out = []

    # ------------------------------------------------------------ link layer
    def receive(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        with self._lock:
            self._buf.extend(data)
            while self._buf:
                try:
                    consumed, token = decode(self._buf)
                except (BadFrame, BadChecksum) as exc:
                    del self._buf[: max(exc.consumed, 1)]
                    self.stats.bad_frames_in += 1
                    if self._state == "receiving":
                        out.append(bytes((NAK,)))
                    continue
                if consumed == 0:
                    break
                del self._buf[:consumed]
                if token is not None:
                    out += self._on_token(token)
        return out

    def _on_token(self, token: Control | Frame) -> list[bytes]:
        if token == Control.ENQ:  # the host starts (or restarts) a transfer; it wins over our own
            self._out = []
            if self._rng.random() < self.faults.busy:
                self.stats.busy += 1
                self._state = "idle"
                return [bytes((NAK,))]
            self._state = "receiving"
            self._rea = Reassembler()
            return [bytes((ACK,))]
        if self._state == "receiving":
            return self._receiving(token)
        if self._state == "sending":
            return self._sending(token)
        return []  # idle: stray bytes

    def _receiving(self, token: Control | Frame) -> list[bytes]:
        if isinstance(token, Frame):
            try:
                self._rea.accept(token)
            except BadFrame:
                self.stats.bad_frames_in += 1
                return [bytes((NAK,))]
            return [bytes((ACK,))]
        if token == Control.EOT:
            self._state = "idle"
            if not self._rea.complete:
                return []
            answer = self._answer(self._rea.records)
            if answer is None:
                return []
            self._out = frames_for([encode_record(r) for r in answer])
            self._enq_pending = True
            self._state = "sending"
            return [bytes((ENQ,))]
        return []

    def _sending(self, token: Control | Frame) -> list[bytes]:
        if token == Control.NAK:
            if self._enq_pending:  # the host is not ready: give up this answer (it asks again)
                self._state, self._out = "idle", []
                return []
            self.stats.naks_received += 1
            self._sends += 1
            if self._sends >= 6:
                self._state, self._out = "idle", []
                return [bytes((EOT,))]
            return self._send_frame()
        if token in (Control.ACK, Control.EOT):
            if self._enq_pending:
                self._enq_pending = False
            else:
                self._out.pop(0)
            self._sends = 0
            if not self._out:
                self._state = "idle"
                self.stats.answered += 1
                return [bytes((EOT,))]
            return self._send_frame()
        return []

    def _send_frame(self) -> list[bytes]:
        frame = self._out[0]
        corrupt = self._rng.random() < self.faults.bad_checksum
        self.stats.frames_sent += 1
        self.stats.corrupted += corrupt
        out = [encode_frame(frame, corrupt=corrupt)]
        if self._rng.random() < self.faults.noise:
            noise = bytes(self._rng.randrange(0x41, 0x5B) for _ in range(self._rng.randrange(1, 9)))
            out.insert(0, noise)
        return out

    # ------------------------------------------------------------ records
    def _answer(self, texts: list[bytes]) -> list[Record] | None:
        self.stats.queries += 1
        try:
            records = [decode_record(t) for t in texts]
        except DriverError:
            return [self._header(), Terminator(1, "Q")]
        queries = [r for r in records if isinstance(r, Query)]
        if self._rng.random() < self.faults.silence:
            self.stats.silenced += 1
            return None
        if len(queries) != 1:
            return [self._header(), Terminator(1, "Q")]
        q = queries[0]
        if q.record == "LAST":
            rec = self.store.stored()
        elif q.record.isdigit():
            rec = self.store.stored(int(q.record))
        else:
            return [self._header(), Terminator(1, "Q")]
        if rec is None:
            return [self._header(), Terminator(1, "I")]
        out: list[Record] = [self._header(), Patient(1), self._order(rec)]
        if q.status != "O":
            out += self._results(rec)
        return [*out, Terminator(1, "N")]

    def _header(self) -> Header:
        m = self.store
        now = m.device_now().astimezone(LOCAL_TZ).strftime("%Y%m%d%H%M%S")
        return Header(
            sender=(VENDOR, m.model, m.firmware, m.serial, str(m.channels)), receiver="", timestamp=now
        )

    @staticmethod
    def _order(rec: SimRecord) -> Order:
        return Order(
            seq=1,
            specimen_id=rec.sample_id,
            record_no=rec.record_no,
            channel=rec.channel,
            test=rec.kit,
            product=rec.product,
            operator=rec.operator,
        )

    @staticmethod
    def _results(rec: SimRecord) -> list[Record]:
        done = rec.measured_at.astimezone(LOCAL_TZ).strftime("%Y%m%d%H%M%S")
        values = "\\".join(str(int(v)) for v in rec.raw)
        crc = f"{zlib.crc32(np.asarray(rec.raw, dtype='>u2').tobytes()):08X}"
        return [
            Result(1, rec.kit, "REFLECTANCE", values, units=f"1/{FULL_SCALE}", completed_at=done),
            Result(2, rec.kit, "CRC32", crc, completed_at=done),
        ]


class AstmGoldSimulator(RecordSimulator):
    """An ASTM gold reader on a real pty; configure the gateway with `link_path`."""

    def __init__(
        self,
        *,
        serial: str = "GA-0001",
        model: str = "KJ-G8A",
        channels: int = 8,
        kits: Mapping[str, StripSpec] | None = None,
        seed: int = 0,
        firmware: str = "3.0.2",
        link_path: str | None = None,
        memory: int = 1000,
    ) -> None:
        store = RecordStore(
            serial=serial,
            model=model,
            channels=channels,
            firmware=firmware,
            kits=DEMO_KITS if kits is None else kits,
            seed=seed,
            capacity=memory,
        )
        self.firmware = AstmFirmware(store)
        super().__init__(self.firmware, store, link_path=link_path)

    @property
    def faults(self) -> AstmFaults:
        return self.firmware.faults

    @faults.setter
    def faults(self, value: AstmFaults | None) -> None:
        self.firmware.faults = value or AstmFaults()

    @property
    def stats(self) -> AstmSimStats:
        return self.firmware.stats
