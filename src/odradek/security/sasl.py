"""SASL logins, server side: PLAIN, SCRAM-SHA-256/512 and OAUTHBEARER, as Kafka accepts them.

A client picks a mechanism with SaslHandshake and then trades opaque tokens in
SaslAuthenticate requests until the mechanism's server says it is done (Kafka's
SaslServerAuthenticator). Each mechanism here is a `SaslServer`: `evaluate(token)`
returns the next challenge or raises `SaslFailure`; when `complete`, `principal`
says who logged in. `SaslAuthenticator` is the broker's view of the keys:
`sasl.enabled.mechanisms`, the JAAS config that lists PLAIN users, SCRAM users
from the `CredentialStore`, the JWKS file of OAUTHBEARER, looked up per listener
(`listener.name.<listener>.<key>` first, as Kafka does).

What a client learns from a failure is one fixed sentence per mechanism: a wrong
password and an unknown user read the same and take the same steps (an unknown
SCRAM user gets a made-up salt and fails at the proof, like a known one).
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import re
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

from odradek.config import BrokerConfig, ConfigError
from odradek.security import KafkaPrincipal
from odradek.security.credentials import SCRAM_MECHANISMS, CredentialStore, ScramCredential
from odradek.security.listeners import Listener, listener_setting

PLAIN = "PLAIN"
OAUTHBEARER = "OAUTHBEARER"
SUPPORTED_MECHANISMS = (PLAIN, "SCRAM-SHA-256", "SCRAM-SHA-512", OAUTHBEARER)
DEFAULT_FAILED_AUTHENTICATION_DELAY_MS = 100


class SaslFailure(Exception):
    """A refused login. `reason` is for the broker's log (never a secret); `client_message`,
    when given, replaces the standard sentence the client gets."""

    def __init__(self, reason: str, client_message: str | None = None, user: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.client_message = client_message
        self.user = user


def failure_message(mechanism: str, reauthenticating: bool = False) -> str:
    """Kafka's sentence for invalid credentials; it does not say which part was wrong."""
    during = "re-authentication" if reauthenticating else "authentication"
    return f"Authentication failed during {during} due to invalid credentials with SASL mechanism {mechanism}"


class SaslServer(Protocol):
    """One login attempt of one mechanism, on one connection."""

    mechanism: str
    complete: bool
    principal: KafkaPrincipal | None
    user: str | None  # the name the client claimed (for the log), once known
    # wall-clock ms when the credential stops being valid (an OAUTHBEARER token's exp)
    credential_expires_at_ms: int | None

    def evaluate(self, token: bytes) -> bytes: ...


# -- JAAS -------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class JaasModule:
    class_name: str
    flag: str
    options: dict[str, str] = field(default_factory=dict)

    def __repr__(self) -> str:  # options hold passwords
        return f"JaasModule({self.class_name} {self.flag}, options={sorted(self.options)})"


_JAAS_TOKEN = re.compile(r'\s*(?:(?P<quoted>"(?:\\.|[^"\\])*")|(?P<punct>[=;])|(?P<word>[^\s=;"]+))')
_JAAS_FLAGS = ("required", "requisite", "sufficient", "optional")


def parse_jaas_config(text: str) -> list[JaasModule]:
    """Kafka's `sasl.jaas.config` syntax: `<LoginModule class> <flag> key="value" ...;` once or more.

    Errors never quote the text (it holds passwords), only where reading stopped."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _JAAS_TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            raise ConfigError(f"sasl.jaas.config: cannot read it at character {pos}")
        pos = match.end()
        if match.group("quoted") is not None:
            tokens.append(("value", re.sub(r"\\(.)", r"\1", match.group("quoted")[1:-1])))
        elif match.group("punct") is not None:
            tokens.append((match.group("punct"), match.group("punct")))
        elif match.group("word") is not None:
            tokens.append(("word", match.group("word")))
    modules: list[JaasModule] = []
    i = 0
    while i < len(tokens):
        if i + 1 >= len(tokens) or tokens[i][0] != "word" or tokens[i + 1][1].lower() not in _JAAS_FLAGS:
            raise ConfigError(
                "sasl.jaas.config must read '<LoginModule class> required key=\"value\" ...;' "
                f"(login module {len(modules) + 1})"
            )
        class_name, flag = tokens[i][1], tokens[i + 1][1].lower()
        i += 2
        options: dict[str, str] = {}
        while i < len(tokens) and tokens[i][0] != ";":
            if i + 2 >= len(tokens):
                raise ConfigError(f"sasl.jaas.config: option of {class_name} without a value or ';'")
            key, eq, value = tokens[i], tokens[i + 1], tokens[i + 2]
            if key[0] != "word" or eq[0] != "=" or value[0] not in ("word", "value"):
                raise ConfigError(f"sasl.jaas.config: {class_name}'s options must be key=\"value\"")
            options[key[1]] = value[1]
            i += 3
        if i >= len(tokens):
            raise ConfigError(f"sasl.jaas.config: the options of {class_name} must end with ';'")
        i += 1  # ';'
        modules.append(JaasModule(class_name, flag, options))
    return modules


def _secret_text(value: object) -> str | None:
    if value is None:
        return None
    get = getattr(value, "get_secret_value", None)
    return str(get() if get is not None else value)


# -- PLAIN ------------------------------------------------------------------

_DIGEST_KEY = secrets.token_bytes(32)  # passwords are compared as keyed digests: equal length, constant time


def _digest(value: bytes) -> bytes:
    return hmac.new(_DIGEST_KEY, value, hashlib.sha256).digest()


class PlainServer:
    """RFC 4616: one message `authzid NUL authcid NUL passwd`, checked against the
    JAAS config's `user_<name>="<password>"` options (Kafka's PlainServerCallbackHandler)."""

    mechanism = PLAIN

    def __init__(self, users: dict[str, str]) -> None:
        self._users = users
        self.complete = False
        self.principal: KafkaPrincipal | None = None
        self.user: str | None = None
        self.credential_expires_at_ms: int | None = None

    def evaluate(self, token: bytes) -> bytes:
        if self.complete:
            raise SaslFailure("PLAIN takes exactly one message")
        parts = token.split(b"\x00")
        if len(parts) != 3:
            raise SaslFailure("the PLAIN message is not authzid NUL username NUL password")
        try:
            authzid, username = parts[0].decode(), parts[1].decode()
        except UnicodeDecodeError:
            raise SaslFailure("the PLAIN user name is not UTF-8") from None
        self.user = username
        if not username:
            raise SaslFailure("no user name")
        if authzid and authzid != username:
            raise SaslFailure("the authorization id differs from the user name")
        expected = self._users.get(username)
        # the same work whether or not the user exists
        matches = hmac.compare_digest(_digest(parts[2]), _digest(expected.encode() if expected is not None else b"\x00"))
        if expected is None:
            raise SaslFailure("no such PLAIN user")
        if not matches:
            raise SaslFailure("wrong password")
        self.complete = True
        self.principal = KafkaPrincipal("User", username)
        return b""


# -- SCRAM ------------------------------------------------------------------

_FAKE_KEY = secrets.token_bytes(32)


class ScramServer:
    """RFC 5802/7677 through scramp, with credentials from the CredentialStore.

    Kafka's client-first may carry `tokenauth=true` (delegation tokens, KIP-48): not
    supported here, so it fails like bad credentials."""

    def __init__(self, mechanism: str, store: CredentialStore) -> None:
        from scramp import ScramMechanism  # type: ignore[import-untyped]  # on a SCRAM login's first step

        self.mechanism = mechanism
        self._store = store
        self._server = ScramMechanism(mechanism).make_server(self._lookup)
        self._step = 0
        self._known = False
        self.complete = False
        self.principal: KafkaPrincipal | None = None
        self.user: str | None = None
        self.credential_expires_at_ms: int | None = None

    def _lookup(self, username: str) -> tuple[bytes, bytes, bytes, int]:
        self.user = username
        cred = self._store.credential(username, self.mechanism)
        self._known = cred is not None
        if cred is None:
            cred = self._made_up(username)
        return cred.salt, cred.stored_key, cred.server_key, cred.iterations

    def _made_up(self, username: str) -> ScramCredential:
        """A stable fake credential for an unknown user, shaped like the real ones (same salt
        length and iteration count as some existing user), so the exchange looks the same."""
        template = next((c for creds in self._store.users().values()
                         if (c := creds.get(self.mechanism)) is not None), None)
        salt_length = len(template.salt) if template is not None else 32
        iterations = template.iterations if template is not None else 4096
        seed = hmac.new(_FAKE_KEY, f"{self.mechanism}\x00{username}".encode(), hashlib.sha512).digest()
        salt = (seed * (salt_length // len(seed) + 1))[:max(salt_length, 12)]
        size = hashlib.new(SCRAM_MECHANISMS[self.mechanism]).digest_size
        return ScramCredential(salt, secrets.token_bytes(size), secrets.token_bytes(size), iterations)

    def _accept_kafka_nonce(self, client_final: str) -> None:
        """Kafka's ScramSaslServer only checks that the client-final nonce ends with the server's
        (client + server nonce); older librdkafka (2.0.2, Debian's kcat) sends the client nonce
        twice, so RFC 5802's equality, which scramp checks, would lock those clients out."""
        sent = next((item[2:] for item in client_final.split(",") if item.startswith("r=")), None)
        expected = str(self._server.nonce)
        if sent is not None and sent != expected and sent.endswith(expected):
            from scramp.core import Nonce  # type: ignore[import-untyped]

            self._server.nonce = Nonce(sent)  # the proof is still checked over the text as sent

    def evaluate(self, token: bytes) -> bytes:
        from scramp import ScramException

        try:
            message = token.decode()
        except UnicodeDecodeError:
            raise SaslFailure("the SCRAM message is not UTF-8", user=self.user) from None
        try:
            if self._step == 0:
                self._step = 1
                bare = message.split(",", 2)[-1]
                if any(item.startswith("tokenauth=") for item in bare.split(",")):
                    raise SaslFailure("delegation tokens (tokenauth) are not supported")
                self._server.set_client_first(message)
                return str(self._server.get_server_first()).encode()
            if self._step == 1:
                self._step = 2
                self._accept_kafka_nonce(message)
                self._server.set_client_final(message)
                if not self._known:  # cannot happen (the made-up keys fail the proof), kept as a guard
                    raise SaslFailure("no such SCRAM user", user=self.user)
                final = str(self._server.get_server_final()).encode()
                self.complete = True
                assert self.user is not None
                self.principal = KafkaPrincipal("User", self.user)
                return final
        except ScramException as exc:
            reason = "no such SCRAM user" if self._step == 2 and not self._known else f"SCRAM: {exc.args[0]}"
            raise SaslFailure(reason, user=self.user) from None
        raise SaslFailure("SCRAM has no third client message", user=self.user)


# -- rate limiting ----------------------------------------------------------

class LoginThrottle:
    """A growing delay before a failed login is answered (the connection is closed after it,
    as Kafka does). Kafka waits `connection.failed.authentication.delay.ms` (100 ms) each
    time; here each failure from the same client host within `window_s` of the previous one
    doubles the wait, up to `max_delay_ms`, so guessing passwords over fresh connections
    slows down too. Successful logins are never delayed."""

    MAX_HOSTS = 10_000

    def __init__(self, base_delay_ms: int, max_delay_ms: int, window_s: float = 60.0) -> None:
        self.base_delay_ms = base_delay_ms
        self.max_delay_ms = max(max_delay_ms, base_delay_ms)
        self.window_s = window_s
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def failed(self, host: str, now: float | None = None) -> float:
        """Record a failure from `host`; returns the seconds to wait before answering it."""
        now = time.monotonic() if now is None else now
        count, last = self._failures.pop(host, (0, now))
        count = 1 if now - last > self.window_s else count + 1
        self._failures[host] = (count, now)
        while len(self._failures) > self.MAX_HOSTS:
            self._failures.popitem(last=False)
        if self.base_delay_ms <= 0:
            return 0.0
        return min(self.base_delay_ms << min(count - 1, 20), self.max_delay_ms) / 1000.0


# -- the broker's view ------------------------------------------------------

@dataclass(slots=True)
class _ListenerSasl:
    mechanisms: list[str]
    plain_users: dict[str, str]
    oauth: Any  # odradek.security.oauthbearer.TokenValidator, when OAUTHBEARER is enabled
    throttle: LoginThrottle


class SaslAuthenticator:
    """Which logins one broker accepts, per SASL listener; checked when the broker opens."""

    def __init__(self, config: BrokerConfig, credentials: CredentialStore, listeners: list[Listener]) -> None:
        self.config = config
        self.credentials = credentials
        self._listeners: dict[str, _ListenerSasl] = {}
        for listener in listeners:
            if listener.sasl:
                self._listeners[listener.name] = self._load(listener.name)

    def _setting(self, listener: str, key: str) -> Any:
        return listener_setting(self.config, listener, key)

    def _load(self, listener: str) -> _ListenerSasl:
        raw = str(self._setting(listener, "sasl.enabled.mechanisms") or "")
        mechanisms = [m.strip() for m in raw.split(",") if m.strip()]
        if not mechanisms:
            raise ConfigError(f"listener {listener} speaks SASL but sasl.enabled.mechanisms is empty")
        unknown = [m for m in mechanisms if m not in SUPPORTED_MECHANISMS]
        if unknown:
            raise ConfigError(
                f"sasl.enabled.mechanisms of listener {listener} names {', '.join(unknown)}; "
                f"odradek supports {', '.join(SUPPORTED_MECHANISMS)}"
            )
        if any(m in SCRAM_MECHANISMS for m in mechanisms):
            importlib.import_module("scramp")  # now, not on the event loop at the first SCRAM login
        plain_users: dict[str, str] = {}
        if PLAIN in mechanisms:
            plain_users = self._plain_users(listener)
        oauth = None
        if OAUTHBEARER in mechanisms:
            from odradek.security.oauthbearer import TokenValidator

            oauth = TokenValidator.from_config(lambda key: self._setting(listener, key), listener)
        # Kafka's connection.failed.authentication.delay.ms (100), which odradek also lets a listener scope
        delay = self._setting(listener, "connection.failed.authentication.delay.ms")
        try:
            base = DEFAULT_FAILED_AUTHENTICATION_DELAY_MS if delay is None else max(int(delay), 0)
        except (TypeError, ValueError):
            raise ConfigError(f"connection.failed.authentication.delay.ms of listener {listener} is not a number") from None
        return _ListenerSasl(mechanisms, plain_users, oauth, LoginThrottle(base, max_delay_ms=20 * base))

    def _plain_users(self, listener: str) -> dict[str, str]:
        """`user_<name>="<password>"` options of the PlainLoginModule in
        listener.name.<l>.plain.sasl.jaas.config, else listener.name.<l>.sasl.jaas.config,
        else sasl.jaas.config."""
        scoped = self.config.listener_name_overrides.get(listener.lower(), {})
        text = _secret_text(
            scoped.get("plain.sasl.jaas.config") or scoped.get("sasl.jaas.config") or self.config.sasl_jaas_config
        )
        if not text:
            return {}
        users: dict[str, str] = {}
        for module in parse_jaas_config(text):
            if module.class_name.rsplit(".", 1)[-1] == "PlainLoginModule":
                users.update({k[len("user_"):]: v for k, v in module.options.items() if k.startswith("user_")})
        return users

    def throttle(self, listener: str) -> LoginThrottle:
        return self._listeners[listener].throttle

    def mechanisms(self, listener: str) -> list[str]:
        entry = self._listeners.get(listener)
        return list(entry.mechanisms) if entry is not None else []

    def server(self, listener: str, mechanism: str) -> SaslServer:
        """A new login of `mechanism` (one of `mechanisms(listener)`) on `listener`."""
        entry = self._listeners[listener]
        if mechanism == PLAIN:
            return PlainServer(entry.plain_users)
        if mechanism in SCRAM_MECHANISMS:
            return ScramServer(mechanism, self.credentials)
        if mechanism == OAUTHBEARER:
            from odradek.security.oauthbearer import OAuthBearerServer

            return OAuthBearerServer(entry.oauth)
        raise SaslFailure(f"mechanism {mechanism} is not supported")

    def max_reauth_ms(self, listener: str, mechanism: str) -> int:
        """KIP-368's `connections.max.reauth.ms`, which Kafka lets a listener and mechanism
        override (`listener.name.<l>.<mechanism>.connections.max.reauth.ms`)."""
        scoped = self.config.listener_name_overrides.get(listener.lower(), {})
        value = scoped.get(f"{mechanism.lower()}.connections.max.reauth.ms")
        if value is None:
            value = self._setting(listener, "connections.max.reauth.ms")
        try:
            return max(int(value or 0), 0)
        except (TypeError, ValueError):
            raise ConfigError(f"connections.max.reauth.ms of listener {listener} is not a number") from None


def session_lifetime_ms(max_reauth_ms: int, credential_expires_at_ms: int | None, now_ms: int) -> int:
    """Kafka's session lifetime (KIP-368): connections.max.reauth.ms, or the time left on the
    credential (a token's expiry), whichever is sooner; 0 means the session never expires."""
    left = None if credential_expires_at_ms is None else max(credential_expires_at_ms - now_ms, 1)
    if max_reauth_ms <= 0:
        return left if left is not None else 0
    return max_reauth_ms if left is None else min(max_reauth_ms, left)
