"""Requests from one broker to another (WriteTxnMarkers from a transaction coordinator
to partition leaders; Kafka's TransactionMarkerChannelManager), over a plain Kafka
connection per peer, kept open and used by one request at a time."""

from __future__ import annotations

import asyncio
import struct
from typing import Any

from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.security.client import ClientSecurity, open_connection

CONNECT_TIMEOUT_S = 2.0


class PeerConnection:
    def __init__(self, host: str, port: int, client_id: str, security: ClientSecurity | None = None) -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.security = security or ClientSecurity()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._lock = asyncio.Lock()
        self._correlation = 0

    async def call(self, api_key: int, version: int, body: dict[str, Any], timeout: float) -> Any:
        """One request and its response; the connection is dropped on any failure (the caller retries)."""
        async with self._lock:
            try:
                if self._writer is None:
                    self._reader, self._writer = await open_connection(
                        self.host, self.port, self.security, self.client_id, CONNECT_TIMEOUT_S)
                assert self._reader is not None and self._writer is not None
                self._correlation += 1
                self._writer.write(encode_request(api_key, version, self._correlation,
                                                  build(request_type(api_key, version), body),
                                                  client_id=self.client_id))
                await self._writer.drain()
                size = struct.unpack(">i", await asyncio.wait_for(self._reader.readexactly(4), timeout))[0]
                frame = await asyncio.wait_for(self._reader.readexactly(size), timeout)
                return decode_response(frame, api_key, version)[1]
            except BaseException:
                self.close()
                raise

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None
