"""From instrument readings to outbox drafts: spec lookup, interpretation, wire result bodies.

Does: keep the station's current specs (`SpecBook`: built-in defaults, replaced by name by the cloud's
pushed `StationConfig`, swapped atomically), group a batch of readings by kit/profile, call the numpy
core (`interpret_strips` / `interpret_kinetics`) once per group (a strip group's verdicts, values and
flags taken from its arrays at once, `StripResults.wire_table`, and a batch's values, sample ids and
products encoded by one call each), and turn every strip test line /
enzyme sample channel into a `Draft` whose body is the wire object of a `kuaijian_schema.ResultBody` —
every `Result` field except id/seq/sig (the outbox adds those in its transaction) — made by
`ResultBody.wire_of` without validating a model per result: what the model checks is made so here (lengths
cut, sample id and product always set, values finite or None, the station id checked once), and the tests
validate every kind of draft back to the same object. Every result records the algorithm and config version it used.

Nothing is silently dropped: a reading that cannot be interpreted (unknown kit or profile, profile
length ≠ spec, interpretation error) still becomes a result with verdict `invalid` and a QC flag saying
why, so it reaches the cloud and the station's record stays complete.

With an interpretation process (`gateway.offload`, `acquisition.interpret_process`) the gold strips of a
batch are interpreted there, by this same code, while the worker reads on (`Interpreter.submit`); when there
is none, or it fails, they are interpreted in the worker's thread — never lost.

Does not: read instruments, store or send anything.
"""

from __future__ import annotations

import base64
import functools
import logging
import re
import threading
import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from drivers.readings import DeviceInfo, EnzymeReading, GoldReading, Method, Reading
from gateway.errors import OffloadError
from gateway.interpret import ENZYME_ALGORITHM, GOLD_ALGORITHM, interpret_kinetics, interpret_strips
from gateway.interpret.codes import GoldFlag, Verdict, flag_names
from gateway.interpret.errors import InterpretError
from gateway.interpret.gold import WIRE_NAMES, StripResults
from gateway.offload import GoldOffload
from gateway.outbox import PRIORITY, Draft, RecordDrafts
from kuaijian_schema.kits import DEMO_KITS
from kuaijian_schema.specs import GB_T_5009_199, NY_T_448, EnzymeSpec, StripSpec
from kuaijian_schema.wire import (
    STATION_PATTERN,
    InstrumentRef,
    RawSignal,
    ResultBody,
    StationConfig,
    VerdictName,
    canonical_datetimes,
    canonical_finite,
    canonical_float_maps,
    canonical_strings,
)

BUILTIN_VERSION = "builtin"
log = logging.getLogger(__name__)

ENZYME_ANALYTE = "cholinesterase-inhibitors"  # organophosphates + carbamates, as a class


@dataclass(frozen=True, slots=True)
class SpecBook:
    """The specs in force: kits and enzyme profiles by name, plus the config version they come from."""

    version: str
    kits: Mapping[str, StripSpec]
    profiles: Mapping[str, EnzymeSpec]

    @classmethod
    def builtin(cls) -> SpecBook:
        """Defaults so a station works before any config push."""
        return cls(
            version=BUILTIN_VERSION,
            kits=MappingProxyType(dict(DEMO_KITS)),
            profiles=MappingProxyType({p.name: p for p in (GB_T_5009_199, NY_T_448)}),
        )

    def with_config(self, cfg: StationConfig) -> SpecBook:
        """Built-in defaults overlaid by the pushed kits/profiles (by name); version = cfg.version."""
        base = SpecBook.builtin()
        kits = dict(base.kits)
        kits.update({k.name: k for k in cfg.gold_kits})
        profiles = dict(base.profiles)
        profiles.update({p.name: p for p in cfg.enzyme_profiles})
        return SpecBook(cfg.version, MappingProxyType(kits), MappingProxyType(profiles))

    def __reduce__(self) -> tuple[Any, ...]:
        # for the interpretation process (gateway.offload): a mappingproxy does not pickle
        return _spec_book, (self.version, dict(self.kits), dict(self.profiles))

    def profile(self, name: str) -> EnzymeSpec | None:
        """Exact name, else a unique prefix match either way ("GB/T 5009.199" ↔ "GB/T 5009.199-2003")."""
        if name in self.profiles:
            return self.profiles[name]
        hits = [p for n, p in self.profiles.items() if name and (n.startswith(name) or name.startswith(n))]
        return hits[0] if len(hits) == 1 else None


def _spec_book(version: str, kits: dict[str, StripSpec], profiles: dict[str, EnzymeSpec]) -> SpecBook:
    return SpecBook(version, MappingProxyType(kits), MappingProxyType(profiles))


@dataclass
class SpecHolder:
    """Thread-safe holder of the current `SpecBook` (workers read, the link's config push writes)."""

    book: SpecBook = field(default_factory=SpecBook.builtin)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self) -> SpecBook:
        with self._lock:
            return self.book

    def set(self, book: SpecBook) -> None:
        with self._lock:
            self.book = book


@functools.lru_cache(maxsize=1024)
def _enc_qc(flags: int, no_sample_id: bool) -> bytes:
    """The `"qc"` member of a strip test line with QC flag bits `flags` (a few distinct values, encoded once)."""
    names = flag_names(GoldFlag, flags) + (("no-sample-id",) if no_sample_id else ())
    return b',"qc":' + canonical_finite(list(names))


_VERDICTS: tuple[VerdictName, ...] = tuple(Verdict(c).wire for c in range(len(Verdict)))
"""Wire verdict names by `Verdict` code."""
_PRIORITIES = tuple(PRIORITY[v] for v in _VERDICTS)


@functools.lru_cache(maxsize=64)
def _instrument_ref(serial: str, model: str, driver: str) -> InstrumentRef:
    """The (frozen) reference of one instrument, validated once rather than once per result."""
    return InstrumentRef(serial=serial, model=model, driver=driver)


def _raw(arr: npt.NDArray[np.float64]) -> RawSignal:
    data = np.ascontiguousarray(arr, dtype="<f4")
    return RawSignal(
        dtype="<f4",
        shape=tuple(int(n) for n in data.shape),
        data=base64.b64encode(zlib.compress(data.tobytes(), 6)).decode("ascii"),
    )


@dataclass(frozen=True, slots=True)
class Interpreter:
    """Callable turning a batch of one instrument's readings into `RecordDrafts` (one per reading)."""

    station: str
    specs: SpecHolder
    operator: str | None = None
    include_raw: bool = False
    gold_median: int = 0  # running-median pre-filter of `interpret_strips` (0, 3 or 5)
    default_kit: str | None = None
    default_profile: str | None = None
    offload: GoldOffload | None = None
    """The gateway's interpretation process (gateway.offload): gold batches are interpreted there, by this
    same code; in this thread when there is none or it fails."""

    def __post_init__(self) -> None:
        # checked once here, not per result (`ResultBody.wire_of` does not validate)
        if not re.fullmatch(STATION_PATTERN, self.station):
            raise ValueError(f"station id {self.station!r} does not match {STATION_PATTERN}")

    def settings(self) -> tuple[Any, ...]:
        """What makes this interpreter besides its specs and offload (`from_settings` makes it again)."""
        return (
            self.station,
            self.operator,
            self.include_raw,
            self.gold_median,
            self.default_kit,
            self.default_profile,
        )

    @classmethod
    def from_settings(cls, settings: tuple[Any, ...], specs: SpecHolder) -> Interpreter:
        station, operator, include_raw, gold_median, default_kit, default_profile = settings
        return cls(station, specs, operator, include_raw, gold_median, default_kit, default_profile)

    def __call__(self, info: DeviceInfo, readings: Sequence[Reading]) -> list[RecordDrafts]:
        """One `RecordDrafts` per reading, in their order."""
        return self.submit(info, readings)()

    def submit(self, info: DeviceInfo, readings: Sequence[Reading]) -> Callable[[], list[RecordDrafts]]:
        """Start interpreting `readings` and return what gives their drafts (`__call__`'s) when called —
        exactly once. With an interpretation process the gold strips are sent there now and this thread is
        free until then (the worker reads the next batch meanwhile); without one, or when it fails, they are
        interpreted here when called."""
        book = self.specs.get()
        golds = [r for r in readings if isinstance(r, GoldReading)]
        enzymes = [r for r in readings if isinstance(r, EnzymeReading)]
        offload = self.offload
        sent: Callable[[], list[RecordDrafts]] | None = None
        if golds and offload is not None and offload.takes(golds):
            try:
                sent = offload.submit(self, book, info, golds)
            except OffloadError as exc:
                log.warning("interpreting %d strip(s) in the worker's thread: %s", len(golds), exc)

        def drafts() -> list[RecordDrafts]:
            made: list[RecordDrafts] | None = None
            if sent is not None:
                try:
                    made = sent()
                except OffloadError as exc:
                    log.warning("interpreting %d strip(s) in the worker's thread: %s", len(golds), exc)
                else:
                    if len(golds) == len(readings):  # all gold: the child's, one per reading in their order
                        return made
            out: dict[int, list[Draft]] = {r.record_no: [] for r in readings}
            interpreted = made is not None
            for rec in made or ():
                out[rec.record_no].extend(rec.drafts)
            if golds and not interpreted:
                self._gold(info, golds, book, out)
            for rd in enzymes:
                self._enzyme(info, rd, book, out)
            return [RecordDrafts(r.record_no, tuple(out[r.record_no])) for r in readings]

        return drafts

    # ------------------------------------------------------------------ common
    def _body(
        self,
        info: DeviceInfo,
        *,
        sample_id: str,
        product: str,
        record_no: int,
        method: Method,
        analyte: str,
        channel: int,
        measured_at: datetime,
        verdict: VerdictName,
        values: Mapping[str, float | None],
        qc: Sequence[str],
        algorithm: str,
        config_version: str,
        operator: str,
        raw: RawSignal | None,
    ) -> dict[str, Any]:
        """The result's wire object (`ResultBody.wire_of`: what the model would validate is made so here
        — lengths cut to the limits, a sample id and product always there, values finite or None)."""
        qc = list(qc)
        if not sample_id:
            sample_id = f"{info.serial}-{record_no}"
            qc.append("no-sample-id")
        op = operator or self.operator
        return ResultBody.wire_of(
            station=self.station,
            instrument=_instrument_ref(info.serial, info.model, info.driver),
            sample={"id": sample_id[:64], "product": (product or "unknown")[:64]},
            method=method,
            analyte=analyte[:64] or "unknown",
            channel=channel,
            measured_at=measured_at,
            verdict=verdict,
            values=dict(values),  # finite or None already: `values_for` makes them so
            qc=qc,
            algorithm=algorithm,
            config_version=config_version,
            raw=raw,
            operator=op[:64] if op else None,
        )

    # ------------------------------------------------------------------ colloidal gold
    def _gold(
        self, info: DeviceInfo, readings: list[GoldReading], book: SpecBook, out: dict[int, list[Draft]]
    ) -> None:
        groups: dict[str, list[GoldReading]] = defaultdict(list)
        for rd in readings:
            groups[rd.kit or self.default_kit or ""].append(rd)
        for kit, group in groups.items():
            spec = book.kits.get(kit)
            if spec is None:
                for rd in group:
                    self._gold_invalid(info, rd, book, out, f"unknown-kit:{kit or '-'}")
                continue
            fits = [rd for rd in group if rd.profile.ndim == 1 and rd.profile.shape[0] == spec.length]
            for rd in group:
                if not (rd.profile.ndim == 1 and rd.profile.shape[0] == spec.length):
                    self._gold_invalid(info, rd, book, out, f"profile-length-mismatch:{rd.profile.shape}")
            if not fits:
                continue
            try:
                res = interpret_strips(np.stack([rd.profile for rd in fits]), spec, median=self.gold_median)
            except InterpretError:
                # One bad strip must not take the batch down: interpret them one by one.
                for rd in fits:
                    self._gold_one(info, rd, spec, book, out)
                continue
            self._gold_drafts(info, fits, res, book, out)

    def _gold_drafts(
        self,
        info: DeviceInfo,
        readings: list[GoldReading],
        res: StripResults,
        book: SpecBook,
        out: dict[int, list[Draft]],
    ) -> None:
        """The drafts of a strip batch, already encoded (`Draft.parts`; the outbox seals them from their
        parts, `seal_parts`): what `_gold_draft` makes for each line of each strip (a test holds the parts
        equal to `body_parts` of its wire objects), with what the batch or one strip shares made once and
        the values, sample ids and products of the whole batch encoded by one call each
        (`canonical_float_maps`, `canonical_strings`). The body's canonical JSON members are written in
        their sorted order: algorithm analyte channel config_version | instrument measured_at method
        operator qc raw sample | station values verdict."""
        enc = canonical_finite
        verdicts, table, flags = res.wire_table()
        values = canonical_float_maps(WIRE_NAMES, table)
        ref = _instrument_ref(info.serial, info.model, info.driver)
        instrument = b'"instrument":' + enc({"serial": ref.serial, "model": ref.model, "driver": ref.driver})
        version = b',"config_version":' + enc(book.version)
        heads = [
            b'"algorithm":' + enc(res.algorithm) + b',"analyte":' + enc(a[:64] or "unknown")
            for a in res.analytes
        ]
        station = enc(self.station).replace(b"%", b"%%")  # (a template: see the values below)
        tails = [b'"station":' + station + b',"values":%b,"verdict":' + enc(v) for v in _VERDICTS]
        texts: list[str] = []
        for rd in readings:
            if not 0 <= rd.channel <= 255:
                raise ValueError(f"channel {rd.channel} is outside 0–255")
            texts.append((rd.sample_id or f"{info.serial}-{rd.record_no}")[:64])
            texts.append((rd.product or "unknown")[:64])
        strings = canonical_strings(texts)
        # per line: "{instrument},measured_at,method,operator,qc,raw,sample" in one format
        p1 = (
            instrument.replace(b"%", b"%%")
            + b',"measured_at":%b,"method":"gold"%b%b%b,"sample":{"id":%b,"product":%b}'
        )
        operators: dict[str, bytes] = {"": b""}
        per_channel: dict[int, list[tuple[str, bytes]]] = {}  # channel → (line key, first part) per test line
        k = len(heads)
        times = canonical_datetimes([rd.measured_at for rd in readings])
        for i, rd in enumerate(readings):
            at = times[i]
            op = (rd.operator or self.operator or "")[:64]
            op_member = operators.get(op)
            if op_member is None:
                op_member = operators[op] = b',"operator":' + enc(op)
            raw = b',"raw":' + enc(_raw(rd.profile).model_dump(mode="json")) if self.include_raw else b""
            sid, product = strings[2 * i], strings[2 * i + 1]
            lines = per_channel.get(rd.channel)
            if lines is None:
                channel = b',"channel":' + str(rd.channel).encode() + version
                lines = per_channel[rd.channel] = [
                    (f"ch{rd.channel}/t{j}", head + channel) for j, head in enumerate(heads)
                ]
            missing = not rd.sample_id
            drafts = out[rd.record_no]
            for j, (key, first) in enumerate(lines):
                v = verdicts[i][j]
                parts = (
                    first,
                    p1 % (at, op_member, _enc_qc(flags[i][j], missing), raw, sid, product),
                    b"",
                    tails[v] % values[i * k + j],
                )
                drafts.append(Draft(key, _PRIORITIES[v], None, parts))

    def _gold_one(
        self, info: DeviceInfo, rd: GoldReading, spec: StripSpec, book: SpecBook, out: dict[int, list[Draft]]
    ) -> None:
        try:
            res = interpret_strips(rd.profile[np.newaxis, :], spec, median=self.gold_median)
        except InterpretError as exc:
            self._gold_invalid(info, rd, book, out, f"interpretation-error:{type(exc).__name__}", spec)
            return
        for k, analyte in enumerate(res.analytes):
            self._gold_draft(
                info,
                rd,
                book,
                out,
                analyte,
                res.verdict_for(0, k),
                res.values_for(0, k),
                res.flags_for(0, k),
                res.algorithm,
                k,
            )

    def _gold_invalid(
        self,
        info: DeviceInfo,
        rd: GoldReading,
        book: SpecBook,
        out: dict[int, list[Draft]],
        flag: str,
        spec: StripSpec | None = None,
    ) -> None:
        analytes = spec.analytes if spec is not None else (rd.kit or "unknown",)
        for k, analyte in enumerate(analytes):
            self._gold_draft(info, rd, book, out, analyte, "invalid", {}, (flag,), GOLD_ALGORITHM, k)

    def _gold_draft(
        self,
        info: DeviceInfo,
        rd: GoldReading,
        book: SpecBook,
        out: dict[int, list[Draft]],
        analyte: str,
        verdict: VerdictName,
        values: Mapping[str, float | None],
        qc: Sequence[str],
        algorithm: str,
        line: int,
    ) -> None:
        body = self._body(
            info,
            sample_id=rd.sample_id,
            product=rd.product,
            record_no=rd.record_no,
            method="gold",
            analyte=analyte,
            channel=rd.channel,
            measured_at=rd.measured_at,
            verdict=verdict,
            values=values,
            qc=qc,
            algorithm=algorithm,
            config_version=book.version,
            operator=rd.operator,
            raw=_raw(rd.profile) if self.include_raw else None,
        )
        out[rd.record_no].append(Draft(f"ch{rd.channel}/t{line}", PRIORITY[verdict], body))

    # ------------------------------------------------------------------ enzyme inhibition
    def _enzyme(
        self, info: DeviceInfo, rd: EnzymeReading, book: SpecBook, out: dict[int, list[Draft]]
    ) -> None:
        name = rd.profile or self.default_profile or ""
        spec = book.profile(name)
        channels = [c for c in range(rd.absorbance.shape[0]) if c != rd.control_channel]
        flag: str | None = None
        res = None
        if spec is None:
            flag = f"unknown-profile:{name or '-'}"
        else:
            try:
                res = interpret_kinetics(
                    rd.times_s, rd.absorbance[np.newaxis, ...], np.array([rd.control_channel]), spec
                )
            except InterpretError as exc:
                flag = f"interpretation-error:{type(exc).__name__}"
        for c in channels:
            if res is not None:
                verdict, values, qc = res.verdict_for(0, c), res.values_for(0, c), res.flags_for(0, c)
                algorithm = res.algorithm
            else:
                verdict, values, qc, algorithm = "invalid", {}, (flag or "invalid",), ENZYME_ALGORITHM
            body = self._body(
                info,
                sample_id=rd.sample_ids[c] if c < len(rd.sample_ids) else "",
                product=rd.products[c] if c < len(rd.products) else "",
                record_no=rd.record_no,
                method="enzyme",
                analyte=ENZYME_ANALYTE,
                channel=c,
                measured_at=rd.measured_at,
                verdict=verdict,
                values=values,
                qc=qc,
                algorithm=algorithm,
                config_version=book.version,
                operator=rd.operator,
                raw=_raw(rd.absorbance[c]) if self.include_raw else None,
            )
            out[rd.record_no].append(Draft(f"ch{c}", PRIORITY[verdict], body))
