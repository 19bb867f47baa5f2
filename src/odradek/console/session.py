"""One console session: the clients that act for one principal, and how their errors read.

Without SASL every browser shares one session made from the command line's client
configuration. When the configuration asks for SASL (security.protocol SASL_*) and names
no user, each login gets its own session whose AdminClient, Producer and Consumer log in
with that user's credentials, so the cluster's ACLs apply to what the page does. The
password lives only in the session's client properties, which never appear in a log line
or a message (cli/client_config.redact).
"""

from __future__ import annotations

import secrets
import threading
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from typing import Any

import typer

from odradek.cli.client_config import ClientProperties
from odradek.cli.common import TIMEOUT_S, Client, error_text
from odradek.console.browse import RateMeter

SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN")
IDLE_S = 3600.0  # a session unused this long is closed


class ConsoleError(Exception):
    """What the page shows: one sentence, and the HTTP status it is answered with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def status_of(text: str) -> int:
    """An HTTP status for a Kafka error: denied 403, unknown 404, unreachable 502, else 400."""
    upper = text.upper()
    if "AUTHORIZATION" in upper or "AUTHENTICATION" in upper:
        return 403
    if "UNKNOWN_TOPIC" in upper or "GROUP_ID_NOT_FOUND" in upper or "NOT_FOUND" in upper:
        return 404
    if "TIMED OUT" in upper or "TRANSPORT" in upper or "_TIMED_OUT" in upper:
        return 502
    return 400


@dataclass
class Session:
    """The clients of one principal. The browser's consumer is used by one page at a time."""

    client: Client
    principal: str | None = None
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    produced: RateMeter = field(default_factory=RateMeter)
    consumed: RateMeter = field(default_factory=RateMeter)
    last_used: float = field(default_factory=time.monotonic)
    browse_lock: threading.Lock = field(default_factory=threading.Lock)
    _producer: Any = None
    _browser: Any = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def touch(self) -> None:
        self.last_used = time.monotonic()

    def _made(self, make: Any) -> Any:
        # the command line's configuration was checked at start-up, so a refusal here is a
        # property the login added; cli.common's clients end the command on one (typer.Exit)
        try:
            return make()
        except typer.Exit:
            raise ConsoleError("the client configuration was refused by librdkafka", 500) from None

    def admin(self) -> Any:
        with self._lock:
            return self._made(self.client.admin)

    def producer(self) -> Any:
        with self._lock:
            if self._producer is None:
                self._producer = self._made(lambda: self.client.producer(**{
                    "linger.ms": 0, "message.timeout.ms": int(TIMEOUT_S * 1000) - 2000}))
            return self._producer

    def browser(self) -> Any:
        """The consumer of the message browser: assigned partitions, never a member of a group,
        never committing (its group.id is only there because librdkafka asks for one). It reads
        uncommitted records too (what the log holds, up to the high watermark the page is
        measured against) and reports each partition's end (EOF), which transaction markers
        and compacted offsets would otherwise hide."""
        with self._lock:
            if self._browser is None:
                self._browser = self._made(lambda: self.client.consumer(**{
                    "group.id": "odradek-console-browser", "enable.auto.commit": False,
                    "enable.auto.offset.store": False, "auto.offset.reset": "earliest",
                    "isolation.level": "read_uncommitted", "enable.partition.eof": True,
                    "fetch.wait.max.ms": 50,  # the end of a partition (EOF) is known after one empty fetch
                    "fetch.max.bytes": 8 * 1024 * 1024, "queued.max.messages.kbytes": 16 * 1024}))
            return self._browser

    def fresh_consumer(self, **extra: Any) -> Any:
        return self._made(lambda: self.client.consumer(**extra))

    def wait(self, future: Any, what: str) -> Any:
        """An AdminClient future's result; a Kafka error or a timeout becomes one sentence."""
        from confluent_kafka import KafkaException

        try:
            return self.client.wait(future)
        except TimeoutError:
            raise ConsoleError(f"{what}: {self.client.why_unreachable()}", 502) from None
        except (KafkaException, CancelledError) as exc:
            raise self.error(exc, what) from None

    def error(self, exc: BaseException, what: str) -> ConsoleError:
        text = self.client.redact(error_text(exc))
        if "timed out" in text.lower() or "transport" in text.lower():
            text += f"; {self.client.why_unreachable()}"
        return ConsoleError(f"{what}: {text}", status_of(text))

    def metadata(self, topic: str | None = None) -> Any:
        """Metadata, asked in slices so that a refused login ends the wait at once."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                return self.admin().list_topics(topic, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            except KafkaException as exc:
                if self.client.login_failure() is None and time.monotonic() < deadline:
                    continue
                raise ConsoleError(f"cannot reach the cluster at {self.client.bootstrap}: "
                                   f"{self.client.why_unreachable()}", status_of(error_text(exc))) from None

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.flush(1.0)
            if self._browser is not None:
                self._browser.close()
            self._producer = self._browser = None


def needs_login(properties: ClientProperties) -> bool:
    """A SASL configuration without a user: the page asks who is there."""
    protocol = properties.values.get("security.protocol", "plaintext").upper()
    return protocol.startswith("SASL_") and not properties.values.get("sasl.username")


def login_properties(base: ClientProperties, username: str, password: str, mechanism: str) -> ClientProperties:
    """The command line's properties with one user's credentials."""
    if not username:
        raise ConsoleError("a user name is needed to log in")
    if mechanism not in SASL_MECHANISMS:
        raise ConsoleError(f"the mechanism must be {', '.join(SASL_MECHANISMS)}, not {mechanism!r}")
    values = {**base.values, "sasl.mechanism": mechanism, "sasl.username": username, "sasl.password": password}
    values.pop("sasl.mechanisms", None)
    origins = {**base.origins, "sasl.username": "the login form", "sasl.password": "the login form",
               "sasl.mechanism": "the login form"}
    return ClientProperties(values, origins)


def log_in(bootstrap: str, base: ClientProperties, username: str, password: str, mechanism: str) -> Session:
    """A session acting as `username`, once the cluster has accepted the login (Metadata answered)."""
    session = Session(Client(bootstrap, login_properties(base, username, password, mechanism)),
                      principal=f"User:{username}")
    try:
        session.metadata()
    except ConsoleError as exc:
        session.close()
        failure = session.client.login_failure()
        raise ConsoleError(failure or exc.message, 401 if failure else exc.status) from None
    return session
