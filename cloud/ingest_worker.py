"""The cloud's MQTT side: `MqttLink` (one paho client: connect, resubscribe on every connect, publish) and
`IngestWorker` (receive → `cloud.ingest.process_batch` → PUBACK + application acks).

`IngestWorker` connects with paho-mqtt 2 (MQTT 5 by default), subscribes to
``$share/{group}/kj/v1/+/result`` (or the plain topic when no group is configured / MQTT 3.1.1) and
``kj/v1/+/status``, collects messages into batches, commits a batch, and only then PUBACKs the MQTT
messages (manual acks) and publishes one `Ack` per station on ``kj/v1/{station}/ack`` (QoS 1). If the
commit fails the batch is retried; nothing is acknowledged that is not durably stored.

Sessions: the ingest always holds a persistent session (the broker queues results while it is down) under a
stable client id — `cloud.ingest_client_id`, or by default one derived from the configuration
(`Settings.ingest_session_id`), so a restart resumes the same session. Every id a worker used is recorded in
the database (``ingest_sessions``); a worker that starts ends the broker session of every recorded id whose
worker was stopped cleanly, so a session left by an earlier id (e.g. the cloud ran with ``--client-id
kj-ingest-1`` and now runs without) no longer takes a share of the results it can never ack. A running worker
writes a heartbeat (``seen_at``) every `Settings.ingest_heartbeat_s`; one that crashed (never recorded as
stopped) is ended the same way by a running worker once its heartbeat is
`cloud.ingest_sessions.INGEST_DEAD_AFTER` beats old (the bookkeeping: `cloud.ingest_sessions`).

Connection state changes (connected, refused, lost, taken over, broker unreachable) are logged — a broker
that stays unreachable is one line at the first failure, then at most one a minute with the attempt count.

Does not: validate or store anything itself (cloud.ingest), HTTP.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.clock import Clock
from cloud.db import Database, connect
from cloud.errors import DatabaseError
from cloud.ingest import BatchOutcome, Inbound, process_batch
from cloud.ingest_sessions import SessionBook
from cloud.metrics import CloudMetrics
from cloud.settings import Settings
from kuaijian_schema.mqtt_client import TlsFiles, make_client, parse_broker_url

log = logging.getLogger("cloud.ingest")

IDLE_S = 0.002  # a pause this long in the incoming stream ends a batch early (it adds to every ack's latency)
RESULT_FILTER = "kj/v1/+/result"
STATUS_FILTER = "kj/v1/+/status"
FAILURE_LOG_EVERY_S = 60.0
SESSION_TAKEN_OVER = 142  # MQTT 5 reason code: another client connected with our client id


class ConnectionLog:
    """Logs a link's connection state changes; repeated failures at most once per `every_s`."""

    def __init__(self, name: str, url: str, every_s: float = FAILURE_LOG_EVERY_S) -> None:
        self.name = name
        self.url = url
        self.every_s = every_s
        self.failures = 0
        """Failed attempts since the last successful connect."""
        self._last_logged = -math.inf

    def connected(self, session_present: bool) -> None:
        if self.failures:
            log.info(
                "%s: connected to %s after %d failed attempt(s) (session present: %s)",
                self.name, self.url, self.failures, session_present,
            )  # fmt: skip
        else:
            log.info("%s: connected to %s (session present: %s)", self.name, self.url, session_present)
        self.failures = 0
        self._last_logged = -math.inf

    def failed(self, reason: str) -> None:
        self.failures += 1
        now = time.monotonic()
        if self.failures == 1 or now - self._last_logged >= self.every_s:
            self._last_logged = now
            log.warning(
                "%s: cannot connect to %s: %s (%d attempt(s) so far; retrying)",
                self.name, self.url, reason, self.failures,
            )  # fmt: skip

    def lost(self, reason: str) -> None:
        log.warning("%s: connection to %s lost: %s (reconnecting)", self.name, self.url, reason)


class MqttLink:
    """A paho client that connects, (re)subscribes on every connect, and publishes. Thread-safe publish."""

    def __init__(
        self,
        settings: Settings,
        subscriptions: Sequence[str] = (),
        on_message: Callable[[mqtt.MQTTMessage], None] | None = None,
        *,
        manual_ack: bool = False,
        name: str = "link",
        client_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.subscriptions = tuple(subscriptions)
        v5 = settings.mqtt_protocol == "5"
        # The ingest holds a persistent session under its stable client id: the broker keeps its subscriptions
        # and queues QoS 1 results while it is down, instead of dropping them until gateways re-send.
        self.persistent = name == "ingest"
        if client_id is None:
            client_id = (
                settings.ingest_session_id()
                if self.persistent
                else f"{settings.mqtt_client_id}-{name}-{uuid.uuid4().hex[:8]}"
            )
        self.client_id = client_id
        self.broker = parse_broker_url(settings.broker_url or "")
        self.conn_log = ConnectionLog(f"mqtt {name} {client_id}", self.broker.endpoint)  # no credentials
        self._stopping = False
        ca = settings.mqtt_ca_file
        self.client = make_client(
            client_id=client_id,
            protocol="5" if v5 else "3.1.1",
            clean_session=not self.persistent,
            manual_ack=manual_ack,
            username=settings.mqtt_username or None,
            password=settings.mqtt_password if settings.mqtt_username else None,
            tls=TlsFiles(ca_file=ca) if self.broker.tls else None,
        )
        self.connected = threading.Event()
        """Set once connected AND (if any) subscribed; cleared on disconnect."""
        self._suback_mid: int | None = None
        self.session = 0
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = lambda _client, _userdata: self.conn_log.failed("broker unreachable")
        if on_message is not None:
            handler = on_message
            self.client.on_message = lambda _c, _u, message: handler(message)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self.conn_log.failed(f"refused: {reason_code}")
            return
        self.conn_log.connected(bool(getattr(flags, "session_present", False)))
        self.session += 1  # clean start: message ids of the previous connection are void
        if not self.subscriptions:
            self.connected.set()
            return
        _, mid = client.subscribe([(sub, 1) for sub in self.subscriptions])
        self._suback_mid = mid

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if self._stopping:
            return
        if reason_code.value == SESSION_TAKEN_OVER:
            log.error(
                "%s: another client connected with client id %s and took this session over; give every ingest"
                " worker its own --client-id (cloud.ingest_client_id)",
                self.conn_log.name, self.client_id,
            )  # fmt: skip
        elif was_connected:
            self.conn_log.lost(str(reason_code))
        else:
            self.conn_log.failed(str(reason_code))

    def _on_subscribe(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        if mid != self._suback_mid:
            return
        for sub, rc in zip(self.subscriptions, reason_codes, strict=False):
            if rc.is_failure:
                log.error("broker refused subscription %s: %s", sub, rc)
        self.connected.set()  # ready: connected and subscribed

    def start(self) -> None:
        host, port = self.broker.host, self.broker.port
        if self.persistent and self.settings.mqtt_protocol == "5":
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.settings.ingest_session_expiry_s
            self.client.connect_async(host, port, keepalive=30, clean_start=False, properties=props)
        else:
            self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def publish_retained(self, topic_name: str, payload: bytes, timeout: float) -> bool:
        """Publish retained at QoS 1 and wait for the broker's PUBACK (the `configs.Publisher` protocol)."""
        if not self.connected.is_set():
            return False
        info = self.client.publish(topic_name, payload, qos=1, retain=True)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def publish(
        self, topic_name: str, payload: bytes | str, *, qos: int = 1, retain: bool = False
    ) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic_name, payload, qos=qos, retain=retain)


def result_subscription(settings: Settings) -> str:
    group = settings.ingest_shared_group
    if group and settings.mqtt_protocol == "5":
        return f"$share/{group}/{RESULT_FILTER}"
    return RESULT_FILTER


class IngestWorker:
    """Receives from the broker, commits in batches, then acks (MQTT PUBACK + application Ack)."""

    def __init__(
        self,
        settings: Settings,
        clock: Clock,
        on_commit: Callable[[], None] | None = None,
        metrics: CloudMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.on_commit = on_commit
        self.metrics = metrics
        self._queue: queue.Queue[Inbound] = queue.Queue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.link = MqttLink(
            settings,
            (result_subscription(settings), STATUS_FILTER),
            self._on_message,
            manual_ack=True,
            name="ingest",
        )
        self.committed_batches = 0
        self.last_outcome: BatchOutcome | None = None
        self._beat_thread: threading.Thread | None = None
        self.sessions = SessionBook(
            settings,
            clock,
            self.link.client_id,
            lambda client_id: end_session(settings, client_id),
            self._stop,
        )

    def _on_message(self, message: mqtt.MQTTMessage) -> None:
        self._queue.put(
            Inbound(
                topic=message.topic if isinstance(message.topic, str) else str(message.topic),
                payload=bytes(message.payload),
                received_at=self.clock.now(),
                mid=message.mid,
                qos=message.qos,
                session=self.link.session,
            )
        )

    def start(self) -> None:
        """Record this worker's session, start receiving, end the sessions of cleanly stopped workers, and
        start the heartbeat (which ends those of crashed ones too: `cloud.ingest_sessions`)."""
        stale = self.sessions.started()
        self._thread = threading.Thread(target=self._run, name="kj-ingest", daemon=True)
        self._thread.start()
        self.link.start()
        self.sessions.end(stale)
        self._beat_thread = threading.Thread(
            target=self.sessions.heartbeat, name="kj-ingest-beat", daemon=True
        )
        self._beat_thread.start()

    def stop(self) -> None:
        self.link.stop()
        self._stop.set()
        for thread in (self._thread, self._beat_thread):
            if thread is not None:
                thread.join(10)
        self.sessions.stopped()

    def _next_batch(self) -> list[Inbound]:
        """Up to `ingest_batch_size` messages: wait at most `ingest_batch_wait_s` for the batch to fill, but
        stop early when the stream pauses for `IDLE_S` (the broker's in-flight window is full or the burst
        is over — waiting longer would only add latency)."""
        try:
            first = self._queue.get(timeout=0.2)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.settings.ingest_batch_wait_s
        while len(batch) < self.settings.ingest_batch_size:
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    batch.append(self._queue.get_nowait())
                else:
                    batch.append(self._queue.get(timeout=min(remaining, IDLE_S)))
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        db = connect(self.settings.database)
        try:
            while not self._stop.is_set():
                batch = self._next_batch()
                if batch:
                    self._commit_and_ack(db, batch)
        finally:
            db.close()

    def _puback(self, batch: list[Inbound]) -> None:
        for msg in batch:
            if msg.qos > 0 and msg.session == self.link.session:
                self.link.client.ack(msg.mid, msg.qos)

    def _commit_and_ack(self, db: Database, batch: list[Inbound]) -> None:
        started = time.monotonic()
        delay = 0.1
        while True:
            try:
                outcome = process_batch(db, batch, self.settings)
                break
            except DatabaseError:
                log.exception("ingest commit failed; retrying the batch of %d", len(batch))
                if self._stop.wait(delay):
                    return  # shutting down: unacked messages are redelivered / re-sent by gateways
                delay = min(delay * 2, 5.0)
                try:
                    db.reconnect()  # the connection may be dead (the database server restarted)
                except DatabaseError:
                    log.warning("database unreachable; retrying")
            except Exception:
                # Cannot happen by design (process_batch contains per-message failures); if it does,
                # keep the worker alive and let the gateways re-send after their ack timeout.
                log.exception("ingest batch failed; %d messages not acknowledged to gateways", len(batch))
                self._puback(batch)  # free the broker's in-flight window; gateways re-send later
                return
        self._puback(batch)
        for station, ack in outcome.acks.items():
            self.link.publish(f"kj/v1/{station}/ack", ack.to_json(), qos=1)
        self.committed_batches += 1
        self.last_outcome = outcome
        if self.metrics is not None:
            self.metrics.batch_done(
                len(batch),
                time.monotonic() - started,
                stored=outcome.stored,
                duplicates=outcome.duplicates,
                rejected=outcome.rejected,
                dead=outcome.dead_letters,
                statuses=outcome.statuses,
            )
        if self.on_commit is not None and (outcome.stored or outcome.statuses):
            self.on_commit()


def end_session(settings: Settings, client_id: str, timeout: float = 10.0) -> bool:
    """End the broker's session of `client_id` (its subscriptions, its share of a shared subscription and what
    is queued for it): connect under that id with a clean start and no session expiry, then leave. Gateways
    re-send whatever was queued there. Returns False (and logs) when the broker could not be reached."""
    link = MqttLink(settings, name="end-session", client_id=client_id)
    link.start()
    try:
        if not link.connected.wait(timeout):
            log.warning(
                "could not end the broker session of %s: no connection within %.0f s", client_id, timeout
            )
            return False
        return True
    finally:
        link.stop()
