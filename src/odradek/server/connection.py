"""One client connection: frames in, responses out, in request order.

Kafka handles one request per connection at a time and answers in order
(the network layer mutes a channel while a request is in flight); pipelined
requests wait in a short queue. Reading pauses when that queue is long or the
socket's send buffer is full, so one client cannot make the broker's memory grow.
Fetch responses may carry file slices, which go out with os.sendfile.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections import deque
from typing import TYPE_CHECKING

from odradek.server.dispatcher import CloseConnection
from odradek.storage.segment import FileSlice

if TYPE_CHECKING:
    from odradek.server.dispatcher import Dispatcher

log = logging.getLogger("odradek.connection")

_SIZE = struct.Struct(">i")
MAX_QUEUED_REQUESTS = 64


class Connection(asyncio.Protocol):
    def __init__(self, dispatcher: Dispatcher, max_request_bytes: int, registry: set[Connection]) -> None:
        self.dispatcher = dispatcher
        self.max_request_bytes = max_request_bytes
        self.registry = registry
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        self._buffer = bytearray()
        self._frames: deque[bytes] = deque()
        self._wakeup = asyncio.Event()
        self._can_write = asyncio.Event()
        self._can_write.set()
        self._reading_paused = False
        self._closed = False
        self._worker: asyncio.Task[None] | None = None

    # -- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.registry.add(self)
        self._worker = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.registry.discard(self)
        if self._worker is not None and self._worker is not asyncio.current_task():
            self._worker.cancel()  # nobody is left to answer (a parked fetch or join ends here)
        self._wakeup.set()
        self._can_write.set()

    def pause_writing(self) -> None:
        self._can_write.clear()

    def resume_writing(self) -> None:
        self._can_write.set()

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            (size,) = _SIZE.unpack_from(buf, pos)
            if size < 8 or size > self.max_request_bytes:
                self.close(
                    f"frame size {size} outside 8..{self.max_request_bytes} (socket.request.max.bytes)"
                )
                return
            if end - pos - 4 < size:
                break
            self._frames.append(bytes(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]
        if self._frames:
            self._wakeup.set()
            if len(self._frames) >= MAX_QUEUED_REQUESTS and not self._reading_paused and self.transport:
                self.transport.pause_reading()
                self._reading_paused = True

    # -- request loop ------------------------------------------------------

    async def _serve(self) -> None:
        frames = self._frames
        while not self._closed:
            if not frames:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            frame = frames.popleft()
            if self._reading_paused and len(frames) < MAX_QUEUED_REQUESTS // 2 and self.transport:
                self.transport.resume_reading()
                self._reading_paused = False
            try:
                response = await self.dispatcher.dispatch(self, frame)
            except CloseConnection as exc:
                self.close(str(exc))
                return
            except Exception:
                log.exception("internal error while handling a request from %s; closing it", self.peer)
                self.close(None)
                return
            if response is not None and not self._closed and self.transport is not None:
                self.transport.write(response)
                if not self._can_write.is_set():
                    await self._can_write.wait()

    async def send_parts(self, parts: list[bytes | FileSlice]) -> None:
        """Write one response made of bytes and file slices, in order.

        sendfile writes to the socket beneath the transport, so before each slice the
        transport's own buffer must be empty; the waits for a writable socket use a
        duplicate of its descriptor (the transport keeps its own registration).
        """
        transport = self.transport
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
        if not self._can_write.is_set():
            await self._can_write.wait()

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
        self._closed = True
        self._wakeup.set()
        if self.transport is not None:
            self.transport.close()
