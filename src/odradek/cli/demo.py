"""`odradek demo`: the seed's step 3 in one command, on an embedded broker.

Starts a broker, creates a topic, produces N records (keyed, so each key keeps
its partition and order), consumes them back with a consumer group, and shows
per partition what was written and read.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from confluent_kafka import Message

console = Console()


def demo(
    messages: Annotated[int, typer.Option("--messages", "-n", min=1, max=10_000_000, help="records to produce")] = 10_000,
    partitions: Annotated[int, typer.Option("--partitions", "-p", min=1, max=1000)] = 3,
    topic: Annotated[str, typer.Option("--topic", "-t")] = "demo",
    storage: Annotated[str, typer.Option("--storage", help="file or memory")] = "memory",
) -> None:
    """Start a broker, create a topic, produce records and consume them back with a group."""
    from confluent_kafka import Consumer, KafkaError, Producer

    from odradek.testing import Broker

    with Broker(storage=storage) as broker:
        bootstrap = broker.bootstrap_servers
        console.print(f"[bold]1.[/] broker started on [cyan]{bootstrap}[/] ({storage} storage)")
        broker.create_topic(topic, partitions=partitions)
        console.print(f"[bold]2.[/] topic [cyan]{topic}[/] created with {partitions} partitions")

        produced: Counter[int] = Counter()
        failures: list[str] = []

        def delivered(err: KafkaError | None, msg: Message) -> None:
            partition = msg.partition()
            if err is not None:
                failures.append(str(err))
            elif partition is not None:  # always set on a delivered record
                produced[partition] += 1

        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        started = time.perf_counter()
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("[bold]3.[/] producing", total=messages)
            for i in range(messages):
                key = f"user-{i % 100}".encode()
                while True:
                    try:
                        producer.produce(topic, key=key, value=f"event {i}".encode(), on_delivery=delivered)
                        break
                    except BufferError:
                        producer.poll(0.01)
                if i % 1000 == 999:
                    producer.poll(0)
                    progress.update(task, completed=sum(produced.values()))
            producer.flush(60)
            progress.update(task, completed=sum(produced.values()))
        produce_s = time.perf_counter() - started
        if failures:
            console.print(f"[red]{len(failures)} records failed: {failures[0]}[/]")
            raise typer.Exit(1)

        consumed: Counter[int] = Counter()
        last_offset: dict[int, int] = {}
        in_order = True
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "demo-group",
                             "auto.offset.reset": "earliest"})
        consumer.subscribe([topic])
        started = time.perf_counter()
        deadline = started + 60
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("[bold]4.[/] consuming (group demo-group)", total=messages)
            while sum(consumed.values()) < messages and time.perf_counter() < deadline:
                for msg in consumer.consume(1000, 0.5):
                    error = msg.error()
                    if error:
                        if error.code() != KafkaError._PARTITION_EOF:
                            console.print(f"[red]{error}[/]")
                        continue
                    p, offset = msg.partition(), msg.offset()
                    assert p is not None and offset is not None  # a consumed record has both
                    in_order &= offset > last_offset.get(p, -1)
                    last_offset[p] = offset
                    consumed[p] += 1
                progress.update(task, completed=sum(consumed.values()))
        consume_s = time.perf_counter() - started
        consumer.close()

    table = Table(title=f"topic {topic}")
    table.add_column("partition", justify="right")
    table.add_column("produced", justify="right")
    table.add_column("consumed", justify="right")
    table.add_column("last offset", justify="right")
    for p in range(partitions):
        table.add_row(str(p), str(produced[p]), str(consumed[p]), str(last_offset.get(p, "-")))
    console.print(table)
    total = sum(consumed.values())
    console.print(
        f"produced {sum(produced.values())} in {produce_s:.2f} s, consumed {total} in {consume_s:.2f} s; "
        f"order within each partition: {'kept' if in_order else '[red]BROKEN[/]'}"
    )
    if total != messages or not in_order:
        raise typer.Exit(1)
