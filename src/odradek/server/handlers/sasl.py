"""SaslHandshake and SaslAuthenticate: a SASL login over Kafka requests (KIP-43, KIP-152, KIP-368).

The order is Kafka's SaslServerAuthenticator's: SaslHandshake names a mechanism of
the listener's `sasl.enabled.mechanisms`, then SaslAuthenticate requests carry the
mechanism's tokens until it completes; the connection is authenticated from then
on, for `session_lifetime_ms` (KIP-368: `connections.max.reauth.ms`, or a token's
expiry) after which the client must log in again on the same connection, with the
same mechanism and as the same principal.

SaslHandshake v0 is served as Kafka serves it (clients before Kafka 1.0, KIP-152): after
it the mechanism's tokens come as raw size-prefixed frames, not SaslAuthenticate requests,
and the answers go back the same way (`raw_token`); a failure there closes the connection,
as raw framing has no room for an error code. Older librdkafka (2.0.2, Debian's kcat)
enables SASL only when the broker's range includes v0, then sends v1.

Any failure (bad credentials, a mechanism not enabled, messages out of order or
unreadable) is answered with Kafka's error code and then the connection is closed,
as Kafka does; a failed login is answered only after the growing delay of the
`LoginThrottle`, and logged in one line that names no secret. On a listener that
does not speak SASL both requests get ILLEGAL_SASL_STATE.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kio.schema.errors import ErrorCode

from odradek.security import Session
from odradek.security.sasl import SaslFailure, SaslServer, failure_message, session_lifetime_ms
from odradek.server.dispatcher import CloseConnection, RequestContext

if TYPE_CHECKING:
    from odradek.server.connection import Connection

log = logging.getLogger("odradek.sasl")


@dataclass(slots=True)
class Exchange:
    """A login in progress on one connection (`Session.sasl_state`)."""

    mechanism: str
    server: SaslServer | None
    reauthenticating: bool
    refused: str | None = None  # Kafka's REAUTH_BAD_MECHANISM: the next SaslAuthenticate fails
    raw: bool = False  # begun by SaslHandshake v0: the tokens come as raw size-prefixed frames


class Failed:
    """`Session.sasl_state` after a failure: nothing more is read from this connection."""


def _sasl_listener(ctx: RequestContext) -> bool:
    connection = ctx.connection
    return connection is not None and connection.listener is not None and connection.listener.sasl


def _close_after_response(ctx: RequestContext) -> None:
    """Kafka closes a connection once a failed handshake's answer is out. The connection writes
    a handler's response synchronously after the handler returns, before its task yields to the
    event loop, so a close scheduled with call_soon runs after that write; closing the transport
    flushes what was written (TLS included)."""
    connection = ctx.connection
    if connection is not None:
        asyncio.get_running_loop().call_soon(connection.close, None)


def _illegal_state(ctx: RequestContext, why: str, **fields: Any) -> Any:
    session = ctx.session
    log.warning("closing a SASL connection from %s on listener %s: %s",
                ctx.connection.peer if ctx.connection is not None else "?", session.listener, why)
    session.authenticated = False
    session.sasl_state = Failed()
    _close_after_response(ctx)
    return ctx.respond(error_code=ErrorCode.illegal_sasl_state, **fields)


async def sasl_handshake(ctx: RequestContext, request: Any) -> Any:
    session = ctx.session
    if not _sasl_listener(ctx):
        return ctx.respond(error_code=ErrorCode.illegal_sasl_state, mechanisms=[])
    authenticator = ctx.broker.sasl
    enabled = authenticator.mechanisms(session.listener)
    state = session.sasl_state
    if state is not None:
        what = "after a failed login" if isinstance(state, Failed) else "while a login is in progress"
        return _illegal_state(ctx, f"SaslHandshake {what}", mechanisms=enabled)
    if ctx.version == 0 and session.authenticated:
        return _illegal_state(ctx, "re-authentication with SaslHandshake v0 (KIP-368 needs v1)", mechanisms=enabled)
    mechanism = request.mechanism
    if mechanism not in enabled:
        log.warning("closing a SASL connection from %s on listener %s: mechanism %r is not enabled (%s)",
                    ctx.connection.peer if ctx.connection is not None else "?", session.listener,
                    str(mechanism)[:64], ", ".join(enabled))
        session.sasl_state = Failed()
        _close_after_response(ctx)
        return ctx.respond(error_code=ErrorCode.unsupported_sasl_mechanism, mechanisms=enabled)
    reauthenticating = session.authenticated
    if reauthenticating and mechanism != session.mechanism:
        session.sasl_state = Exchange(mechanism, None, True, refused=(
            f"SASL mechanism changed during re-authentication from {session.mechanism} to {mechanism}"))
    else:
        session.sasl_state = Exchange(mechanism, authenticator.server(session.listener, mechanism),
                                      reauthenticating, raw=ctx.version == 0)
    return ctx.respond(error_code=ErrorCode.none, mechanisms=enabled)


async def sasl_authenticate(ctx: RequestContext, request: Any) -> Any:
    session = ctx.session
    if not _sasl_listener(ctx):
        return ctx.respond(error_code=ErrorCode.illegal_sasl_state, auth_bytes=b"",
                           error_message="SaslAuthenticate request received on a listener without SASL")
    state = session.sasl_state
    if not isinstance(state, Exchange):
        why = ("SaslAuthenticate after a failed login" if isinstance(state, Failed)
               else "SaslAuthenticate before SaslHandshake")
        return _illegal_state(ctx, why, auth_bytes=b"", error_message=f"Unexpected {why}")
    if state.refused is not None or state.server is None:
        return await _failed(ctx, state, SaslFailure(state.refused or "no mechanism", state.refused))
    server = state.server
    try:
        challenge = server.evaluate(bytes(request.auth_bytes))
    except SaslFailure as exc:
        return await _failed(ctx, state, exc)
    if not server.complete:
        return ctx.respond(error_code=ErrorCode.none, auth_bytes=challenge)
    principal = server.principal
    assert principal is not None
    if state.reauthenticating and principal != session.principal:
        return await _failed(ctx, state, SaslFailure(
            f"re-authentication as {principal} on a connection of {session.principal}",
            f"Cannot change principals during re-authentication from {session.principal}: {principal}",
            user=server.user))
    lifetime_ms = session_lifetime_ms(ctx.broker.sasl.max_reauth_ms(session.listener, state.mechanism),
                                      server.credential_expires_at_ms, int(time.time() * 1000))
    _authenticated(session, state.mechanism, principal, lifetime_ms)
    log.debug("%s %s with %s from %s on listener %s (session lifetime %d ms)", principal,
              "re-authenticated" if state.reauthenticating else "authenticated", state.mechanism,
              session.client_host, session.listener, lifetime_ms)
    return ctx.respond(error_code=ErrorCode.none, auth_bytes=challenge, session_lifetime=lifetime_ms)


async def raw_token(connection: Connection, token: bytes) -> bytes:
    """One token of a login begun with SaslHandshake v0, read from a raw size-prefixed frame;
    the mechanism's answer, size-prefixed, to write back raw (Kafka's SaslServerAuthenticator
    without Kafka headers). A failure is logged and, after the login throttle's delay, closes
    the connection: raw framing has no room for an error."""
    session = connection.session
    state = session.sasl_state
    assert isinstance(state, Exchange) and state.raw and state.server is not None
    server = state.server
    try:
        challenge = server.evaluate(token)
    except SaslFailure as failure:
        session.failed_logins += 1
        session.sasl_state = Failed()
        user = failure.user or server.user
        log.warning("failed SASL %s login (SaslHandshake v0)%s from %s on listener %s: %s", state.mechanism,
                    f" as {user[:128]!r}" if user else "", session.client_host, session.listener, failure.reason)
        delay = connection.dispatcher.broker.sasl.throttle(session.listener).failed(session.client_host)
        if delay > 0:
            await asyncio.sleep(delay)
        raise CloseConnection("failed SASL login (SaslHandshake v0)") from None
    if server.complete:
        principal = server.principal
        assert principal is not None
        lifetime_ms = session_lifetime_ms(connection.dispatcher.broker.sasl.max_reauth_ms(session.listener,
                                                                                          state.mechanism),
                                          server.credential_expires_at_ms, int(time.time() * 1000))
        _authenticated(session, state.mechanism, principal, lifetime_ms)
        log.debug("%s authenticated with %s (SaslHandshake v0) from %s on listener %s", principal,
                  state.mechanism, session.client_host, session.listener)
    return struct.pack(">i", len(challenge)) + challenge


def _authenticated(session: Session, mechanism: str, principal: Any, lifetime_ms: int) -> None:
    session.principal = principal
    session.mechanism = mechanism
    session.authenticated = True
    session.sasl_state = None
    session.session_expires_at = time.monotonic() + lifetime_ms / 1000.0 if lifetime_ms > 0 else None


async def _failed(ctx: RequestContext, state: Exchange, failure: SaslFailure) -> Any:
    session = ctx.session
    session.failed_logins += 1
    session.authenticated = False  # nothing pipelined behind a failed (re-)login may pass
    session.sasl_state = Failed()
    server = state.server
    user = failure.user or (server.user if server is not None else None)
    log.warning(
        "failed SASL %s %s%s from %s on listener %s: %s", state.mechanism,
        "re-authentication" if state.reauthenticating else "login",
        f" as {user[:128]!r}" if user else "", session.client_host, session.listener, failure.reason,
    )
    delay = ctx.broker.sasl.throttle(session.listener).failed(session.client_host)
    if delay > 0:
        await asyncio.sleep(delay)
    _close_after_response(ctx)
    message = failure.client_message or failure_message(state.mechanism, state.reauthenticating)
    return ctx.respond(error_code=ErrorCode.sasl_authentication_failed, error_message=message, auth_bytes=b"")
