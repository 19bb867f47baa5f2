"""A real odradek broker inside your test process.

    from odradek.testing import Broker

    with Broker() as b:                      # its own loop on a background thread
        b.create_topic("orders", partitions=3)
        producer = Producer({"bootstrap.servers": b.bootstrap_servers})

    async with Broker(storage="memory") as b:  # on the caller's event loop
        ...

It runs the same server code as `odradek serve` (server.app.Server), on a free
127.0.0.1 port, with a temporary data dir unless `data_dir=` is given. Fault
injection (`inject_errors`, `delay`, `disconnect_all`) lets tests see how a
client handles broker errors.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from odradek.config import BrokerConfig
from odradek.server.app import Server
from odradek.server.faults import Faults

__all__ = ["Broker"]


class Broker:
    """An embedded odradek broker; use as a (sync or async) context manager."""

    def __init__(
        self,
        *,
        data_dir: str | Path | None = None,
        storage: str = "file",
        port: int = 0,
        host: str = "127.0.0.1",
        **config: Any,
    ) -> None:
        if storage not in ("file", "memory"):
            raise ValueError("storage must be 'file' or 'memory'")
        self._own_dir: str | None = None
        if data_dir is None and storage == "file":
            self._own_dir = tempfile.mkdtemp(prefix="odradek-")
            data_dir = self._own_dir
        settings = {"group_initial_rebalance_delay_ms": 0, **config}
        self.config = BrokerConfig(
            listen=f"{host}:{port}", data_dir=Path(data_dir or "."), storage=storage, **settings
        )
        self.faults = Faults()
        self._server: Server | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- addresses -----------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the broker is not running")
        return self._server.port

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.config.listen_address[0]}:{self.port}"

    @property
    def server(self) -> Server:
        if self._server is None:
            raise RuntimeError("the broker is not running")
        return self._server

    # -- async form: the caller's loop ----------------------------------------

    async def start_async(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._server = Server(self.config, faults=self.faults)
        await self._server.start()
        return self

    async def stop_async(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None
        self._cleanup()

    async def __aenter__(self) -> Self:
        return await self.start_async()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_async()

    # -- sync form: a loop on a background thread -----------------------------

    def start(self) -> Self:
        ready: Future[None] = Future()

        def run() -> None:
            loop = _new_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.start_async())
            except BaseException as exc:  # noqa: BLE001 - whatever stops start-up is re-raised by start()
                ready.set_exception(exc)
                loop.close()
                return
            ready.set_result(None)
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="odradek-broker", daemon=True)
        self._thread.start()
        ready.result(30)
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        loop = self._loop
        asyncio.run_coroutine_threadsafe(self.stop_async(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(30)
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- helpers ---------------------------------------------------------------

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run fn on the broker's loop thread (its state belongs to that loop)."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the broker is not running")
        if self._thread is None or threading.current_thread() is self._thread:
            return fn(*args, **kwargs)

        async def call() -> Any:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(call(), loop).result(30)

    def create_topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> None:
        """Create a topic directly (no client needed); raises on Kafka's errors."""
        self._call(self.server.broker.create_topic, name, partitions, -1, dict(config or {}))

    def inject_errors(self, api: str, errors: list[str], topic: str | None = None) -> None:
        """The next requests of `api` (one per error) fail with these Kafka error names."""
        self._call(self.faults.inject, api, errors, topic)

    def delay(self, api: str, ms: int) -> None:
        """Add `ms` of latency to every request of `api` (0 removes it)."""
        self._call(self.faults.delay, api, ms)

    def clear_faults(self) -> None:
        self._call(self.faults.clear)

    def disconnect_all(self) -> None:
        """Drop every client connection, as a network blip would."""
        self._call(self.server.disconnect_all)

    def _cleanup(self) -> None:
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        return asyncio.new_event_loop()
