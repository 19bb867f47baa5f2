"""TLS for SSL and SASL_SSL listeners, with Kafka's PEM keystore keys.

`ssl.keystore.location` is a PEM file holding the broker's private key and
certificate chain (Kafka's `ssl.keystore.type=PEM`), `ssl.key.password` decrypts
the key, `ssl.truststore.location` holds the CA certificates that client
certificates must chain to. `ssl.client.auth` is none, requested or required
(mTLS). A client certificate's subject becomes the principal through
`ssl.principal.mapping.rules` (Kafka's DEFAULT is the subject's RFC 2253 name).
"""

from __future__ import annotations

import importlib
import re
import ssl
from dataclasses import dataclass

from odradek.config import BrokerConfig, ConfigError
from odradek.security import KafkaPrincipal
from odradek.security.listeners import listener_setting

_CLIENT_AUTH = {"none": ssl.CERT_NONE, "requested": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def _secret(value: object) -> str | None:
    if value is None:
        return None
    get = getattr(value, "get_secret_value", None)
    return str(get() if get is not None else value)


def server_context(config: BrokerConfig, listener: str) -> ssl.SSLContext:
    """The TLS context of one listener (keys looked up under listener.name.<listener>. first)."""
    def setting(key: str) -> object:
        return listener_setting(config, listener, key)

    keystore_type = str(setting("ssl.keystore.type") or "PEM").upper()
    if keystore_type != "PEM":
        raise ConfigError(f"ssl.keystore.type {keystore_type} is not supported; use PEM")
    keystore = setting("ssl.keystore.location")
    if not keystore:
        raise ConfigError(f"listener {listener} uses TLS but ssl.keystore.location is not set")
    # principal_from_certificate's x509, imported now rather than on the event loop at the first client certificate
    importlib.import_module("cryptography.x509")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    password = _secret(setting("ssl.key.password")) or _secret(setting("ssl.keystore.password"))
    try:
        context.load_cert_chain(str(keystore), password=password)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load ssl.keystore.location {keystore}: {exc}") from None
    truststore = setting("ssl.truststore.location")
    if truststore:
        try:
            context.load_verify_locations(cafile=str(truststore))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"cannot load ssl.truststore.location {truststore}: {exc}") from None
    client_auth = str(setting("ssl.client.auth") or "none").lower()
    if client_auth not in _CLIENT_AUTH:
        raise ConfigError(f"ssl.client.auth must be none, requested or required, not {client_auth!r}")
    if client_auth != "none" and not truststore:
        raise ConfigError(f"ssl.client.auth={client_auth} needs ssl.truststore.location")
    context.verify_mode = _CLIENT_AUTH[client_auth]
    return context


def client_context(config: BrokerConfig, listener: str) -> ssl.SSLContext:
    """A broker's own TLS client context (replication over an SSL/SASL_SSL listener)."""
    def setting(key: str) -> object:
        return listener_setting(config, listener, key)

    truststore = setting("ssl.truststore.location")
    context = ssl.create_default_context(cafile=str(truststore) if truststore else None)
    if str(setting("ssl.endpoint.identification.algorithm") or "").lower() != "https":
        context.check_hostname = False
    keystore = setting("ssl.keystore.location")
    if keystore:
        password = _secret(setting("ssl.key.password")) or _secret(setting("ssl.keystore.password"))
        context.load_cert_chain(str(keystore), password=password)
    return context


@dataclass(frozen=True, slots=True)
class _Rule:
    pattern: re.Pattern[str] | None  # None: DEFAULT
    replacement: str
    case: str  # "", "L" or "U"


_RULE = re.compile(r"RULE:((?:\\/|[^/])*)/((?:\\/|[^/])*)/([LU]?)")


def parse_mapping_rules(text: str) -> list[_Rule]:
    """`ssl.principal.mapping.rules`: `RULE:pattern/replacement/[L|U]` entries and DEFAULT."""
    rules: list[_Rule] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        if text.startswith("DEFAULT", pos):
            rules.append(_Rule(None, "", ""))
            pos += len("DEFAULT")
        else:
            match = _RULE.match(text, pos)
            if match is None:
                raise ConfigError(f"ssl.principal.mapping.rules: cannot read {text[pos:]!r}")
            try:
                pattern = re.compile(match.group(1).replace("\\/", "/"))
            except re.error as exc:
                raise ConfigError(f"ssl.principal.mapping.rules: bad pattern: {exc}") from None
            replacement = re.sub(r"\$(\d)", r"\\\1", match.group(2).replace("\\/", "/"))
            rules.append(_Rule(pattern, replacement, match.group(3)))
            pos = match.end()
        while pos < len(text) and text[pos] in ", \n\t":
            pos += 1
    return rules or [_Rule(None, "", "")]


def principal_from_certificate(der: bytes, rules: list[_Rule]) -> KafkaPrincipal:
    """The principal of a client certificate: its subject (RFC 2253, as Java's
    X500Principal.getName()) through the first mapping rule that matches."""
    # loaded by server_context already: a broker without TLS listeners never imports it
    from cryptography import x509

    subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    for rule in rules:
        if rule.pattern is None:
            return KafkaPrincipal("User", subject)
        if rule.pattern.fullmatch(subject):
            name = rule.pattern.sub(rule.replacement, subject, count=1)
            name = name.lower() if rule.case == "L" else name.upper() if rule.case == "U" else name
            return KafkaPrincipal("User", name)
    raise ValueError(f"no ssl.principal.mapping.rules rule matches {subject!r}")
