"""The message browser and the produce form.

A page is read by the session's consumer, assigned (never subscribed) to the partitions
asked for from the offsets `browse.plan_starts` chose, until it holds `limit` records,
has scanned MAX_SCAN, has reached each partition's log end offset as it was when the page
began, or has run PAGE_BUDGET_S. The answer carries the cursor of the next page and of
the one before, so the page moves through a partition of any size a page at a time.
Following a topic is asking for the next page again and again; when the topic runs ahead
by more than a page the follower jumps to its newest records and says how many it skipped.
"""

from __future__ import annotations

import math
import time
from typing import Any

from odradek.cli.common import TIMEOUT_S
from odradek.console import browse
from odradek.console.browse import BrowseError, Watermarks
from odradek.console.session import ConsoleError, Session
from odradek.console.topics import watermarks

PAGE_BUDGET_S = 5.0
POLL_S = 0.1


def _partition_ids(session: Session, topic: str) -> list[int]:
    from confluent_kafka import TopicCollection

    futures = session.admin().describe_topics(TopicCollection([topic]), request_timeout=TIMEOUT_S)
    return sorted(p.id for p in session.wait(futures[topic], f"cannot read topic {topic}").partitions)


def _by_time(session: Session, topic: str, partitions: list[int], ms: int) -> dict[int, int]:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]  # re-exported without __all__

    futures = session.admin().list_offsets({TopicPartition(topic, p): OffsetSpec.for_timestamp(ms)
                                            for p in partitions}, request_timeout=TIMEOUT_S)
    return {tp.partition: int(session.wait(f, f"cannot find offsets of {topic} by time").offset)
            for tp, f in futures.items()}


def page(session: Session, topic: str, partition: int | None, start: str, value: str, limit: int,
         fmt: str, needle: str, where: str, cursor: str, follow: bool) -> dict[str, Any]:
    """One page of records (see the module docstring)."""
    try:
        limit = max(1, min(int(limit), browse.MAX_LIMIT))
        all_ids = _partition_ids(session, topic)
        if partition is not None and partition not in all_ids:
            raise BrowseError(f"topic {topic} has no partition {partition} (it has {len(all_ids)})")
        ids = all_ids if partition is None else [partition]
        marks = {tp[1]: m for tp, m in watermarks(session, [(topic, p) for p in ids]).items()}
        skipped = 0
        if cursor:
            starts = {p: browse.clamp(o, marks[p]) for p, o in browse.parse_cursor(cursor).items() if p in marks}
            if follow:  # a follower that fell behind jumps to the newest records
                share = max(1, math.ceil(limit / len(marks)))
                for p, o in list(starts.items()):
                    if marks[p].high - o > share:
                        skipped += marks[p].high - share - o
                        starts[p] = marks[p].high - share
        elif start == "timestamp":
            starts = browse.plan_starts(start, marks, limit,
                                        by_time=_by_time(session, topic, ids, browse.parse_timestamp(value)))
        elif start == "offset":
            if not value.strip().isdigit():
                raise BrowseError(f"the offset to start at must be a whole number, not {value!r}")
            starts = browse.plan_starts(start, marks, limit, int(value))
        else:
            starts = browse.plan_starts(start, marks, limit)
        browse.render(None, fmt)  # an unknown format is refused before reading
    except BrowseError as exc:
        raise ConsoleError(str(exc)) from None
    records, after, scanned = _read(session, topic, starts, marks, limit, needle, where)
    rows = []
    for msg in records:
        ts_type, ts = msg.timestamp()
        rows.append({
            "partition": msg.partition(), "offset": msg.offset(), "timestamp": ts if ts_type else None,
            "key": browse.render(msg.key(), fmt), "value": browse.render(msg.value(), fmt),
            "headers": [{"key": k, "value": browse.render(v, "text")} for k, v in (msg.headers() or [])],
        })
    rows.sort(key=lambda r: (r["timestamp"] or 0, r["partition"], r["offset"]) if partition is None
              else (r["offset"],))
    at_end = all(after[p] >= marks[p].high for p in marks)
    return {
        "topic": topic, "partitions": ids, "records": rows, "scanned": scanned, "skipped": skipped,
        "watermarks": {str(p): {"low": m.low, "high": m.high} for p, m in marks.items()},
        "cursor": browse.format_cursor(starts), "next": browse.format_cursor(after), "at_end": at_end,
        "previous": browse.format_cursor(browse.older_starts(starts, marks, limit)),
        "at_start": all(starts[p] <= marks[p].low for p in starts),
    }


def _read(session: Session, topic: str, starts: dict[int, int], marks: dict[int, Watermarks], limit: int,
          needle: str, where: str) -> tuple[list[Any], dict[int, int], int]:
    """The records of one page, the offset after the last one examined per partition, and how many
    were scanned. Only records below each partition's end offset at the start are read."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    after = dict(starts)
    pending = {p for p, o in starts.items() if o < marks[p].high}
    kept: list[Any] = []
    scanned = 0
    if not pending:
        return kept, after, scanned
    with session.browse_lock:
        consumer = session.browser()
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in sorted(pending)])
        deadline = time.monotonic() + PAGE_BUDGET_S
        try:
            while pending and len(kept) < limit and scanned < browse.MAX_SCAN and time.monotonic() < deadline:
                # consume() waits until it has as many as asked (or POLL_S): ask for no more than is left
                left = sum(marks[p].high - after[p] for p in pending)
                wanted = min(500, browse.MAX_SCAN - scanned, left, limit - len(kept) if not needle else left)
                batch = consumer.consume(max(1, wanted), POLL_S)
                for msg in batch:
                    if msg.error() is not None:
                        if msg.error().code() == KafkaError._PARTITION_EOF:  # at the high watermark
                            p = msg.partition()
                            if p in pending:  # what is left below it are markers or compacted offsets
                                after[p] = max(after[p], min(msg.offset(), marks[p].high))
                                pending.discard(p)
                            continue
                        raise session.error(KafkaException(msg.error()), f"cannot read {topic}")
                    p, offset = msg.partition(), msg.offset()
                    if p not in pending or offset < after[p]:
                        continue  # a partition already done, or a record of before a re-fetch
                    if offset >= marks[p].high:
                        pending.discard(p)
                        continue
                    after[p] = offset + 1
                    scanned += 1
                    if after[p] >= marks[p].high:
                        pending.discard(p)
                    if browse.matches(msg.key(), msg.value(), needle, where):
                        kept.append(msg)
                        if len(kept) >= limit:
                            break
        finally:
            consumer.unassign()
    return kept, after, scanned


def produce(session: Session, topic: str, partition: int | None, key: str | None, value: str | None,
            headers: list[tuple[str, str]]) -> dict[str, Any]:
    """One record, acknowledged by the cluster (the producer's acks=all default) before answering."""
    from confluent_kafka import KafkaException

    if not topic:
        raise ConsoleError("pick a topic to produce to")
    outcome: dict[str, Any] = {}

    def delivered(err: Any, msg: Any) -> None:
        outcome["error"] = err
        outcome["msg"] = msg

    producer = session.producer()
    kwargs: dict[str, Any] = {"value": None if value is None else value.encode(),
                              "key": None if key is None else key.encode(),
                              "headers": [(k, v.encode()) for k, v in headers], "on_delivery": delivered}
    if partition is not None:
        kwargs["partition"] = partition
    try:
        producer.produce(topic, **kwargs)
    except (KafkaException, BufferError) as exc:
        raise session.error(exc, f"cannot produce to {topic}") from None
    deadline = time.monotonic() + TIMEOUT_S
    while "error" not in outcome and time.monotonic() < deadline:
        producer.poll(0.1)
        failure = session.client.login_failure()
        if failure is not None:
            raise ConsoleError(f"cannot produce to {topic}: {failure}", 401)
    if "error" not in outcome:
        raise ConsoleError(f"cannot produce to {topic}: {session.client.why_unreachable()}", 502)
    if outcome["error"] is not None:
        raise session.error(KafkaException(outcome["error"]), f"cannot produce to {topic}")
    msg = outcome["msg"]
    return {"topic": topic, "partition": msg.partition(), "offset": msg.offset()}
