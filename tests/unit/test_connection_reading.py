"""A connection reads like Kafka's network layer: once a request is read, reading pauses (Kafka
mutes the channel) until its answer is handed to the socket, so pipelined requests wait in the
client, where librdkafka gathers more records into each (issue 20: produce to 1,000 partitions).
Every request of a chunk already received is still answered, in order, before reading resumes."""

from __future__ import annotations

import asyncio
import socket

from test_connection_writes import Transport, connect, frames_of, parked_fetch, produce, settle

from odradek.config import BrokerConfig
from odradek.server.broker import Broker
from odradek.server.connection import Connection
from odradek.server.dispatcher import Dispatcher
from odradek.server.handlers import ROUTES
from odradek.server.limits import ConnectionLimits


class RecordingTransport(Transport):
    """Writes, pauses and resumes of reading, in the order they happened."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str | list[int]] = []
        self.reading = True

    def write(self, data: bytes) -> None:
        super().write(data)
        self.events.append(frames_of(bytes(data)))

    def pause_reading(self) -> None:
        assert self.reading, "paused twice"
        self.reading = False
        self.events.append("pause")

    def resume_reading(self) -> None:
        assert not self.reading, "resumed while reading"
        self.reading = True
        self.events.append("resume")


async def recording_connection() -> tuple[Connection, RecordingTransport]:
    conn, _, _ = await connect()
    transport = RecordingTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


async def until(condition: object, seconds: float = 30.0) -> None:
    """Wait (bounded) until `condition()` holds; the loop runs the connection meanwhile."""
    for _ in range(int(seconds / 0.01)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not met in time")


def test_reading_pauses_while_a_request_is_served_and_resumes_once_it_is_answered() -> None:
    async def check() -> None:
        conn, transport = await recording_connection()
        conn.data_received(produce(1))
        assert not transport.reading  # muted as soon as a whole request is read
        await settle()
        assert transport.events == ["pause", [1], "resume"]
        conn.close(None)

    asyncio.run(check())


def test_every_request_of_a_received_chunk_is_answered_in_order_before_reading_resumes() -> None:
    async def check() -> None:
        conn, transport = await recording_connection()
        sixth = produce(6)
        conn.data_received(b"".join(produce(i) for i in range(1, 6)) + sixth[:30])
        await settle()
        # the five whole requests answered (in one write), then reading goes on for the sixth's rest
        assert transport.events == ["pause", [1, 2, 3, 4, 5], "resume"]
        conn.data_received(sixth[30:])
        await settle()
        assert transport.events[3:] == ["pause", [6], "resume"]
        conn.close(None)

    asyncio.run(check())


def test_a_partial_request_keeps_reading_on() -> None:
    async def check() -> None:
        conn, transport = await recording_connection()
        frame = produce(1)
        for i in range(len(frame) - 1):
            conn.data_received(frame[i:i + 1])
        await settle()
        assert transport.reading and transport.events == []
        conn.data_received(frame[-1:])
        await settle()
        assert transport.events == ["pause", [1], "resume"]
        conn.close(None)

    asyncio.run(check())


def test_a_parked_fetch_keeps_the_next_request_unread_until_it_is_answered() -> None:
    async def check() -> None:
        conn, transport = await recording_connection()
        conn.data_received(parked_fetch(1))
        await asyncio.sleep(0.3)  # the fetch waits 1.5 s (max_wait) on this same loop
        assert transport.events == ["pause"]
        conn.data_received(produce(2))  # a transport may still hand over bytes it had: kept, answered after
        await until(lambda: transport.events[-1] == "resume")
        assert transport.events == ["pause", [1, 2], "resume"]
        conn.close(None)

    asyncio.run(check())


def test_reading_waits_for_a_full_send_buffer_to_drain() -> None:
    async def check() -> None:
        conn, transport = await recording_connection()
        conn.pause_writing()  # the socket's send buffer is full
        conn.data_received(produce(1))
        await settle()
        assert transport.events == ["pause", [1]]  # answered, but not sent yet: still muted
        conn.resume_writing()
        await settle()
        assert transport.events == ["pause", [1], "resume"]
        conn.close(None)

    asyncio.run(check())


def test_reading_stays_paused_while_the_brokers_request_queue_is_full() -> None:
    async def check() -> None:
        conn, transport = await recording_connection()
        limits = conn.limits
        limits.queued_max_requests = 2  # queued.max.requests
        limits.queued = 1  # another connection's request waits for a handler
        conn.data_received(produce(1))
        assert not transport.reading
        limits.queued = 3  # and two more arrive before this one is answered
        await settle()
        assert transport.events == ["pause", [1]]  # answered, but the broker's queue is full
        limits.dequeue(2)  # the handlers catch up
        assert transport.events == ["pause", [1], "resume"]
        conn.data_received(produce(2))
        await settle()
        assert transport.events[3:] == ["pause", [2], "resume"]
        conn.close(None)

    asyncio.run(check())


def test_client_sockets_get_the_configured_buffer_sizes_unless_set_to_the_os_default() -> None:
    """socket.receive.buffer.bytes / socket.send.buffer.bytes (-1: the OS's autotuned size): a
    bounded receive buffer makes a client's pipelined requests wait in the client, where librdkafka
    batches, instead of megabytes of them in the broker's kernel."""

    async def sizes(receive: int, send: int) -> tuple[int, int]:
        config = BrokerConfig(storage="memory", socket_receive_buffer_bytes=receive, socket_send_buffer_bytes=send)
        broker = Broker(config)
        broker.open()
        accepted: list[Connection] = []

        def protocol() -> Connection:
            accepted.append(Connection(Dispatcher(broker, ROUTES), ConnectionLimits(config), set()))
            return accepted[-1]

        server = await asyncio.get_running_loop().create_server(protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await until(lambda: accepted and accepted[0].transport is not None)
        transport = accepted[0].transport
        assert transport is not None
        sock = transport.get_extra_info("socket")
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        writer.close()
        server.close()
        await server.wait_closed()
        return got

    receive, send = asyncio.run(sizes(102400, 65536))
    assert (receive, send) == (2 * 102400, 2 * 65536)  # Linux doubles what is asked for its bookkeeping
    receive, send = asyncio.run(sizes(-1, -1))
    with socket.socket() as fresh:  # the OS's own sizes, untouched
        default_send = fresh.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    assert receive != 2 * 102400 and send >= default_send
