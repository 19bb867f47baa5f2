"""The broker process: listener, background tasks, clean shutdown.

`Server` runs on any asyncio loop (odradek.testing embeds it); `run()` is
`odradek serve`: uvloop, signal handling, and a bounded stop (the controlled
shutdown's controlled.shutdown.max.retries x controlled.shutdown.retry.backoff.ms
plus SHUTDOWN_MARGIN_S) that flushes the logs and writes the checkpoints, also
when the stop runs out of time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import signal
import socket
from typing import Any

from odradek.config import BrokerConfig
from odradek.security.listeners import Listener
from odradek.security.tls import parse_mapping_rules, server_context
from odradek.server.broker import Broker
from odradek.server.connection import Connection
from odradek.server.dispatcher import Dispatcher
from odradek.server.limits import ConnectionLimits
from odradek.server.loop_monitor import watch_loop

log = logging.getLogger("odradek.server")

CHECKPOINT_INTERVAL_S = 60.0
# what a stop may take beyond the controlled shutdown: closing the connections and the
# coordinators, leaving ZooKeeper (bounded at a few seconds), flushing the logs
SHUTDOWN_MARGIN_S = 10.0
FREEZE_CONNECTIONS = 1000  # connections opened since the last gc.freeze that make another


def make_broker(config: BrokerConfig, *, faults: Any = None) -> Broker:
    """`--zookeeper` makes a cluster broker (kazoo imported only then); else the single node."""
    if config.zookeeper:
        from odradek.server.cluster_broker import ClusterBroker

        return ClusterBroker(config, faults=faults)
    return Broker(config, faults=faults)


class Server:
    """One broker listening on one address, on the running event loop."""

    def __init__(self, config: BrokerConfig, *, broker: Broker | None = None, faults: Any = None) -> None:
        self.config = config
        self.broker = broker or make_broker(config, faults=faults)
        self.connections: set[Connection] = set()
        self.limits = ConnectionLimits(config)
        self._server: asyncio.base_events.Server | None = None
        self._servers: list[asyncio.base_events.Server] = []
        self.ports: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.port = 0
        self.cleaner: Any = None  # storage.cleaner.LogCleaner when log.cleaner.enable
        self.stopped = asyncio.Event()
        self._broker_closed = False
        # serve() only (the broker owns its process): gc.freeze again once partitions were added
        self.freeze_gc = False

    async def start(self) -> None:
        from odradek.server.handlers import ROUTES

        listeners = list(self.broker.listeners)
        contexts = {item.name: server_context(self.config, item.name) for item in listeners if item.tls}
        rules = parse_mapping_rules(self.config.ssl_principal_mapping_rules)
        sockets = [_bind(item.host, item.port) for item in listeners]
        for item, sock in zip(listeners, sockets, strict=True):
            self.broker.listener_bound(item.name, sock.getsockname()[1])
        self.port = sockets[0].getsockname()[1]
        self.ports = {item.name: sock.getsockname()[1] for item, sock in zip(listeners, sockets, strict=True)}
        try:
            self.broker.open()
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        extra = _extension_start(self)
        dispatcher = Dispatcher(self.broker, ROUTES)
        loop = asyncio.get_running_loop()
        for listener, sock in zip(self.broker.listeners, sockets, strict=True):
            def connection(listener: Listener = listener) -> Connection:
                return Connection(dispatcher, self.limits, self.connections, listener, rules)

            self._servers.append(await loop.create_server(
                connection, sock=sock, backlog=1024, ssl=contexts.get(listener.name),
                ssl_handshake_timeout=10.0 if listener.tls else None,
            ))
        self._server = self._servers[0]
        host = listeners[0].host
        self._tasks.append(loop.create_task(self._housekeeping()))
        self._tasks.append(loop.create_task(self.limits.run_reaper(lambda: self.connections)))
        self._tasks.append(loop.create_task(
            watch_loop(self.broker.metrics, dispatcher, self.config.event_loop_stall_threshold_ms)))
        if self.config.log_cleaner_enable and self.config.storage == "file":
            from odradek.storage.cleaner import LogCleaner

            self.cleaner = LogCleaner(self.config.data_dir, self.config.log_cleaner_backoff_ms)
            self._tasks.append(loop.create_task(self.cleaner.run(self.broker.logs.logs)))
        if self.config.metrics_port is not None:
            self.broker.metrics.serve(self.config.metrics_port, host if host not in ("", "::") else "0.0.0.0")
        self._tasks.extend(extra)
        log.info(
            "odradek broker %d listening on %s, data in %s",
            self.broker.node_id,
            ", ".join(
                f"{item.name}://{item.host}:{item.port} (advertised {item.advertised_host}:{item.advertised_port})"
                for item in self.broker.listeners
            ),
            self.config.data_dir if self.config.storage == "file" else "memory",
        )

    async def _housekeeping(self) -> None:
        """Retention checks and recovery-point checkpoints, in the background."""
        retention_every = self.config.log_retention_check_interval_ms / 1000.0
        loop = asyncio.get_running_loop()
        next_retention = loop.time() + retention_every
        next_checkpoint = loop.time() + CHECKPOINT_INTERVAL_S
        frozen_partitions = -1
        frozen_opened = 0
        while True:
            await asyncio.sleep(min(retention_every, CHECKPOINT_INTERVAL_S, 1.0))
            now = loop.time()
            if self.freeze_gc:
                partitions = sum(t.partitions for t in self.broker.topics().values())
                # 10,000 partitions' objects made a full collection walk 190,000 objects (~50-200 ms of
                # loop each time), 10,000 idle connections' 80,000; a closed connection is freed by its
                # reference count (connection.py), so frozen ones leave nothing behind
                if partitions != frozen_partitions or self.limits.opened - frozen_opened >= FREEZE_CONNECTIONS:
                    gc.collect(1)
                    gc.freeze()
                    frozen_partitions, frozen_opened = partitions, self.limits.opened
            if self.config.metrics_port is not None:
                self.broker.metrics.refresh(self.broker)
                self.broker.metrics.connection_count.set(self.limits.count)
                self.broker.metrics.connections_refused.set(self.limits.refused)
            if now >= next_retention:
                await self.broker.enforce_retention()
                next_retention = now + retention_every
            if now >= next_checkpoint:  # fsyncs in a thread: 1,000 written logs held the loop for seconds
                next_checkpoint = loop.time() + CHECKPOINT_INTERVAL_S
                try:
                    await self.broker.logs.flush_in_background()
                except OSError as exc:  # a full disk refusing a checkpoint: this task must live on
                    log.error("cannot flush and checkpoint the logs: %s", exc)

    def disconnect_all(self) -> None:
        for conn in list(self.connections):
            conn.close(None)

    async def stop(self) -> None:
        shutdown = getattr(self.broker, "controlled_shutdown", None)
        if shutdown is not None:  # cluster mode: move leaderships away while still serving
            await shutdown()
        for listening in self._servers:
            listening.close()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.cleaner is not None:
            self.cleaner.close()
        workers = [c.worker for c in self.connections if c.worker is not None]
        self.disconnect_all()
        for w in workers:
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await _extension_stop(self)
        self.close_broker()
        self.stopped.set()
        log.info("odradek broker %d stopped", self.broker.node_id)

    def close_broker(self) -> None:
        """Flush the logs and write the checkpoints, once; also after a stop() cut short."""
        if self._broker_closed:
            return
        self._broker_closed = True
        for task in self._tasks:
            task.cancel()
        if self.cleaner is not None:
            self.cleaner.close()
        self.broker.close()


def _bind(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _extension_start(server: Server) -> list[asyncio.Task[None]]:
    """Start the rooms layered on the broker (group coordinator, metrics)."""
    tasks: list[asyncio.Task[None]] = []
    for hook in START_HOOKS:
        tasks.extend(hook(server))
    return tasks


async def _extension_stop(server: Server) -> None:
    for hook in STOP_HOOKS:
        await hook(server)


# Other rooms append here: fn(server) -> list of background tasks / async fn(server).
START_HOOKS: list[Any] = []
STOP_HOOKS: list[Any] = []


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def raise_open_file_limit() -> None:
    """A broker keeps three files open per partition and one per connection: take the
    hard limit of open files as the soft one (Kafka's docs ask for 100,000 or more)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve(config: BrokerConfig) -> None:
    raise_open_file_limit()
    server = Server(config)
    server.freeze_gc = True
    await server.start()
    # What start-up made (modules, kio's schemas, the logs' state) lives as long as the
    # process: out of the collector's sight, a full collection no longer walks it (27 ms
    # pauses in the middle of requests before). Only here, in the broker's own process.
    gc.freeze()
    warming = asyncio.get_running_loop().create_task(warm_schemas())
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    warming.cancel()
    log.info("shutting down")
    budget = shutdown_budget_s(config)
    try:
        await asyncio.wait_for(server.stop(), timeout=budget)
    except TimeoutError:
        log.error("the shutdown did not end within %.1f s: closing the logs now", budget)
    finally:
        server.close_broker()  # a stop cut short (or failed) still leaves clean, checkpointed logs


# The APIs every client sends from its first seconds on: Produce, Fetch, ListOffsets, Metadata,
# OffsetCommit, OffsetFetch, FindCoordinator, JoinGroup, Heartbeat, LeaveGroup, SyncGroup,
# ApiVersions, InitProducerId
HOT_APIS = (0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18, 22)
WARM_VERSIONS = 5  # the newest versions of each: what librdkafka (Produce v10, Fetch v16, Metadata v12)
# and the Java client (the newest) ask for


async def warm_schemas() -> None:
    """Import the hot APIs' schemas and build their codecs right after start-up, one API version
    a loop iteration (a few ms each), then gc.freeze them: a client's first Produce imported its
    schema on the event loop (~35% of the broker's samples while producing 1,000,000 records, and
    a 30-100 ms stall in its first requests). Not before the listener opens: 0.1-0.3 s more CPU
    there made an empty broker's start pass the tests' 15 s on this loaded machine. A client that
    starts at once still imports what it asks for first, and the rest is warmed beside it."""
    from odradek.protocol.framing import warm
    from odradek.server.handlers import ROUTES

    for api_key in HOT_APIS:
        route = ROUTES.get(api_key)
        if route is None:
            continue
        for version in range(max(route.min_version, route.max_version - WARM_VERSIONS + 1), route.max_version + 1):
            try:
                warm(api_key, version)
            except Exception:
                log.debug("no schema for API %d v%d", api_key, version, exc_info=True)
            await asyncio.sleep(0)
    gc.freeze()


def shutdown_budget_s(config: BrokerConfig) -> float:
    """How long `serve` lets a stop take: Kafka's bound on the controlled shutdown
    (max.retries x retry.backoff.ms, cluster mode only) plus SHUTDOWN_MARGIN_S."""
    controlled = 0.0
    if config.zookeeper and config.controlled_shutdown_enable:
        controlled = max(0, config.controlled_shutdown_max_retries) * \
            max(0, config.controlled_shutdown_retry_backoff_ms) / 1000.0
    return controlled + SHUTDOWN_MARGIN_S


def run(config: BrokerConfig) -> None:
    """`odradek serve`: blocks until SIGTERM or SIGINT."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
