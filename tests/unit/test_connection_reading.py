"""A connection reads like Kafka's network layer: no request is read while one before it is
unanswered (Kafka mutes the channel until the answer is handed to the socket), so pipelined
requests wait in the client, where librdkafka gathers more records into each (issue 20: produce to
1,000 partitions). A request that needs no wait is answered in the read's own callback, before
reading could go on; one that waits (a parked fetch, a full send buffer) pauses reading until it
is answered. Every request of a chunk already received is answered, in order, first."""

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


def test_a_request_that_needs_no_wait_is_answered_before_reading_goes_on() -> None:
    async def check() -> None:
        conn, transport = await recording_connection()
        conn.data_received(produce(1))
        # answered within the read's own callback: nothing more could be read meanwhile, so the
        # channel needs no muting (no pause and resume: two epoll_ctl calls a request)
        assert transport.events == [[1]] and transport.reading
        await settle()
        assert transport.events == [[1]]
        conn.close(None)

    asyncio.run(check())


def test_every_request_of_a_received_chunk_is_answered_in_order_before_reading_goes_on() -> None:
    async def check() -> None:
        conn, transport = await recording_connection()
        sixth = produce(6)
        conn.data_received(b"".join(produce(i) for i in range(1, 6)) + sixth[:30])
        # the five whole requests answered in one write, then reading goes on for the sixth's rest
        assert transport.events == [[1, 2, 3, 4, 5]] and transport.reading
        conn.data_received(sixth[30:])
        await settle()
        assert transport.events == [[1, 2, 3, 4, 5], [6]]
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
        assert transport.events == [[1]]
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
        assert transport.events == [[1], "pause"]  # answered, but not sent yet: muted
        conn.resume_writing()
        await settle()
        assert transport.events == [[1], "pause", "resume"]
        conn.close(None)

    asyncio.run(check())


def test_reading_stays_paused_while_the_brokers_request_queue_is_full() -> None:
    async def check() -> None:
        conn, transport = await recording_connection()
        limits = conn.limits
        limits.queued_max_requests = 2  # queued.max.requests
        limits.queued = 2  # other connections' requests wait for their turn
        conn.data_received(produce(1))
        assert transport.events == [[1], "pause"]  # answered, but the broker's queue is full
        await settle()
        limits.dequeue(1)  # the others catch up
        assert transport.events == [[1], "pause", "resume"]
        conn.data_received(produce(2))
        await settle()
        assert transport.events[3:] == [[2]]
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


def test_a_request_begun_in_the_read_callback_goes_on_in_a_task_where_it_waits() -> None:
    """Python 3.11 has no eager task start: a coroutine begun by hand and continued in a task
    (connection._resumed) gets each awaited future's result and a cancellation, as `await` would."""
    from odradek.server.connection import _resumed

    async def check() -> None:
        loop = asyncio.get_running_loop()
        first, second = loop.create_future(), loop.create_future()
        seen: list[object] = []

        async def request() -> None:
            seen.append(await first)
            await asyncio.sleep(0)  # a bare yield (None) on the way
            try:
                seen.append(await second)
            except asyncio.CancelledError:
                seen.append("cancelled")
                raise

        steps = request()
        waiting = steps.send(None)  # begun outside any task, as in the read's callback
        assert waiting is first
        rest = loop.create_task(_resumed_to_end(steps, waiting))
        first.set_result("one")
        await until(lambda: seen == ["one"])
        await asyncio.sleep(0.01)
        rest.cancel()
        try:
            await rest
        except asyncio.CancelledError:
            pass
        assert seen == ["one", "cancelled"] and rest.cancelled() and second.cancelled()

    async def _resumed_to_end(steps: object, waiting: object) -> None:
        await _resumed(steps, waiting)  # type: ignore[arg-type]

    asyncio.run(check())
