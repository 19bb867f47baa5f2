"""SharePartition (KIP-932): one share group's view of one topic partition.

Kafka's SharePartition keeps, between the share-partition start offset (SPSO) and end
offset (SPEO), the in-flight records and their acquisition state: AVAILABLE (may be
delivered), ACQUIRED (locked by one member until it acknowledges or its lock times out),
ACKNOWLEDGED and ARCHIVED (done). Offsets below the SPSO are all done; offsets from the
SPEO on have never been delivered. State here is per offset (a dict in offset order):
simpler than Kafka's batch ranges and plenty for a partition's in-flight window, which
`group.share.partition.max.record.locks` bounds.

The module does no I/O: the handler reads the log and hands the batch headers in; the
snapshot (share_state.py) is what goes to __share_group_state.
"""

from __future__ import annotations

import asyncio
import bisect
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from odradek.protocol.records import BatchHeader

# Kafka's RecordState ids, as ShareSnapshotValue's DeliveryState stores them.
AVAILABLE, ACQUIRED, ACKNOWLEDGED, ARCHIVED = 0, 1, 2, 4
# AcknowledgeType on the wire (ShareFetch/ShareAcknowledge AcknowledgeTypes).
GAP, ACCEPT, RELEASE, REJECT, RENEW = 0, 1, 2, 3, 4
_DONE = (ACKNOWLEDGED, ARCHIVED)


@dataclass(slots=True)
class InFlight:
    state: int
    delivery_count: int
    owner: str = ""
    lock_deadline: float = 0.0  # monotonic seconds, while ACQUIRED


@dataclass(frozen=True, slots=True)
class StateBatch:
    """ShareSnapshotValue.StateBatch: a run of offsets with one state and delivery count."""
    first_offset: int
    last_offset: int
    delivery_state: int
    delivery_count: int


class InvalidRecordState(Exception):
    """An acknowledgement of records the member does not hold (INVALID_RECORD_STATE)."""


@dataclass
class SharePartition:
    group_id: str
    topic: str
    topic_id: uuid.UUID
    partition: int
    start_offset: int
    end_offset: int = -1
    state_epoch: int = 0
    inflight: dict[int, InFlight] = field(default_factory=dict)
    dirty: bool = False
    leader_epoch: int = 0
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.end_offset = max(self.end_offset, self.start_offset)

    # -- snapshot ----------------------------------------------------------------

    @classmethod
    def from_snapshot(cls, group_id: str, topic: str, topic_id: uuid.UUID, partition: int, start_offset: int,
                      state_epoch: int, batches: Sequence[StateBatch]) -> SharePartition:
        sp = cls(group_id, topic, topic_id, partition, start_offset, state_epoch=state_epoch)
        for b in batches:
            for offset in range(max(b.first_offset, start_offset), b.last_offset + 1):
                state = AVAILABLE if b.delivery_state == ACQUIRED else b.delivery_state
                sp.inflight[offset] = InFlight(state, b.delivery_count)
            sp.end_offset = max(sp.end_offset, b.last_offset + 1)
        sp._advance()
        return sp

    def state_batches(self) -> list[StateBatch]:
        """The in-flight window as runs; an ACQUIRED record is written AVAILABLE, as Kafka's
        persister does: after a restart its lock is gone and it is delivered again."""
        out: list[StateBatch] = []
        for offset, rec in self.inflight.items():
            state = AVAILABLE if rec.state == ACQUIRED else rec.state
            last = out[-1] if out else None
            if (last is not None and last.last_offset + 1 == offset and last.delivery_state == state
                    and last.delivery_count == rec.delivery_count):
                out[-1] = StateBatch(last.first_offset, offset, state, rec.delivery_count)
            else:
                out.append(StateBatch(offset, offset, state, rec.delivery_count))
        return out

    # -- acquisition -------------------------------------------------------------

    def fetch_offset(self) -> int:
        """Where the next read starts: the first AVAILABLE in-flight record, else the SPEO."""
        for offset, rec in self.inflight.items():
            if rec.state == AVAILABLE:
                return offset
        return self.end_offset

    def has_available(self) -> bool:
        return any(rec.state == AVAILABLE for rec in self.inflight.values())

    def acquire(self, batches: Iterable[BatchHeader], aborted_txns: Sequence[tuple[int, int]], member: str,
                max_records: int,
                max_locks: int, lock_s: float, now: float) -> tuple[list[tuple[int, int, int]], int]:
        """Acquire for `member` the deliverable offsets of `batches` (in log order): AVAILABLE
        in-flight records and new ones from the SPEO on, at most `max_records`. Records of
        control batches and of aborted transactions (`aborted_txns`: producer id and first
        offset, as a read_committed fetch gets them) are archived, never delivered. Returns the acquired runs (first, last, delivery count) and the offset
        after the last batch that holds an acquired record (0 when none)."""
        runs: list[tuple[int, int, int]] = []
        count = 0
        covered = 0
        deadline = now + lock_s
        pending = sorted(aborted_txns, key=lambda t: t[1])
        aborted: set[int] = set()
        for batch in batches:
            while pending and pending[0][1] <= batch.last_offset:
                aborted.add(pending.pop(0)[0])
            skip = batch.is_control or (batch.is_transactional and batch.producer_id in aborted)
            if batch.is_control:
                aborted.discard(batch.producer_id)  # the ABORT marker ends that transaction
            for offset in range(max(batch.base_offset, self.start_offset), batch.last_offset + 1):
                if count >= max_records:
                    return runs, covered
                rec = self.inflight.get(offset)
                if rec is None:
                    if offset < self.end_offset:
                        continue  # below the SPEO and not in flight: done already
                    if offset - self.start_offset >= max_locks:
                        return runs, covered
                    self.end_offset = offset + 1
                    if skip:
                        self.inflight[offset] = InFlight(ARCHIVED, 0)
                        self.dirty = True
                        continue
                    rec = self.inflight[offset] = InFlight(AVAILABLE, 0)
                elif rec.state != AVAILABLE:
                    continue
                elif skip:
                    rec.state = ARCHIVED
                    self.dirty = True
                    continue
                rec.state = ACQUIRED
                rec.delivery_count += 1
                rec.owner = member
                rec.lock_deadline = deadline
                count += 1
                covered = batch.next_offset
                if runs and runs[-1][1] + 1 == offset and runs[-1][2] == rec.delivery_count:
                    runs[-1] = (runs[-1][0], offset, rec.delivery_count)
                else:
                    runs.append((offset, offset, rec.delivery_count))
            self.end_offset = max(self.end_offset, batch.next_offset)
        self._advance()
        return runs, covered

    # -- acknowledgement ---------------------------------------------------------

    def acknowledge(self, member: str, first: int, last: int, types: Sequence[int], lock_s: float,
                    limit: int, now: float) -> bool:
        """Apply one acknowledgement batch (one type for the range, or one per offset); raises
        InvalidRecordState, changing nothing, unless every offset is ACQUIRED by `member` (or a
        GAP already done). True when a record became AVAILABLE again."""
        if last < first or (len(types) != 1 and len(types) != last - first + 1):
            raise InvalidRecordState(f"acknowledgement batch {first}-{last} with {len(types)} types")
        if len(types) == 1 and last - first >= len(self.inflight):
            # one type for a range wider than what is in flight (a request may claim 2**63 offsets):
            # some offset of it is not acquired, which only a GAP may say; visit those in flight
            if types[0] != GAP:
                raise InvalidRecordState(f"acknowledgement batch {first}-{last}: not every offset is acquired")
            offsets: Iterable[int] = [o for o in self.inflight if first <= o <= last]
        else:
            offsets = range(first, last + 1)  # at most one a type the request carried, or what is in flight
        for offset in offsets:
            kind = types[0] if len(types) == 1 else types[offset - first]
            rec = self.inflight.get(offset)
            if kind == GAP and (rec is None or rec.state in _DONE):
                continue
            if rec is None or rec.state != ACQUIRED or rec.owner != member:
                raise InvalidRecordState(f"offset {offset} is not acquired by this member")
        released = False
        for offset in offsets:
            kind = types[0] if len(types) == 1 else types[offset - first]
            rec = self.inflight.get(offset)
            if rec is None or rec.state != ACQUIRED:
                continue
            if kind == RENEW:  # KIP-1222: the member keeps the record for another lock duration
                rec.lock_deadline = now + lock_s
                continue
            if kind == ACCEPT:
                rec.state = ACKNOWLEDGED
            elif kind in (REJECT, GAP):
                rec.state = ARCHIVED
            elif kind == RELEASE:
                released |= self._release(rec, limit)
            else:
                raise InvalidRecordState(f"unknown acknowledge type {kind}")
            rec.owner = ""
            self.dirty = True
        self._advance()
        return released

    def checkpoint(self, ranges: Sequence[tuple[int, int]]) -> tuple[int, dict[int, InFlight]]:
        """What `rollback` needs to undo acknowledgements of the offset ranges (first, last):
        the in-flight records in them (a range may claim far more offsets than are in flight)."""
        held = sorted(self.inflight)
        return self.start_offset, {o: replace(self.inflight[o]) for first, last in ranges
                                   for o in held[bisect.bisect_left(held, first):bisect.bisect_right(held, last)]}

    def rollback(self, saved: tuple[int, dict[int, InFlight]]) -> None:
        """Undo acknowledgements whose state could not be written (Kafka's SharePartition rolls
        back on a persister error): the records stay acquired, and come back when their lock ends."""
        start, records = saved
        self.start_offset = min(self.start_offset, start)
        self.inflight = dict(sorted({**self.inflight, **records}.items()))

    def _release(self, rec: InFlight, limit: int) -> bool:
        """A released or timed-out record is delivered again, unless it reached
        group.share.delivery.count.limit: then it is archived (a poison record)."""
        rec.owner = ""
        if rec.delivery_count >= limit:
            rec.state = ARCHIVED
            return False
        rec.state = AVAILABLE
        return True

    def release_member(self, member: str, limit: int) -> bool:
        """A member left or closed its share session: its records go back (Kafka's
        releaseAcquiredRecords). True when some became AVAILABLE."""
        released = False
        for rec in self.inflight.values():
            if rec.state == ACQUIRED and rec.owner == member:
                released |= self._release(rec, limit)
                self.dirty = True
        self._advance()
        return released

    def expire_locks(self, now: float, limit: int) -> bool:
        """Acquisition locks past their deadline (group.share.record.lock.duration.ms)."""
        released = False
        expired = False
        for rec in self.inflight.values():
            if rec.state == ACQUIRED and rec.lock_deadline <= now:
                released |= self._release(rec, limit)
                expired = True
        if expired:
            self.dirty = True
            self._advance()
        return released

    def acquired_count(self) -> int:
        return sum(1 for rec in self.inflight.values() if rec.state == ACQUIRED)

    def _advance(self) -> None:
        """The SPSO moves past every leading record that is done."""
        while self.start_offset < self.end_offset:
            rec = self.inflight.get(self.start_offset)
            if rec is not None and rec.state not in _DONE:
                break
            self.inflight.pop(self.start_offset, None)
            self.start_offset += 1

    # -- admin -------------------------------------------------------------------

    def reset(self, start_offset: int) -> None:
        """AlterShareGroupOffsets: a new SPSO, nothing in flight, a new state epoch."""
        self.start_offset = self.end_offset = start_offset
        self.inflight.clear()
        self.state_epoch += 1
        self.dirty = True

    def completed_in_flight(self) -> int:
        """Records past the SPSO already done: they count out of the lag."""
        return sum(1 for rec in self.inflight.values() if rec.state in _DONE)
