"""MQTT link of the station gateway: drains the outbox to `kj/v1/{station}/result` and applies the
cloud's application acks and config pushes.

Does:
- one paho-mqtt 2.x client (MQTT 5 with clean_start=False + session expiry, or 3.1.1 with
  clean_session=False), QoS 1 everywhere, TLS (CA / client cert) and username/password, automatic
  reconnect; it starts and keeps running with no network at all. Connection state changes are logged
  through `gateway.connlog.ConnectionLog`: connected (INFO), disconnected / broker unreachable (WARNING,
  with the reason), the unreachable warning repeated at most every `mqtt.unreachable_log_s`.
- birth `Status` (retained) on every connect and every `status_interval_s`; last will = offline (retained).
- sender thread: picks due outbox rows in priority order (positives first, then seq), at most
  `max_unacked` in flight (reading on from the last row it handed out, not past every row in flight), one
  result per message when idle and `{"results": [...]}` batches of up to `batch_max` under load,
  rate-limited to `max_messages_per_s` (so a drain after an outage does not flood the broker). No row is
  sent before it is on the disk (`Outbox.unsynced_from`: an enqueue's rows, and every row after them in
  send order, wait for its sync). A result is due when never sent by this process, or when `ack_timeout_s`
  passed without an application ack — even if the broker sent PUBACK, since a broker can accept and still
  drop (each further re-send of the same result waits twice as long, up to `ack_timeout_max_s`; the first
  ack that arrives afterwards makes every backed-off result due at once, so a cloud outage does not leave
  results waiting out their back-off after the cloud is back). A new connection without a session (broker
  lost its state) makes everything in flight due at once.
- ack topic: rows named in `ids`/`seqs` are deleted from the outbox; a `rejected` entry moves a row to the
  outbox's rejected table only when its id, seq and payload hash all match (`Outbox.ack`); other entries are
  counted in `ignored_rejections` and logged. Nothing is deleted on PUBACK. Acks are applied by their own
  thread, never paho's network thread (which would stop reading and writing the socket for the fsync of
  each ack): every ack that arrived meanwhile is applied in one outbox transaction (group commit).
- config topic: a retained `StationConfig` is validated and handed to `on_config` (the service applies it
  atomically); invalid pushes are logged and ignored, keeping the current config.

Does not: build or sign results (the outbox stores them signed), touch instruments, or own the outbox.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import ssl
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from gateway.config import GatewayConfig
from gateway.connlog import ConnectionLog
from gateway.errors import ConfigError, GatewayError, LinkError, OutboxError, OutboxFull
from gateway.outbox import Outbox
from kuaijian_schema.mqtt_client import TlsFiles, make_client
from kuaijian_schema.wire import Ack, Rejection, StationConfig, Status, topic

log = logging.getLogger("gateway.link")


class _TokenBucket:
    def __init__(self, rate: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self.tokens = self.capacity
        self.clock = clock
        self.stamp = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_HEX_TO_ZERO = bytes.maketrans(b"123456789abcdef", b"0" * 15)
_UUID_LINE = b"00000000-0000-0000-0000-000000000000\n"
_ACK_KEYS = frozenset(("ids", "seqs", "rejected"))
AckKeys = tuple[list[str], list[int], tuple[Rejection, ...]]
"""An ack as the outbox applies it: ids as the outbox keys them (`str(UUID)`), seqs, rejections."""


def parse_ack(payload: bytes) -> AckKeys:
    """The `Ack` in `payload` as `AckKeys`; raises `ValidationError` exactly where `Ack.model_validate_json`
    does.

    The common ack — ids already in `str(UUID)` form (lower-case hex, hyphens), integer seqs, no
    rejections, no other member — is taken from orjson's parse with an exact check of that shape (all the
    ids at once: with the hex digits mapped to 0, their lines must read as UUID-shaped lines), about a
    tenth of the cost of validating the model; anything else is validated by the model, and its ids
    formatted from the parsed UUIDs."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError:
        doc = None
    if type(doc) is dict and _ACK_KEYS.issuperset(doc):
        ids, seqs, rejected = doc.get("ids", []), doc.get("seqs", []), doc.get("rejected", [])
        if type(ids) is list and type(seqs) is list and rejected == [] and all(type(s) is int for s in seqs):
            try:
                lines = ("\n".join(ids) + "\n").encode() if ids else b""
            except (TypeError, UnicodeEncodeError):
                lines = None  # not all text, or not encodable: the model says what is wrong
            if lines is not None and lines.translate(_HEX_TO_ZERO) == _UUID_LINE * len(ids):
                return ids, seqs, ()
    ack = Ack.model_validate_json(payload)
    raw = doc.get("ids") if type(doc) is dict else None
    texts = raw if type(raw) is list and len(raw) == len(ack.ids) else [None] * len(ack.ids)
    # the ack's own strings where they are already `str(UUID)` (formatting one costs about a microsecond)
    return (
        [
            t if type(t) is str and _UUID_TEXT.fullmatch(t) else str(u)
            for t, u in zip(texts, ack.ids, strict=True)
        ],
        list(ack.seqs),
        ack.rejected,
    )


class Link:
    """The MQTT side of the gateway. `start()` never blocks on the network; `stop()` says goodbye."""

    def __init__(
        self,
        config: GatewayConfig,
        outbox: Outbox,
        *,
        status: Callable[[], Status],
        on_config: Callable[[StationConfig], None],
    ) -> None:
        self.config = config
        self.outbox = outbox
        self._status = status
        self._on_config = on_config
        self._station = config.station_id
        self._topics = {k: topic(config.station_id, k) for k in ("result", "ack", "status", "config")}
        self._lock = threading.Lock()
        self._inflight: dict[int, float] = {}  # seq → monotonic deadline for the application ack
        self._attempts: dict[int, int] = {}  # seq → sends by this process without an ack
        self._backed_off: set[int] = set()  # seqs sent twice or more without an ack (re-sends backing off)
        self._earliest = math.inf  # no deadline in `_inflight` is before this (looked through only then)
        # (priority, seq) of the last row handed out, in send order: every row before it is in flight or
        # gone, so the next look starts after it. None (look from the top) whenever a row before it may
        # be due again: an ack deadline passed, a session lost, a publish refused, a backed-off re-send
        # made due, a row enqueued with a higher priority.
        self._frontier: tuple[int, int] | None = None
        self._resets = 0  # times the frontier was reset: a look that began before a reset must not set it
        self._connected = threading.Event()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._acks: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()  # None: stop
        self._ack_thread: threading.Thread | None = None
        self._client: mqtt.Client | None = None
        self._bucket = _TokenBucket(config.link.max_messages_per_s, time.monotonic)
        self._last_status = 0.0
        self.connection_log = ConnectionLog(log, config.mqtt.endpoint, config.mqtt.unreachable_log_s)
        self.sent_messages = 0
        self.sent_results = 0
        self.acked_results = 0
        self.ignored_rejections = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _make_client(self) -> mqtt.Client:
        b = self.config.mqtt
        client_id = b.client_id or f"kj-gw-{self._station}"
        tls = None
        if b.tls:
            for name, path in (("ca_file", b.ca_file), ("cert_file", b.cert_file), ("key_file", b.key_file)):
                if path is not None and not path.is_file():
                    raise LinkError(f"mqtt.{name}: {path} is not a readable file")
            tls = TlsFiles(b.ca_file, b.cert_file, b.key_file)
        password = b.resolved_password()
        try:
            client = make_client(
                client_id=client_id,
                protocol=b.protocol,
                clean_session=False,
                username=b.username,
                password=password,
                tls=tls,
            )
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise LinkError(f"mqtt: cannot set up TLS: {exc}") from exc
        offline = Status(station=self._station, state="offline", at=datetime.now(UTC))
        client.will_set(self._topics["status"], offline.model_dump_json(), qos=1, retain=True)
        client.max_inflight_messages_set(max(20, min(1000, self.config.link.max_unacked)))
        client.reconnect_delay_set(b.reconnect_min_s, b.reconnect_max_s)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def start(self) -> None:
        """Start connecting (in the background) and the sender thread."""
        b = self.config.mqtt
        client = self._make_client()
        self._client = client
        if b.protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = b.session_expiry_s
            client.connect_async(b.host, b.port, b.keepalive_s, clean_start=False, properties=props)
        else:
            client.connect_async(b.host, b.port, b.keepalive_s)
        self._ack_thread = threading.Thread(target=self._ack_loop, name="gateway-link-acks", daemon=True)
        self._ack_thread.start()
        client.loop_start()
        self._thread = threading.Thread(target=self._sender, name="gateway-link-sender", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish the offline status (when connected), disconnect and stop the threads."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        client = self._client
        if client is None:
            return
        if self.connected:
            offline = Status(station=self._station, state="offline", at=datetime.now(UTC))
            info = client.publish(self._topics["status"], offline.model_dump_json(), qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError) as exc:
                log.warning("offline status not confirmed: %s", exc)
        client.disconnect()
        client.loop_stop()
        self._connected.clear()
        self._acks.put(None)
        if self._ack_thread is not None:
            self._ack_thread.join(timeout)

    def wake(self, priority: int | None = None) -> None:
        """New rows were enqueued (with at most `priority`; None: unknown): send without waiting for the
        next tick."""
        with self._lock:
            frontier = self._frontier
            if frontier is None or priority is None or priority > frontier[0]:
                self._reset_frontier()  # they may come before where sending has got to
        self._wake.set()

    def inflight(self) -> int:
        with self._lock:
            return len(self._inflight)

    # ------------------------------------------------------------------ paho callbacks (network thread)
    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.connection_log.failed(f"the broker refused the connection: {reason_code}")
            return
        client.subscribe([(self._topics["ack"], 1), (self._topics["config"], 1)])
        if not flags.session_present:
            # The broker has no session for us: whatever was in flight may be gone → send it again now.
            with self._lock:
                self._inflight.clear()
                self._attempts.clear()
                self._backed_off.clear()
                self._reset_frontier()
        self._connected.set()
        self.connection_log.connected(f"session present: {flags.session_present}")
        self.publish_status()
        self._wake.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self._connected.clear()
        if not self._stopping.is_set():
            self.connection_log.disconnected(str(reason_code))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this inside its `except OSError:` around the (re)connect: the error is the one handled
        exc = sys.exception()
        self.connection_log.failed(f"{type(exc).__name__}: {exc}" if exc is not None else "connect failed")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if message.topic == self._topics["ack"]:
            self._acks.put(bytes(message.payload))  # applied by the ack thread
            return
        try:
            if message.topic == self._topics["config"]:
                self._handle_config(bytes(message.payload))
        except (ValidationError, ValueError, GatewayError) as exc:
            # Never let bad input kill the network thread.
            log.warning("ignored message on %s: %s", message.topic, exc)

    def _ack_loop(self) -> None:
        """Apply acks as they come: each time, all that are waiting once the outbox's write lock is this
        thread's (`Outbox.ack_turn`: those that came while a commit held it too), in one transaction."""
        while True:
            payloads = [self._acks.get()]
            with self.outbox.ack_turn():
                while len(payloads) < 256:
                    try:
                        payloads.append(self._acks.get_nowait())
                    except queue.Empty:
                        break
                acks: list[AckKeys] = []
                for payload in payloads:
                    if payload is None:
                        continue
                    try:
                        acks.append(parse_ack(payload))
                    except ValidationError as exc:
                        # An ack lost here is re-earned by a re-send.
                        log.warning("ignored message on %s: %s", self._topics["ack"], exc)
                self._apply(acks)
            if None in payloads:
                return

    def _apply(self, acks: list[AckKeys]) -> None:
        """All of `acks` in one transaction; when that does not fit (a nearly full disk: one big delete
        needs more room in the WAL than many small ones with a checkpoint between), one ack at a time."""
        if not acks:
            return
        try:
            self._handle_acks(acks)
        except OutboxFull as exc:
            if len(acks) == 1:
                log.warning("ack not applied (its results are sent again): %s", exc)
                return
            for ack in acks:
                self._apply([ack])
        except GatewayError as exc:
            log.warning("acks not applied (the results are sent again): %s", exc)

    def _handle_acks(self, acks: list[AckKeys]) -> None:
        seqs = [s for _ids, ack_seqs, _rej in acks for s in ack_seqs]
        outcome = self.outbox.ack(
            ids=[i for ids, _seqs, _rej in acks for i in ids],
            seqs=seqs,
            rejected=[r for _ids, _seqs, rejected in acks for r in rejected],
        )
        with self._lock:
            inflight, attempts, backed_off = self._inflight, self._attempts, self._backed_off
            for seq in {*outcome.acked, *outcome.rejected, *seqs}:  # (the cloud names most rows by seq)
                inflight.pop(seq, None)
                attempts.pop(seq, None)
            if backed_off:
                backed_off.difference_update(outcome.acked, outcome.rejected, seqs)
            # The cloud answers again: results whose re-sends were backing off while it was away are due
            # now, instead of after their (up to ack_timeout_max_s) back-off runs out.
            for seq in self._backed_off:
                self._inflight.pop(seq, None)
                self._attempts[seq] = 0
            if self._backed_off:
                self._backed_off.clear()
                self._reset_frontier()
        self.acked_results += len(outcome.acked)
        for seq in outcome.rejected:
            log.error("cloud rejected result seq %d (kept in the rejected table)", seq)
        if outcome.ignored:
            self.ignored_rejections += outcome.ignored
            log.warning(
                "ignored %d rejection(s) that do not name a pending result exactly (id, seq and payload hash);"
                " pending results stay queued and are sent again",
                outcome.ignored,
            )
        self._wake.set()

    def _handle_config(self, payload: bytes) -> None:
        if not payload:
            return  # retained config cleared: keep what we have
        try:
            cfg = StationConfig.model_validate_json(payload)
        except ValidationError as exc:
            raise ConfigError(f"pushed station config is invalid, kept the current one: {exc}") from exc
        self._on_config(cfg)

    # ------------------------------------------------------------------ sending
    def publish_status(self) -> None:
        client = self._client
        if client is None or not self.connected:
            return
        try:
            status = self._status()
        except OutboxError as exc:
            log.warning("cannot build status: %s", exc)
            return
        client.publish(self._topics["status"], status.model_dump_json(), qos=1, retain=True)
        self._last_status = time.monotonic()

    def _sender(self) -> None:
        tick = self.config.link.tick_s
        while not self._stopping.is_set():
            self._wake.wait(tick)
            self._wake.clear()
            if self._stopping.is_set() or not self.connected:
                continue
            if time.monotonic() - self._last_status >= self.config.link.status_interval_s:
                self.publish_status()
            try:
                while self._send_some() and not self._stopping.is_set():
                    pass
            except OutboxError as exc:
                log.warning("outbox read failed, will retry: %s", exc)

    def _reset_frontier(self) -> None:
        """Look from the top next time (call with `_lock` held)."""
        self._frontier = None
        self._resets += 1

    def _due(self, now: float) -> tuple[list[tuple[int, int]], int]:
        """(seq, priority) of the rows for the next message, in send order: not in flight, at most
        `batch_max`, within the `max_unacked` window; and the `_resets` count it looked under."""
        link = self.config.link
        with self._lock:
            # Expired entries are due again (and dropped here, so acked-meanwhile rows cannot linger). The
            # in-flight rows are looked through only once the earliest deadline has come, not per message.
            if now >= self._earliest:
                expired = [s for s, deadline in self._inflight.items() if deadline <= now]
                for seq in expired:
                    del self._inflight[seq]
                if expired:
                    self._reset_frontier()
                self._earliest = min(self._inflight.values(), default=math.inf)
            active = len(self._inflight)
            frontier, resets = self._frontier, self._resets
        want = min(link.max_unacked - active, link.batch_max)
        if want <= 0:
            return [], resets
        if frontier is None:
            order = self.outbox.due_order(active + want)
        else:
            order = self.outbox.due_order(want, after=frontier)
            if not order:  # caught up: the next look is from the top (finds rows put back meanwhile)
                with self._lock:
                    self._reset_frontier()
        held = self.outbox.unsynced_from()
        if held is not None:  # not on the disk yet: neither these rows nor any after them in send order
            for i, (seq, _prio) in enumerate(order):
                if seq >= held:
                    order = order[:i]
                    break
        with self._lock:  # only this thread adds to `_inflight`: nothing read above was sent meanwhile
            return [(seq, prio) for seq, prio in order if seq not in self._inflight][:want], resets

    def _send_some(self) -> bool:
        """Send one message if something is due and the rate allows; True when it sent."""
        client = self._client
        if client is None or not self.connected:
            return False
        now = time.monotonic()
        due, resets = self._due(now)
        if not due:
            return False
        if not self._bucket.take():
            return False
        batch = [seq for seq, _prio in due]
        payloads = self.outbox.payloads(batch)
        seqs = [s for s in batch if s in payloads]
        with self._lock:
            if self._resets == resets:  # nothing before the batch's last row became due meanwhile
                self._frontier = (due[-1][1], due[-1][0])
        if not seqs:
            return True  # all acked meanwhile; look again
        if len(seqs) == 1:
            body = payloads[seqs[0]]
        else:
            body = b'{"results":[' + b",".join([payloads[s] for s in seqs]) + b"]}"
        link = self.config.link
        first = now + min(link.ack_timeout_s, link.ack_timeout_max_s)  # the deadline of a first send
        with self._lock:  # before publishing: the ack may arrive before publish() returns
            attempts, inflight, earliest = self._attempts, self._inflight, self._earliest
            for s in seqs:
                n = attempts.get(s, 0) + 1
                attempts[s] = n
                if n == 1:
                    deadline = first
                else:
                    self._backed_off.add(s)
                    # Re-sends back off (×2 per attempt up to ack_timeout_max_s) while the cloud does not ack.
                    deadline = now + min(link.ack_timeout_s * 2 ** min(n - 1, 16), link.ack_timeout_max_s)
                inflight[s] = deadline
                if deadline < earliest:
                    earliest = deadline
            self._earliest = earliest
        info = client.publish(self._topics["result"], body, qos=1)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            with self._lock:
                for s in seqs:
                    self._inflight.pop(s, None)
                self._reset_frontier()
            return False
        self.sent_messages += 1
        self.sent_results += len(seqs)
        return True
