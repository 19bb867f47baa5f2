"""`odradek group ...`: list, describe, delete consumer groups and reset their offsets.

Everything goes through confluent-kafka's AdminClient, so these commands work
against any Kafka cluster, not only odradek. Mistakes are one sentence, exit 1.
"""

from __future__ import annotations

import datetime
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from odradek.cli.common import ClientPropertyOption, CommandConfigOption, connect

group_app = typer.Typer(no_args_is_help=True, help="Consumer groups: members, committed offsets, lag.")
def _console() -> Console:
    return Console()  # made per call so it writes to the current sys.stdout (tests capture it)

TIMEOUT_S = 15.0


class _State:
    bootstrap = "127.0.0.1:9092"
    command_config: Path | None = None
    client_properties: tuple[str, ...] = ()
    admin: Any = None


def _fail(message: str) -> NoReturn:
    _console().print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(1)


@group_app.callback()
def _options(
    bootstrap_server: Annotated[str, typer.Option(
        "--bootstrap-server", "-b", envvar="ODRADEK_BOOTSTRAP_SERVER", help="HOST:PORT of any broker of the cluster.",
    )] = "127.0.0.1:9092",
    command_config: Path | None = CommandConfigOption,
    client_property: list[str] | None = ClientPropertyOption,
) -> None:
    _State.bootstrap = bootstrap_server
    _State.command_config = command_config
    _State.client_properties = tuple(client_property or ())
    _State.admin = None  # a new command line (tests run several in one process)


def _admin() -> Any:
    """The AdminClient of this command (--command-config and -X of the group options applied)."""
    if _State.admin is None:
        client = connect(_State.bootstrap, _State.command_config, list(_State.client_properties))
        _State.bootstrap = client.bootstrap
        _State.admin = client
    return _State.admin.admin()


def _result(future: Any, what: str) -> Any:
    from confluent_kafka import KafkaException

    try:
        return future.result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else exc
        text = error.str() if hasattr(error, "str") else str(error)
        if "timed out" in text.lower():
            text += f" ({_State.admin.why_unreachable()})"
        _fail(f"{what} failed: {_State.admin.redact(text)}")
    except (TimeoutError, CancelledError) as exc:
        _fail(f"{what} failed: {str(exc) or type(exc).__name__} ({_State.admin.why_unreachable()})")


def _describe(admin: Any, group: str) -> Any:
    return _result(admin.describe_consumer_groups([group], request_timeout=TIMEOUT_S)[group], f"describing group {group}")


def _committed(admin: Any, group: str) -> dict[tuple[str, int], int]:
    from confluent_kafka import ConsumerGroupTopicPartitions

    futures = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=TIMEOUT_S)
    result = _result(futures[group], f"reading the committed offsets of {group}")
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions or [] if tp.offset >= 0}


def _list_offsets(admin: Any, tps: list[tuple[str, int]], spec: Any) -> dict[tuple[str, int], int]:
    from confluent_kafka import TopicPartition

    if not tps:
        return {}
    futures = admin.list_offsets({TopicPartition(t, p): spec for t, p in tps}, request_timeout=TIMEOUT_S)
    return {(tp.topic, tp.partition): _result(f, f"listing offsets of {tp.topic}-{tp.partition}").offset
            for tp, f in futures.items()}


def _partitions(admin: Any, topic: str) -> list[int]:
    from confluent_kafka import KafkaException, TopicCollection

    try:  # DescribeTopics never auto-creates the topic, unlike a Metadata request naming it
        desc = admin.describe_topics(TopicCollection([topic]), request_timeout=TIMEOUT_S)[topic].result(TIMEOUT_S)
    except KafkaException:
        _fail(f"topic {topic} does not exist")
    return sorted(p.id for p in desc.partitions)


@group_app.command("list")
def list_groups(
    state: Annotated[list[str] | None, typer.Option("--state", help="Only groups in this state (repeatable).")] = None,
) -> None:
    """List the consumer groups and their states."""
    from confluent_kafka import ConsumerGroupState

    admin = _admin()
    kwargs: dict[str, Any] = {"request_timeout": TIMEOUT_S}
    if state:
        names = {_state_name(s).lower(): s for s in ConsumerGroupState}
        try:
            kwargs["states"] = {names[s.replace("_", "").replace("-", "").lower()] for s in state}
        except KeyError as exc:
            _fail(f"unknown group state {exc.args[0]} (use Stable, Empty, PreparingRebalance, CompletingRebalance, Dead)")
    result = _result(admin.list_consumer_groups(**kwargs), "listing groups")
    rows = [(g.group_id, _state_name(g.state), "simple" if g.is_simple_consumer_group else "consumer")
            for g in result.valid]
    wanted = {s.replace("_", "").replace("-", "").lower() for s in state or ()}
    listed = {row[0] for row in rows}  # librdkafka lists no share groups (KIP-932): ListGroups v5 does
    rows += [(g, st, "share") for g, st in _share_group_ids(admin).items()
             if g not in listed and (not wanted or st.lower() in wanted)]
    table = Table("GROUP", "STATE", "TYPE")
    for row in sorted(rows):
        table.add_row(*row)
    _console().print(table)


def _state_name(state: Any) -> str:
    names = {"STABLE": "Stable", "EMPTY": "Empty", "DEAD": "Dead", "UNKNOWN": "Unknown",
             "PREPARING_REBALANCING": "PreparingRebalance", "COMPLETING_REBALANCING": "CompletingRebalance"}
    return names.get(getattr(state, "name", str(state)), str(state))


@group_app.command("describe")
def describe(group: str) -> None:
    """State, members and their partitions, committed offset, log end and lag per partition."""
    from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]  # re-exported without __all__

    admin = _admin()
    if group in _share_group_ids(admin):
        _describe_share_group(admin, group)
        return
    desc = _describe(admin, group)
    committed = _committed(admin, group)
    owner: dict[tuple[str, int], Any] = {}
    for m in desc.members:
        for tp in (m.assignment.topic_partitions if m.assignment else []):
            owner[(tp.topic, tp.partition)] = m
    tps = sorted(set(committed) | set(owner))
    ends = _list_offsets(admin, tps, OffsetSpec.latest())  # type: ignore[no-untyped-call]  # unannotated upstream
    group_type = _type_name(getattr(desc, "type", None))
    consumer = _consumer_group(desc, group) if group_type == "consumer" else None
    header = f"group [bold]{group}[/bold]  type [bold]{group_type}[/bold]  state [bold]{_state_name(desc.state)}[/bold]  "
    if consumer is not None:
        header += f"group epoch {consumer.group_epoch}  assignment epoch {consumer.assignment_epoch}  "
    _console().print(header + f"assignor {(consumer.assignor_name if consumer else desc.partition_assignor) or '-'}  "
                     f"members {len(desc.members)}  coordinator {desc.coordinator.id if desc.coordinator else '-'}",
                     highlight=False)
    if consumer is not None:  # KIP-848: each member's epoch, current and target assignment
        members = Table("MEMBER", "EPOCH", "INSTANCE", "CLIENT", "HOST", "PARTITIONS", "TARGET")
        for cm in consumer.members:
            members.add_row(cm.member_id, str(cm.member_epoch), cm.instance_id or "-", cm.client_id, cm.client_host,
                            _parts(cm.assignment), _parts(cm.target_assignment))
    else:
        members = Table("MEMBER", "INSTANCE", "CLIENT", "HOST", "PARTITIONS")
        for m in desc.members:
            parts = ", ".join(f"{tp.topic}-{tp.partition}" for tp in (m.assignment.topic_partitions if m.assignment else []))
            members.add_row(m.member_id, m.group_instance_id or "-", m.client_id, m.host, parts or "-")
    if desc.members or (consumer is not None and consumer.members):
        _console().print(members)
    offsets = Table("TOPIC", "PARTITION", "COMMITTED", "LOG END", "LAG", "MEMBER")
    total = 0
    for t, p in tps:
        end = ends.get((t, p), -1)
        done = committed.get((t, p))
        lag = end - done if done is not None and end >= 0 else None
        total += lag or 0
        m = owner.get((t, p))
        offsets.add_row(t, str(p), "-" if done is None else str(done), str(end),
                        "-" if lag is None else str(lag), m.member_id if m else "-")
    _console().print(offsets)
    _console().print(f"total lag {total}", highlight=False)


def _type_name(group_type: Any) -> str:
    name = getattr(group_type, "name", None) or "classic"
    return "classic" if name == "UNKNOWN" else name.lower()


def _parts(assignment: Any) -> str:
    return " ".join(f"{t.topic_name}[{','.join(str(p) for p in sorted(t.partitions))}]"
                    for t in assignment.topic_partitions if t.partitions) or "-"


def _consumer_group(desc: Any, group: str) -> Any:
    """ConsumerGroupDescribe (KIP-848) from the group's coordinator: member epochs and target
    assignments, which the AdminClient's description leaves out. None if it cannot be had."""
    from odradek.cli.common import Client

    node = desc.coordinator
    if node is None or _State.admin is None:
        return None
    client = Client(f"{node.host}:{node.port}", _State.admin.properties)
    resp = client.call(69, 0, {"group_ids": [group], "include_authorized_operations": False},
                       f"describing consumer group {group}")
    found = [g for g in resp.groups if g.group_id == group and g.error_code == 0]
    return found[0] if found else None


# -- KIP-932 share groups: librdkafka neither describes them nor tells their type -----------------


def _share_group_ids(admin: Any) -> dict[str, str]:
    """The share groups of every broker's coordinator and their states (ListGroups v5, type "share")."""
    from odradek.cli.common import Client

    if _State.admin is None:
        return {}
    brokers = _result_of(lambda: admin.list_topics(timeout=TIMEOUT_S).brokers.values(), "listing brokers")
    found: dict[str, str] = {}
    for b in brokers:
        resp = Client(f"{b.host}:{b.port}", _State.admin.properties).call(
            16, 5, {"states_filter": [], "types_filter": ["share"]}, "listing share groups")
        found.update((g.group_id, g.group_state) for g in resp.groups if g.group_type == "share")
    return found


def _result_of(call: Any, what: str) -> Any:
    from confluent_kafka import KafkaException

    try:
        return call()
    except KafkaException as exc:
        _fail(f"{what} failed: {exc}")


def _describe_share_group(admin: Any, group: str) -> None:
    """Members and their partitions (ShareGroupDescribe), and per partition the share-partition
    start offset and the records not yet delivered for good (DescribeShareGroupOffsets v1)."""
    from odradek.cli.common import Client

    assert _State.admin is not None
    found = _State.admin.call(10, 4, {"key_type": 0, "coordinator_keys": [group]}, f"finding the coordinator of {group}")
    node = found.coordinators[0]
    if node.error_code != 0:
        _fail(f"finding the coordinator of {group} failed: {node.error_code.name}")
    client = Client(f"{node.host}:{node.port}", _State.admin.properties)
    resp = client.call(77, 1, {"group_ids": [group], "include_authorized_operations": False},
                       f"describing share group {group}")
    g = resp.groups[0]
    if g.error_code != 0:
        _fail(f"describing share group {group} failed: {g.error_code.name}")
    _console().print(f"group [bold]{group}[/bold]  type [bold]share[/bold]  state [bold]{g.group_state}[/bold]  "
                     f"group epoch {g.group_epoch}  assignment epoch {g.assignment_epoch}  assignor {g.assignor_name}  "
                     f"members {len(g.members)}  coordinator {node.node_id}", highlight=False)
    if g.members:
        members = Table("MEMBER", "EPOCH", "CLIENT", "HOST", "PARTITIONS")
        for m in g.members:
            members.add_row(m.member_id, str(m.member_epoch), m.client_id, m.client_host, _parts(m.assignment))
        _console().print(members)
    offsets = client.call(90, 1, {"groups": [{"group_id": group, "topics": None}]},
                          f"reading the share group offsets of {group}").groups[0]
    table = Table("TOPIC", "PARTITION", "START OFFSET", "LAG")
    total = 0
    for t in sorted(offsets.topics, key=lambda t: t.topic_name):
        for p in sorted(t.partitions, key=lambda p: p.partition_index):
            total += max(p.lag, 0)
            table.add_row(t.topic_name, str(p.partition_index), str(p.start_offset), "-" if p.lag < 0 else str(p.lag))
    _console().print(table)
    _console().print(f"total lag {total}", highlight=False)


@group_app.command("delete")
def delete(group: str) -> None:
    """Delete an empty group and its committed offsets."""
    admin = _admin()
    _result(admin.delete_consumer_groups([group], request_timeout=TIMEOUT_S)[group], f"deleting group {group}")
    _console().print(f"deleted group {group}", highlight=False)


def _parse_datetime(value: str) -> int:
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        _fail(f"{value!r} is not an ISO date-time such as 2024-05-01T12:00:00")
    if when.tzinfo is None:
        when = when.astimezone()  # a naive time means local time, as Kafka's tool reads it
    return int(when.timestamp() * 1000)


@group_app.command("reset-offsets")
def reset_offsets(
    group: str,
    topic: Annotated[str, typer.Option("--topic", help="The topic whose offsets to reset.")],
    to_earliest: Annotated[bool, typer.Option("--to-earliest")] = False,
    to_latest: Annotated[bool, typer.Option("--to-latest")] = False,
    to_offset: Annotated[int | None, typer.Option("--to-offset")] = None,
    to_datetime: Annotated[str | None, typer.Option("--to-datetime", help="ISO date-time; the first offset at or after it.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the new offsets without committing them.")] = False,
) -> None:
    """Move a group's committed offsets on one topic (only while the group has no members)."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
    from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]  # re-exported without __all__

    chosen = [to_earliest, to_latest, to_offset is not None, to_datetime is not None]
    if sum(chosen) != 1:
        _fail("give exactly one of --to-earliest, --to-latest, --to-offset N, --to-datetime ISO")
    admin = _admin()
    desc = _describe(admin, group)
    if desc.members:
        _fail(f"group {group} has {len(desc.members)} active member(s); stop its consumers before resetting offsets")
    tps = [(topic, p) for p in _partitions(admin, topic)]
    # confluent_kafka leaves OffsetSpec's earliest() and latest() unannotated
    earliest = _list_offsets(admin, tps, OffsetSpec.earliest())  # type: ignore[no-untyped-call]
    latest = _list_offsets(admin, tps, OffsetSpec.latest())  # type: ignore[no-untyped-call]
    if to_earliest:
        target = earliest
    elif to_latest:
        target = latest
    elif to_offset is not None:  # clamp into the log, as kafka-consumer-groups.sh does
        target = {tp: min(max(to_offset, earliest[tp]), latest[tp]) for tp in tps}
    else:
        found = _list_offsets(admin, tps, OffsetSpec.for_timestamp(_parse_datetime(to_datetime or "")))
        target = {tp: found[tp] if found[tp] >= 0 else latest[tp] for tp in tps}
    current = _committed(admin, group)
    table = Table("TOPIC", "PARTITION", "CURRENT", "NEW")
    for t, p in tps:
        old = current.get((t, p))
        table.add_row(t, str(p), "-" if old is None else str(old), str(target[(t, p)]))
    _console().print(table)
    if dry_run:
        _console().print("dry run: nothing committed", highlight=False)
        return
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p, target[(t, p)]) for t, p in tps])
    result = _result(admin.alter_consumer_group_offsets([request], request_timeout=TIMEOUT_S)[group],
                     f"committing the new offsets of {group}")
    for tp in result.topic_partitions or []:
        if tp.error is not None:
            _fail(f"{tp.topic}-{tp.partition}: {tp.error.str()}")
    _console().print(f"reset {len(tps)} partition(s) of {topic} for group {group}", highlight=False)
