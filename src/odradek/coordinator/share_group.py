"""Share groups (KIP-932): membership, assignment and the share partitions of a broker.

A share group has no rebalance barrier: partitions may be shared by several members,
so a new assignment is given to each member at its next ShareGroupHeartbeat and the
member epoch follows the group epoch at once. The assignment is computed on the
broker, in the spirit of Kafka's SimpleAssignor: with no more members than
partitions each partition goes to one member, with more members each member gets
one partition and a partition is shared. Membership lives in memory (members
rejoin after a restart); the share partitions' state goes to __share_group_state
(share_state.py), which is what must not be lost. As Kafka's group coordinator, a
partition is assigned only once its state is initialized (InitializeShareGroupState,
state epoch the group epoch, start offset -1 so that its leader applies
share.auto.offset.reset).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kio.schema.errors import ErrorCode

from odradek.coordinator.share_partition import SharePartition
from odradek.coordinator.share_persister import SharePersister
from odradek.coordinator.share_state import GroupConfigs, ShareStateStore, Snapshot

if TYPE_CHECKING:
    from odradek.server.broker import Broker

log = logging.getLogger("odradek.coordinator")
E = ErrorCode
LEAVE_EPOCH = -1
SWEEP_INTERVAL_S = 0.1

Assignment = dict[uuid.UUID, list[int]]


@dataclass
class ShareMember:
    member_id: str
    client_id: str
    client_host: str
    rack_id: str | None
    subscribed: list[str]
    epoch: int = 0
    assignment: Assignment = field(default_factory=dict)
    session: asyncio.TimerHandle | None = None


@dataclass
class ShareGroup:
    group_id: str
    epoch: int = 0
    assignment_epoch: int = 0
    members: dict[str, ShareMember] = field(default_factory=dict)
    metadata: tuple[tuple[str, int], ...] = ()
    initialized: set[tuple[uuid.UUID, int]] = field(default_factory=set)  # share partitions with state
    init_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def state(self) -> str:
        return "Stable" if self.members else "Empty"

    def subscribed_topics(self) -> set[str]:
        return {t for m in self.members.values() for t in m.subscribed}


def assign(members: list[ShareMember], topics: dict[str, tuple[uuid.UUID, int]]) -> dict[str, Assignment]:
    """Partitions of every subscribed topic over the members subscribed to it (sorted by id, so
    each member's share is stable while membership is)."""
    out: dict[str, Assignment] = {m.member_id: {} for m in members}
    for name, (topic_id, count) in sorted(topics.items()):
        subs = sorted(m.member_id for m in members if name in m.subscribed)
        if not subs or count <= 0:
            continue
        if len(subs) <= count:
            for p in range(count):
                out[subs[p % len(subs)]].setdefault(topic_id, []).append(p)
        else:
            for i, member_id in enumerate(subs):
                out[member_id].setdefault(topic_id, []).append(i % count)
    return out


@dataclass
class ShareSession:
    """A member's share session on this broker (KIP-932's share fetch sessions): the partitions
    it fetches, and the epoch its next ShareFetch or ShareAcknowledge must carry."""
    epoch: int
    partitions: dict[tuple[uuid.UUID, int], None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class HeartbeatResult:
    error: ErrorCode
    message: str | None = None
    member_epoch: int = 0
    assignment: Assignment | None = None


class ShareCoordinator:
    """The share groups this broker coordinates and the share partitions it leads."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.config = broker.config
        self.persister = SharePersister(broker)
        zk_store = getattr(broker, "store", None)  # cluster mode: the ZooKeeper metadata store
        self.group_configs = GroupConfigs(broker.config.data_dir, zk_store if hasattr(zk_store, "zk") else None)
        self.groups: dict[str, ShareGroup] = {}
        self.partitions: dict[tuple[str, str, int], SharePartition] = {}
        self.sessions: dict[tuple[str, str], ShareSession] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._led = asyncio.Event()  # set once a share partition is led here: the sweeper starts

    @property
    def store(self) -> ShareStateStore:
        """__share_group_state (FindCoordinator's share key type names its partitions)."""
        return self.persister.store

    def start(self) -> list[asyncio.Task[None]]:
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return [self._sweeper]

    async def stop(self) -> None:
        await self.flush()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper

    # -- membership (ShareGroupHeartbeat) -------------------------------------------

    async def heartbeat(self, group_id: str, member_id: str, member_epoch: int, rack_id: str | None,
                        subscribed: list[str] | None, client_id: str, client_host: str) -> HeartbeatResult:
        if not member_id:
            return HeartbeatResult(E.invalid_request, "MemberId can't be empty.")
        group = self.groups.get(group_id)
        # Kafka: only a join (epoch 0) makes a group. A group this broker has no members of but
        # state of (a restart, a coordinator failover: membership lives in memory) exists still.
        if group is None and member_epoch != 0 and not self.known_group(group_id, anywhere=True):
            return HeartbeatResult(E.group_id_not_found, f"Group {group_id} not found.")
        if member_epoch == LEAVE_EPOCH:
            if group is not None and member_id in group.members:
                self._remove(group, member_id)
            return HeartbeatResult(E.none, member_epoch=LEAVE_EPOCH)
        if member_epoch == 0:
            if not subscribed:
                return HeartbeatResult(E.invalid_request, "SubscribedTopicNames must be set in first request.")
            group = self.groups.setdefault(group_id, ShareGroup(group_id))
            member = group.members.get(member_id)
            if member is None:
                member = group.members[member_id] = ShareMember(member_id, client_id, client_host, rack_id,
                                                                list(subscribed))
                group.epoch += 1
            member.epoch = 0
        else:
            member = group.members.get(member_id) if group is not None else None
            if group is None or member is None:
                return HeartbeatResult(E.unknown_member_id, f"Member {member_id} is not a member of group {group_id}.")
            if member_epoch != member.epoch:
                return HeartbeatResult(E.fenced_member_epoch, f"The share group member has an epoch {member_epoch}"
                                       f" while the coordinator has {member.epoch}.")
        if subscribed is not None and sorted(subscribed) != sorted(member.subscribed):
            member.subscribed = list(subscribed)
            group.epoch += 1
        if rack_id is not None:
            member.rack_id = rack_id
        self._schedule_session(group, member)
        self._maybe_assign(group)
        error = await self._initialize(group, member.assignment)
        if error:
            return HeartbeatResult(error, "The share partitions' state could not be initialized.")
        if member.epoch != group.epoch:
            member.epoch = group.epoch
            return HeartbeatResult(E.none, member_epoch=member.epoch, assignment=member.assignment)
        return HeartbeatResult(E.none, member_epoch=member.epoch)

    def _topics(self, names: set[str]) -> dict[str, tuple[uuid.UUID, int]]:
        known = self.broker.topics()
        return {n: (known[n].topic_id, known[n].partitions) for n in names if n in known}

    def _maybe_assign(self, group: ShareGroup) -> None:
        """A new target assignment when membership, subscriptions or the subscribed topics'
        partitions changed (a topic created or grown bumps the group epoch, as Kafka's
        subscription metadata check does)."""
        topics = self._topics(group.subscribed_topics())
        metadata = tuple(sorted((n, c) for n, (_, c) in topics.items()))
        if metadata != group.metadata:
            group.metadata = metadata
            group.epoch += 1
        if group.assignment_epoch == group.epoch:
            return
        for member_id, assignment in assign(list(group.members.values()), topics).items():
            group.members[member_id].assignment = assignment
        group.assignment_epoch = group.epoch

    async def _initialize(self, group: ShareGroup, assignment: Assignment) -> ErrorCode:
        """The state of each partition of `assignment` initialized before the member is given it: read
        from the share coordinator the first time (a state kept from before a restart stays), else
        initialized with the group epoch as state epoch and start offset -1."""
        async with group.init_lock:
            for topic_id, partitions in assignment.items():
                for p in partitions:
                    if (topic_id, p) in group.initialized:
                        continue
                    key = (group.group_id, topic_id, p)
                    error, _ = await self.persister.read(key)
                    if error == E.invalid_request:  # never initialized, or deleted
                        error = await self.persister.initialize(key, max(group.epoch, 1), -1)
                    if error:
                        log.info("share group %s: state of %s-%d not initialized: %s", group.group_id, topic_id, p,
                                 error.name)
                        return error
                    group.initialized.add((topic_id, p))
        return E.none

    def _schedule_session(self, group: ShareGroup, member: ShareMember) -> None:
        if member.session is not None:
            member.session.cancel()
        member.session = asyncio.get_running_loop().call_later(
            self.config.group_share_session_timeout_ms / 1000, self._expire, group.group_id, member.member_id)

    def _expire(self, group_id: str, member_id: str) -> None:
        group = self.groups.get(group_id)
        if group is not None and member_id in group.members:
            log.info("share group %s: member %s session timed out", group_id, member_id)
            self._remove(group, member_id)

    def _remove(self, group: ShareGroup, member_id: str) -> None:
        member = group.members.pop(member_id)
        if member.session is not None:
            member.session.cancel()
        group.epoch += 1
        self._maybe_assign(group)
        self.release_member(group.group_id, member_id)
        self.sessions.pop((group.group_id, member_id), None)  # its share session on this broker ends too

    # -- share partitions ----------------------------------------------------------

    async def share_partition(self, group_id: str, topic: str, topic_id: uuid.UUID, partition: int,
                              log_start: int, high_watermark: int) -> SharePartition | ErrorCode:
        """The group's state of the partition led here, read from its share coordinator on first
        use and after a leader change; one initialized without a start offset starts at
        share.auto.offset.reset (latest: the high watermark; earliest: the log start). A state
        the group coordinator never initialized is INVALID_REQUEST (Kafka's share coordinator)."""
        key = (group_id, topic, partition)
        leader_epoch = self.broker.leader_epoch(topic, partition)
        sp = self.partitions.get(key)
        if sp is not None and sp.topic_id == topic_id and sp.leader_epoch == leader_epoch:
            return sp
        error, snap = await self.persister.read((group_id, topic_id, partition), leader_epoch)
        if error:
            return error
        sp = self.partitions.get(key)  # another request may have read it meanwhile
        if sp is not None and sp.topic_id == topic_id and sp.leader_epoch == leader_epoch:
            return sp
        assert snap is not None
        state_epoch, start, batches = snap
        if start >= 0:
            sp = SharePartition.from_snapshot(group_id, topic, topic_id, partition, max(start, log_start),
                                              state_epoch, batches)
        else:  # initialized without a start offset
            earliest = self.group_configs.get(group_id, "share.auto.offset.reset") == "earliest"
            sp = SharePartition(group_id, topic, topic_id, partition, log_start if earliest else high_watermark,
                                state_epoch=state_epoch)
            sp.dirty = True
        sp.leader_epoch = leader_epoch
        self.partitions[key] = sp
        self._led.set()
        return sp

    def group_config_int(self, group_id: str, name: str, default: int) -> int:
        value = self.group_configs.get(group_id, name)
        return int(value) if value else default

    def lock_s(self, group_id: str) -> float:
        return self.group_config_int(group_id, "share.record.lock.duration.ms",
                                     self.config.group_share_record_lock_duration_ms) / 1000

    def delivery_limit(self, group_id: str) -> int:
        return self.group_config_int(group_id, "share.delivery.count.limit",
                                     self.config.group_share_delivery_count_limit)

    def release_member(self, group_id: str, member_id: str) -> None:
        """The member's records go back; the sweeper writes the state."""
        for (g, topic, partition), sp in self.partitions.items():
            if g == group_id and sp.release_member(member_id, self.delivery_limit(g)):
                self.broker.purgatory.notify((topic, partition))

    async def save(self, sp: SharePartition) -> bool:
        """Write the partition's snapshot when it changed; False when the write failed. Writes of
        one partition go one at a time, each with the state as it is when its turn comes."""
        async with sp.write_lock:
            if not sp.dirty:
                return True
            snap: Snapshot = (sp.state_epoch, sp.start_offset, sp.state_batches())
            sp.dirty = False
            error = await self.persister.write((sp.group_id, sp.topic_id, sp.partition), snap, sp.leader_epoch)
            if error in (E.fenced_state_epoch, E.fenced_leader_epoch, E.invalid_request):
                # altered, deleted (no state: INVALID_REQUEST) or read by a newer leader meanwhile:
                # read it again at next use
                log.info("share state of %s %s-%d was changed elsewhere", sp.group_id, sp.topic, sp.partition)
                self.partitions.pop((sp.group_id, sp.topic, sp.partition), None)
            if error:
                sp.dirty = True
                return False
            return True

    async def flush(self) -> None:
        for sp in list(self.partitions.values()):
            await self.save(sp)

    async def delete_state(self, group_id: str, topic: str, topic_id: uuid.UUID, partitions: int) -> ErrorCode:
        """DeleteShareGroupOffsets: the state is gone; the next fetch starts at share.auto.offset.reset."""
        error = E.none
        group = self.groups.get(group_id)
        for p in range(partitions):
            self.partitions.pop((group_id, topic, p), None)
            if group is not None:
                group.initialized.discard((topic_id, p))
            error = await self.persister.delete((group_id, topic_id, p)) or error
        return error

    async def group_state(self, group_id: str, wanted: dict[str, list[int]] | None
                          ) -> dict[tuple[str, uuid.UUID, int], tuple[int, int]]:
        """(topic, topic id, partition) -> (SPSO, records done past it) for DescribeShareGroupOffsets;
        all topics: those the members subscribe to and those with state here."""
        known = self.broker.topics()
        names = {t.topic_id: n for n, t in known.items()}
        if wanted is None:
            topics = set(self.groups[group_id].subscribed_topics()) if group_id in self.groups else set()
            topics |= {names[k[1]] for k in self.persister.local_keys(group_id) if k[1] in names}
            topics |= {t for (g, t, _) in self.partitions if g == group_id}
            wanted = {t: list(range(known[t].partitions)) for t in topics if t in known}
        out: dict[tuple[str, uuid.UUID, int], tuple[int, int]] = {}
        for topic, partitions in wanted.items():
            if topic not in known:
                continue
            topic_id = known[topic].topic_id
            for p in partitions:
                sp = self.partitions.get((group_id, topic, p))
                if sp is not None:
                    out[(topic, topic_id, p)] = (sp.start_offset, sp.completed_in_flight())
                    continue
                error, snap = await self.persister.read((group_id, topic_id, p))
                if not error and snap is not None:  # a start offset of -1: initialized only
                    done = sum(b.last_offset - b.first_offset + 1 for b in snap[2] if b.delivery_state in (2, 4))
                    out[(topic, topic_id, p)] = (snap[1], done)
        return out

    async def delete_group(self, group_id: str) -> ErrorCode:
        """DeleteGroups of a share group: only an empty one; its state in every partition goes."""
        group = self.groups.get(group_id)
        if group is not None and group.members:
            return E.non_empty_group
        error = E.none
        for topic, topic_id, p in await self.group_state(group_id, None):
            self.partitions.pop((group_id, topic, p), None)
            error = await self.persister.delete((group_id, topic_id, p)) or error
        if not error:
            self.groups.pop(group_id, None)
        return error

    def list_groups(self) -> list[tuple[str, str]]:
        """(group id, state) of every share group with members or state kept here (ListGroups)."""
        ids = set(self.groups)
        if self.persister.store.exists():
            ids |= {k[0] for k in self.persister.snapshots}
            ids |= {g for g, _, _ in self.partitions}
        return [(g, self.groups[g].state if g in self.groups else "Empty") for g in sorted(ids)]

    def known_group(self, group_id: str, anywhere: bool = False) -> bool:
        """A group with members or state here (`anywhere`: in any replica of __share_group_state here,
        led or not)."""
        return group_id in self.groups or bool(self.persister.local_keys(group_id)) or any(
            g == group_id for g, _, _ in self.partitions) or (anywhere and self.persister.has_state(group_id))

    async def _sweep(self) -> None:
        """Acquisition locks time out here; a released record wakes the share fetches waiting."""
        while True:
            if not self.partitions:  # a broker that leads no share partition does not wake for it
                self._led.clear()
                await self._led.wait()
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = time.monotonic()
            try:
                for (g, topic, partition), sp in list(self.partitions.items()):
                    if sp.inflight and sp.expire_locks(now, self.delivery_limit(g)):
                        self.broker.purgatory.notify((topic, partition))
                    if sp.dirty:  # new records acquired, locks expired: one write per sweep
                        await self.save(sp)
            except (OSError, ValueError) as exc:  # a disk or config error must not end the sweeper
                log.warning("share lock sweep failed: %s", exc)
