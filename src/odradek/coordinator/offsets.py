"""Committed offsets: OffsetCommit/OffsetFetch/OffsetDelete rules, replay, expiry.

A commit is validated against the group (generation, member, static instance)
as Kafka does, written to __consumer_offsets, and answered and made visible to
OffsetFetch only once every in-sync replica holds it (Kafka's
offsets.commit.required.acks=-1, offsets.commit.timeout.ms): a commit answered
NONE survives the coordinator's failover, as the next leader of the group's
partition replays it. On start the topic is replayed; every
offsets.retention.check.interval.ms the offsets of groups that have been Empty
for offsets.retention.minutes are deleted with tombstones (KIP-211).

Offsets sent in a transaction (TxnOffsetCommit) are written as a transactional
batch and stay pending per producer until the transaction's marker reaches the
group's partition: COMMIT makes them the group's offsets, ABORT drops them. A
replay applies them at their marker, and OffsetFetch with require_stable answers
UNSTABLE_OFFSET_COMMIT for a partition that still has pending offsets (KIP-447).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kio.schema.errors import ErrorCode

from odradek.coordinator.consumer_coordinator import (
    ConsumerGroupMixin,
    finish_replay,
    is_consumer_record,
    replay_consumer_record,
)
from odradek.coordinator.consumer_group import ConsumerGroup
from odradek.coordinator.group import Group, GroupState, Member
from odradek.coordinator.records import (
    GroupKey,
    OffsetKey,
    OffsetValue,
    RecordFormatError,
    group_key,
    offset_key,
    offset_value,
    read_group_value,
    read_key,
    read_offset_value,
    subscribed_topics,
)
from odradek.protocol.records import CONTROL_COMMIT

if TYPE_CHECKING:
    from odradek.coordinator.store import OffsetsStore
    from odradek.server.broker import Broker

log = logging.getLogger("odradek.coordinator")

E = ErrorCode
OFFSET_METADATA_MAX_BYTES = 4096  # offset.metadata.max.bytes


@dataclass(frozen=True, slots=True)
class Commit:
    topic: str
    partition: int
    offset: int
    leader_epoch: int
    metadata: str | None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class OffsetsMixin:
    """The offset half of GroupCoordinator (which supplies these attributes)."""

    broker: Broker
    store: OffsetsStore
    groups: dict[str, Group]
    # producer id -> group -> (topic, partition) -> offset, until the transaction ends
    txn_offsets: dict[int, dict[str, dict[tuple[str, int], OffsetValue]]]

    def group_error(self, group_id: str) -> ErrorCode | None: ...  # provided by GroupCoordinator

    def _schedule_heartbeat(self, group: Group, member: Member) -> None: ...  # provided by GroupCoordinator

    # -- OffsetCommit --------------------------------------------------------------

    def offset_keys(self, group: Group, tps: list[tuple[str, int]]) -> list[bytes]:
        return [offset_key(group.group_id, t, p) for t, p in tps]

    def _validate_commit(self, group: Group | None, generation: int, member_id: str,
                         instance_id: str | None) -> ErrorCode | None:
        if group is None:
            # a group unknown to the coordinator may only commit outside group management
            return E.illegal_generation if generation >= 0 else None
        if group.is_in(GroupState.DEAD):
            return E.coordinator_not_available
        if isinstance(group, ConsumerGroup):
            return consumer_commit_error(group, generation, member_id)
        if generation < 0 and group.is_in(GroupState.EMPTY):
            return None  # simple consumers and admin tools commit with generation -1
        if group.is_in(GroupState.COMPLETING_REBALANCE):
            return E.rebalance_in_progress
        if instance_id is not None:
            owner = group.static_members.get(instance_id)
            if owner is not None and owner != member_id:
                return E.fenced_instance_id
        if member_id not in group.members:
            return E.unknown_member_id
        if generation != group.generation:
            return E.illegal_generation
        return None

    def _accept(self, commits: list[Commit], now: int) -> tuple[list[ErrorCode], list[tuple[Commit, OffsetValue]]]:
        """Per commit: the partition must exist and the metadata fit offset.metadata.max.bytes."""
        topics = self.broker.topics()
        results: list[ErrorCode] = []
        accepted: list[tuple[Commit, OffsetValue]] = []
        for c in commits:
            topic = topics.get(c.topic)
            if topic is None or not 0 <= c.partition < topic.partitions:
                results.append(E.unknown_topic_or_partition)
            elif c.metadata is not None and len(c.metadata.encode()) > OFFSET_METADATA_MAX_BYTES:
                results.append(E.offset_metadata_too_large)
            else:
                results.append(E.none)
                accepted.append((c, OffsetValue(c.offset, c.leader_epoch, c.metadata or "", now)))
        return results, accepted

    @property
    def commit_timeout_ms(self) -> int:
        return self.store.commit_timeout_ms

    async def _write_replicated(self, group_id: str, records: list[tuple[bytes, bytes | None]], *,
                                producer_id: int = -1, producer_epoch: int = -1,
                                refuse_below_min_isr: bool = True) -> tuple[ErrorCode, int]:
        """Append to the group's partition as Kafka's coordinator does (acks=-1): refused while
        its ISR is below min.insync.replicas, answered once every in-sync replica holds the records
        (store.write_replicated). (error as Kafka's coordinators answer it, the log end offset just
        after the records).

        Issue 18 (the fault campaign): commits were answered once the coordinator had
        appended them; a coordinator cut from its followers a moment later acknowledged
        commits that the next leader of the partition never had, and OffsetFetch read the
        group's offsets 2-3 s later lower than acknowledged ones."""
        return await self.store.write_replicated(group_id, records, self.commit_timeout_ms, producer_id=producer_id,
                                                 producer_epoch=producer_epoch,
                                                 refuse_below_min_isr=refuse_below_min_isr)

    def _validate_offset_commit(self, group_id: str, generation: int, member_id: str, instance_id: str | None,
                                commits: list[Commit]) -> tuple[list[ErrorCode], list[tuple[Commit, OffsetValue]]]:
        """OffsetCommit's checks: one error per commit, and the commits to write."""
        error = self.group_error(group_id)
        if error is None:
            error = self._validate_commit(self.groups.get(group_id), generation, member_id, instance_id)
        if error is not None:
            return [error] * len(commits), []
        return self._accept(commits, _now_ms())

    def _apply_offset_commit(self, group_id: str, member_id: str, results: list[ErrorCode],
                             accepted: list[tuple[Commit, OffsetValue]], written: ErrorCode,
                             position: int) -> list[ErrorCode]:
        """The written commits become the group's offsets (visible to OffsetFetch)."""
        if written != E.none:
            return [written if r == E.none else r for r in results]
        group = self.groups.get(group_id)  # may be another object than at validation (a conversion)
        if group is None:
            group = self.groups[group_id] = Group(group_id, _now_ms())
        for c, v in accepted:
            # commits of one partition become visible in log order, whichever replicated wait ends first
            if position > group.offset_positions.get((c.topic, c.partition), -1):
                group.offsets[(c.topic, c.partition)] = v
                group.offset_positions[(c.topic, c.partition)] = position
        member = group.members.get(member_id)
        if member is not None:
            self._schedule_heartbeat(group, member)
        return results

    async def commit_replicated(self, group_id: str, generation: int, member_id: str, instance_id: str | None,
                                commits: list[Commit]) -> list[ErrorCode]:
        """OffsetCommit: one error per commit, in order; NONE only once the ISR holds the commit."""
        results, accepted = self._validate_offset_commit(group_id, generation, member_id, instance_id, commits)
        if not accepted:
            return results
        written, position = await self._write_replicated(
            group_id, [(offset_key(group_id, c.topic, c.partition), offset_value(v)) for c, v in accepted])
        if written == E.none:
            written = self.group_error(group_id) or E.none  # the partition moved while the ISR caught up
        return self._apply_offset_commit(group_id, member_id, results, accepted, written, position)

    # -- TxnOffsetCommit -------------------------------------------------------------

    def _validate_txn_commit(self, group_id: str, generation: int, member_id: str, instance_id: str | None,
                             commits: list[Commit]) -> tuple[list[ErrorCode], list[tuple[Commit, OffsetValue]]]:
        error = self.group_error(group_id)
        group = self.groups.get(group_id)
        if error is None and group is not None:
            if group.is_in(GroupState.DEAD):
                error = E.coordinator_not_available
            elif isinstance(group, ConsumerGroup):
                error = consumer_commit_error(group, generation, member_id, E.illegal_generation)
            elif instance_id is not None and group.static_members.get(instance_id, member_id) != member_id:
                error = E.fenced_instance_id
            elif member_id and member_id not in group.members:
                error = E.unknown_member_id
            elif generation >= 0 and generation != group.generation:
                error = E.illegal_generation
        if error is not None:
            return [error] * len(commits), []
        return self._accept(commits, _now_ms())

    def _pend_txn_commit(self, group_id: str, producer_id: int, results: list[ErrorCode],
                         accepted: list[tuple[Commit, OffsetValue]], written: ErrorCode) -> list[ErrorCode]:
        if written != E.none:
            return [written if r == E.none else r for r in results]
        if group_id not in self.groups:
            self.groups[group_id] = Group(group_id, _now_ms())
        pending = self.txn_offsets.setdefault(producer_id, {}).setdefault(group_id, {})
        for c, v in accepted:
            pending[(c.topic, c.partition)] = v
        return results

    async def txn_commit_replicated(self, group_id: str, producer_id: int, producer_epoch: int, generation: int,
                                    member_id: str, instance_id: str | None,
                                    commits: list[Commit]) -> list[ErrorCode]:
        """TxnOffsetCommit: offsets written (and replicated) now, visible when the transaction commits."""
        results, accepted = self._validate_txn_commit(group_id, generation, member_id, instance_id, commits)
        if not accepted:
            return results
        written, _ = await self._write_replicated(
            group_id, [(offset_key(group_id, c.topic, c.partition), offset_value(v)) for c, v in accepted],
            producer_id=producer_id, producer_epoch=producer_epoch)
        if written == E.none:
            written = self.group_error(group_id) or E.none
        return self._pend_txn_commit(group_id, producer_id, results, accepted, written)

    def complete_txn(self, producer_id: int, committed: bool, offsets_partition: int) -> None:
        """A transaction marker reached __consumer_offsets-`offsets_partition`: resolve the
        producer's pending offsets of the groups stored there."""
        by_group = self.txn_offsets.get(producer_id)
        if not by_group:
            return
        for group_id in [g for g in by_group if self.store.partition_for(g) == offsets_partition]:
            offsets = by_group.pop(group_id)
            group = self.groups.get(group_id)
            if committed and group is not None:
                group.offsets.update(offsets)
        if not by_group:
            del self.txn_offsets[producer_id]

    def unstable_partitions(self, group_id: str) -> set[tuple[str, int]]:
        return {tp for by_group in self.txn_offsets.values() for tp in by_group.get(group_id, {})}

    # -- OffsetFetch ---------------------------------------------------------------

    def offset_fetch_error(self, group_id: str, member_id: str | None, member_epoch: int) -> ErrorCode | None:
        """OffsetFetch v9+ from a member of a consumer group: Kafka's ConsumerGroup.validateOffsetFetch."""
        group = self.groups.get(group_id)
        if not isinstance(group, ConsumerGroup) or (member_epoch < 0 and not member_id):
            return None
        member = group.consumers.get(member_id or "")
        if member is None:
            return E.unknown_member_id
        return E.stale_member_epoch if member_epoch != member.member_epoch else None

    def fetch_offsets(
        self, group_id: str, wanted: list[tuple[str, list[int]]] | None
    ) -> tuple[ErrorCode, list[tuple[str, list[tuple[int, OffsetValue | None]]]]]:
        """Committed offsets (None where nothing is committed); all of the group's when wanted is None."""
        error = self.group_error(group_id)
        if error is not None:
            return error, [(t, [(p, None) for p in ps]) for t, ps in (wanted or [])]
        group = self.groups.get(group_id)
        offsets = group.offsets if group is not None else {}
        if wanted is None:
            by_topic: dict[str, list[tuple[int, OffsetValue | None]]] = {}
            for (t, p), v in sorted(offsets.items()):
                by_topic.setdefault(t, []).append((p, v))
            return E.none, list(by_topic.items())
        return E.none, [(t, [(p, offsets.get((t, p))) for p in ps]) for t, ps in wanted]

    # -- OffsetDelete ----------------------------------------------------------------

    async def delete_offsets(self, group_id: str,
                             wanted: list[tuple[str, list[int]]]) -> tuple[ErrorCode, dict[tuple[str, int], ErrorCode]]:
        """Kafka refuses to delete offsets of topics an active group is subscribed to. The tombstones
        are refused while the ISR is below min.insync.replicas (nothing deleted), the offsets go as
        they are appended, and the answer waits until the ISR holds them (a coordinator write)."""
        error = self.group_error(group_id)
        group = self.groups.get(group_id)
        if error is None and (group is None or group.is_in(GroupState.DEAD)):
            error = E.group_id_not_found
        if error is not None or group is None:
            return error or E.group_id_not_found, {}
        subscribed: set[str] = set()
        if not group.is_in(GroupState.EMPTY):
            if group.protocol_type != "consumer":
                return E.non_empty_group, {}
            for m in group.members.values():
                subscribed |= subscribed_topics(group.protocol_type or "", m.metadata(group.protocol_name))
            if isinstance(group, ConsumerGroup):  # the topics its members' subscriptions resolve to
                subscribed |= set(group.subscription_metadata)
        results: dict[tuple[str, int], ErrorCode] = {}
        doomed: dict[tuple[str, int], None] = {}  # ordered, and a partition listed twice once
        for t, ps in wanted:
            for p in ps:
                if t in subscribed:
                    results[(t, p)] = E.group_subscribed_to_topic
                else:
                    results[(t, p)] = E.none
                    if (t, p) in group.offsets:
                        doomed[(t, p)] = None
        if doomed:
            written, end = self.store.append(group_id, [(k, None) for k in self.offset_keys(group, list(doomed))])
            if written != E.none:
                return written, {}
            for tp in doomed:
                group.offsets.pop(tp, None)
                group.offset_positions[tp] = end  # a commit appended before the tombstone stays deleted
            written = await self.store.acknowledged(group_id, end, self.commit_timeout_ms)
            if written != E.none:
                return written, {}
        return E.none, results

    # -- deleted topics ----------------------------------------------------------------

    def on_topic_deleted(self, topic: str) -> int:
        """Kafka's OffsetMetadataManager.onPartitionsDeleted: the committed (and pending
        transactional) offsets of a deleted topic are tombstoned in every group coordinated
        here, so a topic created again under that name is read from auto.offset.reset, not
        from the old topic's offsets (Streams' application reset recreates its internal
        topics so). Returns how many committed offsets went."""
        removed = 0
        for group in list(self.groups.values()):
            if self.group_error(group.group_id) is not None:  # another broker coordinates it
                continue
            committed = [tp for tp in group.offsets if tp[0] == topic]
            pending = [(by_group[group.group_id], tp) for by_group in self.txn_offsets.values()
                       if group.group_id in by_group for tp in by_group[group.group_id] if tp[0] == topic]
            doomed = sorted(set(committed) | {tp for _, tp in pending})
            if not doomed:
                continue
            # appended whatever the ISR: the topic is gone already (Kafka's onPartitionsDeleted logs a failure)
            written, end = self.store.append(group.group_id, [(k, None) for k in self.offset_keys(group, doomed)],
                                             refuse_below_min_isr=False)
            if written != E.none:
                log.warning("cannot remove the offsets of deleted topic %s from group %s: %s",
                            topic, group.group_id, written.name)
                continue
            self.store.acknowledge_in_background(group.group_id, end, self.commit_timeout_ms,
                                                 f"the removal of deleted topic {topic}'s offsets")
            for tp in committed:
                del group.offsets[tp]
            for offsets, tp in pending:
                offsets.pop(tp, None)
            removed += len(committed)
        if removed:
            log.info("removed %d committed offset(s) of deleted topic %s", removed, topic)
        return removed

    # -- replay and expiry ---------------------------------------------------------------

    def load(self) -> None:
        """Rebuild groups and offsets from __consumer_offsets (latest record per key wins;
        transactional offsets at their COMMIT marker, pending while no marker follows)."""
        groups: dict[str, Group] = {}
        count = 0
        open_txns: dict[tuple[int, int], list[tuple[bytes, bytes | None]]] = {}

        def apply(key_bytes: bytes, value_bytes: bytes | None) -> None:
            if is_consumer_record(key_bytes):  # KIP-848 consumer groups
                replay_consumer_record(groups, key_bytes, value_bytes)
                return
            key = read_key(key_bytes)
            if isinstance(key, OffsetKey):
                group = groups.get(key.group) or groups.setdefault(key.group, Group(key.group, _now_ms()))
                if value_bytes is None:
                    group.offsets.pop((key.topic, key.partition), None)
                else:
                    group.offsets[(key.topic, key.partition)] = read_offset_value(value_bytes)
            elif isinstance(key, GroupKey):
                if value_bytes is None:
                    old = groups.pop(key.group, None)
                    if old is not None and old.offsets:  # offsets written after the tombstone stay
                        fresh = groups[key.group] = Group(key.group, _now_ms())
                        fresh.offsets = old.offsets
                else:
                    group = groups.get(key.group) or groups.setdefault(key.group, Group(key.group, _now_ms()))
                    if isinstance(group, ConsumerGroup):  # a consumer group that became classic again
                        old_offsets = group.offsets
                        group = groups[key.group] = Group(key.group, _now_ms())
                        group.offsets = old_offsets
                    group.load(read_group_value(value_bytes))

        for partition, pid, control, key_bytes, value_bytes in self.store.replay_events():
            try:
                if pid >= 0 and control < 0:
                    open_txns.setdefault((partition, pid), []).append((key_bytes, value_bytes))
                    continue
                if pid >= 0:
                    records = open_txns.pop((partition, pid), [])
                    if control == CONTROL_COMMIT:
                        for k, v in records:
                            apply(k, v)
                    continue
                apply(key_bytes, value_bytes)
                count += 1
            except (RecordFormatError, UnicodeDecodeError) as exc:
                log.warning("skipping an unreadable __consumer_offsets record: %s", exc)
        for (_partition, pid), records in open_txns.items():  # transactions still open: pending
            for key_bytes, value_bytes in records:
                try:
                    key = read_key(key_bytes)
                    if isinstance(key, OffsetKey) and value_bytes is not None:
                        groups.setdefault(key.group, Group(key.group, _now_ms()))
                        pending = self.txn_offsets.setdefault(pid, {}).setdefault(key.group, {})
                        pending[(key.topic, key.partition)] = read_offset_value(value_bytes)
                except (RecordFormatError, UnicodeDecodeError) as exc:
                    log.warning("skipping an unreadable __consumer_offsets record: %s", exc)
        finish_replay(groups)
        self.groups.update(groups)
        if count:
            log.info("loaded %d group(s) with %d offset(s) from %d __consumer_offsets record(s)",
                     len(groups), sum(len(g.offsets) for g in groups.values()), count)

    def expire_offsets(self, now_ms: int | None = None) -> int:
        """offsets.retention.minutes: drop offsets of groups Empty (or never managed) for that long."""
        now = _now_ms() if now_ms is None else now_ms
        retention = self.broker.config.offsets_retention_minutes * 60_000
        expired_total = 0
        for group in list(self.groups.values()):
            if not group.is_in(GroupState.EMPTY):
                continue
            if group.protocol_type:
                doomed = list(group.offsets) if now - group.state_timestamp >= retention else []
            else:  # offsets-only group: each offset ages from its own commit
                doomed = [tp for tp, v in group.offsets.items() if now - v.commit_timestamp >= retention]
            records: list[tuple[bytes, bytes | None]] = [(k, None) for k in self.offset_keys(group, list(doomed))]
            last = len(doomed) == len(group.offsets)
            if last and isinstance(group, ConsumerGroup):
                records += [(k, None) for k in consumer_group_keys(group)]
            elif last:
                records.append((group_key(group.group_id), None))
            if not records:
                continue
            # refused while the ISR is below min.insync.replicas: nothing expires, the next check retries
            written, end = self.store.append(group.group_id, records)
            if written == E.none:
                self.store.acknowledge_in_background(group.group_id, end, self.commit_timeout_ms,
                                                     f"the expiry of {len(doomed)} offset(s)")
                for tp in doomed:
                    del group.offsets[tp]
                expired_total += len(doomed)
                if last:
                    group.transition(GroupState.DEAD, now)
                    del self.groups[group.group_id]
        if expired_total:
            log.info("expired %d committed offset(s) (offsets.retention.minutes)", expired_total)
        return expired_total

    async def run_expiry(self) -> None:
        interval = self.broker.config.offsets_retention_check_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                self.expire_offsets()
            except Exception:
                log.exception("offset expiry failed")


def consumer_commit_error(group: ConsumerGroup, member_epoch: int, member_id: str,
                          stale: ErrorCode = E.stale_member_epoch) -> ErrorCode | None:
    """Kafka's ConsumerGroup.validateOffsetCommit: the generation is the member epoch; an
    admin commit (epoch -1, no member) only while the group has no members. The epoch before
    the member's last bump passes too (KIP-1251's relaxation): a commit sent while the
    heartbeat response carrying the new epoch is in flight is not stale, and a client's
    commitSync would otherwise fail with CommitFailedException at every rebalance."""
    if member_epoch < 0 and not member_id and not group.consumers:
        return None
    member = group.consumers.get(member_id)
    if member is None:
        return E.unknown_member_id
    if member_epoch == member.member_epoch or (0 < member_epoch and member_epoch == member.previous_member_epoch):
        return None
    return stale


def consumer_group_keys(group: ConsumerGroup) -> list[bytes]:
    return [k for k, _ in ConsumerGroupMixin.consumer_group_tombstones(group)]
