"""Partition reassignment (Kafka's KIP-455), kept in ZooKeeper as Kafka's ZooKeeper mode keeps it.

A move of a partition from its original replicas (ORS) to target replicas (TRS) is written
into /brokers/topics/<t>: "partitions" holds the union, TRS first (Kafka's
ReplicaAssignment.reassignTo), "adding_replicas" TRS - ORS and "removing_replicas" the rest.
Every broker sees it through the topic's watch: an adding replica creates its log and follows
the leader like any follower, and the leader takes it into the ISR once it has caught up.
The controller finishes the move (Kafka's onPartitionReassignment): once all of TRS is in the
ISR it moves leadership into TRS if needed, drops the removing replicas from the ISR, then
writes "partitions" = TRS with nothing adding or removing; the removed brokers delete their
logs. Everything lives in ZooKeeper, so a new controller picks up where the last one stopped.

Only the active controller writes these (AlterPartitionReassignments elsewhere is answered
NOT_CONTROLLER), each write a transaction that also checks the zkVersion of /controller_epoch
(`fence`), as Kafka's ZooKeeper-mode controller does: a controller deposed while paused
(SIGSTOP, a long GC) writes nothing when it wakes up. Dropping the removing replicas from the
ISR bumps the leader epoch, as Kafka does, so the removed followers are fenced.

Cancelling makes the original replicas the target again (Kafka's cancel: reassignTo(ORS)),
the adding replicas becoming removing ones. /admin/reassign_partitions, the pre-2.4 way that
Kafka's ZooKeeper-mode controller still reads, is applied the same way and then deleted.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kazoo.exceptions import NoNodeError  # type: ignore[import-untyped]

from odradek.cluster.metadata import TopicError, TopicMetadata
from odradek.cluster.zk import ControllerMoved, Fence, LeaderAndIsr, ZkMetadataStore, topic_path
from odradek.cluster.zk_znodes import parse_topic

if TYPE_CHECKING:
    from odradek.cluster.controller import Controller

log = logging.getLogger("odradek.reassignment")

REASSIGN_PATH = "/admin/reassign_partitions"
CAS_ATTEMPTS = 10


@dataclass(frozen=True, slots=True)
class Move:
    """One partition's assignment: all replicas, and which of them join and leave."""

    replicas: list[int]
    adding: list[int]
    removing: list[int]

    @property
    def target(self) -> list[int]:
        return [b for b in self.replicas if b not in self.removing]

    @property
    def origin(self) -> list[int]:
        return [b for b in self.replicas if b not in self.adding]


def current_move(meta: TopicMetadata, p: int) -> Move:
    return Move(list(meta.replicas[p]), list(meta.adding.get(p, [])), list(meta.removing.get(p, [])))


def in_progress(meta: TopicMetadata, p: int) -> bool:
    return bool(meta.adding.get(p) or meta.removing.get(p))


def plan(meta: TopicMetadata | None, p: int, target: list[int] | None, live: set[int],
         allow_replication_factor_change: bool = True) -> Move:
    """The assignment after asking for `target` (None: cancel), or TopicError with Kafka's
    code and words (KafkaController.validateReplicas, maybeBuildReassignment)."""
    if meta is None or not 0 <= p < meta.partitions:
        raise TopicError("unknown_topic_or_partition", "The partition does not exist.")
    current = current_move(meta, p)
    if target is None:
        if not in_progress(meta, p):
            raise TopicError("no_reassignment_in_progress", "No reassignment is in progress for this partition.")
        target = current.origin
    else:
        if not target:
            raise TopicError("invalid_replica_assignment", "Empty replica list specified in partition reassignment.")
        if len(set(target)) != len(target):
            raise TopicError("invalid_replica_assignment",
                             f"Duplicate replica ids in partition reassignment replica list: {target}")
        if any(b < 0 for b in target):
            raise TopicError("invalid_replica_assignment", f"Invalid broker id in replica list: {target}")
        if not allow_replication_factor_change and len(target) != len(current.origin):
            # KIP-860 (AlterPartitionReassignments v1)
            raise TopicError("invalid_replication_factor",
                             f"The replication factor is changed from {len(current.origin)} to {len(target)}")
    origin = current.origin
    full = list(dict.fromkeys([*target, *origin]))
    # replicas an earlier move added and this one drops stay until the controller removed them
    full += [b for b in current.replicas if b not in full]
    move = Move(full, [b for b in full if b not in origin], [b for b in full if b not in target])
    dead = [b for b in move.adding if b not in live and b not in current.replicas]
    if dead:
        raise TopicError("invalid_replica_assignment",
                         f"Replica assignment has brokers that are not alive. Replica list: {move.adding}, "
                         f"live broker list: {sorted(live)}")
    return move


# -- ZooKeeper writes (blocking: the store's executor or the controller's thread) -----------

def write_moves(store: ZkMetadataStore, topic: str, moves: dict[int, Move | None], fence: Fence) -> None:
    """Compare-and-set the topic znode with these partitions' assignments (None: leave as is),
    fenced by the controller epoch (ControllerMoved when a newer controller exists)."""
    for _ in range(CAS_ATTEMPTS):
        try:
            raw, stat = store.ops.get(topic_path(topic))
        except NoNodeError:
            raise TopicError("unknown_topic_or_partition", f"topic {topic!r} does not exist") from None
        d = json.loads(raw)
        parts = d.setdefault("partitions", {})
        adding = d.setdefault("adding_replicas", {}) or {}
        removing = d.setdefault("removing_replicas", {}) or {}
        for p, move in moves.items():
            if move is None:
                continue
            parts[str(p)] = move.replicas
            for field, ids in ((adding, move.adding), (removing, move.removing)):
                if ids:
                    field[str(p)] = ids
                else:
                    field.pop(str(p), None)
        d["adding_replicas"], d["removing_replicas"] = adding, removing
        raw = json.dumps(d).encode()
        try:
            written = store.fenced_set(topic_path(topic), raw, stat.version, fence)
        except NoNodeError:
            raise TopicError("unknown_topic_or_partition", f"topic {topic!r} does not exist") from None
        if written is None:
            continue  # another writer (an ISR change does not touch this znode; a config change does)
        # this broker answers from what it wrote, before its watch brings it back (as create_topic does)
        store.remember_topic(parse_topic(topic, raw, store.ops.get))
        return
    raise TopicError("concurrent_transactions", f"topic {topic!r} changed concurrently; retry")


def reassign(store: ZkMetadataStore, topic: str, targets: dict[int, list[int] | None], live: set[int],
             allow_replication_factor_change: bool = True, *, fence: Fence) -> dict[int, TopicError | None]:
    """AlterPartitionReassignments for one topic, by the controller whose `fence` this is: each
    partition's answer (None: accepted); raises ControllerMoved when it is fenced."""
    try:
        raw, _ = store.ops.get(topic_path(topic))
        meta: TopicMetadata | None = parse_topic(topic, raw, store.ops.get)
    except NoNodeError:
        meta = None
    results: dict[int, TopicError | None] = {}
    moves: dict[int, Move | None] = {}
    for p, target in targets.items():
        try:
            moves[p] = plan(meta, p, target, live, allow_replication_factor_change)
            results[p] = None
        except TopicError as exc:
            results[p] = exc
    if not any(moves.values()):
        store.check_fence(fence)  # a deposed controller answers nothing but NOT_CONTROLLER
    if moves:
        try:
            write_moves(store, topic, moves, fence)
        except ControllerMoved:
            raise
        except TopicError as exc:
            for p in moves:
                results[p] = exc
            return results
        for p, move in moves.items():
            if move is not None:
                log.info("%s-%d: reassignment to %s (adding %s, removing %s)", topic, p, move.target,
                         move.adding, move.removing)
    return results


# -- the controller's part ------------------------------------------------------------------

class Reassignments:
    """Drives the moves in progress to their end; runs on the controller's thread."""

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.store = controller.store
        self.pending = False

    def watch(self) -> None:
        """Kafka's ZooKeeper-mode controller reads /admin/reassign_partitions when it is written."""
        self.store.zk.DataWatch(REASSIGN_PATH, lambda data, stat, event=None: (
            self.controller._events.put(("reassign_partitions", None)) if data else None))

    def pick_up_legacy(self) -> None:
        """Apply /admin/reassign_partitions ({"version":1,"partitions":[{"topic","partition",
        "replicas"}]}) and delete it, as Kafka's controller does with that znode."""
        try:
            raw, stat = self.store.ops.get(REASSIGN_PATH)
        except NoNodeError:
            return
        try:
            entries = json.loads(raw or b"{}").get("partitions") or []
            by_topic: dict[str, dict[int, list[int] | None]] = {}
            for e in entries:
                by_topic.setdefault(str(e["topic"]), {})[int(e["partition"])] = [int(b) for b in e["replicas"]]
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("ignoring an unreadable %s: %s", REASSIGN_PATH, exc)
            by_topic = {}
        live = set(self.controller._live)
        fence = self.controller.fence()
        if fence is None:
            return
        try:
            for topic, targets in by_topic.items():
                for p, error in reassign(self.store, topic, targets, live, fence=fence).items():
                    if error is not None:
                        log.warning("%s-%d: reassignment from %s refused: %s", topic, p, REASSIGN_PATH, error)
            # rewritten meanwhile (False): the watch brings it again
            self.store.fenced_delete(REASSIGN_PATH, stat.version, fence)
        except ControllerMoved as exc:
            self.controller.fenced(exc)

    def step(self) -> None:
        """One pass over the partitions being moved (Kafka's onPartitionReassignment, steps
        after the new replicas were added): leader, ISR, then the final assignment."""
        ctl = self.controller
        states = dict(ctl._states())
        live = ctl._live
        finished: dict[str, dict[int, Move | None]] = {}
        pending = False
        for name, meta in list(self.store.seen.topics.items()):
            for p in sorted(set(meta.adding) | set(meta.removing)):
                if p >= meta.partitions:
                    continue
                pending = True
                move = current_move(meta, p)
                state = states.get((name, p))
                if state is None:
                    continue
                target = move.target
                if not all(b in state.isr for b in target):
                    continue  # the new replicas are still catching up
                if state.leader not in target or state.leader not in live:
                    candidates = [b for b in target if b in state.isr and b in live]
                    if candidates:
                        ctl._write(name, p, LeaderAndIsr(candidates[0], state.leader_epoch + 1, state.isr, ctl.epoch,
                                                         state.zk_version), "reassignment moves the leader")
                    continue
                if any(b in state.isr for b in move.removing):
                    # a new leader epoch, as Kafka's controller gives one when replicas leave the
                    # assignment: a removed follower still fetching at the old epoch is fenced
                    isr = tuple(b for b in state.isr if b not in move.removing)
                    ctl._write(name, p, LeaderAndIsr(state.leader, state.leader_epoch + 1, isr, ctl.epoch,
                                                     state.zk_version), "reassignment removes replicas")
                    continue
                finished.setdefault(name, {})[p] = Move(target, [], [])
        for name, moves in finished.items():
            fence = ctl.fence()
            if fence is None:
                break
            try:
                write_moves(self.store, name, moves, fence)
            except ControllerMoved as exc:
                ctl.fenced(exc)
                break
            except TopicError as exc:
                log.warning("completing the reassignment of %s: %s", name, exc)
                continue
            for p, done in moves.items():
                log.info("%s-%d: reassignment complete, replicas %s", name, p, done and done.replicas)
        self.pending = pending


def ongoing(topics: dict[str, TopicMetadata], wanted: dict[str, list[int]] | None) -> dict[str, list[tuple[int, Move]]]:
    """ListPartitionReassignments: the moves in progress, of all topics or the named partitions."""
    out: dict[str, list[tuple[int, Move]]] = {}
    for name, meta in sorted(topics.items()):
        if wanted is not None and name not in wanted:
            continue
        parts = wanted[name] if wanted is not None else range(meta.partitions)
        for p in parts:
            if 0 <= p < meta.partitions and in_progress(meta, p):
                out.setdefault(name, []).append((p, current_move(meta, p)))
    return out


def moving_partitions(topics: dict[str, TopicMetadata]) -> list[tuple[str, int]]:
    return [(n, p) for n, meta in topics.items() for p in sorted(set(meta.adding) | set(meta.removing))]
