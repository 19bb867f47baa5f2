"""Security, in Kafka's model: listeners and TLS, SASL, principals, the authorizer.

The server asks this room two questions: "who is this connection" (a
KafkaPrincipal, from a TLS client certificate or a SASL login) and "may they"
(the authorizer, over ACLs). It knows no handler and no socket beyond the TLS
context it builds. Names follow Kafka: principals print as `User:alice`, the
unauthenticated one is `User:ANONYMOUS`, security protocols are PLAINTEXT, SSL,
SASL_PLAINTEXT and SASL_SSL.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class KafkaPrincipal:
    """Kafka's principal: a type (always `User` for logins and certificates) and a name."""

    principal_type: str
    name: str

    def __str__(self) -> str:
        return f"{self.principal_type}:{self.name}"

    @classmethod
    def parse(cls, text: str) -> KafkaPrincipal:
        """`User:alice` (Kafka's string form, as ACLs and super.users write it)."""
        kind, sep, name = text.partition(":")
        if not sep or not kind or not name:
            raise ValueError(f"{text!r} is not a principal of the form User:NAME")
        return cls(kind, name)


ANONYMOUS = KafkaPrincipal("User", "ANONYMOUS")

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(slots=True)
class Session:
    """What one client connection has proven about itself.

    A connection on a SASL listener starts unauthenticated: only ApiVersions,
    SaslHandshake and SaslAuthenticate may pass until `authenticated` is set by a
    successful SaslAuthenticate. On PLAINTEXT and SSL listeners it is authenticated
    from the start (as ANONYMOUS, or as the TLS client certificate's principal).
    """

    listener: str = "PLAINTEXT"
    security_protocol: str = "PLAINTEXT"
    client_host: str = "?"
    principal: KafkaPrincipal = ANONYMOUS
    authenticated: bool = True
    mechanism: str | None = None  # chosen by SaslHandshake
    sasl_state: Any = None  # the mechanism's server-side exchange in progress
    # KIP-368: monotonic deadline after which the client must re-authenticate
    # (connections.max.reauth.ms, or a token's expiry); None means never.
    session_expires_at: float | None = None
    failed_logins: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    def expired(self, now: float | None = None) -> bool:
        if self.session_expires_at is None:
            return False
        return (time.monotonic() if now is None else now) >= self.session_expires_at
