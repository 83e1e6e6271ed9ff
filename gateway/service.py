"""The station gateway service: wires config, outbox, specs, instrument workers and the MQTT link.

Does: take the data dir's exclusive lock (`gateway.lock`: a second `gateway run` on the same data dir is
refused with `DataDirLocked`), open the outbox (integrity check, migrations), restore the last pushed config from it (else the
built-in defaults), build one supervised `InstrumentWorker` per enabled instrument, start the `Link`
(which connects in the background: the station measures and stores fully offline), apply config pushes
atomically (stored with its version in the outbox first, then swapped in for the workers), and report a
`Status` (instruments, versions, outbox depth, oldest unsent age, free disk); limit BLAS to one thread for
the whole process (the interpretation core's matrix products are small) and glibc's malloc to two arenas
(`_tune_malloc`); offer sample registration
(`samples`, a `gateway.samples.SampleDesk`) and, with `[web] enabled`, the local registration page (and its
`/metrics`, gateway.metrics).

Does not: parse CLI arguments or install signal handlers (that is `gateway.cli`).
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import ValidationError
from threadpoolctl import threadpool_limits

from drivers import registry
from drivers.errors import DriverConfigError
from drivers.readings import Analyzer
from gateway.config import GatewayConfig, InstrumentConfig
from gateway.errors import ConfigError, GatewayError, OffloadError
from gateway.interpret import ENZYME_ALGORITHM, GOLD_ALGORITHM
from gateway.link import Link
from gateway.lock import DataDirLock
from gateway.offload import GoldOffload
from gateway.outbox import Enqueued, Outbox
from gateway.pipeline import Interpreter, SpecBook, SpecHolder
from gateway.samples import SampleDesk
from gateway.worker import InstrumentWorker, WorkerState
from kuaijian_schema.version import software_version
from kuaijian_schema.wire import (
    PROTOCOL_VERSION,
    InstrumentStatus,
    StationConfig,
    Status,
    hmac_signer,
    verify_payload,
)

if TYPE_CHECKING:
    from gateway.web import WebServer

log = logging.getLogger("gateway.service")

AnalyzerFactory = Callable[[], Analyzer]


def analyzer_factory(inst: InstrumentConfig) -> AnalyzerFactory:
    """A zero-argument constructor of the instrument's driver, from its family in `drivers.registry`."""
    try:
        return registry.constructor(inst)
    except DriverConfigError as exc:
        raise ConfigError(f"instruments.{inst.name}: {exc}") from exc


def _wants_offload(setting: str) -> bool:
    """`acquisition.interpret_process`: on, off, or auto — on when this process may run on two CPUs."""
    if setting != "auto":
        return setting == "on"
    try:
        return len(os.sched_getaffinity(0)) > 1
    except (AttributeError, OSError):
        return (os.cpu_count() or 1) > 1


class GatewayService:
    """Start with `start()`, stop with `stop()`; `fatal` is set when the outbox fails irrecoverably."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.specs = SpecHolder()
        self.fatal = threading.Event()
        self.fatal_reason: str | None = None
        self.outbox: Outbox | None = None
        self.link: Link | None = None
        self.workers: list[InstrumentWorker] = []
        self.samples: SampleDesk | None = None
        self.web: WebServer | None = None
        self._config_lock = threading.Lock()
        self._dir_lock: DataDirLock | None = None
        self.offload: GoldOffload | None = None

    def start(self) -> None:
        """Start everything; raises `DataDirLocked` when another gateway runs on the same data dir."""
        cfg = self.config
        key = cfg.station_key()
        cfg.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._dir_lock = DataDirLock.acquire(cfg.data_dir)
        try:
            self._start(key)
        except BaseException:
            if self.offload is not None and self.outbox is None:
                self.offload.close()
                self.offload = None
            if self.outbox is None:  # nothing else started: give the data dir back at once
                self._dir_lock.release()
                self._dir_lock = None
            raise

    def _start(self, key: bytes) -> None:
        cfg = self.config
        # Workers interpret a few hundred records per call: BLAS threads there only spin and wake up on the
        # cores the link, the broker and the other instruments need (measured on the 2-core VM under load:
        # the gold core's line scan 20-40x slower with OpenBLAS's default threads). Process-wide.
        threadpool_limits(limits=1, user_api="blas")
        _tune_malloc()
        max_bytes = None if cfg.storage.max_db_mb is None else int(cfg.storage.max_db_mb * 1024 * 1024)
        factories = [(inst, analyzer_factory(inst)) for inst in cfg.instruments]
        sign = hmac_signer(key)
        if _wants_offload(cfg.acquisition.interpret_process):
            # forked before this process opens the outbox or starts a thread of its own
            self.offload = GoldOffload(sign)
            try:
                self.offload.start()
            except OffloadError as exc:
                log.warning("interpreting in the workers' threads: %s", exc)
                self.offload = None
        outbox = Outbox.open(
            cfg.db_path,
            max_db_bytes=max_bytes,
            reserve_bytes=int(cfg.storage.reserve_mb * 1024 * 1024),
            keep_record_keys=cfg.storage.keep_record_keys,
        )
        self.outbox = outbox
        for corrupt in outbox.unsalvaged():
            # before any worker runs: restored cursors keep the instruments from being read again
            report = outbox.salvage_from(corrupt, lambda doc: verify_payload(doc, key))
            log.warning(
                "salvaged %s: %d of %d un-sent results restored (%d invalid), %d cursors restored%s",
                corrupt.name,
                report.results_restored,
                report.results_found,
                report.results_invalid,
                report.cursors_restored,
                f"; unreadable: {'; '.join(report.errors)}" if report.errors else "",
            )
        self._restore_config(outbox)

        if self.offload is not None:
            self.offload.seal_with(outbox.next_seq)  # the child seals what it makes with the seqs it guesses
        self.link = Link(cfg, outbox, status=self.status, on_config=self.apply_config)
        self.samples = SampleDesk(cfg.station_id, outbox, sign, on_enqueued=self.link.wake)
        for inst, factory in factories:
            if not inst.enabled:
                continue
            interp = Interpreter(
                station=cfg.station_id,
                specs=self.specs,
                operator=cfg.station.operator,
                include_raw=cfg.acquisition.include_raw,
                gold_median=cfg.acquisition.gold_median,
                default_kit=inst.default_kit_name(),
                default_profile=inst.default_profile_name(),
                offload=self.offload,
            )
            self.workers.append(
                InstrumentWorker(
                    name=inst.name,
                    driver=inst.driver,
                    make_analyzer=factory,
                    interpret=interp,
                    outbox=outbox,
                    sign=sign,
                    timeouts=inst.timeouts.to_timeouts(),
                    poll_interval_s=inst.poll_interval_s or cfg.acquisition.poll_interval_s,
                    read_batch=cfg.acquisition.read_batch,
                    start_from=cfg.acquisition.start_from,
                    full_retry_s=cfg.acquisition.full_retry_s,
                    skip_unreadable_after=cfg.acquisition.skip_unreadable_after,
                    max_clock_drift_s=cfg.acquisition.max_clock_drift_s,
                    on_enqueued=self._on_enqueued,
                    on_state=self._on_worker_state,
                    on_fatal=self._on_fatal,
                )
            )
        self.link.start()
        for w in self.workers:
            w.start()
        if cfg.web.enabled:
            from gateway.metrics import registry_for  # prometheus-client only with the page
            from gateway.web import WebServer  # uvicorn/starlette only when the page is on

            metrics = registry_for(self) if cfg.web.metrics else None
            self.web = WebServer(self.samples, cfg.web.host, cfg.web.port, metrics)
            self.web.start()
            log.info("sample registration page on http://%s:%d/", cfg.web.host, self.web.port)
        log.info(
            "gateway %s started: %d instrument(s), outbox %s, config %s",
            cfg.station_id,
            len(self.workers),
            cfg.db_path,
            self.specs.get().version,
        )

    def stop(self, timeout: float = 5.0) -> None:
        if self.web is not None:
            self.web.stop(timeout)
            self.web = None
        for w in self.workers:
            w.stop()
        for w in self.workers:
            w.join(timeout)
        if self.link is not None:
            self.link.stop(timeout)
        if self.offload is not None:
            self.offload.close()
            self.offload = None
        if self.outbox is not None:
            self.outbox.close()
            self.outbox = None
        if self._dir_lock is not None:
            self._dir_lock.release()
            self._dir_lock = None

    # ------------------------------------------------------------------ config
    def _restore_config(self, outbox: Outbox) -> None:
        stored = outbox.current_config()
        if stored is None:
            return
        version, doc = stored
        try:
            self.specs.set(SpecBook.builtin().with_config(StationConfig.model_validate(doc)))
        except ValidationError as exc:
            log.warning("stored config %s no longer validates, using built-in defaults: %s", version, exc)

    def apply_config(self, cfg: StationConfig) -> None:
        """Apply a pushed config atomically: record it (with its version) in the outbox, then swap."""
        with self._config_lock:
            if self.outbox is None:
                return
            if cfg.version == self.specs.get().version:
                return
            book = SpecBook.builtin().with_config(cfg)
            self.outbox.store_config(cfg.version, cfg.model_dump(mode="json"))
            self.specs.set(book)
        log.info(
            "applied station config %s (%d kits, %d enzyme profiles)",
            cfg.version,
            len(book.kits),
            len(book.profiles),
        )
        if self.link is not None:
            self.link.publish_status()

    # ------------------------------------------------------------------ callbacks
    def _on_enqueued(self, rows: list[Enqueued]) -> None:
        if rows and self.link is not None:
            self.link.wake(max(r.priority for r in rows))

    def _on_worker_state(self, state: WorkerState) -> None:
        if self.link is not None:
            self.link.publish_status()

    def _on_fatal(self, name: str, exc: Exception) -> None:
        self.fatal_reason = f"instrument {name}: {exc}"
        self.fatal.set()

    # ------------------------------------------------------------------ status
    def status(self) -> Status:
        outbox = self.outbox
        if outbox is None:
            raise GatewayError("gateway is not running")
        stats = outbox.stats()
        try:
            free = shutil.disk_usage(self.config.data_dir).free
        except OSError:
            free = None
        return Status(
            station=self.config.station_id,
            state="online",
            at=datetime.now(UTC),
            instruments=tuple(
                InstrumentStatus(
                    name=s.name,
                    serial=s.serial,
                    model=s.model,
                    driver=s.driver,
                    state=s.state,
                    last_error=s.last_error,
                    last_event=s.last_event,
                )
                for s in (w.state for w in self.workers)
            ),
            versions={
                "kuaijian": software_version(),
                "protocol": PROTOCOL_VERSION,
                "gold": GOLD_ALGORITHM,
                "enzyme": ENZYME_ALGORITHM,
            },
            outbox_depth=stats.depth,
            oldest_unsent_age_s=stats.oldest_age_s(),
            free_disk_bytes=free,
            config_version=self.specs.get().version,
        )


_M_ARENA_MAX = -8  # glibc's mallopt parameter


def _tune_malloc(arenas: int = 2) -> None:
    """glibc's malloc at most `arenas` arenas, set before the threads start (and the interpretation process
    is forked): by default each thread that allocates may get one of its own (up to 8 per core), and the
    payload-sized buffers the worker, the committer, the sender and the ack thread pass along leave free
    space in each — about 2 MiB of the gateway's RSS in benchmarks/gateway.py, no cost in throughput seen.
    (A fixed mmap threshold saved 3 MiB more there but cost ~5 % of the throughput in page faults: not
    set.) Nothing where malloc is not glibc's."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    if mallopt(_M_ARENA_MAX, arenas) != 1:
        log.debug("mallopt(M_ARENA_MAX, %d) refused; malloc keeps its default arenas", arenas)
