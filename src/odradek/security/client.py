"""A broker's own client login to other brokers (replication, transaction markers).

Kafka's brokers connect to each other through `inter.broker.listener.name` (or
the first listener of `security.inter.broker.protocol`) with that listener's TLS
settings and, on a SASL listener, the mechanism `sasl.mechanism.inter.broker.protocol`
and the username/password of the JAAS login module configured for it
(`listener.name.<l>.<mechanism>.sasl.jaas.config`, then `listener.name.<l>.sasl.jaas.config`,
then `sasl.jaas.config`). PLAIN and SCRAM are supported for that login.
"""

from __future__ import annotations

import asyncio
import ssl
import struct
from dataclasses import dataclass, field
from typing import Any

from odradek.config import BrokerConfig, ConfigError
from odradek.protocol.build import build
from odradek.protocol.framing import decode_response, encode_request, request_type
from odradek.security.listeners import Listener
from odradek.security.sasl import parse_jaas_config
from odradek.security.tls import client_context

SASL_HANDSHAKE, SASL_AUTHENTICATE = 17, 36
_LOGIN_MODULES = {"PLAIN": "PlainLoginModule", "SCRAM-SHA-256": "ScramLoginModule",
                  "SCRAM-SHA-512": "ScramLoginModule"}


class LoginFailed(Exception):
    """The other broker refused this broker's SASL login."""


@dataclass(frozen=True, slots=True)
class ClientSecurity:
    security_protocol: str = "PLAINTEXT"
    ssl_context: ssl.SSLContext | None = None
    mechanism: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def inter_broker_security(config: BrokerConfig, listener: Listener) -> ClientSecurity:
    """How this broker logs in to the others on `listener`."""
    context = client_context(config, listener.name) if listener.tls else None
    if not listener.sasl:
        return ClientSecurity(listener.security_protocol, context)
    mechanism = config.sasl_mechanism_inter_broker_protocol.upper()
    module_name = _LOGIN_MODULES.get(mechanism)
    if module_name is None:
        raise ConfigError(
            f"sasl.mechanism.inter.broker.protocol {mechanism} is not supported between brokers; "
            "use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
        )
    scoped = config.listener_name_overrides.get(listener.name.lower(), {})
    raw: Any = (scoped.get(f"{mechanism.lower()}.sasl.jaas.config") or scoped.get("sasl.jaas.config")
                or config.sasl_jaas_config)
    text = raw.get_secret_value() if hasattr(raw, "get_secret_value") else raw
    for module in parse_jaas_config(str(text or "")):
        if module.class_name.rsplit(".", 1)[-1] == module_name and "username" in module.options:
            return ClientSecurity(listener.security_protocol, context, mechanism,
                                  module.options["username"], module.options.get("password", ""))
    raise ConfigError(
        f"the inter-broker listener {listener.name} speaks SASL {mechanism}, but no {module_name} "
        "with username and password is in its sasl.jaas.config"
    )


async def open_connection(
    host: str, port: int, security: ClientSecurity, client_id: str, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to another broker, through TLS and a SASL login as configured."""
    context = security.ssl_context
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port, ssl=context, server_hostname=host if context else None),
        timeout,
    )
    if security.mechanism is None:
        return reader, writer
    try:
        await asyncio.wait_for(_login(reader, writer, security, client_id), timeout)
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, api_key: int, version: int,
                body: dict[str, Any], correlation_id: int, client_id: str) -> Any:
    writer.write(encode_request(api_key, version, correlation_id, build(request_type(api_key, version), body),
                                client_id=client_id))
    await writer.drain()
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return decode_response(await reader.readexactly(size), api_key, version)[1]


async def _login(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, security: ClientSecurity,
                 client_id: str) -> None:
    mechanism = security.mechanism
    assert mechanism is not None and security.username is not None
    handshake = await _call(reader, writer, SASL_HANDSHAKE, 1, {"mechanism": mechanism}, -100, client_id)
    if handshake.error_code != 0:
        raise LoginFailed(f"the broker does not accept SASL {mechanism} (error {handshake.error_code})")

    async def step(token: bytes, n: int) -> bytes:
        response = await _call(reader, writer, SASL_AUTHENTICATE, 2, {"auth_bytes": token}, -100 - n, client_id)
        if response.error_code != 0:
            raise LoginFailed(f"SASL {mechanism} login as {security.username} refused: {response.error_message}")
        return bytes(response.auth_bytes)

    password = security.password or ""
    if mechanism == "PLAIN":
        await step(b"\0" + security.username.encode() + b"\0" + password.encode(), 1)
        return
    import scramp  # type: ignore[import-untyped]  # here: a process that never logs in with SCRAM skips it

    client = scramp.ScramClient([mechanism], security.username, password)
    server_first = await step(client.get_client_first().encode(), 1)
    client.set_server_first(server_first.decode())
    server_final = await step(client.get_client_final().encode(), 2)
    try:
        client.set_server_final(server_final.decode())
    except scramp.ScramException as exc:
        raise LoginFailed(f"the broker's SCRAM signature did not verify: {exc}") from None
