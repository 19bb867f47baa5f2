"""The group coordinator of the classic protocol (Kafka's GroupCoordinator).

Membership is driven by asyncio: a JoinGroup or SyncGroup that must wait parks
on a future of its member; the rebalance delay, the rebalance timeout and each
member's session timeout are loop timers (call_later), never polling. All state
changes happen on the event loop thread, so no lock is needed. Offsets and the
group metadata go to __consumer_offsets (offsets.py, store.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING

from kio.schema.errors import ErrorCode

from odradek.coordinator.consumer_group import ConsumerGroup
from odradek.coordinator.group import Group, GroupState, JoinResult, Member, SyncResult
from odradek.coordinator.migration import MigrationMixin
from odradek.coordinator.offsets import OffsetsMixin
from odradek.coordinator.records import group_key, group_value
from odradek.coordinator.static_members import StaticMembersMixin
from odradek.coordinator.store import OFFSETS_TOPIC, OffsetsStore

if TYPE_CHECKING:
    from odradek.server.broker import Broker

log = logging.getLogger("odradek.coordinator")

E = ErrorCode


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class GroupCoordinator(OffsetsMixin, MigrationMixin, StaticMembersMixin):
    """Every group whose __consumer_offsets partition this broker leads (classic groups
    here, KIP-848 consumer groups in consumer_coordinator.py)."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.config = broker.config
        self.store = OffsetsStore(broker)
        self.groups: dict[str, Group] = {}
        self.txn_offsets = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writes: set[asyncio.Task[None]] = set()  # SyncGroup's assignments being written

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    # -- ownership -------------------------------------------------------------

    def partition_for(self, group_id: str) -> int:
        return self.store.partition_for(group_id)

    def owns(self, group_id: str) -> bool:
        """This broker coordinates the group when it leads the group's offsets partition."""
        return self.broker.leader_of(OFFSETS_TOPIC, self.partition_for(group_id)) == self.broker.node_id

    def group_error(self, group_id: str) -> ErrorCode | None:
        if not group_id:
            return E.invalid_group_id
        if not self.owns(group_id):
            return E.not_coordinator
        return None

    # -- JoinGroup -------------------------------------------------------------

    def join(
        self,
        group_id: str,
        member_id: str,
        instance_id: str | None,
        client_id: str,
        client_host: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        protocol_type: str,
        protocols: list[tuple[str, bytes]],
        require_known_member_id: bool,
        version: int,
    ) -> asyncio.Future[JoinResult]:
        fut: asyncio.Future[JoinResult] = self.loop.create_future()

        def fail(code: ErrorCode) -> asyncio.Future[JoinResult]:
            fut.set_result(JoinResult(code, member_id=member_id))
            return fut

        error = self.group_error(group_id)
        if error is not None:
            return fail(error)
        if not self.config.group_min_session_timeout_ms <= session_timeout_ms <= self.config.group_max_session_timeout_ms:
            return fail(E.invalid_session_timeout)
        if rebalance_timeout_ms < 0:  # JoinGroup v0 has no rebalance timeout: Kafka uses the session timeout
            rebalance_timeout_ms = session_timeout_ms
        group = self.groups.get(group_id)
        if isinstance(group, ConsumerGroup):
            if group.consumers:  # a classic member of a consumer group (KIP-848 online migration)
                joined = self.classic_join(group, member_id, instance_id, client_id, client_host, session_timeout_ms,
                                           rebalance_timeout_ms, protocol_type, protocols, require_known_member_id)
                if joined.error != E.none:
                    fut.set_result(joined)
                    return fut
                return asyncio.ensure_future(self._acknowledged_join(group_id, joined))
            # an empty consumer group becomes a classic one (Kafka's offline downgrade), offsets kept
            records = self.consumer_group_tombstones(group) if group.stored else []
            if records and self.store.write(group_id, records) != E.none:
                return fail(E.coordinator_not_available)
            log.info("group %s: empty consumer group converted to a classic group", group_id)
            classic = self.groups[group_id] = Group(group_id, now_ms())
            classic.offsets, classic.offset_positions = group.offsets, group.offset_positions
            group = classic
        if group is None:
            if member_id:
                return fail(E.unknown_member_id)
            group = self.groups[group_id] = Group(group_id, now_ms())
        if group.is_in(GroupState.DEAD):
            return fail(E.coordinator_not_available)
        if not group.supports(protocol_type, protocols):
            return fail(E.inconsistent_group_protocol)
        args = (client_id, client_host, session_timeout_ms, rebalance_timeout_ms, protocol_type, protocols)

        if not member_id:
            new_id = f"{instance_id or client_id}-{uuid.uuid4()}"
            if instance_id is not None:
                old_id = group.static_members.get(instance_id)
                if old_id is not None:
                    self._rejoin_static(group, instance_id, old_id, new_id, protocols,
                                        rebalance_timeout_ms, session_timeout_ms, fut, version)
                    return fut
                self._add_member_and_rebalance(group, new_id, instance_id, args, fut)
                return fut
            if require_known_member_id:
                # KIP-394: hand out the id first, the member joins with it in a second request
                group.pending_members[new_id] = self.loop.call_later(
                    session_timeout_ms / 1000, self._expire_pending, group, new_id
                )
                fut.set_result(JoinResult(E.member_id_required, member_id=new_id))
                return fut
            self._add_member_and_rebalance(group, new_id, None, args, fut)
            return fut

        if member_id in group.pending_members:
            group.pending_members.pop(member_id).cancel()
            self._add_member_and_rebalance(group, member_id, instance_id, args, fut)
            return fut
        error = self._validate_member(group, member_id, instance_id)
        if error is not None:
            return fail(error)
        member = group.members[member_id]
        if group.is_in(GroupState.PREPARING_REBALANCE):
            self._update_member(group, member, protocols, rebalance_timeout_ms, session_timeout_ms, fut)
            self._try_complete_join(group)
        elif group.is_in(GroupState.COMPLETING_REBALANCE):
            if member.matches(protocols):
                fut.set_result(self._join_result(group, member))
            else:
                self._update_member(group, member, protocols, rebalance_timeout_ms, session_timeout_ms, fut)
                self._prepare_rebalance(group, f"member {member_id} rejoined with new metadata")
                self._try_complete_join(group)  # Kafka's DelayedJoin tries at once: a sole member need not wait
        elif group.is_in(GroupState.STABLE):
            if member_id == group.leader_id or not member.matches(protocols):
                # the leader rejoining, or a member changing its subscription (cooperative-sticky
                # members rejoin after revoking), starts a new generation
                self._update_member(group, member, protocols, rebalance_timeout_ms, session_timeout_ms, fut)
                self._prepare_rebalance(group, f"member {member_id} rejoined")
                self._try_complete_join(group)
            else:
                self._schedule_heartbeat(group, member)
                fut.set_result(self._join_result(group, member))
        else:
            return fail(E.unknown_member_id)
        return fut

    def _validate_member(self, group: Group, member_id: str, instance_id: str | None) -> ErrorCode | None:
        """Kafka's validateCurrentMember: a static id owned by another member id is fenced."""
        if instance_id is not None:
            owner = group.static_members.get(instance_id)
            if owner is not None and owner != member_id:
                return E.fenced_instance_id
        if member_id not in group.members:
            return E.unknown_member_id
        return None

    def _add_member_and_rebalance(
        self, group: Group, member_id: str, instance_id: str | None,
        args: tuple[str, str, int, int, str, list[tuple[str, bytes]]], fut: asyncio.Future[JoinResult],
    ) -> None:
        client_id, client_host, session_ms, rebalance_ms, protocol_type, protocols = args
        member = Member(member_id, instance_id, client_id, client_host, rebalance_ms, session_ms,
                        protocol_type, protocols, is_new=True, join_future=fut)
        if group.is_in(GroupState.PREPARING_REBALANCE) and group.initial_delay_remaining_ms is not None:
            group.new_member_added = True
        group.add(member)
        self._schedule_heartbeat(group, member)
        self._prepare_rebalance(group, f"adding new member {member_id}")
        self._try_complete_join(group)

    def _update_member(
        self, group: Group, member: Member, protocols: list[tuple[str, bytes]],
        rebalance_ms: int, session_ms: int, fut: asyncio.Future[JoinResult],
    ) -> None:
        # an older JoinGroup of the same member (from a dropped connection) is answered now
        member.complete_join(JoinResult(E.rebalance_in_progress, member_id=member.member_id))
        member.protocols = protocols
        member.rebalance_timeout_ms = rebalance_ms
        member.session_timeout_ms = session_ms
        member.join_future = fut
        self._schedule_heartbeat(group, member)

    def _join_result(self, group: Group, member: Member) -> JoinResult:
        is_leader = member.member_id == group.leader_id
        return JoinResult(
            E.none, member_id=member.member_id, generation=group.generation,
            protocol_type=group.protocol_type, protocol_name=group.protocol_name,
            leader=group.leader_id or "", members=group.member_metadata() if is_leader else [],
        )

    async def _acknowledged_join(self, group_id: str, joined: JoinResult) -> JoinResult:
        """A classic member's join of a consumer group is answered once the ISR holds its records
        (Kafka's CoordinatorRuntime answers after the high watermark passed them)."""
        written = await self.store.all_acknowledged(group_id, self.commit_timeout_ms)
        return joined if written == E.none else JoinResult(written, member_id=joined.member_id)

    # -- rebalance -------------------------------------------------------------

    def _prepare_rebalance(self, group: Group, reason: str) -> None:
        if group.is_in(GroupState.PREPARING_REBALANCE, GroupState.DEAD):
            return
        if group.is_in(GroupState.COMPLETING_REBALANCE):
            for m in group.members.values():
                m.assignment = b""
                m.complete_sync(SyncResult(E.rebalance_in_progress))
        if group.join_timer is not None:
            group.join_timer.cancel()
        if group.is_in(GroupState.EMPTY):
            # group.initial.rebalance.delay.ms: wait for more of the first members before the first generation
            delay = self.config.group_initial_rebalance_delay_ms
            group.initial_delay_remaining_ms = max(group.rebalance_timeout_ms() - delay, 0)
            group.new_member_added = False
            group.join_timer = self.loop.call_later(delay / 1000, self._initial_delay_expired, group, delay)
        else:
            group.initial_delay_remaining_ms = None
            group.join_timer = self.loop.call_later(
                group.rebalance_timeout_ms() / 1000, self._complete_join, group
            )
        group.transition(GroupState.PREPARING_REBALANCE, now_ms())
        log.info("preparing to rebalance group %s in generation %d (%s)", group.group_id, group.generation, reason)

    def _initial_delay_expired(self, group: Group, delay: int) -> None:
        remaining = group.initial_delay_remaining_ms or 0
        if group.new_member_added and remaining > 0:
            step = min(delay, remaining)
            group.initial_delay_remaining_ms = remaining - step
            group.new_member_added = False
            group.join_timer = self.loop.call_later(step / 1000, self._initial_delay_expired, group, delay)
            return
        self._complete_join(group)

    def _try_complete_join(self, group: Group) -> None:
        if (group.is_in(GroupState.PREPARING_REBALANCE) and group.initial_delay_remaining_ms is None
                and group.all_joined()):
            self._complete_join(group)

    def _complete_join(self, group: Group) -> None:
        """The rebalance's join phase ends: drop who did not rejoin, start the next generation."""
        if not group.is_in(GroupState.PREPARING_REBALANCE):
            return
        if group.join_timer is not None:
            group.join_timer.cancel()
            group.join_timer = None
        group.initial_delay_remaining_ms = None
        for m in [m for m in group.members.values() if not m.awaiting_join and m.group_instance_id is None]:
            log.info("member %s of group %s did not rejoin in time; removing it", m.member_id, group.group_id)
            group.remove(m.member_id)
        if group.members and not group.elect_joined_leader():
            # only static members that have not rejoined yet: wait another rebalance timeout
            group.join_timer = self.loop.call_later(group.rebalance_timeout_ms() / 1000, self._complete_join, group)
            return
        group.generation += 1
        if group.members:
            group.protocol_name = group.select_protocol()
            group.transition(GroupState.COMPLETING_REBALANCE, now_ms())
            log.info("group %s: generation %d with %d member(s), protocol %s, leader %s",
                     group.group_id, group.generation, len(group.members), group.protocol_name, group.leader_id)
            for m in group.members.values():
                if m.awaiting_join:
                    m.complete_join(self._join_result(group, m))
                    m.is_new = False
                    self._schedule_heartbeat(group, m)
        else:
            group.protocol_name = None
            group.transition(GroupState.EMPTY, now_ms())
            log.info("group %s is empty in generation %d", group.group_id, group.generation)
            # Kafka's completeClassicGroupJoin: the Empty group is written and a failure only logged;
            # appended whatever the ISR, as the group is Empty in memory already
            error, end = self.store.append(group.group_id, self._group_records(group), refuse_below_min_isr=False)
            if error != E.none:
                log.warning("group %s: the Empty group not written: %s", group.group_id, error.name)
            self.store.acknowledge_in_background(group.group_id, end, self.commit_timeout_ms,
                                                 f"the Empty group of generation {group.generation}")

    def on_downgraded(self, group: Group) -> None:
        """A consumer group turned classic again: its members' sessions, and a rebalance."""
        for member in group.members.values():
            self._schedule_heartbeat(group, member)
        self._prepare_rebalance(group, "the group was downgraded to the classic protocol")

    @staticmethod
    def _group_records(group: Group) -> list[tuple[bytes, bytes | None]]:
        return [(group_key(group.group_id), group_value(group.to_value()))]

    # -- SyncGroup -------------------------------------------------------------

    def sync(
        self, group_id: str, generation: int, member_id: str, instance_id: str | None,
        protocol_type: str | None, protocol_name: str | None, assignments: dict[str, bytes],
    ) -> asyncio.Future[SyncResult]:
        fut: asyncio.Future[SyncResult] = self.loop.create_future()
        error = self.group_error(group_id)
        group = self.groups.get(group_id)
        if error is None and isinstance(group, ConsumerGroup):
            fut.set_result(self.classic_sync(group, generation, member_id))
            return fut
        if error is None and group is None:
            error = E.unknown_member_id
        if error is None and group is not None:
            if group.is_in(GroupState.DEAD):
                error = E.coordinator_not_available
            else:
                error = self._validate_member(group, member_id, instance_id)
            if error is None and generation != group.generation:
                error = E.illegal_generation
            if error is None and ((protocol_type and protocol_type != group.protocol_type)
                                  or (protocol_name and protocol_name != group.protocol_name)):
                error = E.inconsistent_group_protocol
            if error is None and group.is_in(GroupState.EMPTY):
                error = E.unknown_member_id
            if error is None and group.is_in(GroupState.PREPARING_REBALANCE):
                error = E.rebalance_in_progress
        if error is not None:
            fut.set_result(SyncResult(error))
            return fut
        assert group is not None
        member = group.members[member_id]
        self._schedule_heartbeat(group, member)
        if group.is_in(GroupState.STABLE):
            fut.set_result(SyncResult(E.none, group.protocol_type, group.protocol_name, member.assignment))
            return fut
        member.complete_sync(SyncResult(E.rebalance_in_progress))
        member.sync_future = fut
        if member_id == group.leader_id:
            for m in group.members.values():
                m.assignment = assignments.get(m.member_id, b"")
            task = self.loop.create_task(self._store_assignment(group, member_id))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)
        return fut

    async def _store_assignment(self, group: Group, leader_id: str) -> None:
        """The leader's assignment is written with the group (Kafka's storeGroup, acks=-1) and
        the members are answered only once the ISR holds it: an assignment answered before would
        be unknown to the next coordinator (issue 18). On failure every waiting member gets the
        error and the group rebalances, as Kafka's resetAndPropagateAssignmentWithError."""
        generation = group.generation
        try:
            error, _ = await self._write_replicated(group.group_id, self._group_records(group))
        except Exception:  # a background task: the members parked in SyncGroup must be answered
            log.exception("storing the assignment of group %s failed", group.group_id)
            error = E.unknown_server_error
        if error == E.none:
            error = self.group_error(group.group_id) or E.none  # the partition moved meanwhile
        if self.groups.get(group.group_id) is group and not (
                group.is_in(GroupState.COMPLETING_REBALANCE) and group.generation == generation):
            return  # a member joined or left meanwhile: that rebalance answered the parked SyncGroups
        if error != E.none:
            log.info("group %s: the assignment of generation %d not stored: %s", group.group_id, generation,
                     error.name)
            for m in group.members.values():
                m.assignment = b""
                m.complete_sync(SyncResult(error))
            if self.groups.get(group.group_id) is group:
                self._prepare_rebalance(group, f"error {error.name} when storing the group assignment during "
                                               f"SyncGroup (member {leader_id})")
            return
        group.transition(GroupState.STABLE, now_ms())
        log.info("group %s is stable in generation %d", group.group_id, group.generation)
        for m in group.members.values():
            m.complete_sync(SyncResult(E.none, group.protocol_type, group.protocol_name, m.assignment))

    # -- Heartbeat and sessions ------------------------------------------------

    def heartbeat(self, group_id: str, generation: int, member_id: str, instance_id: str | None) -> ErrorCode:
        error = self.group_error(group_id)
        if error is not None:
            return error
        group = self.groups.get(group_id)
        if group is None:
            return E.unknown_member_id
        if isinstance(group, ConsumerGroup):
            return self.classic_heartbeat(group, generation, member_id)
        if group.is_in(GroupState.DEAD):
            return E.coordinator_not_available
        if group.is_in(GroupState.EMPTY):
            return E.unknown_member_id
        error = self._validate_member(group, member_id, instance_id)
        if error is not None:
            return error
        if generation != group.generation:
            return E.illegal_generation
        self._schedule_heartbeat(group, group.members[member_id])
        if group.is_in(GroupState.PREPARING_REBALANCE):
            return E.rebalance_in_progress
        return E.none

    def _schedule_heartbeat(self, group: Group, member: Member) -> None:
        member.cancel_heartbeat()
        member.heartbeat = self.loop.call_later(
            member.session_timeout_ms / 1000, self._session_expired, group, member
        )

    def _session_expired(self, group: Group, member: Member) -> None:
        member.heartbeat = None
        if group.members.get(member.member_id) is not member:
            return
        if member.awaiting_join or member.sync_future is not None:
            # a parked JoinGroup/SyncGroup is the member's heartbeat; the rebalance timeout governs it
            self._schedule_heartbeat(group, member)
            return
        log.info("member %s of group %s has not heartbeated for %d ms; removing it",
                 member.member_id, group.group_id, member.session_timeout_ms)
        self._remove_member_and_update(group, member.member_id)

    def _expire_pending(self, group: Group, member_id: str) -> None:
        if group.pending_members.pop(member_id, None) is not None:
            self._try_complete_join(group)

    def _remove_member_and_update(self, group: Group, member_id: str) -> None:
        member = group.remove(member_id)
        if member is not None:
            member.complete_join(JoinResult(E.unknown_member_id, member_id=member_id))
            member.complete_sync(SyncResult(E.unknown_member_id))
        if group.is_in(GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group, f"removing member {member_id}")
        self._try_complete_join(group)

    # -- LeaveGroup --------------------------------------------------------------

    async def leave(self, group_id: str, members: list[tuple[str, str | None]]) -> tuple[ErrorCode, list[ErrorCode]]:
        """Each leaving member's error; the group-level error first. A leave that empties the group
        writes the Empty group, so it is refused while that write would be (the ISR below
        min.insync.replicas, nothing changed) and answered once the ISR holds it (Kafka's
        CoordinatorRuntime answers the LeaveGroup after its records are committed)."""
        error = self.group_error(group_id)
        if error is not None:
            return error, [error] * len(members)
        group = self.groups.get(group_id)
        if group is None:
            return E.none, [E.unknown_member_id] * len(members)
        if isinstance(group, ConsumerGroup):
            results = self.classic_leave(group, members)
            if E.none in results:
                written = await self.store.all_acknowledged(group_id, self.commit_timeout_ms)
                if written != E.none:
                    return written, [written] * len(members)
            return E.none, results
        if group.is_in(GroupState.DEAD):
            return E.coordinator_not_available, [E.coordinator_not_available] * len(members)
        leaving: list[tuple[str, ErrorCode]] = []  # the member id each entry resolves to, or its error
        for member_id, instance_id in members:
            if instance_id is not None:
                owner = group.static_members.get(instance_id)
                if owner is None:
                    leaving.append((member_id, E.unknown_member_id))
                    continue
                if member_id and member_id != owner:
                    leaving.append((member_id, E.fenced_instance_id))
                    continue
                member_id = owner
            known = member_id in group.pending_members or member_id in group.members
            leaving.append((member_id, E.none if known else E.unknown_member_id))
        gone = {m for m, e in leaving if e == E.none}
        empties = bool(group.members) and not set(group.members) - gone
        if empties:
            refused = self.store.min_isr_refusal(group_id)
            if refused is not None:
                return refused, [refused] * len(members)
        results = []
        for member_id, error in leaving:
            if error == E.none and member_id in group.pending_members:
                group.pending_members.pop(member_id).cancel()
                self._try_complete_join(group)
            elif error == E.none and member_id in group.members:
                log.info("member %s leaves group %s", member_id, group_id)
                self._remove_member_and_update(group, member_id)
            elif error == E.none:
                error = E.unknown_member_id  # named twice
            results.append(error)
        if empties and group.is_in(GroupState.EMPTY):
            written = await self.store.all_acknowledged(group_id, self.commit_timeout_ms)
            if written != E.none:
                return written, [written] * len(members)
        return E.none, results

    # -- ListGroups, DescribeGroups, DeleteGroups -----------------------------------

    def list_groups(self) -> list[Group]:
        return [g for g in self.groups.values() if not g.is_in(GroupState.DEAD) and self.owns(g.group_id)]

    async def delete_groups(self, group_ids: list[str]) -> list[ErrorCode]:
        """Each group's tombstones are appended (refused while the ISR is below min.insync.replicas,
        nothing deleted), the group is gone from memory as the log has it, and the answer waits
        until the ISR holds them (Kafka's deleteGroups, a coordinator write)."""
        results: list[ErrorCode] = []
        waits: dict[int, tuple[str, int]] = {}  # result index -> (group, log end after its tombstones)
        for group_id in group_ids:
            error = self.group_error(group_id)
            group = self.groups.get(group_id)
            if error is None and (group is None or group.is_in(GroupState.DEAD)):
                error = E.group_id_not_found
            if error is None and group is not None and not group.is_in(GroupState.EMPTY):
                error = E.non_empty_group
            if error is None and group is not None:
                records: list[tuple[bytes, bytes | None]] = [
                    (k, None) for k in self.offset_keys(group, list(group.offsets))
                ]
                if isinstance(group, ConsumerGroup):
                    records += self.consumer_group_tombstones(group)
                else:
                    records.append((group_key(group_id), None))
                error, end = self.store.append(group_id, records)
                if error == E.none:
                    group.transition(GroupState.DEAD, now_ms())
                    del self.groups[group_id]
                    log.info("deleted group %s", group_id)
                    waits[len(results)] = (group_id, end)
            results.append(error if error is not None else E.none)
        acks = await asyncio.gather(*(self.store.acknowledged(g, end, self.commit_timeout_ms)
                                      for g, end in waits.values()))
        for i, ack in zip(waits, acks, strict=True):
            results[i] = ack
        return results

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> list[asyncio.Task[None]]:
        """Replay __consumer_offsets, restart restored members' session timers, run expiry."""
        self._loop = asyncio.get_running_loop()
        self.load()
        for group in self.groups.values():
            for member in group.members.values():
                self._schedule_heartbeat(group, member)
        return [self.loop.create_task(self.run_expiry()), self.loop.create_task(self.run_consumer_expiry())]

    async def stop(self) -> None:
        for group in self.groups.values():
            if group.join_timer is not None:
                group.join_timer.cancel()
            for handle in group.pending_members.values():
                handle.cancel()
            for member in group.members.values():
                member.cancel_heartbeat()
                member.complete_join(JoinResult(E.coordinator_not_available, member_id=member.member_id))
                member.complete_sync(SyncResult(E.coordinator_not_available))
