"""One client connection: frames in, responses out, in request order.

Kafka handles one request per connection at a time and answers in order: its
network layer mutes a channel once a request is read and unmutes it only when
the response is sent, so the next requests wait in the client, where librdkafka
gathers more records into each (producing to 1,000 partitions it sent 38-49
records a Produce to odradek reading up to 64 requests ahead, 207-339 to Kafka).
odradek does the same with the transport: the frames of a received chunk are
queued and answered in order, at once in the read's own callback, so nothing
more is read meanwhile; a request that must wait (a parked Fetch, a replicated
Produce, a full send buffer) pauses reading, which resumes once every request of
that chunk is answered (its response handed to the transport, whose send buffer
is not full) and the broker's `queued.max.requests` has room. No client makes
the broker's memory grow past one received chunk and its own frame. Only a
request that waits gets a task, which runs while the connection has requests to
answer and ends when none is left: an idle connection costs a socket, this
object, its transport and its session, four objects the garbage collector walks,
not twenty (a task, its coroutines, events, futures and weak references each; a
full collection walked 200,000 objects with 10,000 idle connections, ~40-120 ms
of the event loop).
Fetch responses may carry file slices, which go out with os.sendfile.

While more requests of the connection are already queued, their answers are gathered and
written together (one send for a pipelined burst: librdkafka sends one Produce a partition, and
each answer's own send on loopback was ~40% of the broker's time producing to 1,000
partitions); they go out once nothing of this connection is left to do at once, the task
waits, or they reach COALESCE_BYTES / COALESCE_RESPONSES.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
import sys
import threading
import time
import types
from collections import deque
from collections.abc import Awaitable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

from odradek.security import Session
from odradek.security.tls import principal_from_certificate
from odradek.server.dispatcher import CloseConnection
from odradek.storage.open_files import FileSlice

if TYPE_CHECKING:
    from odradek.security.listeners import Listener
    from odradek.server.dispatcher import Dispatcher
    from odradek.server.limits import ConnectionLimits

log = logging.getLogger("odradek.connection")

_SIZE = struct.Struct(">i")
# Requests read and not yet answered at which reading pauses (Kafka: 1, a muted channel). One
# received chunk can hold more: they are all answered before reading resumes.
MAX_IN_FLIGHT_REQUESTS = 1
COALESCE_BYTES = 256 * 1024  # answers held back for one write, at most
COALESCE_RESPONSES = 16
# A frame this large that arrives in pieces is received straight into a buffer of its own: the
# connection is a BufferedProtocol, and while such a frame is under way the transport reads into
# its buffer, not into a chunk of its own that is then copied twice (into bytes, then joined with
# the frame's other chunks: 44 + 71 us a megabyte here, a memset of the frame's buffer 34). The
# buffer never runs ahead of the bytes received by more than GROW_AHEAD times them (a client
# announcing 90 MB and sending a byte at a time holds a few of its bytes, not 90 MB): it starts at
# GROW_AHEAD times what came with the frame's size (4 KiB when little came), and grows so as it
# fills. A whole frame this large inside one received chunk is used in place, as a read-only view.
# Other reads go into one READ_CHUNK buffer a thread (not one a connection: 10,000 connections),
# copied out to bytes before the read returns, as the transport's own chunk was.
GATHER_FRAME = 64 * 1024
VIEW_FRAME = 16 * 1024
GROW_AHEAD = 4
READ_CHUNK = 256 * 1024
_ZEROS = bytes(1 << 20)
_read_buffers = threading.local()


def _read_buffer() -> memoryview:
    view: memoryview | None = getattr(_read_buffers, "view", None)
    if view is None:
        view = _read_buffers.view = memoryview(bytearray(READ_CHUNK))
    return view


def _grow(buf: bytearray, size: int) -> None:
    """Extend `buf` with zeros to `size` bytes (no view of it may be alive)."""
    while len(buf) < size:
        buf += memoryview(_ZEROS)[: size - len(buf)]


class Connection(asyncio.BufferedProtocol):
    def __init__(
        self,
        dispatcher: Dispatcher,
        limits: ConnectionLimits,
        registry: set[Connection],
        listener: Listener | None = None,
        mapping_rules: list[Any] | None = None,
    ) -> None:
        self.dispatcher = dispatcher
        self.listener = listener
        self.mapping_rules = mapping_rules
        self.session = Session()
        self.limits = limits
        self.max_request_bytes = limits.max_request_bytes
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self.host = "?"
        self.last_active = time.monotonic()
        self.busy_since: float | None = None
        self._buffer = bytearray()
        self._chunk = _read_buffer()  # this thread's read chunk (a connection stays on its loop's thread)
        self._big: bytearray | None = None  # a large frame arriving (GATHER_FRAME), received into it
        self._big_size = 0  # the frame's size
        self._big_at = 0  # its bytes received
        self._frames: deque[bytes | memoryview] = deque()
        self._queued_bytes = 0
        self._unanswered = 0  # requests read whose response is not yet handed to the transport
        self._writable_again: asyncio.Future[None] | None = None  # while the transport's buffer is full
        self._reading_paused = False
        self._unsent: list[bytes] = []  # answers gathered for one write (see the module's docstring)
        self._unsent_bytes = 0
        self._flush_scheduled = False
        self._admitted = False
        self._closed = False
        self._worker: asyncio.Task[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        peer = transport.get_extra_info("peername")
        if peer:
            self.host = str(peer[0])
            self.peer = f"{peer[0]}:{peer[1]}"
        refused = self.limits.admit(self)
        if refused is not None:
            self._closed = True
            log.warning("refusing connection from %s: %s", self.peer, refused)
            transport.close()
            return
        self._admitted = True
        self.registry.add(self)
        self._size_buffers(transport)
        self.session = self._new_session(transport)

    def _size_buffers(self, transport: asyncio.BaseTransport) -> None:
        """socket.receive.buffer.bytes / socket.send.buffer.bytes, set as Kafka does (-1: the OS's)."""
        sock = transport.get_extra_info("socket")
        if sock is None:
            return
        for option, size in ((socket.SO_RCVBUF, self.limits.receive_buffer_bytes),
                             (socket.SO_SNDBUF, self.limits.send_buffer_bytes)):
            if size > 0:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, option, size)
                except OSError as exc:  # not a TCP socket (a test's pipe): the OS's size stays
                    log.debug("could not set the socket's buffer size on %s: %s", self.peer, exc)

    def _new_session(self, transport: asyncio.BaseTransport) -> Session:
        listener = self.listener
        if listener is None:
            return Session(client_host=self.host)
        session = Session(listener.name, listener.security_protocol, self.host, authenticated=not listener.sasl)
        ssl_object = transport.get_extra_info("ssl_object") if listener.tls else None
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if der:
            try:
                session.principal = principal_from_certificate(der, self.mapping_rules or [])
            except ValueError as exc:  # no mapping rule matched: Kafka refuses the connection
                log.warning("refusing connection from %s: %s", self.peer, exc)
                self.close(None)
        return session

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._admitted:
            self._admitted = False
            self.registry.discard(self)
            self.limits.dequeue(len(self._frames))
            self.limits.release(self)
        self._frames.clear()
        self._unanswered = 0
        self._buffer = bytearray()
        self._big = None
        self._unsent.clear()
        self._unsent_bytes = 0
        if self._worker is not None and self._worker is not asyncio.current_task():
            self._worker.cancel()  # nobody is left to answer (a parked fetch or join ends here)
        self.resume_writing()
        self.transport = None  # the transport holds this protocol: no cycle left for the collector

    def pause_writing(self) -> None:
        if self._writable_again is None:
            self._writable_again = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        waiting, self._writable_again = self._writable_again, None
        if waiting is not None and not waiting.done():
            waiting.set_result(None)

    async def _drained(self) -> None:
        """Return once the transport takes writes again (at once unless it paused writing)."""
        waiting = self._writable_again
        if waiting is not None:
            await asyncio.shield(waiting)  # a cancelled task must not cancel the shared future

    def data_received(self, data: bytes | memoryview) -> None:
        if self._closed:
            return
        added = 0
        if type(data) is not bytes and not (isinstance(data, memoryview) and data.readonly):
            data = bytes(data)  # kept below as received: it must not change under us
        big = self._big
        if big is not None:  # the rest of a large frame first (a transport that reads into chunks)
            at = self._big_at
            missing = self._big_size - at
            take = min(missing, len(data))
            self._reserve(at + take)
            big[at : at + take] = memoryview(data)[:take]
            self._big_at = at + take
            if take < missing:
                return
            self._big_done()
            added = 1
            data = memoryview(data)[missing:]
        buf = self._buffer
        # frames are cut from `data` itself when nothing was left over: one copy of each frame at
        # most, not three (into the buffer, a bytearray slice, bytes of it) - 100 MB a million records
        src: bytes | bytearray | memoryview = data
        if buf:
            buf += data
            src = buf
        in_place = src is not buf and (type(src) is bytes or (isinstance(src, memoryview) and src.readonly))
        view = memoryview(src)
        pos = 0
        end = len(src)
        # a raw SASL token (after SaslHandshake v0) may be shorter than a request header
        low = 0 if getattr(self.session.sasl_state, "raw", False) else 8
        try:
            while end - pos >= 4:
                (size,) = _SIZE.unpack_from(src, pos)
                if size < low or size > self.max_request_bytes:
                    self.close(
                        f"frame size {size} outside {low}..{self.max_request_bytes} (socket.request.max.bytes)"
                    )
                    return
                if end - pos - 4 < size:
                    if size >= GATHER_FRAME:  # received into a buffer of its own from here on
                        have = end - pos - 4
                        self._big, self._big_size, self._big_at = bytearray(view[pos + 4 : end]), size, have
                        self._reserve(have)
                        pos = end
                    break
                if in_place and size >= VIEW_FRAME:
                    self._frames.append(view[pos + 4 : pos + 4 + size])  # read-only: `data` is immutable
                else:
                    self._frames.append(bytes(view[pos + 4 : pos + 4 + size]))
                self._queued_bytes += size
                added += 1
                pos += 4 + size
        finally:
            view.release()  # before the buffer is resized
        if src is buf:
            if pos:
                del buf[:pos]
        elif pos < end:
            buf += data[pos:] if pos else data
        if added:
            self._queued(added)

    def get_buffer(self, sizehint: int) -> memoryview:
        """Where the transport reads next: the rest of a large frame under way, else the thread's
        read chunk (buffer_updated empties it before the transport reads again)."""
        big = self._big
        if big is None:
            return self._chunk
        at = self._big_at
        if at == len(big):  # what was allocated is full
            self._reserve(at)
        return memoryview(big)[at:]

    def _reserve(self, received: int) -> None:
        """Room in the large frame's buffer for `received` bytes and more: at most GROW_AHEAD times
        what came (4 KiB while little has), never past the frame's size; a client announcing a
        large frame and trickling bytes holds only a few times what it sent."""
        big = self._big
        assert big is not None
        want = min(self._big_size, GROW_AHEAD * max(received, 1024))
        if want > len(big):
            _grow(big, want)

    def buffer_updated(self, nbytes: int) -> None:
        if self._big is None:
            self.data_received(self._chunk[:nbytes].tobytes())
            return
        self._big_at += nbytes
        if self._big_at == self._big_size and not self._closed:
            self._big_done()
            self._queued(1)

    def _big_done(self) -> None:
        """The large frame under way is whole: queue it, read-only."""
        big = self._big
        assert big is not None
        self._big = None
        self._frames.append(memoryview(big).toreadonly())
        self._queued_bytes += self._big_size

    def _queued(self, added: int) -> None:
        """`added` frames were queued: serve them, and mute the channel as Kafka does."""
        self.last_active = time.monotonic()
        self._unanswered += added
        self.limits.enqueue(added)
        if self._worker is None:
            self._serve_now()  # what needs no wait is answered before reading could go on
        if self._reading_paused or self.transport is None:
            return
        broker_queue_full = self.limits.full()
        if broker_queue_full or self._unanswered >= MAX_IN_FLIGHT_REQUESTS:
            self.transport.pause_reading()  # Kafka mutes the channel
            self._reading_paused = True
            if broker_queue_full:
                self.limits.park(self)

    def resume(self) -> None:
        """Read on, unless a request read is still unanswered or the broker's queue is full.

        Called when a response has been handed to the transport, and by the limits when the
        broker's `queued.max.requests` has room again.
        """
        if not self._reading_paused or self._closed or self.transport is None:
            return
        if self._unanswered >= MAX_IN_FLIGHT_REQUESTS or self._writable_again is not None:
            return  # the answer (or the socket draining) resumes it
        if self.limits.full():
            self.limits.park(self)  # the limits resume it when their queue has room
            return
        self.transport.resume_reading()  # Kafka unmutes the channel
        self._reading_paused = False

    # -- request loop ------------------------------------------------------

    def _serve_now(self) -> None:
        """Answer the queued requests at once, here in the read's callback; only if one must wait
        (a parked Fetch, a replicated Produce, a full socket) does a task take over from that point.
        Most requests finish without waiting, and a task a request was ~10 us of the loop's CPU
        for every one of them (its creation, its scheduling, one more step of the loop)."""
        if sys.version_info >= (3, 12):  # the standard library's eager start, current_task() set
            task = asyncio.Task(self._serve(self._serve_queued()), loop=asyncio.get_running_loop(), eager_start=True)
            if not task.done():
                self._worker = task
            return
        # Python 3.11 has no eager start: the first step is driven here, outside any task (nothing
        # a request runs before its first wait asks for the current task: asyncio.timeout does)
        steps = self._serve_queued()
        try:
            waiting = steps.send(None)
        except StopIteration:
            return
        except Exception as exc:  # noqa: BLE001 - as a task's would be: this connection's only, with one line
            self.close(f"internal error: {type(exc).__name__}: {exc}")
            return
        self._worker = asyncio.get_running_loop().create_task(self._serve(_resumed(steps, waiting)))

    async def _serve(self, steps: Awaitable[None]) -> None:
        try:
            await steps
        finally:
            if self._worker is asyncio.current_task():
                self._worker = None  # the next request read is served at once again

    async def _serve_queued(self) -> None:
        """Answer the queued requests in order; return when none is left (or the connection closed)."""
        frames = self._frames
        limits = self.limits
        answered = 0
        while frames and not self._closed:
            frame = frames.popleft()
            self._queued_bytes -= len(frame)
            limits.dequeue()
            self.busy_since = time.monotonic()
            response: bytes | None
            try:
                if getattr(self.session.sasl_state, "raw", False):  # a token after SaslHandshake v0
                    from odradek.server.handlers.sasl import raw_token

                    response = await raw_token(self, bytes(frame))
                else:
                    response = await self.dispatcher.dispatch(self, frame)
            except CloseConnection as exc:
                self.close(str(exc))
                return
            except Exception as exc:  # noqa: BLE001 - dispatch raises CloseConnection for handler errors;
                # anything else still costs this connection only, with one line.
                self.close(f"internal error: {type(exc).__name__}: {exc}")
                return
            finally:
                self.busy_since = None
            del frame
            self.last_active = time.monotonic()
            if response is not None and not self._closed and self.transport is not None:
                self._respond(response)
            if self._writable_again is not None:
                self.flush_unsent()
                await self._drained()
            self._unanswered -= 1
            if self._reading_paused:
                self.resume()
            answered += 1
            if frames and answered % COALESCE_RESPONSES == 0:
                # a long pipelined burst is answered a write's worth at a time, the loop running other
                # connections and timers between (issue 20: one step answering 445 Produce requests of
                # one received chunk held the loop 76 ms)
                await asyncio.sleep(0)

    def _respond(self, response: bytes) -> None:
        """Write `response`, or hold it back while more requests are queued (one write for the burst)."""
        unsent = self._unsent
        if self._frames and len(unsent) + 1 < COALESCE_RESPONSES and self._unsent_bytes + len(response) < COALESCE_BYTES:
            unsent.append(response)
            self._unsent_bytes += len(response)
            if not self._flush_scheduled:  # written when this task next waits, at the latest
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self.flush_unsent)
            return
        if unsent:
            unsent.append(response)
            response = b"".join(unsent)
            unsent.clear()
            self._unsent_bytes = 0
        assert self.transport is not None
        self.transport.write(response)

    def flush_unsent(self) -> None:
        """Write the answers held back, if any (before anything else is written, and when the task waits)."""
        self._flush_scheduled = False
        unsent = self._unsent
        if not unsent:
            return
        data = unsent[0] if len(unsent) == 1 else b"".join(unsent)
        unsent.clear()
        self._unsent_bytes = 0
        if not self._closed and self.transport is not None:
            self.transport.write(data)

    async def send_parts(self, parts: list[bytes | FileSlice]) -> None:
        """Write one response made of bytes and file slices, in order.

        sendfile writes to the socket beneath the transport, so before each slice the
        transport's own buffer must be empty; the waits for a writable socket use a
        duplicate of its descriptor (the transport keeps its own registration).
        """
        self.flush_unsent()  # the answers before this one first
        transport = self.transport
        if self.listener is not None and self.listener.tls:
            await self._send_parts_tls(parts)
            return
        sock_fd = -1
        try:
            sock = transport.get_extra_info("socket") if transport is not None else None
            if self._closed or transport is None or sock is None or transport.is_closing():
                return
            sock_fd = os.dup(sock.fileno())
            for part in parts:
                if isinstance(part, FileSlice):
                    while transport.get_write_buffer_size() and not self._closed:
                        await self._writable(sock_fd)
                    await self._sendfile(sock_fd, part)
                elif not self._closed:
                    transport.write(part)
        except (ConnectionError, OSError) as exc:
            self.close(None if isinstance(exc, ConnectionError) else f"sending a fetch response failed: {exc}")
        finally:
            if sock_fd >= 0:
                os.close(sock_fd)
            for part in parts:
                if isinstance(part, FileSlice):
                    part.close()
        await self._drained()

    async def _send_parts_tls(self, parts: list[bytes | FileSlice]) -> None:
        """Over TLS the bytes must pass through the encryption: file slices are read."""
        try:
            for part in parts:
                if self._closed or self.transport is None:
                    return
                if isinstance(part, FileSlice):
                    data = os.pread(part.fd, part.size, part.position)
                    if len(data) != part.size:
                        raise OSError(f"segment file ended {part.size - len(data)} bytes short of the fetched slice")
                    self.transport.write(data)
                else:
                    self.transport.write(part)
        except OSError as exc:
            self.close(f"sending a fetch response failed: {exc}")
        finally:
            for part in parts:
                if isinstance(part, FileSlice):
                    part.close()
        await self._drained()

    async def _sendfile(self, sock_fd: int, part: FileSlice) -> None:
        offset, remaining = part.position, part.size
        while remaining:
            if self._closed:
                raise ConnectionResetError("the connection closed while sending")
            try:
                sent = os.sendfile(sock_fd, part.fd, offset, remaining)
            except BlockingIOError:
                await self._writable(sock_fd)
                continue
            if sent == 0:  # the segment was truncated after the fetch was read
                raise OSError(f"segment file ended {remaining} bytes short of the fetched slice")
            offset += sent
            remaining -= sent

    async def _writable(self, sock_fd: int) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_writer(sock_fd, wake)
        try:
            await ready
        finally:
            loop.remove_writer(sock_fd)

    @property
    def worker(self) -> asyncio.Task[None] | None:
        return self._worker

    @property
    def is_closed(self) -> bool:
        return self._closed

    def close(self, reason: str | None) -> None:
        """Drop the connection; `reason` becomes one log line."""
        if reason:
            log.warning("closing connection from %s: %s", self.peer, reason)
        self.flush_unsent()  # answered before the close: written before it
        self._closed = True
        if self.transport is not None:
            self.transport.close()


@types.coroutine
def _resumed(steps: Coroutine[Any, Any, None], waiting: Any) -> Generator[Any, Any, None]:
    """The rest of `steps`, a coroutine begun outside any task that yielded `waiting` (the future
    it awaits, or None for a bare yield): awaited in a task, it hands the task what `steps` yields
    and `steps` what the task sends or throws in (a cancellation), as `await steps` would have."""
    while True:
        try:
            sent = yield waiting
        except GeneratorExit:
            steps.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - handed to the coroutine, which decides
            try:
                waiting = steps.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting = steps.send(sent)
            except StopIteration:
                return
