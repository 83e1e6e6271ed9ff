"""Embedded MQTT broker for the zero-setup demo: amqtt (MQTT 3.1.1) in a background thread.

Production uses Mosquitto (see docs/deploy.md); this exists so `kuaijian demo` needs nothing installed
beyond the Python packages. amqtt speaks MQTT 3.1.1 only, so no shared subscriptions: the demo runs one
ingest worker with a plain subscription.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future
from typing import Any


class BrokerStartError(RuntimeError):
    """The embedded broker could not start (port taken, bad address)."""


class EmbeddedBroker:
    """amqtt broker on host:port, run by its own event loop in a daemon thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883) -> None:
        self.host = host
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker: Any = None

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def start(self, timeout: float = 15.0) -> None:
        started: Future[None] = Future()
        self._thread = threading.Thread(target=self._run, args=(started,), name="amqtt-broker", daemon=True)
        self._thread.start()
        try:
            started.result(timeout)
        except Exception as exc:
            raise BrokerStartError(f"embedded MQTT broker failed on {self.host}:{self.port}: {exc}") from exc

    def _run(self, started: Future[None]) -> None:
        from amqtt.broker import Broker

        # amqtt logs every connection at INFO; keep the demo's console readable.
        logging.getLogger("amqtt").setLevel(logging.WARNING)
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }

        async def boot() -> None:
            self._broker = Broker(config)
            await self._broker.start()

        try:
            loop.run_until_complete(boot())
        except Exception as exc:  # noqa: BLE001 - reported to the starting thread
            started.set_exception(exc)
            loop.close()
            return
        started.set_result(None)
        loop.run_forever()
        loop.run_until_complete(self._broker.shutdown())
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in pending:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        self._thread = None
        self._loop = None

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
