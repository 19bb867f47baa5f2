"""What every client-side command shares: how to reach the cluster, quiet clients, one-sentence errors.

These commands talk to any Kafka cluster through confluent-kafka. `connect()` is
the one place where `--bootstrap-server`, `--command-config client.properties`
and `-X key=value` become a client configuration (see cli/client_config.py for
the keys); librdkafka's own log lines are silenced so a user sees one sentence,
never a traceback, and never a password.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from odradek.cli.client_config import (
    ClientConfigError,
    ClientProperties,
    explain_rejection,
    load,
    redact,
)

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
TIMEOUT_S = 10.0
WAIT_SLICE_S = 0.2  # how often a wait looks for a refused login

BootstrapOption = typer.Option(DEFAULT_BOOTSTRAP, "--bootstrap-server", "-b", envvar="ODRADEK_BOOTSTRAP_SERVER",
                               help="HOST:PORT of any broker.")
CommandConfigOption = typer.Option(
    None, "--command-config", envvar="ODRADEK_COMMAND_CONFIG", show_envvar=False,
    help="a client.properties file (security.protocol, sasl.*, ssl.*; Kafka's or librdkafka's keys)")
ClientPropertyOption = typer.Option(
    None, "-X", metavar="KEY=VALUE", help="a client property, repeatable; beats --command-config")

# librdkafka error names that mean "this client may not get in", not "nobody is there"
_LOGIN_ERRORS = ("_AUTHENTICATION", "SASL_AUTHENTICATION_FAILED", "_SSL", "ILLEGAL_SASL_STATE",
                 "UNSUPPORTED_SASL_MECHANISM")


class _LastFailure(logging.Handler):
    """Keeps librdkafka's last connection failure (its FAIL log lines) instead of printing it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.text: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("FAIL"):  # "FAIL [rdkafka#producer-1] [thrd:...]: <broker>: <why>"
            self.text = message.split("]: ", 1)[-1]


def _quiet_logger() -> tuple[logging.Logger, _LastFailure]:
    # one per client and outside the logging tree: its lines reach nobody but the handler
    logger = logging.Logger("odradek.cli.librdkafka")  # noqa: LOG001
    failure = _LastFailure()
    logger.addHandler(failure)
    return logger, failure


def stderr() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    stderr().print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False)
    raise typer.Exit(code)


def error_text(exc: BaseException) -> str:
    err = exc.args[0] if exc.args else exc
    if hasattr(err, "str") and hasattr(err, "name"):
        return f"{err.str()} ({err.name()})"
    return str(exc) or type(exc).__name__


@dataclass
class Client:
    """How this command reaches the cluster: the bootstrap address and the client properties.
    Clients made here report login failures (error_cb) so a timeout can say why."""

    bootstrap: str
    properties: ClientProperties = field(default_factory=ClientProperties)
    _admin: Any = None
    _login_error: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _logging: tuple[logging.Logger, _LastFailure] = field(default_factory=_quiet_logger)

    def _on_error(self, error: Any) -> None:
        name = error.name() if hasattr(error, "name") else ""
        if any(name.startswith(prefix) for prefix in _LOGIN_ERRORS) or "SSL handshake" in str(error.str()):
            with self._lock:
                self._login_error = f"{error.str()}"

    def config(self, **extra: Any) -> dict[str, Any]:
        """The librdkafka configuration: our defaults, the command's own settings, then the user's."""
        return {"bootstrap.servers": self.bootstrap, "socket.timeout.ms": int(TIMEOUT_S * 1000), **extra,
                **self.properties.values, "logger": self._logging[0], "error_cb": self._on_error}

    def _make(self, kind: Any, conf: dict[str, Any]) -> Any:
        from confluent_kafka import KafkaException

        try:
            return kind(conf)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else exc
            fail(explain_rejection(err.str() if hasattr(err, "str") else str(exc), self.properties))
        except (TypeError, ValueError) as exc:
            fail(explain_rejection(str(exc), self.properties))

    def admin(self) -> Any:
        """One AdminClient for the whole command (a dropped handle cancels its futures)."""
        from confluent_kafka.admin import AdminClient

        if self._admin is None:
            self._admin = self._make(AdminClient, self.config())
        return self._admin

    def producer(self, **extra: Any) -> Any:
        from confluent_kafka import Producer

        return self._make(Producer, self.config(**extra))

    def consumer(self, **extra: Any) -> Any:
        from confluent_kafka import Consumer

        return self._make(Consumer, self.config(**extra))

    def login_failure(self) -> str | None:
        """Why this client cannot get in, once librdkafka has said so: a refused login or TLS
        handshake, or a listener that hangs up on a plaintext request (it wants TLS)."""
        if self._admin is not None:
            self._admin.poll(0)  # librdkafka hands over errors and log lines in poll()
        with self._lock:
            login = self._login_error
        if login is not None:
            return f"cannot log in to {self.bootstrap}: {self.redact(login)}"
        failure = self._logging[1].text or ""
        protocol = self.properties.values.get("security.protocol", "plaintext").upper()
        if "APIVERSION_QUERY" in failure and not protocol.endswith("SSL"):
            return (f"{self.bootstrap} closed the connection at the first request; does that listener want "
                    "TLS (security.protocol=SSL or SASL_SSL, with --command-config or -X)?")
        hung_up = "closed" in failure or "reset by peer" in failure
        if hung_up and "in state UP" in failure and not protocol.startswith("SASL_"):
            # a SASL listener answers ApiVersions, then hangs up on anything else before a login (a
            # reset when the client's next request was still unread as the listener closed)
            return (f"{self.bootstrap} closed the connection after ApiVersions; does that listener want a SASL "
                    "login (security.protocol=SASL_SSL or SASL_PLAINTEXT, sasl.mechanism, sasl.username, "
                    "sasl.password)?")
        return None

    def why_unreachable(self) -> str:
        """After a timeout: why this client cannot get in, else the last connection failure,
        else the usual question."""
        login = self.login_failure()
        if login is not None:
            return login
        failure = self._logging[1].text
        if failure is not None:
            return f"no answer within {TIMEOUT_S:.0f} s (last connection failure: {self.redact(failure)})"
        return f"no answer within {TIMEOUT_S:.0f} s; is a broker listening on {self.bootstrap}?"

    def wire_security(self) -> Any:
        """The same TLS and SASL login for commands that speak the protocol themselves (txn):
        security.protocol, ssl.ca.location, ssl.certificate/key.location, PLAIN or SCRAM."""
        import ssl

        from odradek.security.client import ClientSecurity

        props = self.properties.values
        protocol = props.get("security.protocol", "plaintext").upper()
        if protocol not in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"):
            fail(f"{self.properties.origin('security.protocol')}: security.protocol {protocol} is not "
                 "PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL", 2)
        context = None
        if protocol in ("SSL", "SASL_SSL"):
            try:
                context = ssl.create_default_context(cafile=props.get("ssl.ca.location") or None)
                if props.get("ssl.endpoint.identification.algorithm", "https").lower() == "none":
                    context.check_hostname = False
                if props.get("enable.ssl.certificate.verification", "true").lower() == "false":
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                if props.get("ssl.certificate.location"):
                    context.load_cert_chain(props["ssl.certificate.location"], props.get("ssl.key.location"),
                                            password=props.get("ssl.key.password"))
            except (OSError, ssl.SSLError) as exc:
                fail(f"cannot load the TLS files of the client configuration: {self.redact(str(exc))}", 2)
        if not protocol.startswith("SASL_"):
            return ClientSecurity(protocol, context)
        mechanism = (props.get("sasl.mechanism") or props.get("sasl.mechanisms") or "GSSAPI").upper()
        if mechanism not in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
            fail(f"this command logs in with PLAIN or SCRAM only, not sasl.mechanism {mechanism}", 2)
        if not props.get("sasl.username"):
            fail(f"sasl.mechanism {mechanism} needs sasl.username and sasl.password", 2)
        return ClientSecurity(protocol, context, mechanism, props["sasl.username"], props.get("sasl.password", ""))

    def call(self, api_key: int, version: int, body: dict[str, Any], what: str) -> Any:
        """One request to the first bootstrap broker over this command's TLS and SASL, for
        answers librdkafka cannot give (it drops some top-level errors, and crashes on
        DescribeUserScramCredentials' one); connection and login failures are one sentence."""
        import asyncio
        import ssl

        from odradek.cluster.peer import PeerConnection
        from odradek.security.client import LoginFailed

        host, _, port = self.bootstrap.split(",")[0].strip().rpartition(":")
        if not host or not port.isdigit():
            fail(f"--bootstrap-server {self.bootstrap!r} is not HOST:PORT", 2)
        where = f"{host}:{port}"

        async def ask() -> Any:
            peer = PeerConnection(host, int(port), "odradek-cli", self.wire_security())
            try:
                return await peer.call(api_key, version, body, TIMEOUT_S)
            finally:
                peer.close()

        try:
            return asyncio.run(ask())
        except TimeoutError:
            fail(f"{what}: no answer from {where} within {TIMEOUT_S:.0f} s; is a broker listening there"
                 f"{', and are the credentials right' if self.properties.values.get('sasl.username') else ''}?")
        except LoginFailed as exc:
            fail(f"{what}: cannot log in to {where}: {self.redact(str(exc))}")
        except ssl.SSLError as exc:
            fail(f"{what}: no TLS connection to {where}: {exc.reason or exc}")
        except (OSError, EOFError) as exc:
            reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else (
                getattr(exc, "strerror", None) or "connection closed")
            fail(f"{what}: cannot reach a broker at {where} ({reason})")

    def redact(self, text: str) -> str:
        return redact(text, self.properties.secrets())

    def wait(self, future: Any) -> Any:
        """An AdminClient future's result within TIMEOUT_S; a refused login ends the wait at
        once (librdkafka would retry it until the timeout), raising TimeoutError."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                return future.result(timeout=WAIT_SLICE_S)
            except TimeoutError:
                if self.login_failure() is not None or time.monotonic() > deadline:
                    raise

    def result(self, future: Any, what: str) -> Any:
        """Wait for an AdminClient future; a Kafka error becomes one sentence."""
        from confluent_kafka import KafkaException

        try:
            return self.wait(future)
        except (KafkaException, TimeoutError, CancelledError) as exc:
            if isinstance(exc, TimeoutError):
                fail(f"{what}: {self.why_unreachable()}")
            text = self.redact(error_text(exc))
            if "timed out" in text.lower() or "transport" in text.lower():
                text += f"; {self.why_unreachable()}"
            fail(f"{what}: {text}")

    def metadata(self, topic: str | None = None) -> Any:
        """Metadata (list_topics blocks, so it is asked in slices to notice a refused login)."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + TIMEOUT_S
        while True:
            try:
                return self.admin().list_topics(topic, timeout=min(1.0, max(0.1, deadline - time.monotonic())))
            except KafkaException:
                if self.login_failure() is None and time.monotonic() < deadline:
                    continue
                fail(f"cannot reach a broker at {self.bootstrap}: {self.why_unreachable()}")

    def describe_topic(self, name: str) -> Any:
        """A topic's partitions through DescribeTopics, which, unlike Metadata, never auto-creates it."""
        from confluent_kafka import KafkaException, TopicCollection

        futures = self.admin().describe_topics(TopicCollection([name]), request_timeout=TIMEOUT_S)
        try:
            return self.wait(futures[name])
        except (KafkaException, TimeoutError, CancelledError) as exc:
            if isinstance(exc, TimeoutError):
                fail(f"cannot describe topic {name}: {self.why_unreachable()}")
            text = self.redact(error_text(exc))
            if "UNKNOWN_TOPIC" in text:
                fail(f"topic {name} does not exist")
            if "timed out" in text.lower():
                text += f"; {self.why_unreachable()}"
            fail(f"cannot describe topic {name}: {text}")


def connect(bootstrap: str, command_config: Path | None = None, properties: list[str] | None = None) -> Client:
    """The client of this command. `bootstrap.servers` in the properties is used when
    --bootstrap-server was left at its default (a client.properties often names the cluster)."""
    try:
        props = load(command_config, list(properties or []))
    except ClientConfigError as exc:
        fail(str(exc), 2)
    named = props.values.pop("bootstrap.servers", None)
    if named and bootstrap == DEFAULT_BOOTSTRAP:
        bootstrap = named
    return Client(bootstrap, props)


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{what} {item!r} is not key=value", 2)
        out[key] = value
    return out
