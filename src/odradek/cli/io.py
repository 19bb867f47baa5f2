"""`odradek produce`, `odradek consume` and `odradek health`: a client's view of any Kafka."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from odradek.cli.common import (
    TIMEOUT_S,
    BootstrapOption,
    Client,
    ClientPropertyOption,
    CommandConfigOption,
    connect,
    error_text,
    fail,
    stderr,
)
from odradek.cli.options import OPTION_GROUP, Connection, with_option_groups

if TYPE_CHECKING:
    from confluent_kafka import KafkaError, Message

CODECS = ("none", "gzip", "snappy", "lz4", "zstd")


@with_option_groups
def produce(
    topic: str,
    key_separator: Annotated[str | None, typer.Option("--key-separator", "-K", help="split key and value at the first SEP")] = None,
    partition: Annotated[int | None, typer.Option("--partition", "-p")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="k=v, repeatable")] = None,
    acks: Annotated[str, typer.Option("--acks", help="0, 1 or all")] = "all",
    compression: Annotated[str, typer.Option("--compression", "-z")] = "none",
    connection: Connection = OPTION_GROUP,
) -> None:
    """Produce one record per line of standard input."""
    if compression not in CODECS:
        fail(f"--compression must be one of {', '.join(CODECS)}", 2)
    headers: list[tuple[str, str | bytes | None]] = []
    for h in header or []:
        k, sep, v = h.partition("=")
        if not sep or not k:
            fail(f"--header {h!r} is not k=v", 2)
        headers.append((k, v.encode()))
    client = connection.client()
    producer = client.producer(acks=acks, **{"compression.codec": compression,
                                             "message.timeout.ms": int(TIMEOUT_S * 1000)})
    errors: list[str] = []
    delivered = 0

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        nonlocal delivered
        if err is not None:
            errors.append(client.redact(f"{err.str()} ({err.name()})"))
        else:
            delivered += 1

    sent = 0
    for raw in sys.stdin.buffer:
        line = raw.rstrip(b"\r\n")
        key = None
        if key_separator is not None and key_separator.encode() in line:
            key, line = line.split(key_separator.encode(), 1)
        while True:
            try:
                producer.produce(topic, value=line, key=key, headers=headers or None, on_delivery=on_delivery,
                                 partition=-1 if partition is None else partition)  # -1: the partitioner picks
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        producer.poll(0)
    deadline = time.monotonic() + TIMEOUT_S + 5
    while producer.flush(0.2) > 0 and time.monotonic() < deadline and client.login_failure() is None:
        pass
    if errors or delivered < sent:
        reason = errors[0] if errors and "timed out" not in errors[0].lower() else client.why_unreachable()
        fail(f"{sent - delivered} of {sent} records were not delivered to {topic}: {reason}")
    stderr().print(f"delivered {delivered} record(s) to {topic}")


def _render(fmt: str, msg: Message) -> str:
    def text(b: str | bytes | None) -> str:
        if b is None:
            return ""
        return b if isinstance(b, str) else b.decode("utf-8", "replace")

    def headers() -> str:
        found = msg.headers() or []
        pairs = found.items() if isinstance(found, dict) else found
        return ",".join(f"{k}={text(v)}" for k, v in pairs)

    fields: dict[str, Callable[[], str]] = {
        "k": lambda: text(msg.key()), "v": lambda: text(msg.value()), "o": lambda: str(msg.offset()),
        "p": lambda: str(msg.partition()), "t": lambda: str(msg.timestamp()[1]), "T": lambda: text(msg.topic()),
        "h": headers,
        "%": lambda: "%",
    }
    out = []
    i = 0
    while i < len(fmt):
        c = fmt[i]
        if c == "%" and i + 1 < len(fmt) and fmt[i + 1] in fields:
            out.append(fields[fmt[i + 1]]())
            i += 2
        elif c == "\\" and i + 1 < len(fmt) and fmt[i + 1] in "nt":
            out.append("\n" if fmt[i + 1] == "n" else "\t")
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


@with_option_groups
def consume(
    topic: str,
    from_beginning: Annotated[bool, typer.Option("--from-beginning", help="start at the earliest offset")] = False,
    offset: Annotated[str | None, typer.Option("--offset", "-o", help="N, earliest or latest")] = None,
    partition: Annotated[int | None, typer.Option("--partition", "-p")] = None,
    num: Annotated[int | None, typer.Option("--num", "-n", help="exit after N records")] = None,
    group: Annotated[str | None, typer.Option("--group", "-g", help="consume as a member of this group (commits)")] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="%k %v %o %p %t %T %h, \\n \\t")] = "%v\\n",
    timeout: Annotated[float | None, typer.Option("--timeout", help="exit after this many idle seconds")] = None,
    connection: Connection = OPTION_GROUP,
) -> None:
    """Print records of a topic."""
    from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, KafkaError, TopicPartition

    if offset is None:
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
    elif offset == "earliest":
        start = OFFSET_BEGINNING
    elif offset == "latest":
        start = OFFSET_END
    elif offset.isdigit():
        start = int(offset)
    else:
        fail(f"--offset must be a number, earliest or latest, not {offset!r}", 2)
    client = connection.client()
    known = sorted(p.id for p in client.describe_topic(topic).partitions)
    if partition is not None and partition not in known:
        fail(f"topic {topic} has no partition {partition}")
    consumer = client.consumer(**{"group.id": group or "odradek-cli", "enable.auto.commit": group is not None,
                                  "auto.offset.reset": "earliest" if start == OFFSET_BEGINNING else "latest",
                                  "enable.partition.eof": False})
    if group is not None and partition is None and offset is None and not from_beginning:
        consumer.subscribe([topic])
    else:
        parts = [partition] if partition is not None else known
        consumer.assign([TopicPartition(topic, p, start) for p in parts])
    count = 0
    idle_since = time.monotonic()
    out = sys.stdout
    try:
        while num is None or count < num:
            msg = consumer.poll(0.2)
            if msg is None:
                if timeout is not None and time.monotonic() - idle_since > timeout:
                    break
                continue
            error = msg.error()
            if error:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if group is None and error.code() == KafkaError.GROUP_AUTHORIZATION_FAILED:
                    continue  # librdkafka looks up the placeholder group.id's coordinator; it is never used
                fail(f"consuming {topic} failed: {client.redact(error.str())} ({error.name()})")
            idle_since = time.monotonic()
            out.write(_render(fmt.replace("\\n", "\n").replace("\\t", "\t"), msg))
            count += 1
        out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        if group is not None and count:
            _commit(consumer, group, client)
        consumer.close()


def _commit(consumer: Any, group: str, client: Client) -> None:
    """The group's offsets, committed before the command ends (close() alone may skip them
    while the coordinator is still being looked up)."""
    from confluent_kafka import KafkaError, KafkaException

    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if err is None or err.code() != KafkaError._NO_OFFSET:
            fail(f"committing the offsets of group {group} failed: {client.redact(error_text(exc))}")


def health(
    bootstrap: str = BootstrapOption,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait for an answer")] = 5.0,
    command_config: Path | None = CommandConfigOption,
    client_property: list[str] | None = ClientPropertyOption,
) -> None:
    """Exit 0 when the broker answers (for Kubernetes exec probes), else 1 with one sentence."""
    from confluent_kafka import KafkaException

    client = connect(bootstrap, command_config, client_property)
    try:
        client.admin().list_topics(timeout=timeout)
    except KafkaException as exc:
        reason = client.login_failure() or client.redact(error_text(exc))
        fail(f"no answer from {client.bootstrap} within {timeout:g} s ({reason})")
    typer.echo(f"{client.bootstrap} is serving")
