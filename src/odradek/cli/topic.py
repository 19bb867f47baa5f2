"""`odradek topic ...`: create, list, describe, delete, alter-config, delete-records.

The verbs of kafka-topics.sh / rpk, through confluent-kafka's AdminClient, so they
work against any Kafka cluster.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from odradek.cli.common import fail, parse_pairs
from odradek.cli.options import OPTION_GROUP, Connection, with_option_groups

topic_app = typer.Typer(no_args_is_help=True, help="Topics: create, list, describe, delete, configs.")
SOURCES = {0: "unknown", 1: "topic", 2: "dynamic broker", 3: "dynamic default broker", 4: "static broker",
           5: "default", 6: "dynamic broker logger"}


@topic_app.command()
@with_option_groups
def create(
    name: str,
    partitions: Annotated[int, typer.Option("--partitions", "-p", help="number of partitions")] = 1,
    replication_factor: Annotated[int, typer.Option("--replication-factor", "-r")] = -1,
    config: Annotated[list[str] | None, typer.Option("--config", "-c", help="key=value, repeatable")] = None,
    connection: Connection = OPTION_GROUP,
) -> None:
    """Create a topic."""
    from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # re-exported without __all__

    configs = parse_pairs(config or [], "config")
    client = connection.client()
    futures = client.admin().create_topics([NewTopic(name, partitions, replication_factor, config=configs)])
    client.result(futures[name], f"cannot create topic {name}")
    Console().print(f"created topic [bold]{name}[/] with {partitions} partition(s)")


@topic_app.command("list")
@with_option_groups
def list_topics(
    connection: Connection = OPTION_GROUP,
) -> None:
    """List topics with their partition counts."""
    md = connection.client().metadata()
    table = Table("topic", "partitions", "replicas")
    for name in sorted(md.topics):
        t = md.topics[name]
        rf = len(next(iter(t.partitions.values())).replicas) if t.partitions else 0
        table.add_row(name, str(len(t.partitions)), str(rf))
    Console().print(table)


@topic_app.command()
@with_option_groups
def describe(
    name: str,
    connection: Connection = OPTION_GROUP,
) -> None:
    """Partitions (leader, replicas, ISR) and configs with their source."""
    from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]  # re-exported without __all__

    client = connection.client()
    t = client.describe_topic(name)
    console = Console()
    parts = Table("partition", "leader", "replicas", "isr", title=f"topic {name}")
    for p in sorted(t.partitions, key=lambda p: p.id):
        leader = p.leader.id if p.leader is not None else -1
        parts.add_row(str(p.id), str(leader), ",".join(str(r.id) for r in p.replicas),
                      ",".join(str(r.id) for r in p.isr))
    console.print(parts)
    res = ConfigResource("topic", name)
    configs = client.result(client.admin().describe_configs([res])[res], f"cannot describe configs of {name}")
    table = Table("config", "value", "source")
    for key in sorted(configs):
        entry = configs[key]
        table.add_row(key, "" if entry.value is None else str(entry.value), SOURCES.get(int(entry.source), "?"))
    console.print(table)


@topic_app.command()
@with_option_groups
def delete(
    names: list[str],
    connection: Connection = OPTION_GROUP,
) -> None:
    """Delete topics."""
    client = connection.client()
    futures = client.admin().delete_topics(names)
    for name in names:
        client.result(futures[name], f"cannot delete topic {name}")
        Console().print(f"deleted topic [bold]{name}[/]")


@topic_app.command("alter-config")
@with_option_groups
def alter_config(
    name: str,
    set_: Annotated[list[str] | None, typer.Option("--set", help="key=value, repeatable")] = None,
    delete_: Annotated[list[str] | None, typer.Option("--delete", help="key, repeatable")] = None,
    connection: Connection = OPTION_GROUP,
) -> None:
    """Change topic configs (IncrementalAlterConfigs): set some, delete others back to the default."""
    # confluent_kafka.admin re-exports these without __all__, so strict mypy calls them private
    from confluent_kafka.admin import (  # type: ignore[attr-defined]
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
    )

    sets = parse_pairs(set_ or [], "--set")
    if not sets and not delete_:
        fail("give at least one --set key=value or --delete key", 2)
    entries = [ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in sets.items()]
    entries += [ConfigEntry(k, None, incremental_operation=AlterConfigOpType.DELETE) for k in delete_ or []]
    res = ConfigResource("topic", name, incremental_configs=entries)
    client = connection.client()
    client.result(client.admin().incremental_alter_configs([res])[res], f"cannot alter configs of {name}")
    Console().print(f"altered {len(entries)} config(s) of [bold]{name}[/]")


@topic_app.command("delete-records")
@with_option_groups
def delete_records(
    name: str,
    partition: Annotated[int, typer.Option("--partition", "-p")],
    before: Annotated[int, typer.Option("--before", help="records below this offset are deleted")],
    connection: Connection = OPTION_GROUP,
) -> None:
    """Move the log start offset of a partition (DeleteRecords)."""
    from confluent_kafka import TopicPartition

    client = connection.client()
    futures = client.admin().delete_records([TopicPartition(name, partition, before)])
    done = client.result(next(iter(futures.values())), f"cannot delete records of {name}-{partition}")
    low = getattr(done, "low_watermark", getattr(done, "offset", before))
    Console().print(f"{name}-{partition}: records before offset {low} deleted")
