"""api key -> handler, and the checks every request goes through first.

Kafka's rules followed here: an ApiVersions request of a version we do not know
is answered with v0 and UNSUPPORTED_VERSION so the client can downgrade (KIP-511);
Produce v0-2 with UNSUPPORTED_VERSION per partition (Kafka 4, KAFKA-18659); any
other unknown API key or version (Kafka's SocketServer: "not enabled"), or a
request that cannot be parsed, closes the connection after one log line.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kio.schema.api_versions.v0.response import ApiVersionsResponse as ApiVersionsResponseV0
from kio.schema.errors import ErrorCode

from odradek.protocol import legacy, produce_request
from odradek.protocol.apis import ApiRange, api_name
from odradek.protocol.build import build
from odradek.protocol.framing import (
    API_VERSIONS_KEY,
    EncodedBody,
    FrameError,
    RequestHeader,
    decode_request,
    encode_response,
    peek_header,
    response_type,
)
from odradek.security import Session
from odradek.security.authorizer import (
    CLUSTER_NAME,
    SUPPORTED_OPERATIONS,
    AclOperation,
    ResourceType,
)
from odradek.server.loop_monitor import LoopWork

if TYPE_CHECKING:
    from odradek.server.broker import Broker, Node
    from odradek.server.connection import Connection

log = logging.getLogger("odradek.dispatcher")

# Before a SASL login completes only these may pass (Kafka's SaslServerAuthenticator).
SASL_HANDSHAKE_KEY = 17
SASL_AUTHENTICATE_KEY = 36
_BEFORE_AUTHENTICATION = frozenset({API_VERSIONS_KEY, SASL_HANDSHAKE_KEY, SASL_AUTHENTICATE_KEY})
_LOCAL_SESSION = Session()
_SIZE_AND_ID = struct.Struct(">ii")  # a response frame's size prefix and correlation id

Handler = Callable[["RequestContext", Any], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    min_version: int
    max_version: int


@dataclass(slots=True)
class RequestContext:
    broker: Broker
    header: RequestHeader
    connection: Connection | None

    @property
    def version(self) -> int:
        return self.header.api_version

    @property
    def session(self) -> Session:
        """Who sent this request (an in-process call with no connection is ANONYMOUS)."""
        return self.connection.session if self.connection is not None else _LOCAL_SESSION

    def authorized(self, operation: AclOperation, resource_type: ResourceType, name: str = CLUSTER_NAME) -> bool:
        """Kafka's AuthHelper.authorize: may this request's principal do `operation` on the
        resource? True when no authorizer is configured, and for in-process calls (no connection:
        the broker itself)."""
        authorizer = self.broker.authorizer
        if authorizer is None or self.connection is None:
            return True
        session = self.connection.session
        return authorizer.authorize(session.principal, session.client_host, operation, resource_type, name)

    def authorized_by_resource_type(self, operation: AclOperation, resource_type: ResourceType) -> bool:
        """Kafka's AuthHelper.authorizeByResourceType: `operation` on at least one resource of the type."""
        authorizer = self.broker.authorizer
        if authorizer is None or self.connection is None:
            return True
        session = self.connection.session
        return authorizer.authorize_by_resource_type(session.principal, session.client_host, operation,
                                                     resource_type)

    def authorized_operations(self, resource_type: ResourceType, name: str = CLUSTER_NAME) -> int:
        """KIP-430's bit field of what the principal may do on the resource (every supported
        operation when no authorizer is configured)."""
        authorizer = self.broker.authorizer
        if authorizer is None or self.connection is None:
            return sum(1 << op for op in SUPPORTED_OPERATIONS.get(resource_type, ()))
        session = self.connection.session
        return authorizer.authorized_operations(session.principal, session.client_host, resource_type, name)

    def address(self, node: Node) -> tuple[str, int]:
        """`node`'s address on the listener this request came through."""
        listener = self.connection.listener if self.connection is not None else None
        return node.address(listener.name if listener is not None else None)

    def respond(self, values: dict[str, Any] | None = None, /, **extra: Any) -> Any:
        """The response entity of this request's API and version, built from plain values."""
        return build(response_type(self.header.api_key, self.header.api_version), values, **extra)


class CloseConnection(Exception):
    """Raised to drop the client connection after a one-line log."""


def _internal_error(header: RequestHeader, exc: BaseException) -> str:
    """One log line for a request a handler failed on: what, where, and no traceback."""
    tb = exc.__traceback__
    where = "?"
    while tb is not None:
        where = f"{tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno}"
        tb = tb.tb_next
    log.debug("internal error in %s v%d", api_name(header.api_key), header.api_version, exc_info=exc)
    return (
        f"internal error in {api_name(header.api_key)} v{header.api_version} "
        f"(correlation id {header.correlation_id}): {type(exc).__name__}: {exc} at {where}"
    )


class Dispatcher:
    def __init__(self, broker: Broker, routes: dict[int, Route]) -> None:
        self.broker = broker
        self.routes = routes
        self._metrics: dict[int, tuple[Any, Any]] = {}  # api key -> (request counter, TotalTimeMs) children
        self.loop_work = LoopWork()  # what the loop monitor names in a stall line

    def api_ranges(self) -> list[ApiRange]:
        return [ApiRange(k, r.min_version, r.max_version) for k, r in sorted(self.routes.items())]

    async def dispatch(self, connection: Connection | None, frame: bytes | memoryview) -> bytes | None:
        """Handle one request frame; returns the response frame, or None (acks=0)."""
        started = time.perf_counter()
        try:
            api_key, api_version, correlation_id = peek_header(frame)
        except FrameError as exc:
            raise CloseConnection(str(exc)) from None
        route = self.routes.get(api_key)
        if route is None:
            raise CloseConnection(f"unknown API key {api_key}")
        if connection is not None and api_key not in _BEFORE_AUTHENTICATION:
            session = connection.session
            if not session.authenticated:
                raise CloseConnection(
                    f"{api_name(api_key)} before authenticating on listener {session.listener} "
                    "(only ApiVersions, SaslHandshake and SaslAuthenticate may come first)"
                )
            if session.session_expires_at is not None and session.expired():
                raise CloseConnection(  # KIP-368
                    f"the session of {session.principal} expired without re-authentication "
                    "(connections.max.reauth.ms)"
                )
        if (api_key, api_version) in legacy.REFUSED:  # advertised, never served (KAFKA-18659)
            return self._refused_legacy_version(frame)
        if not route.min_version <= api_version <= route.max_version:
            if api_key == API_VERSIONS_KEY:
                return self._unsupported_api_versions(correlation_id)
            raise CloseConnection(
                f"unsupported version {api_version} of {api_name(api_key)} "
                f"(supported {route.min_version}-{route.max_version})"
            )
        self.loop_work.begin(started, api_key, api_version)
        header, request = self._decode(frame, api_key, api_version, correlation_id)
        ctx = RequestContext(self.broker, header, connection)
        counter, total_time = self._metrics.get(api_key) or self._metric_children(api_key)
        counter.inc()
        faults = self.broker.faults
        try:
            if faults is not None:
                response = await faults.intercept(ctx, request, route.handler)
            else:
                response = await route.handler(ctx, request)
            if response is None:
                encoded = None
            elif type(response) is EncodedBody and api_key != API_VERSIONS_KEY:  # already wire form (Produce)
                data = response.data
                flexible = response.__flexible__
                encoded = b"".join((_SIZE_AND_ID.pack(len(data) + (5 if flexible else 4), correlation_id),
                                    b"\0" if flexible else b"", data))
            else:
                encoded = encode_response(correlation_id, response, header_v0=api_key == API_VERSIONS_KEY)
        except CloseConnection:
            raise
        except Exception as exc:  # noqa: BLE001 - a handler's bug costs one connection, not the broker
            raise CloseConnection(_internal_error(header, exc)) from None
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # this request's own cancellation: its connection closed
            # a future shared with a cancelled request, handed on: a bug, as any other exception
            raise CloseConnection(_internal_error(header, exc)) from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        total_time.observe(elapsed_ms)
        self.loop_work.finished(started, elapsed_ms, api_key, api_version)
        return encoded

    @staticmethod
    def _decode(frame: bytes | memoryview, api_key: int, api_version: int,
                correlation_id: int) -> tuple[RequestHeader, Any]:
        """The request's header and body: a Produce on its short path when it may take it
        (protocol/produce_request.py; a large frame is a read-only view, which kio's readers take
        as they are), anything else, or anything the short path's reader raises on, by the
        generic decode and its errors."""
        if api_key == produce_request.PRODUCE_KEY and (type(frame) is bytes or (
                isinstance(frame, memoryview) and frame.readonly)):
            body = produce_request.check(frame, api_version)
            if body is not None:
                try:
                    return produce_request.decode(frame, api_version, correlation_id, body)
                except BaseException as exc:  # kio's errors, a Rust panic (pyo3's PanicException) included
                    if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                        raise
        try:
            return decode_request(frame)
        except FrameError as exc:
            raise CloseConnection(str(exc)) from None

    def _metric_children(self, api_key: int) -> tuple[Any, Any]:
        metrics, name = self.broker.metrics, api_name(api_key)
        children = self._metrics[api_key] = (metrics.requests.labels(name), metrics.request_time_ms.labels(name))
        return children

    def _refused_legacy_version(self, frame: bytes | memoryview) -> bytes:
        """Produce v0-2 (message formats v0/v1): parsed and answered with UNSUPPORTED_VERSION per
        partition, as Kafka 4 does (KAFKA-18659); acks=0 gets no answer, so the connection closes."""
        try:
            header, request = decode_request(frame)
        except FrameError as exc:
            raise CloseConnection(str(exc)) from None
        name = f"{api_name(header.api_key)} v{header.api_version}"
        if request.acks == 0:
            raise CloseConnection(f"{name} with acks=0: message format v0/v1 is not supported")
        log.info("refused %s from %s: message format v0/v1 is not supported", name, header.client_id)
        response = legacy.refused_produce_response(header.api_version, request)
        return encode_response(header.correlation_id, response)

    def _unsupported_api_versions(self, correlation_id: int) -> bytes:
        # KIP-511: only ApiVersions' own range, the version to retry with; a client given the whole
        # table takes it as the answer (franz-go does) and misses what v3+ adds (finalized features)
        response = build(
            ApiVersionsResponseV0,
            error_code=ErrorCode.unsupported_version,
            api_keys=[
                {"api_key": r.api_key, "min_version": r.min_version, "max_version": r.max_version}
                for r in self.api_ranges() if r.api_key == API_VERSIONS_KEY
            ],
        )
        return encode_response(correlation_id, response, header_v0=True)
