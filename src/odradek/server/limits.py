"""Connection limits under Kafka's names: how many, from where, how idle, how queued.

Kafka's SocketServer refuses a connection over `max.connections` or
`max.connections.per.ip` (with per-host `max.connections.per.ip.overrides`),
closes one idle for `connections.max.idle.ms`, stops reading sockets while
`queued.max.requests` requests wait for a handler, and sizes each socket's buffers to
`socket.receive.buffer.bytes` / `socket.send.buffer.bytes`. odradek keeps the same keys.
Idle here means no complete request read and no response written: a client that
trickles a frame byte by byte is idle too (a slow-loris holds only its own
buffer, and only until this limit). A request still running after the idle limit
is cut off with its connection, so no request holds the broker forever.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from typing import Protocol

from odradek.config import BrokerConfig, ConfigError

log = logging.getLogger("odradek.connection")

REAP_SLICE = 500


class LimitedConnection(Protocol):
    """What the limits need of a connection."""

    host: str
    last_active: float
    busy_since: float | None

    def close(self, reason: str | None) -> None: ...

    def resume(self) -> None: ...


def parse_overrides(value: str) -> dict[str, int]:
    """`max.connections.per.ip.overrides`: `host:count,host:count` (IPv6 hosts in brackets)."""
    result: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        host, sep, count = item.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not count.strip().isdigit():
            raise ConfigError(
                f"max.connections.per.ip.overrides entry {item!r} is not HOST:COUNT"
            )
        result[host] = int(count)
    return result


class ConnectionLimits:
    """One broker's bookkeeping of its client connections."""

    def __init__(self, config: BrokerConfig) -> None:
        self.max_request_bytes = config.socket_request_max_bytes
        self.max_connections = config.max_connections
        self.max_per_ip = config.max_connections_per_ip
        self.per_ip_overrides = parse_overrides(config.max_connections_per_ip_overrides)
        self.idle_s = config.connections_max_idle_ms / 1000.0
        self.queued_max_requests = max(1, config.queued_max_requests)
        # socket.receive.buffer.bytes / socket.send.buffer.bytes: a socket left to autotune its
        # receive buffer (up to net.ipv4.tcp_rmem's 32 MB here) holds megabytes of a client's
        # requests, so the client never feels the broker's pace (librdkafka batches more only
        # while its requests wait unsent); Kafka sets both to 100 KiB, odradek's defaults in config
        self.receive_buffer_bytes = config.socket_receive_buffer_bytes
        self.send_buffer_bytes = config.socket_send_buffer_bytes
        self.per_ip: Counter[str] = Counter()
        self.count = 0
        self.opened = 0  # connections admitted since the start
        self.queued = 0  # requests read and waiting for a handler, broker-wide
        self._paused: set[LimitedConnection] = set()
        self.refused = 0
        self.idle_closed = 0

    # -- admission ---------------------------------------------------------

    def admit(self, conn: LimitedConnection) -> str | None:
        """Count a new connection in; the reason it is refused, if it is."""
        limit = self.per_ip_overrides.get(conn.host, self.max_per_ip)
        if self.per_ip[conn.host] >= limit:
            self.refused += 1
            return f"{limit} connections from {conn.host} already open (max.connections.per.ip)"
        if self.count >= self.max_connections:
            self.refused += 1
            return f"{self.count} connections already open (max.connections)"
        self.per_ip[conn.host] += 1
        self.count += 1
        self.opened += 1
        return None

    def release(self, conn: LimitedConnection) -> None:
        self.count -= 1
        left = self.per_ip[conn.host] - 1
        if left > 0:
            self.per_ip[conn.host] = left
        else:
            del self.per_ip[conn.host]
        self._paused.discard(conn)

    # -- queued.max.requests -------------------------------------------------

    def enqueue(self, n: int) -> None:
        """Count n requests read."""
        self.queued += n

    def full(self) -> bool:
        """The broker's queue is full: connections stop reading until it has room."""
        return self.queued >= self.queued_max_requests

    def dequeue(self, n: int = 1) -> None:
        self.queued -= n
        if self._paused and self.queued < self.queued_max_requests // 2 + 1:
            paused, self._paused = self._paused, set()
            for conn in paused:
                conn.resume()

    def park(self, conn: LimitedConnection) -> None:
        """A connection that stopped reading because the broker's queue was full."""
        self._paused.add(conn)

    # -- connections.max.idle.ms -------------------------------------------

    def reap(self, connections: Iterable[LimitedConnection], now: float | None = None) -> int:
        """Close connections idle, or with a request running, for longer than the limit."""
        now = time.monotonic() if now is None else now
        closed = 0
        for conn in connections:
            if conn.busy_since is not None:
                if now - conn.busy_since > self.idle_s:
                    conn.close(
                        f"a request ran longer than {self.idle_s * 1000:.0f} ms "
                        "(connections.max.idle.ms)"
                    )
                    closed += 1
            elif now - conn.last_active > self.idle_s:
                conn.close(None)  # Kafka closes idle connections without a word
                closed += 1
        self.idle_closed += closed
        return closed

    async def run_reaper(self, connections: Callable[[], Collection[LimitedConnection]]) -> None:
        """Reap every interval, REAP_SLICE connections a loop iteration (10,000 at once held the
        loop a few ms: every active request waited behind the idle ones' check)."""
        interval = min(max(self.idle_s / 10, 0.05), 10.0)
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            every = list(connections())
            for start in range(0, len(every), REAP_SLICE):
                if start:
                    await asyncio.sleep(0)
                self.reap(every[start:start + REAP_SLICE], now)
            del every  # not held through the next sleep: a closed connection is freed at once
