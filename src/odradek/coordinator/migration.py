"""Online migration between the classic and the consumer protocol in one group (KIP-848).

Kafka 4's `group.consumer.migration.policy` (disabled, upgrade, downgrade,
bidirectional; bidirectional by default):

- upgrade: the first ConsumerGroupHeartbeat to a Stable classic group of protocol
  type "consumer" turns it into a consumer group; its classic members stay, with
  their generation as member epoch and their assignment as current and target;
- classic members of a consumer group go on with JoinGroup, SyncGroup and Heartbeat:
  a JoinGroup is their heartbeat with a new subscription and owned partitions, its
  generation is the member epoch, SyncGroup hands out the member's assigned
  partitions (the server assigned them), and Heartbeat answers
  REBALANCE_IN_PROGRESS while the member is not at its target, so that it rejoins;
- downgrade: when the last member of the consumer protocol leaves and only classic
  members remain, the group becomes a classic group again and rebalances.
"""

from __future__ import annotations

import logging
import time
import uuid

from kio.schema.errors import ErrorCode

from odradek.coordinator import consumer_records as cr
from odradek.coordinator.consumer_coordinator import ConsumerGroupMixin
from odradek.coordinator.consumer_group import (
    ConsumerGroup,
    ConsumerMember,
    MemberState,
    Partitions,
    copy,
    encode_assignment,
    same,
)
from odradek.coordinator.group import Group, GroupState, JoinResult, Member, SyncResult
from odradek.coordinator.records import RecordFormatError, _Reader, group_key, group_value
from odradek.coordinator.store import coordinator_error

log = logging.getLogger("odradek.coordinator")
E = ErrorCode


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_subscription(data: bytes) -> tuple[list[str], dict[str, set[int]]]:
    """ConsumerProtocolSubscription: topics, and (v1+) the partitions the member owns."""
    topics: list[str] = []
    owned: dict[str, set[int]] = {}
    try:
        r = _Reader(data)
        version = r.i16()
        topics = [r.string() or "" for _ in range(r.i32())]
        r.bytes_()  # user data
        if version >= 1:
            for _ in range(r.i32()):
                topic = r.string() or ""
                owned[topic] = {r.i32() for _ in range(r.i32())}
    except (RecordFormatError, UnicodeDecodeError):
        pass
    return topics, owned


class MigrationMixin(ConsumerGroupMixin):
    """Classic members inside consumer groups, and the conversions both ways."""

    def _policy(self, direction: str) -> bool:
        policy = self.broker.config.group_consumer_migration_policy.strip().lower()
        return policy in (direction, "bidirectional")

    def _names(self) -> dict[uuid.UUID, str]:
        return {t.topic_id: name for name, t in self.broker.topics().items()}

    def _by_id(self, by_name: dict[str, set[int]] | dict[str, list[int]]) -> Partitions:
        topics = self.broker.topics()
        return {topics[t].topic_id: set(ps) for t, ps in by_name.items() if t in topics and ps}

    # -- upgrade ---------------------------------------------------------------------

    def upgrade_online(self, group: Group) -> ConsumerGroup | ErrorCode:
        """A Stable classic consumer group becomes a consumer group, its members kept."""
        if not self._policy("upgrade") or group.protocol_type != "consumer" or not group.is_in(GroupState.STABLE):
            return E.group_id_not_found
        # a coordinator write: refused, nothing changed, while the ISR is below min.insync.replicas; the
        # heartbeat that asked for it is answered once the ISR holds it (with its own records)
        refused = self.store.min_isr_refusal(group.group_id)
        if refused is not None:
            return refused
        now = self.consumer_loop.time()
        fresh = ConsumerGroup(group.group_id, _now_ms())
        fresh.offsets = group.offsets
        fresh.group_epoch = fresh.assignment_epoch = group.generation
        records: list[tuple[bytes, bytes | None]] = [(group_key(group.group_id), None)]
        from odradek.coordinator.records import assigned_partitions

        for m in group.members.values():
            m.cancel_heartbeat()
            topics, _ = parse_subscription(m.metadata(group.protocol_name))
            member = ConsumerMember(m.member_id, instance_id=m.group_instance_id, client_id=m.client_id,
                                    client_host=m.client_host, subscribed_topic_names=sorted(topics),
                                    rebalance_timeout_ms=m.rebalance_timeout_ms, member_epoch=group.generation,
                                    previous_member_epoch=group.generation - 1,
                                    assigned=self._by_id(assigned_partitions(m.assignment)),
                                    session_deadline=now + m.session_timeout_ms / 1000,
                                    classic=(m.session_timeout_ms, list(m.protocols)))
            fresh.add_consumer(member)
            fresh.target[member.member_id] = copy(member.assigned)
            records += self._member_records(fresh, member)
        if group.join_timer is not None:
            group.join_timer.cancel()
        for pending in group.pending_members.values():
            pending.cancel()
        fresh.subscription_metadata = self._subscribed_topics(fresh)
        records += [
            (cr.key(cr.CONSUMER_GROUP_PARTITION_METADATA, group.group_id),
             cr.partition_metadata_value(fresh.subscription_metadata)),
            (cr.key(cr.CONSUMER_GROUP_METADATA, group.group_id), cr.group_metadata_value(fresh.group_epoch)),
            (cr.key(cr.CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA, group.group_id),
             cr.target_metadata_value(fresh.assignment_epoch)),
        ]
        written = self.store.write(group.group_id, records)
        if written != E.none:
            return coordinator_error(written)
        fresh.stored = True
        self.groups[group.group_id] = fresh
        fresh.refresh_state(_now_ms())
        log.info("group %s: classic group of %d member(s) upgraded online to a consumer group at epoch %d",
                 group.group_id, len(fresh.consumers), fresh.group_epoch)
        return fresh

    def _member_records(self, group: ConsumerGroup, m: ConsumerMember) -> list[tuple[bytes, bytes | None]]:
        gid = group.group_id
        return [
            (cr.key(cr.CONSUMER_GROUP_MEMBER_METADATA, gid, m.member_id), cr.member_metadata_value(m.metadata_value())),
            (cr.key(cr.CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER, gid, m.member_id),
             cr.target_member_value(group.target.get(m.member_id, {}))),
            (cr.key(cr.CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT, gid, m.member_id),
             cr.current_assignment_value(m.assignment_value())),
        ]

    # -- classic members of a consumer group -----------------------------------------------

    def classic_join(self, group: ConsumerGroup, member_id: str, instance_id: str | None, client_id: str,
                     client_host: str, session_ms: int, rebalance_ms: int, protocol_type: str,
                     protocols: list[tuple[str, bytes]], require_known_member_id: bool) -> JoinResult:
        if protocol_type != "consumer" or not protocols:
            return JoinResult(E.inconsistent_group_protocol, member_id=member_id)
        if not member_id:
            new_id = f"{instance_id or client_id}-{uuid.uuid4()}"
            if require_known_member_id and instance_id is None:
                return JoinResult(E.member_id_required, member_id=new_id)
            member_id = new_id
        member = group.consumers.get(member_id)
        if member is not None and member.classic is None:
            return JoinResult(E.unknown_member_id, member_id=member_id)
        # a coordinator write: refused, nothing changed, while the ISR is below min.insync.replicas; the
        # answer waits for the ISR to hold it (Coordinator.join)
        refused = self.store.min_isr_refusal(group.group_id)
        if refused is not None:
            return JoinResult(refused, member_id=member_id)
        records: list[tuple[bytes, bytes | None]] = []
        topics, owned_names = parse_subscription(protocols[0][1])
        is_new = member is None
        if member is None:
            member = ConsumerMember(member_id, instance_id=instance_id)
            group.add_consumer(member)
        before_names = member.subscribed_topic_names
        member.client_id, member.client_host, member.instance_id = client_id, client_host, instance_id
        member.subscribed_topic_names = sorted(topics)
        member.rebalance_timeout_ms = rebalance_ms
        member.classic = (session_ms, list(protocols))
        member.session_deadline = self.consumer_loop.time() + session_ms / 1000
        records.append((cr.key(cr.CONSUMER_GROUP_MEMBER_METADATA, group.group_id, member_id),
                        cr.member_metadata_value(member.metadata_value())))
        if not self._refresh_subscriptions(group, records) and (is_new or before_names != member.subscribed_topic_names):
            self._bump_epoch(group, records)
        self._update_target(group, records)
        before = (member.member_epoch, copy(member.assigned))
        group.reconcile(member, self._by_id(owned_names))
        if (member.member_epoch, member.assigned) != before or is_new:
            records.append((cr.key(cr.CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT, group.group_id, member_id),
                            cr.current_assignment_value(member.assignment_value())))
        written = self.store.write(group.group_id, records)
        if written != E.none:
            return JoinResult(coordinator_error(written), member_id=member_id)
        group.refresh_state(_now_ms())
        return JoinResult(E.none, member_id=member_id, generation=member.member_epoch, protocol_type="consumer",
                          protocol_name=protocols[0][0], leader="", members=[])

    def classic_sync(self, group: ConsumerGroup, generation: int, member_id: str) -> SyncResult:
        member = group.consumers.get(member_id)
        if member is None or member.classic is None:
            return SyncResult(E.unknown_member_id)
        if generation != member.member_epoch:
            return SyncResult(E.illegal_generation)
        member.session_deadline = self.consumer_loop.time() + member.classic[0] / 1000
        names = self._names()
        by_name = {names[t]: sorted(ps) for t, ps in member.assigned.items() if t in names and ps}
        return SyncResult(E.none, "consumer", member.classic[1][0][0] if member.classic[1] else None,
                          encode_assignment(by_name))

    def classic_heartbeat(self, group: ConsumerGroup, generation: int, member_id: str) -> ErrorCode:
        member = group.consumers.get(member_id)
        if member is None or member.classic is None:
            return E.unknown_member_id
        if generation != member.member_epoch:
            return E.illegal_generation
        member.session_deadline = self.consumer_loop.time() + member.classic[0] / 1000
        records: list[tuple[bytes, bytes | None]] = []
        self._refresh_subscriptions(group, records)
        self._update_target(group, records)
        if records:
            # a change of the group's subscriptions or target assignment, applied as the log has it: the
            # heartbeat's answer does not wait (it is synchronous), the acknowledgement is awaited aside
            written, end = self.store.append(group.group_id, records, refuse_below_min_isr=False)
            if written != E.none:
                return written
            self.store.acknowledge_in_background(group.group_id, end, self.store.commit_timeout_ms,
                                                 "a classic member's heartbeat")
        # a member not at its target must rejoin to revoke or take partitions
        if member.member_epoch != group.assignment_epoch or member.state != MemberState.STABLE \
                or not same(member.assigned, group.target.get(member_id, {})):
            return E.rebalance_in_progress
        return E.none

    def classic_leave(self, group: ConsumerGroup, members: list[tuple[str, str | None]]) -> list[ErrorCode]:
        results = []
        for member_id, instance_id in members:
            if instance_id is not None:
                member_id = group.static_consumers.get(instance_id, member_id)
            results.append(self.remove_consumer_member(group, member_id, "left the group (LeaveGroup)")
                           if member_id in group.consumers else E.unknown_member_id)
        return results

    # -- downgrade -----------------------------------------------------------------------

    def maybe_downgrade(self, group: ConsumerGroup) -> Group | None:
        """Only classic members left: the group becomes classic again and rebalances."""
        members = list(group.consumers.values())
        if not members or any(m.classic is None for m in members) or not self._policy("downgrade"):
            return None
        names = self._names()
        classic = Group(group.group_id, _now_ms())
        classic.offsets = group.offsets
        classic.generation = group.group_epoch
        classic.protocol_type = "consumer"
        for m in members:
            session_ms, protocols = m.classic or (45000, [])
            assignment = encode_assignment({names[t]: sorted(ps) for t, ps in m.assigned.items() if t in names})
            classic.add(Member(m.member_id, m.instance_id, m.client_id, m.client_host, m.rebalance_timeout_ms,
                               session_ms, "consumer", protocols, assignment))
        classic.protocol_name = classic.select_protocol() if classic.candidate_protocols() else None
        classic.state = GroupState.STABLE
        records = [r for m in members for r in self._member_tombstones(group.group_id, m.member_id)]
        records += self.consumer_group_tombstones(group)
        records.append((group_key(group.group_id), group_value(classic.to_value())))
        # the callers answer once the ISR holds everything written for the group (all_acknowledged)
        if self.store.write(group.group_id, records) != E.none:
            return None
        self.groups[group.group_id] = classic
        log.info("group %s: only classic members left; downgraded to a classic group at generation %d",
                 group.group_id, classic.generation)
        return classic
