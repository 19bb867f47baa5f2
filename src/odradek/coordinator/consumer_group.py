"""A KIP-848 consumer group: members, epochs, target and current assignments.

This is Kafka's ConsumerGroup, ConsumerGroupMember and CurrentAssignmentBuilder:
the group epoch counts changes of membership or subscribed metadata; the target
assignment (computed by an assignor at the group epoch) is where the group is
going; each member reconciles towards its target one heartbeat at a time. A
partition is handed to a member only once no other member holds it (owned, or
still pending revocation), so two members never own a partition at once.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from odradek.coordinator.consumer_records import CurrentAssignmentValue, MemberMetadataValue
from odradek.coordinator.group import Group, GroupState

Partitions = dict[uuid.UUID, set[int]]


class MemberState(IntEnum):
    """Kafka's MemberState (the int8 of ConsumerGroupCurrentMemberAssignmentValue)."""

    STABLE = 0
    UNREVOKED_PARTITIONS = 1
    UNRELEASED_PARTITIONS = 2
    UNKNOWN = 127


def copy(p: Partitions) -> Partitions:
    return {t: set(ps) for t, ps in p.items() if ps}


def same(a: Partitions, b: Partitions) -> bool:
    return copy(a) == copy(b)


@dataclass(eq=False)
class ConsumerMember:
    member_id: str
    instance_id: str | None = None
    rack_id: str | None = None
    client_id: str = ""
    client_host: str = ""
    subscribed_topic_names: list[str] = field(default_factory=list)
    subscribed_topic_regex: str | None = None
    server_assignor: str | None = None
    rebalance_timeout_ms: int = 300000
    member_epoch: int = 0
    previous_member_epoch: int = -1
    state: MemberState = MemberState.STABLE
    assigned: Partitions = field(default_factory=dict)
    pending_revocation: Partitions = field(default_factory=dict)
    session_deadline: float = 0.0  # loop time
    revocation_deadline: float | None = None
    # a member of the classic protocol (JoinGroup/SyncGroup/Heartbeat) inside a consumer group
    # (KIP-848's online migration): its session timeout and its protocols
    classic: tuple[int, list[tuple[str, bytes]]] | None = None

    def metadata_value(self) -> MemberMetadataValue:
        return MemberMetadataValue(self.instance_id, self.rack_id, self.client_id, self.client_host,
                                   list(self.subscribed_topic_names), self.subscribed_topic_regex,
                                   self.rebalance_timeout_ms, self.server_assignor, self.classic)

    def load_metadata(self, v: MemberMetadataValue) -> None:
        self.instance_id, self.rack_id = v.instance_id, v.rack_id
        self.client_id, self.client_host = v.client_id, v.client_host
        self.subscribed_topic_names = list(v.subscribed_topic_names)
        self.subscribed_topic_regex = v.subscribed_topic_regex
        self.rebalance_timeout_ms, self.server_assignor = v.rebalance_timeout_ms, v.server_assignor
        self.classic = v.classic

    def assignment_value(self) -> CurrentAssignmentValue:
        return CurrentAssignmentValue(self.member_epoch, self.previous_member_epoch, int(self.state),
                                      copy(self.assigned), copy(self.pending_revocation))

    def load_assignment(self, v: CurrentAssignmentValue) -> None:
        self.member_epoch, self.previous_member_epoch = v.member_epoch, v.previous_member_epoch
        try:
            self.state = MemberState(v.state)
        except ValueError:
            self.state = MemberState.UNKNOWN
        self.assigned, self.pending_revocation = copy(v.assigned), copy(v.pending_revocation)


class ConsumerGroup(Group):
    """A group of the consumer protocol (ListGroups' type "consumer"). The classic
    `members` stay empty; `consumers` holds the KIP-848 members."""

    def __init__(self, group_id: str, now_ms: int) -> None:
        super().__init__(group_id, now_ms)
        self.protocol_type = "consumer"
        self.consumers: dict[str, ConsumerMember] = {}
        self.static_consumers: dict[str, str] = {}  # instance id -> member id
        self.group_epoch = 0
        self.assignment_epoch = 0
        self.target: dict[str, Partitions] = {}
        # topic name -> (topic id, partitions) of the subscribed topics, as last computed
        self.subscription_metadata: dict[str, tuple[uuid.UUID, int]] = {}
        self.owners: dict[tuple[uuid.UUID, int], str] = {}  # partition -> member holding it
        self.stored = False  # whether records of this group are in the log
        self.assignor_name = ""

    def __repr__(self) -> str:
        return f"ConsumerGroup({self.group_id!r}, {self.state.value}, epoch {self.group_epoch}, {len(self.consumers)} members)"

    def refresh_state(self, now_ms: int) -> None:
        """Kafka's ConsumerGroup states: Empty, Assigning (the target lags the group epoch),
        Reconciling (a member is not yet at its target), Stable."""
        if not self.consumers:
            state = GroupState.EMPTY
        elif self.assignment_epoch < self.group_epoch:
            state = GroupState.ASSIGNING
        elif any(m.member_epoch != self.assignment_epoch or m.state != MemberState.STABLE
                 for m in self.consumers.values()):
            state = GroupState.RECONCILING
        else:
            state = GroupState.STABLE
        if state != self.state:
            self.transition(state, now_ms)
        self.generation = self.group_epoch

    # -- members ---------------------------------------------------------------

    def add_consumer(self, member: ConsumerMember) -> None:
        self.consumers[member.member_id] = member
        stale = [i for i, m in self.static_consumers.items() if m == member.member_id and i != member.instance_id]
        for instance_id in stale:  # the member came back under another instance id: one mapping a member
            del self.static_consumers[instance_id]
        if member.instance_id is not None:
            self.static_consumers[member.instance_id] = member.member_id
        self.claim(member)

    def remove_consumer(self, member_id: str) -> ConsumerMember | None:
        member = self.consumers.pop(member_id, None)
        if member is None:
            return None
        if member.instance_id is not None and self.static_consumers.get(member.instance_id) == member_id:
            del self.static_consumers[member.instance_id]
        self.release(member)
        self.target.pop(member_id, None)
        return member

    def claim(self, member: ConsumerMember) -> None:
        for parts in (member.assigned, member.pending_revocation):
            for t, ps in parts.items():
                for p in ps:
                    self.owners[(t, p)] = member.member_id

    def release(self, member: ConsumerMember) -> None:
        for tp in [tp for tp, owner in self.owners.items() if owner == member.member_id]:
            del self.owners[tp]

    def rebuild_owners(self) -> None:
        self.owners.clear()
        for m in self.consumers.values():
            self.claim(m)

    def preferred_assignor(self, configured: list[str]) -> str:
        """The assignor most members ask for (Kafka: the most used server assignor), else the default."""
        asked = [m.server_assignor for m in self.consumers.values() if m.server_assignor in configured]
        if not asked:
            return configured[0]
        return max(configured, key=lambda a: (asked.count(a), -configured.index(a)))

    # -- reconciliation (Kafka's CurrentAssignmentBuilder) -----------------------------

    def reconcile(self, member: ConsumerMember, owned: Partitions | None) -> None:
        """Move `member` towards its target, given the partitions it reports owning
        (None: it did not say, so it is assumed to still own what it was given)."""
        target = self.target.get(member.member_id, {})
        if member.state == MemberState.UNREVOKED_PARTITIONS:
            if _owns_any(owned, member.pending_revocation):
                return
            self._next(member, member.member_epoch + 1, target, owned)
        elif member.state == MemberState.UNRELEASED_PARTITIONS:
            self._next(member, member.member_epoch, target, owned)
        elif member.state == MemberState.STABLE:
            if member.member_epoch != self.assignment_epoch:
                self._next(member, member.member_epoch, target, owned)
        else:
            self._next(member, self.assignment_epoch, target, owned)

    def _next(self, member: ConsumerMember, epoch: int, target: Partitions, owned: Partitions | None) -> None:
        assigned: Partitions = {}
        revoking: Partitions = {}
        pending: Partitions = {}
        unreleased = False
        for t in set(target) | set(member.assigned):
            want = target.get(t, set())
            have = member.assigned.get(t, set())
            keep = have & want
            if keep:
                assigned[t] = keep
            if have - keep:
                revoking[t] = have - keep
            free = set()
            for p in want - keep:
                holder = self.owners.get((t, p))
                if holder is not None and holder != member.member_id:
                    unreleased = True
                else:
                    free.add(p)
            if free:
                pending[t] = free
        self.release(member)
        if revoking and _owns_any(owned, revoking):
            member.state = MemberState.UNREVOKED_PARTITIONS
            self._set_epoch(member, epoch)
            member.assigned, member.pending_revocation = assigned, revoking
        else:
            for t, ps in pending.items():
                assigned.setdefault(t, set()).update(ps)
            member.state = MemberState.UNRELEASED_PARTITIONS if unreleased else MemberState.STABLE
            self._set_epoch(member, self.assignment_epoch)
            member.assigned, member.pending_revocation = assigned, {}
        self.claim(member)

    @staticmethod
    def _set_epoch(member: ConsumerMember, epoch: int) -> None:
        if epoch != member.member_epoch:
            member.previous_member_epoch = member.member_epoch
            member.member_epoch = epoch

    # -- views ---------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Classic DescribeGroups' view of a consumer group, as Kafka gives it: protocol type
        "consumer", the assignor as protocol data, each member's subscription and assigned
        partitions in the classic consumer protocol's encoding (tools that only speak
        DescribeGroups, such as lag monitors, see who owns what)."""
        names = {tid: name for name, (tid, _) in self.subscription_metadata.items()}
        return {
            "group_id": self.group_id,
            "group_state": self.state.value,
            "protocol_type": "consumer",
            "protocol_data": self.assignor_name,
            "members": [
                {"member_id": m.member_id, "group_instance_id": m.instance_id, "client_id": m.client_id,
                 "client_host": m.client_host,
                 "member_metadata": _subscription(m.subscribed_topic_names),
                 "member_assignment": encode_assignment({names[t]: ps for t, ps in m.assigned.items() if t in names})}
                for m in self.consumers.values()
            ],
        }


def _subscription(topics: list[str]) -> bytes:
    """ConsumerProtocolSubscription v0: [topic], no user data."""
    out = struct.pack(">hi", 0, len(topics))
    for t in topics:
        out += struct.pack(">h", len(t.encode())) + t.encode()
    return out + struct.pack(">i", -1)


def encode_assignment(partitions: dict[str, set[int]] | dict[str, list[int]]) -> bytes:
    """ConsumerProtocolAssignment v0: [topic, [partition]], no user data."""
    out = struct.pack(">hi", 0, len(partitions))
    for topic, parts in sorted(partitions.items()):
        out += struct.pack(">h", len(topic.encode())) + topic.encode() + struct.pack(">i", len(parts))
        out += b"".join(struct.pack(">i", p) for p in sorted(parts))
    return out + struct.pack(">i", -1)


def _owns_any(owned: Partitions | None, partitions: Partitions) -> bool:
    if owned is None:
        return True
    return any(owned.get(t, set()) & ps for t, ps in partitions.items())
