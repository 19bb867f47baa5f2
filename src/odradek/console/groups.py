"""The consumer groups pages: state, protocol, members and their assignments, lag, and
offset resets that show their preview before they are committed.

A reset is asked twice: first without `execute`, which answers the current and new
offset of every partition and commits nothing; then with `execute`, which computes the
same targets again and commits them (OffsetCommit through AlterConsumerGroupOffsets).
As kafka-consumer-groups.sh, it is refused while the group has members.
"""

from __future__ import annotations

from typing import Any

from odradek.cli.common import TIMEOUT_S
from odradek.cli.group import _state_name as state_name
from odradek.console import browse
from odradek.console.browse import BrowseError
from odradek.console.session import ConsoleError, Session
from odradek.console.topics import watermarks

RESET_MODES = ("earliest", "latest", "offset", "timestamp")


def list_groups(session: Session) -> list[dict[str, Any]]:
    listed = session.wait(session.admin().list_consumer_groups(request_timeout=TIMEOUT_S), "cannot list groups")
    return [{"group": g.group_id, "state": state_name(g.state),
             "type": getattr(getattr(g, "type", None), "name", "CLASSIC").lower(),
             "simple": g.is_simple_consumer_group}
            for g in sorted(listed.valid, key=lambda g: g.group_id)]


def _describe(session: Session, group: str) -> Any:
    futures = session.admin().describe_consumer_groups([group], request_timeout=TIMEOUT_S)
    return session.wait(futures[group], f"cannot describe group {group}")


def _committed(session: Session, group: str) -> dict[tuple[str, int], int]:
    from confluent_kafka import ConsumerGroupTopicPartitions

    futures = session.admin().list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                                          request_timeout=TIMEOUT_S)
    result = session.wait(futures[group], f"cannot read the committed offsets of {group}")
    return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions or [] if tp.offset >= 0}


def describe_group(session: Session, group: str) -> dict[str, Any]:
    desc = _describe(session, group)
    committed = _committed(session, group)
    owner: dict[tuple[str, int], str] = {}
    members = []
    for m in desc.members:
        tps = m.assignment.topic_partitions if m.assignment else []
        for tp in tps:
            owner[(tp.topic, tp.partition)] = m.member_id
        members.append({"member_id": m.member_id, "instance_id": m.group_instance_id, "client_id": m.client_id,
                        "host": m.host, "assignment": [f"{tp.topic}-{tp.partition}" for tp in tps]})
    tps = sorted(set(committed) | set(owner))
    ends = watermarks(session, tps)
    rows = []
    for tp in tps:
        lag = browse.lag(committed.get(tp), ends[tp].high)
        rows.append({"topic": tp[0], "partition": tp[1], "committed": committed.get(tp),
                     "log_end_offset": ends[tp].high, "lag": lag, "member": owner.get(tp)})
    return {
        "group": group, "state": state_name(desc.state), "protocol": desc.partition_assignor or None,
        "type": getattr(getattr(desc, "type", None), "name", "CLASSIC").lower(),
        "coordinator": desc.coordinator.id if desc.coordinator is not None else None,
        "members": members, "offsets": rows, "total_lag": sum(r["lag"] or 0 for r in rows),
    }


def delete_group(session: Session, group: str) -> None:
    futures = session.admin().delete_consumer_groups([group], request_timeout=TIMEOUT_S)
    session.wait(futures[group], f"cannot delete group {group}")


def reset_offsets(session: Session, group: str, topic: str, mode: str, value: str,
                  execute: bool) -> dict[str, Any]:
    """The preview of a reset of `group` on `topic` and, with `execute`, the reset itself."""
    from confluent_kafka import ConsumerGroupTopicPartitions, TopicCollection, TopicPartition
    from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]  # re-exported without __all__

    if mode not in RESET_MODES:
        raise ConsoleError(f"reset to must be one of {', '.join(RESET_MODES)}, not {mode!r}")
    if not topic:
        raise ConsoleError("pick the topic whose offsets to reset")
    desc = _describe(session, group)
    if desc.members and execute:
        raise ConsoleError(f"group {group} has {len(desc.members)} active member(s); stop its consumers "
                           "before resetting offsets")
    futures = session.admin().describe_topics(TopicCollection([topic]), request_timeout=TIMEOUT_S)
    partitions = sorted(p.id for p in session.wait(futures[topic], f"cannot read topic {topic}").partitions)
    tps = [(topic, p) for p in partitions]
    marks = watermarks(session, tps)
    by_time: dict[tuple[str, int], int] = {}
    number: int | None = None
    try:
        if mode == "timestamp":
            ms = browse.parse_timestamp(value)
            found = session.admin().list_offsets({TopicPartition(t, p): OffsetSpec.for_timestamp(ms) for t, p in tps},
                                                 request_timeout=TIMEOUT_S)
            by_time = {(tp.topic, tp.partition): int(session.wait(f, "cannot find offsets by time").offset)
                       for tp, f in found.items()}
        elif mode == "offset":
            if not value.strip().lstrip("-").isdigit():
                raise BrowseError(f"the offset to reset to must be a whole number, not {value!r}")
            number = int(value)
        targets = {tp: browse.reset_target(mode, marks[tp], number, by_time.get(tp)) for tp in tps}
    except BrowseError as exc:
        raise ConsoleError(str(exc)) from None
    current = _committed(session, group)
    preview = [{"topic": t, "partition": p, "current": current.get((t, p)), "new": targets[(t, p)],
                "log_start_offset": marks[(t, p)].low, "log_end_offset": marks[(t, p)].high} for t, p in tps]
    if not execute:
        return {"group": group, "topic": topic, "executed": False, "preview": preview,
                "members": len(desc.members)}
    request = ConsumerGroupTopicPartitions(group, [TopicPartition(t, p, targets[(t, p)]) for t, p in tps])
    result = session.wait(session.admin().alter_consumer_group_offsets([request], request_timeout=TIMEOUT_S)[group],
                          f"cannot commit the new offsets of {group}")
    for tp in result.topic_partitions or []:
        if tp.error is not None:
            raise ConsoleError(f"cannot reset {tp.topic}-{tp.partition} of {group}: {tp.error.str()}")
    return {"group": group, "topic": topic, "executed": True, "preview": preview, "members": 0}
