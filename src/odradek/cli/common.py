"""What every client-side command shares: the bootstrap option, quiet clients, one-sentence errors.

These commands talk to any Kafka cluster through confluent-kafka; librdkafka's own
log lines are silenced so a user sees one sentence, never a traceback.
"""

from __future__ import annotations

import logging
from concurrent.futures import CancelledError
from typing import Any, NoReturn

import typer
from rich.console import Console

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
TIMEOUT_S = 10.0

_quiet = logging.getLogger("odradek.cli.librdkafka")
_quiet.addHandler(logging.NullHandler())
_quiet.propagate = False

BootstrapOption = typer.Option(DEFAULT_BOOTSTRAP, "--bootstrap-server", "-b", envvar="ODRADEK_BOOTSTRAP_SERVER",
                               help="HOST:PORT of any broker.")


def stderr() -> Console:
    return Console(stderr=True, soft_wrap=True, highlight=False)


def fail(message: str, code: int = 1) -> NoReturn:
    stderr().print(f"[red]error:[/red] {message}")
    raise typer.Exit(code)


def client_config(bootstrap: str, **extra: Any) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap, "logger": _quiet, "socket.timeout.ms": int(TIMEOUT_S * 1000), **extra}


_admins: dict[str, Any] = {}


def admin(bootstrap: str) -> Any:
    """One AdminClient per address for the whole command (a dropped handle cancels its futures)."""
    from confluent_kafka.admin import AdminClient

    if bootstrap not in _admins:
        _admins[bootstrap] = AdminClient(client_config(bootstrap))
    return _admins[bootstrap]


def error_text(exc: BaseException) -> str:
    err = exc.args[0] if exc.args else exc
    if hasattr(err, "str") and hasattr(err, "name"):
        return f"{err.str()} ({err.name()})"
    return str(exc) or type(exc).__name__


def result(future: Any, what: str, bootstrap: str) -> Any:
    """Wait for an AdminClient future; a Kafka error becomes one sentence."""
    from confluent_kafka import KafkaException

    try:
        return future.result(timeout=TIMEOUT_S)
    except (KafkaException, TimeoutError, CancelledError) as exc:
        text = error_text(exc)
        if "timed out" in text.lower() or isinstance(exc, TimeoutError) or "transport" in text.lower():
            text += f"; is a broker listening on {bootstrap}?"
        fail(f"{what}: {text}")


def metadata(bootstrap: str, topic: str | None = None) -> Any:
    from confluent_kafka import KafkaException

    try:
        return admin(bootstrap).list_topics(topic, timeout=TIMEOUT_S)
    except KafkaException as exc:
        fail(f"cannot reach a broker at {bootstrap} within {TIMEOUT_S:.0f} s ({error_text(exc)})")


def describe_topic(bootstrap: str, name: str) -> Any:
    """A topic's partitions through DescribeTopics, which, unlike Metadata, never auto-creates it."""
    from confluent_kafka import KafkaException, TopicCollection

    futures = admin(bootstrap).describe_topics(TopicCollection([name]), request_timeout=TIMEOUT_S)
    try:
        return futures[name].result(timeout=TIMEOUT_S)
    except (KafkaException, TimeoutError, CancelledError) as exc:
        text = error_text(exc)
        if "UNKNOWN_TOPIC" in text:
            fail(f"topic {name} does not exist")
        fail(f"cannot describe topic {name}: {text}")


def parse_pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            fail(f"{what} {item!r} is not key=value", 2)
        out[key] = value
    return out
