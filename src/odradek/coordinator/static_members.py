"""Static membership of classic groups (KIP-345): a restarted member rejoins in its old place.

A member with a group.instance.id that restarts joins with no member id; it gets a new one and
takes the old member's place. In a Stable group whose protocol still fits, the group does not
rebalance: the new member id is stored with the group (acks=-1, Kafka's
updateStaticMemberAndRebalance) and the JoinGroup answered once the ISR holds it; a write
refused or not acknowledged puts the old member back and answers with no member id.
"""

from __future__ import annotations

import asyncio
import logging

from kio.schema.errors import ErrorCode

from odradek.coordinator.group import Group, GroupState, JoinResult, Member
from odradek.coordinator.store import OffsetsStore

log = logging.getLogger("odradek.coordinator")

E = ErrorCode


class StaticMembersMixin:
    """The static rejoin half of GroupCoordinator (which supplies these attributes)."""

    store: OffsetsStore
    groups: dict[str, Group]
    _writes: set[asyncio.Task[None]]

    def group_error(self, group_id: str) -> ErrorCode | None: ...  # provided by GroupCoordinator

    def _schedule_heartbeat(self, group: Group, member: Member) -> None: ...  # provided by GroupCoordinator

    def _update_member(self, group: Group, member: Member, protocols: list[tuple[str, bytes]],
                       rebalance_ms: int, session_ms: int, fut: asyncio.Future[JoinResult]) -> None: ...

    def _prepare_rebalance(self, group: Group, reason: str) -> None: ...  # provided by GroupCoordinator

    def _try_complete_join(self, group: Group) -> None: ...  # provided by GroupCoordinator

    @staticmethod
    def _group_records(group: Group) -> list[tuple[bytes, bytes | None]]:
        raise NotImplementedError  # provided by GroupCoordinator

    def _rejoin_static(
        self, group: Group, instance_id: str, old_id: str, new_id: str, protocols: list[tuple[str, bytes]],
        rebalance_ms: int, session_ms: int, fut: asyncio.Future[JoinResult], version: int,
    ) -> None:
        """A static member restarted: it takes its old place, and a Stable group does not rebalance (KIP-345)."""
        old_leader = group.leader_id
        member = group.replace_static_member(instance_id, old_id, new_id)
        old_protocols = member.protocols
        old = (old_protocols, member.rebalance_timeout_ms, member.session_timeout_ms)
        if group.is_in(GroupState.STABLE):
            member.protocols = protocols
            member.rebalance_timeout_ms = rebalance_ms
            member.session_timeout_ms = session_ms
            self._schedule_heartbeat(group, member)
            if group.candidate_protocols() and group.select_protocol() == group.protocol_name:
                # Kafka's updateStaticMemberAndRebalance: the new member id is stored with the group
                # (acks=-1) and answered once the ISR holds it; refused, the old member is back
                error, end = self.store.append(group.group_id, self._group_records(group))
                if error != E.none:
                    self._revert_static_rejoin(group, instance_id, old_id, new_id, old)
                    fut.set_result(self._static_rejoin_failed(group, error, old_leader))
                    return
                task = asyncio.get_running_loop().create_task(self._answer_static_rejoin(
                    group, instance_id, old_id, new_id, old, old_leader, end, fut, version))
                self._writes.add(task)
                task.add_done_callback(self._writes.discard)
                return
            member.protocols = old_protocols
        self._update_member(group, member, protocols, rebalance_ms, session_ms, fut)
        self._prepare_rebalance(group, f"static member {instance_id} rejoined")
        self._try_complete_join(group)

    async def _answer_static_rejoin(
        self, group: Group, instance_id: str, old_id: str, new_id: str, old: tuple[list[tuple[str, bytes]], int, int],
        old_leader: str | None, end: int, fut: asyncio.Future[JoinResult], version: int,
    ) -> None:
        try:
            error = await self.store.acknowledged(group.group_id, end, self.store.commit_timeout_ms)
        except Exception:  # a background task: the rejoining member's JoinGroup must be answered
            log.exception("storing the static member %s of group %s failed", instance_id, group.group_id)
            error = E.unknown_server_error
        if error == E.none:
            error = self.group_error(group.group_id) or E.none  # the partition moved meanwhile
        if error != E.none:
            log.info("group %s: static member %s not stored as %s: %s", group.group_id, instance_id, new_id,
                     error.name)
            self._revert_static_rejoin(group, instance_id, old_id, new_id, old)
            if not fut.done():
                fut.set_result(self._static_rejoin_failed(group, error, old_leader))
            return
        is_leader = group.leader_id == new_id
        if not fut.done():
            fut.set_result(JoinResult(
                E.none, member_id=new_id, generation=group.generation,
                protocol_type=group.protocol_type, protocol_name=group.protocol_name,
                # before v9 the old leader id keeps the new member from assigning (KIP-814 adds skip)
                leader=(group.leader_id or "") if version >= 9 else (old_leader or ""),
                members=group.member_metadata() if is_leader and version >= 9 else [],
                skip_assignment=is_leader and version >= 9,
            ))
        log.info("static member %s of group %s rejoined as %s without a rebalance", instance_id, group.group_id,
                 new_id)

    @staticmethod
    def _static_rejoin_failed(group: Group, error: ErrorCode, old_leader: str | None) -> JoinResult:
        """Kafka's answer to a static rejoin whose member id was not stored: no member id (it
        joins again), the group's generation, protocol and leader."""
        return JoinResult(error, member_id="", generation=group.generation, protocol_type=group.protocol_type,
                          protocol_name=group.protocol_name, leader=old_leader or "")

    def _revert_static_rejoin(self, group: Group, instance_id: str, old_id: str, new_id: str,
                              old: tuple[list[tuple[str, bytes]], int, int]) -> None:
        """The new member id could not be stored: the member is the old one again (Kafka's
        updateStaticMemberAndRebalance on a failed write), unless the group moved on meanwhile."""
        if self.groups.get(group.group_id) is not group or group.static_members.get(instance_id) != new_id:
            return
        member = group.replace_static_member(instance_id, new_id, old_id)
        member.protocols, member.rebalance_timeout_ms, member.session_timeout_ms = old
        self._schedule_heartbeat(group, member)
