"""The KIP-848 half of the group coordinator (Kafka's GroupMetadataManager for consumer groups).

A ConsumerGroupHeartbeat is the whole protocol: it joins (member epoch 0), keeps
the session, reports owned partitions, and leaves (epoch -1, or -2 for a static
member that will come back). Each heartbeat updates the member's subscription,
bumps the group epoch when membership or the subscribed topics' partitions
change, recomputes the target assignment with the server-side assignor when the
target lags the group epoch, reconciles the member one step, and writes what
changed to __consumer_offsets in Kafka's records before answering. Session and
revocation (rebalance) timeouts are checked by one sweep of the loop.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kio.schema.errors import ErrorCode

from odradek.coordinator import consumer_records as cr
from odradek.coordinator.assignors import ASSIGNORS, MemberSpec
from odradek.coordinator.consumer_group import (
    ConsumerGroup,
    ConsumerMember,
    MemberState,
    Partitions,
    copy,
    same,
)
from odradek.coordinator.consumer_replay import (
    finish_replay,
    is_consumer_record,
    replay_consumer_record,
)
from odradek.coordinator.group import Group
from odradek.coordinator.records import group_key

if TYPE_CHECKING:
    from odradek.coordinator.store import OffsetsStore
    from odradek.server.broker import Broker

__all__ = ["LEAVE_EPOCH", "STATIC_LEAVE_EPOCH", "ConsumerGroupMixin", "HeartbeatResult", "compile_regex",
           # consumer_replay.py's, which the group coordinator knows from here
           "finish_replay", "is_consumer_record", "replay_consumer_record"]

log = logging.getLogger("odradek.coordinator")
E = ErrorCode
LEAVE_EPOCH = -1
STATIC_LEAVE_EPOCH = -2


@dataclass(slots=True)
class HeartbeatResult:
    error: ErrorCode
    message: str | None = None
    member_id: str | None = None
    member_epoch: int = 0
    heartbeat_interval_ms: int = 0
    assignment: Partitions | None = None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def compile_regex(pattern: str) -> re.Pattern[str] | None:
    """RE2 syntax is close to Python's; what RE2 refuses and Python accepts (backreferences,
    lookaround) is refused here too. None when invalid."""
    if re.search(r"\\[1-9]|\(\?[=!<]|\(\?P=", pattern):
        return None
    try:
        return re.compile(pattern)
    except re.error:
        return None


class ConsumerGroupMixin:
    """The consumer-protocol half of GroupCoordinator (which supplies these attributes)."""

    broker: Broker
    store: OffsetsStore
    groups: dict[str, Group]

    def group_error(self, group_id: str) -> ErrorCode | None: ...  # provided by GroupCoordinator

    def upgrade_online(self, group: Group) -> ConsumerGroup | ErrorCode:  # migration.py
        return E.group_id_not_found

    def maybe_downgrade(self, group: ConsumerGroup) -> Group | None:  # migration.py
        return None

    def on_downgraded(self, group: Group) -> None:  # GroupCoordinator: the classic group rebalances
        return None

    _loop: asyncio.AbstractEventLoop | None

    @property
    def consumer_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # -- configuration --------------------------------------------------------------

    @property
    def assignor_names(self) -> list[str]:
        names = [a.strip() for a in self.broker.config.group_consumer_assignors.split(",") if a.strip()]
        # Kafka accepts class names too; their simple names map to odradek's two
        known = [{"uniformassignor": "uniform", "rangeassignor": "range"}.get(n.rsplit(".", 1)[-1].lower(), n)
                 for n in names]
        return [n for n in known if n in ASSIGNORS] or ["uniform", "range"]

    # -- ConsumerGroupHeartbeat ------------------------------------------------------

    async def consumer_heartbeat(
        self, group_id: str, member_id: str, member_epoch: int, instance_id: str | None, rack_id: str | None,
        rebalance_timeout_ms: int, topic_names: list[str] | None, topic_regex: str | None,
        server_assignor: str | None, owned: Partitions | None, client_id: str, client_host: str,
    ) -> HeartbeatResult:
        config = self.broker.config
        interval = config.group_consumer_heartbeat_interval_ms

        def fail(code: ErrorCode, message: str | None = None) -> HeartbeatResult:
            return HeartbeatResult(code, message, member_id or None, member_epoch, interval)

        error = self.group_error(group_id)
        if error is not None:
            return fail(error)
        invalid = self._invalid_request(member_id, member_epoch, instance_id, rebalance_timeout_ms,
                                         topic_names, topic_regex, owned)
        if invalid is not None:
            log.info("ConsumerGroupHeartbeat of %s in group %s refused: %s", member_id, group_id, invalid)
            return fail(E.invalid_request, invalid)
        if server_assignor is not None and server_assignor not in self.assignor_names:
            return fail(E.unsupported_assignor, f"the assignor {server_assignor} is not supported; "
                        f"group.consumer.assignors is {','.join(self.assignor_names)}")
        if topic_regex is not None and compile_regex(topic_regex) is None:
            return fail(E.invalid_regular_expression, f"SubscribedTopicRegex {topic_regex!r} is not a valid regular expression")

        group = self.groups.get(group_id)
        # Kafka's getOrMaybeCreateConsumerGroup: only a join (epoch 0) makes a group; a leave or
        # any other epoch to a group that does not exist, or is no consumer group, is GROUP_ID_NOT_FOUND
        if not isinstance(group, ConsumerGroup) and member_epoch != 0:
            return fail(E.group_id_not_found, f"Consumer group {group_id} not found." if group is None
                        else f"Group {group_id} is not a consumer group.")
        if member_epoch in (LEAVE_EPOCH, STATIC_LEAVE_EPOCH):
            assert isinstance(group, ConsumerGroup)
            return await self._consumer_leave(group, member_id, member_epoch, instance_id, interval)

        if group is None or not isinstance(group, ConsumerGroup):
            converted = self._consumer_group_for_join(group_id, group)
            if isinstance(converted, ErrorCode):
                return fail(converted, f"group {group_id} is a classic group with members; "
                            "it cannot be joined with the consumer protocol" if converted == E.group_id_not_found
                            else None)
            group = converted

        now = self.consumer_loop.time()
        records: list[tuple[bytes, bytes | None]] = []
        member = group.consumers.get(member_id)
        if member_epoch == 0:
            joined = self._join_member(group, member_id, instance_id, records)
            if isinstance(joined, HeartbeatResult):
                joined.heartbeat_interval_ms = interval
                return joined
            member = joined
            owned = {}
        else:
            if member is None:
                return fail(E.unknown_member_id, f"member {member_id} is not in group {group_id}")
            fenced = self._fenced(member, member_epoch, owned)
            if fenced:
                return fail(E.fenced_member_epoch, fenced)
        before_epoch, before_assigned = member.member_epoch, copy(member.assigned)

        # the member's metadata: what it sends is a change; None means "unchanged"
        changed = member_epoch == 0  # a join always writes the member's records
        new_names = sorted(topic_names) if topic_names is not None else member.subscribed_topic_names
        updates = {
            "instance_id": instance_id if instance_id is not None else member.instance_id,
            "rack_id": rack_id if rack_id is not None else member.rack_id,
            "subscribed_topic_names": new_names,
            "subscribed_topic_regex": (topic_regex or None) if topic_regex is not None else member.subscribed_topic_regex,
            "server_assignor": server_assignor if server_assignor is not None else member.server_assignor,
            "rebalance_timeout_ms": rebalance_timeout_ms if rebalance_timeout_ms > 0 else member.rebalance_timeout_ms,
            "client_id": client_id, "client_host": client_host,
        }
        subscription_changed = (new_names != member.subscribed_topic_names
                                or updates["subscribed_topic_regex"] != member.subscribed_topic_regex
                                or updates["server_assignor"] != member.server_assignor)
        if any(getattr(member, k) != v for k, v in updates.items()) or changed:
            for k, v in updates.items():
                setattr(member, k, v)
            records.append((cr.key(cr.CONSUMER_GROUP_MEMBER_METADATA, group_id, member.member_id),
                            cr.member_metadata_value(member.metadata_value())))
        if member.member_id not in group.consumers:
            group.add_consumer(member)
            subscription_changed = True
        member.session_deadline = now + config.group_consumer_session_timeout_ms / 1000

        bumped = self._refresh_subscriptions(group, records)
        if subscription_changed and not bumped:
            self._bump_epoch(group, records)
        self._update_target(group, records)
        group.reconcile(member, owned)
        if member.state == MemberState.UNREVOKED_PARTITIONS:
            if member.revocation_deadline is None:
                member.revocation_deadline = now + member.rebalance_timeout_ms / 1000
        else:
            member.revocation_deadline = None
        if member.member_epoch != before_epoch or not same(member.assigned, before_assigned) or changed:
            records.append(self._current_record(group, member))
        group.refresh_state(_now_ms())
        if records:
            # Kafka's CoordinatorRuntime: the change is applied and appended at once, and answered
            # only once the ISR (at least min.insync.replicas) holds it; a member never acts on an
            # epoch or assignment the next coordinator may not know (issue 18)
            group.stored = True
            written, _ = await self.store.write_replicated(
                group_id, records, self.store.commit_timeout_ms, refuse_below_min_isr=False)
            if written != E.none:
                return fail(written)
        send = (member_epoch == 0 or member.member_epoch != before_epoch
                or not same(member.assigned, before_assigned)
                or (owned is not None and not same(owned, member.assigned)))
        log.debug("heartbeat %s epoch %d->%d owned %s: %s epoch %d assigned %s revoking %s send %s", member.member_id,
                  member_epoch, member.member_epoch, owned, member.state.name, member.member_epoch,
                  member.assigned, member.pending_revocation, send)
        return HeartbeatResult(E.none, None, member.member_id, member.member_epoch, interval,
                               copy(member.assigned) if send else None)

    @staticmethod
    def _invalid_request(member_id: str, epoch: int, instance_id: str | None, rebalance_ms: int,
                         names: list[str] | None, regex: str | None, owned: Partitions | None) -> str | None:
        """Kafka's throwIfConsumerGroupHeartbeatRequestIsInvalid (v1: the client makes the member id)."""
        if not member_id:
            return "MemberId can't be empty."
        if instance_id is not None and not instance_id:
            return "InstanceId can't be empty."
        if epoch == 0:
            if rebalance_ms == -1:
                return "RebalanceTimeoutMs must be provided in first request."
            if owned:
                return "TopicPartitions must be empty when (re-)joining."
            if names is None and regex is None:
                return "SubscribedTopicNames or SubscribedTopicRegex must be set in first request."
        elif epoch == STATIC_LEAVE_EPOCH and instance_id is None:
            return "InstanceId can't be null when the member epoch is -2."
        elif epoch < STATIC_LEAVE_EPOCH:
            return f"MemberEpoch {epoch} is invalid."
        return None

    def _consumer_group_for_join(self, group_id: str, group: Group | None) -> ConsumerGroup | ErrorCode:
        """A new consumer group, or an empty classic group converted to one (Kafka's offline
        upgrade: its committed offsets stay, its classic metadata is tombstoned)."""
        if group is not None and group.members:
            return self.upgrade_online(group)  # Kafka's online upgrade, as the migration policy allows
        fresh = ConsumerGroup(group_id, _now_ms())
        if group is not None:
            fresh.offsets = group.offsets
            if group.protocol_type is not None:
                if self.store.write(group_id, [(group_key(group_id), None)]) != E.none:
                    return E.coordinator_not_available
                log.info("group %s: empty classic group converted to a consumer group", group_id)
        self.groups[group_id] = fresh
        return fresh

    def _join_member(self, group: ConsumerGroup, member_id: str, instance_id: str | None,
                     records: list[tuple[bytes, bytes | None]]) -> ConsumerMember | HeartbeatResult:
        existing = group.consumers.get(member_id)
        if instance_id is None:
            return existing or ConsumerMember(member_id)
        old_id = group.static_consumers.get(instance_id, "")
        old = group.consumers.get(old_id)  # None: the mapping outlived its member
        if old is None or old_id == member_id:
            return existing or ConsumerMember(member_id, instance_id=instance_id)
        if old.member_epoch != STATIC_LEAVE_EPOCH:
            return HeartbeatResult(E.unreleased_instance_id, f"static member {instance_id} is still in use by "
                                   f"member {old_id}", member_id, 0)
        # KIP-848 static membership: the new member takes the old one's place, epoch and assignment
        target = group.target.get(old_id, {})
        group.remove_consumer(old_id)
        records += self._member_tombstones(group.group_id, old_id)
        # epoch 0 and STABLE: the reconciliation below brings it to the target epoch with what is free
        member = ConsumerMember(member_id, instance_id=instance_id, assigned=copy(old.assigned),
                                pending_revocation=copy(old.pending_revocation))
        member.load_metadata(old.metadata_value())
        group.add_consumer(member)
        group.target[member_id] = target
        records.append((cr.key(cr.CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER, group.group_id, member_id),
                        cr.target_member_value(target)))
        log.info("static member %s of group %s rejoined as %s", instance_id, group.group_id, member_id)
        return member

    @staticmethod
    def _fenced(member: ConsumerMember, epoch: int, owned: Partitions | None) -> str | None:
        """Kafka's throwIfMemberEpochIsInvalid: a newer epoch than the member's is fenced; an older
        one only passes as the previous epoch with nothing owned beyond the assignment (a lost response)."""
        if epoch > member.member_epoch:
            return f"the member epoch {epoch} is newer than the current one {member.member_epoch}"
        if epoch < member.member_epoch:
            if epoch != member.previous_member_epoch or owned is None:
                return f"the member epoch {epoch} is older than the current one {member.member_epoch}"
            for t, ps in owned.items():
                if not ps <= member.assigned.get(t, set()):
                    return f"the member epoch {epoch} is stale and it owns partitions it was not given"
        return None

    # -- group epoch and target assignment ------------------------------------------------

    def _subscribed_topics(self, group: ConsumerGroup) -> dict[str, tuple[uuid.UUID, int]]:
        topics = self.broker.topics()
        wanted: set[str] = set()
        for m in group.consumers.values():
            wanted.update(m.subscribed_topic_names)
            if m.subscribed_topic_regex:
                pattern = compile_regex(m.subscribed_topic_regex)
                if pattern is not None:
                    wanted.update(n for n, t in topics.items() if not t.internal and pattern.fullmatch(n))
        return {n: (topics[n].topic_id, topics[n].partitions) for n in wanted if n in topics}

    def _refresh_subscriptions(self, group: ConsumerGroup, records: list[tuple[bytes, bytes | None]]) -> bool:
        """A subscribed topic created, deleted or grown bumps the group epoch. True when bumped."""
        current = self._subscribed_topics(group)
        if current == group.subscription_metadata:
            return False
        group.subscription_metadata = current
        records.append((cr.key(cr.CONSUMER_GROUP_PARTITION_METADATA, group.group_id),
                        cr.partition_metadata_value(current)))
        self._bump_epoch(group, records)
        return True

    def _bump_epoch(self, group: ConsumerGroup, records: list[tuple[bytes, bytes | None]]) -> None:
        group.group_epoch += 1
        records.append((cr.key(cr.CONSUMER_GROUP_METADATA, group.group_id),
                        cr.group_metadata_value(group.group_epoch)))

    def _member_topics(self, group: ConsumerGroup, member: ConsumerMember) -> frozenset[uuid.UUID]:
        names = set(member.subscribed_topic_names)
        if member.subscribed_topic_regex:
            pattern = compile_regex(member.subscribed_topic_regex)
            if pattern is not None:
                names.update(n for n in group.subscription_metadata if pattern.fullmatch(n))
        return frozenset(group.subscription_metadata[n][0] for n in names if n in group.subscription_metadata)

    def _update_target(self, group: ConsumerGroup, records: list[tuple[bytes, bytes | None]]) -> None:
        if group.assignment_epoch >= group.group_epoch:
            return
        name = group.preferred_assignor(self.assignor_names)
        specs = [MemberSpec(m.member_id, m.instance_id, self._member_topics(group, m))
                 for m in sorted(group.consumers.values(), key=lambda m: m.member_id)]
        partitions = {tid: n for tid, n in group.subscription_metadata.values()}
        target = ASSIGNORS[name](specs, partitions, group.target)
        for member_id, assignment in target.items():
            if not same(assignment, group.target.get(member_id, {})) or member_id not in group.target:
                records.append((cr.key(cr.CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER, group.group_id, member_id),
                                cr.target_member_value(assignment)))
        group.target = target
        group.assignment_epoch = group.group_epoch
        group.assignor_name = name
        records.append((cr.key(cr.CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA, group.group_id),
                        cr.target_metadata_value(group.assignment_epoch)))
        log.info("group %s: target assignment of epoch %d computed by %s for %d member(s)",
                 group.group_id, group.assignment_epoch, name, len(target))

    @staticmethod
    def _current_record(group: ConsumerGroup, member: ConsumerMember) -> tuple[bytes, bytes | None]:
        return (cr.key(cr.CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT, group.group_id, member.member_id),
                cr.current_assignment_value(member.assignment_value()))

    @staticmethod
    def _member_tombstones(group_id: str, member_id: str) -> list[tuple[bytes, bytes | None]]:
        return [(cr.key(kind, group_id, member_id), None) for kind in (
            cr.CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT, cr.CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER,
            cr.CONSUMER_GROUP_MEMBER_METADATA)]

    # -- leaving, fencing, sessions ----------------------------------------------------------

    async def _consumer_leave(self, group: ConsumerGroup, member_id: str, epoch: int, instance_id: str | None,
                              interval: int) -> HeartbeatResult:
        """A leave (epoch -1) or a static member's temporary leave (-2): applied and appended at once,
        answered once the ISR holds the records, as every write of Kafka's CoordinatorRuntime."""
        member = group.consumers.get(member_id)
        if member is None and instance_id is not None:
            member = group.consumers.get(group.static_consumers.get(instance_id, ""))
        if member is None:
            return HeartbeatResult(E.unknown_member_id, f"member {member_id} is not in group {group.group_id}",
                                   member_id, epoch, interval)
        if epoch == STATIC_LEAVE_EPOCH and member.instance_id is not None:
            # a static member going away for a while keeps its partitions until its session ends
            member.member_epoch = STATIC_LEAVE_EPOCH
            written = self.store.write(group.group_id, [self._current_record(group, member)])
            log.info("static member %s of group %s left temporarily", member.instance_id, group.group_id)
            written = await self._acknowledged(group.group_id, written)
            return HeartbeatResult(written, None, member_id, STATIC_LEAVE_EPOCH, interval)
        written = self.remove_consumer_member(group, member.member_id, "left the group")
        written = await self._acknowledged(group.group_id, written)
        return HeartbeatResult(written, None, member_id, LEAVE_EPOCH, interval)

    async def _acknowledged(self, group_id: str, written: ErrorCode) -> ErrorCode:
        """`written`'s error, else NONE once the ISR holds everything written for the group's partition."""
        if written != E.none:
            return written
        return await self.store.all_acknowledged(group_id, self.store.commit_timeout_ms)

    def remove_consumer_member(self, group: ConsumerGroup, member_id: str, why: str) -> ErrorCode:
        """The member goes; the group epoch moves on so the others take over its partitions.
        When the last member of the consumer protocol goes and classic members remain, the
        group becomes classic again (the migration policy permitting)."""
        removed = group.remove_consumer(member_id)
        if removed is None:
            return E.unknown_member_id
        if removed.classic is None and group.consumers:
            tombstones = self._member_tombstones(group.group_id, member_id)
            if self.store.write(group.group_id, tombstones) != E.none:
                return E.coordinator_not_available
            classic = self.maybe_downgrade(group)
            if classic is not None:
                log.info("member %s of group %s %s", member_id, group.group_id, why)
                self.on_downgraded(classic)
                return E.none
        records = self._member_tombstones(group.group_id, member_id)
        if not self._refresh_subscriptions(group, records):
            self._bump_epoch(group, records)
        self._update_target(group, records)
        group.refresh_state(_now_ms())
        log.info("member %s of group %s %s; group epoch %d", member_id, group.group_id, why, group.group_epoch)
        return self.store.write(group.group_id, records)

    def expire_consumer_members(self) -> bool:
        """group.consumer.session.timeout.ms without a heartbeat, or a revocation not done within
        the member's rebalance timeout: the member is fenced out of the group. True when a
        consumer group (KIP-848) is here."""
        now = self.consumer_loop.time()
        session = self.broker.config.group_consumer_session_timeout_ms / 1000
        groups = [g for g in self.groups.values() if isinstance(g, ConsumerGroup)]
        for group in groups:
            if self.group_error(group.group_id) is not None:
                continue
            for member in list(group.consumers.values()):
                if self.groups.get(group.group_id) is not group:  # downgraded to classic meanwhile
                    break
                if not member.session_deadline:  # restored by a replay (restart or failover): a full session
                    member.session_deadline = now + (member.classic[0] / 1000 if member.classic else session)
                elif now >= member.session_deadline:
                    self._expire_consumer_member(group, member, "has not heartbeated in its session timeout")
                elif member.revocation_deadline is not None and now >= member.revocation_deadline:
                    self._expire_consumer_member(group, member, "did not revoke its partitions in time")
        return bool(groups)

    def _expire_consumer_member(self, group: ConsumerGroup, member: ConsumerMember, why: str) -> None:
        """Fenced by the coordinator itself: no client waits for the answer, but the write is
        awaited all the same (Kafka's CoordinatorRuntime) and a failure logged."""
        if self.remove_consumer_member(group, member.member_id, why) == E.none:
            self.store.acknowledge_in_background(group.group_id, self.store.log_end(group.group_id),
                                                 self.store.commit_timeout_ms, f"the removal of member {member.member_id}")

    async def run_consumer_expiry(self) -> None:
        busy = False
        while True:
            # 4 times a second while a consumer group (KIP-848) is here, once a second otherwise
            # (a group that appears meanwhile is checked at most a second later, well within
            # any session timeout): an idle broker's timer wake-ups cost CPU
            await asyncio.sleep(0.25 if busy else 1.0)
            try:
                busy = self.expire_consumer_members()
            except Exception:  # a background task that must not die: log and go on
                log.exception("consumer group session expiry failed")

    # -- deletion ----------------------------------------------------------------------

    @staticmethod
    def consumer_group_tombstones(group: ConsumerGroup) -> list[tuple[bytes, bytes | None]]:
        gid = group.group_id
        return [(cr.key(kind, gid), None) for kind in (
            cr.CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA, cr.CONSUMER_GROUP_PARTITION_METADATA,
            cr.CONSUMER_GROUP_METADATA)]
