"""The controller: one broker at a time, elected through the ephemeral /controller znode.

It owns leader election. When a broker's registration disappears it gives
every partition that broker led a new leader from the live ISR (a replica
outside the ISR only when the topic sets unclean.leader.election.enable),
bumps the leader epoch, and drops dead followers from the ISR; when a
partition's preferred replica (the first of its assignment) is back and in the
ISR it moves leadership back (auto.leader.rebalance.enable). Every write is a
compare-and-set on the state znode inside a transaction that also checks the
version of /controller_epoch, so a controller that lost its seat is fenced.

It runs on its own (daemon) thread with blocking ZooKeeper calls, each bounded
(the store's `ops`): the event loop never waits for ZooKeeper on its behalf, and
stop() waits for the thread at most STOP_TIMEOUT_S.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from typing import Any

from kazoo.exceptions import NodeExistsError, NoNodeError  # type: ignore[import-untyped]
from kazoo.protocol.states import KazooState  # type: ignore[import-untyped]

from odradek.cluster.reassignment import Reassignments
from odradek.cluster.topic_config import topic_config_value
from odradek.cluster.zk import (
    CONTROLLER_EPOCH_PATH,
    ControllerMoved,
    Fence,
    LeaderAndIsr,
    ZkMetadataStore,
)

log = logging.getLogger("odradek.controller")

# Kafka checks every leader.imbalance.check.interval.seconds (300 s); odradek's
# clusters are small, so a preferred leader comes back within seconds.
REBALANCE_INTERVAL_S = 2.0
REASSIGNMENT_INTERVAL_S = 0.2  # while partitions move, the controller looks at them this often
STOP_TIMEOUT_S = 2.0
SHRINK = "dead follower left the ISR"
WRITE_BATCH = 100  # partition states in one ZooKeeper transaction (each ~150 bytes of jute.maxbuffer's 1 MiB)


class Controller:
    """Controller election and the elections the active controller makes."""

    def __init__(self, store: ZkMetadataStore, broker_id: int, config: Any) -> None:
        self.store = store
        self.broker_id = broker_id
        self.config = config
        self.active = False
        self.epoch = 0
        self._epoch_zk_version = -1
        self._live: set[int] = set()
        # states this controller wrote or re-read, newer than the watches may have delivered yet
        self._fresh: dict[tuple[str, int], LeaderAndIsr] = {}
        self._events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="odradek-controller", daemon=True)
        self._stopping = False
        self.reassignments = Reassignments(self)

    def start(self) -> None:
        zk = self.store.zk
        zk.ChildrenWatch("/brokers/ids", lambda children: self._events.put(("brokers", children)))
        zk.DataWatch("/controller", lambda data, stat, event=None: self._events.put(("controller", data)))
        zk.add_listener(lambda state: self._events.put(("session", state)))
        self.reassignments.watch()
        self._thread.start()

    def fence(self) -> Fence | None:
        """What fences this controller's writes (the zkVersion of /controller_epoch it wrote),
        or None when it is not the active controller."""
        return (CONTROLLER_EPOCH_PATH, self._epoch_zk_version) if self.active else None

    def fenced(self, exc: Exception) -> None:
        """A write of this controller was refused by the fence: a newer controller exists."""
        if self.active:
            log.warning("broker %d is fenced as controller (epoch %d): %s", self.broker_id, self.epoch, exc)
        self.active = False

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Bounded: a thread still in a ZooKeeper call (itself bounded) is left behind, a daemon."""
        self._stopping = True
        self._events.put(("stop", None))
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("the controller thread did not stop within %.1f s; leaving it", timeout)

    # -- the event thread -----------------------------------------------------

    def _run(self) -> None:
        while not self._stopping:
            moving = self.active and self.reassignments.pending
            try:
                kind, arg = self._events.get(timeout=REASSIGNMENT_INTERVAL_S if moving else REBALANCE_INTERVAL_S)
            except queue.Empty:
                kind, arg = ("reassignments" if moving else "tick"), None
            try:
                self._handle(kind, arg)
                if self.active and kind != "stop":
                    self.reassignments.step()
            except Exception as exc:  # noqa: BLE001 - the thread must outlive any event; the next one retries
                log.warning("controller event %s failed: %s", kind, exc)

    def _handle(self, kind: str, arg: Any) -> None:
        if kind == "stop":
            return
        if kind == "session":
            # SUSPENDED keeps the seat (the session may survive; writes fail meanwhile); LOST ends it
            if arg == KazooState.LOST:
                if self.active:
                    log.info("broker %d resigns as controller: ZooKeeper session lost", self.broker_id)
                self.active = False
            elif arg == KazooState.CONNECTED:
                self._events.put(("controller", None))
            return
        if kind == "brokers":
            self._live = {int(c) for c in arg}
            if self.active:
                self._elect_leaders()
            return
        if kind == "controller":
            if arg is None and not self.active:
                self._try_become_controller()
            elif arg is not None:
                holder = json.loads(arg).get("brokerid")
                if holder != self.broker_id and self.active:
                    log.info("broker %d is no longer the controller", self.broker_id)
                    self.active = False
            return
        if kind == "reassign_partitions":
            if self.active:
                self.reassignments.pick_up_legacy()
            return
        if kind == "tick":
            if not self.active and self.store.seen.controller == -1:
                self._try_become_controller()
            if self.active:
                self._elect_leaders()
                if self.config.auto_leader_rebalance_enable:
                    self._rebalance_preferred()

    def _try_become_controller(self) -> None:
        if self._stopping or self.store.zk.state != KazooState.CONNECTED:
            return
        zk = self.store.ops
        try:
            zk.create("/controller", json.dumps({"version": 1, "brokerid": self.broker_id,
                                                 "timestamp": ""}).encode(), ephemeral=True)
        except NodeExistsError:
            try:
                raw, stat = zk.get("/controller")
            except NoNodeError:
                return  # just vanished: the watch brings another election
            if json.loads(raw).get("brokerid") != self.broker_id or stat.ephemeralOwner != self.store.session_id:
                return
            # our seat survived a suspended session: keep it, with the epoch it had
            raw, stat = zk.get(CONTROLLER_EPOCH_PATH)
            self.epoch, self._epoch_zk_version = int(raw), stat.version
            self._live = {int(c) for c in zk.get_children("/brokers/ids")}
            self.active = True
            self._elect_leaders()
            return
        # the version this write leaves is the fence of every write of this controller (a later
        # read could see a newer controller's)
        try:
            raw, stat = zk.get(CONTROLLER_EPOCH_PATH)
            epoch = int(raw or b"0") + 1
            stat = zk.set(CONTROLLER_EPOCH_PATH, str(epoch).encode(), version=stat.version)
            self.epoch, self._epoch_zk_version = epoch, stat.version
        except NoNodeError:
            zk.create(CONTROLLER_EPOCH_PATH, b"1")
            self.epoch, self._epoch_zk_version = 1, 0
        self._live = {int(c) for c in zk.get_children("/brokers/ids")}
        self.active = True
        log.info("broker %d is the controller (controller epoch %d)", self.broker_id, self.epoch)
        self._elect_leaders()
        self.reassignments.pick_up_legacy()

    # -- elections -----------------------------------------------------------

    def _states(self) -> list[tuple[tuple[str, int], LeaderAndIsr]]:
        """The watched states, or the ones this controller knows to be newer."""
        out = []
        for key, state in list(self.store.seen.states.items()):
            fresh = self._fresh.get(key)
            if fresh is not None and fresh.zk_version > state.zk_version:
                state = fresh
            else:
                self._fresh.pop(key, None)
            out.append((key, state))
        return out

    def _write(self, topic: str, p: int, new: LeaderAndIsr, why: str) -> None:
        fence = self.fence()
        if self._stopping or fence is None:
            return
        try:
            written = self.store.write_state(topic, p, new, fence=fence)
        except ControllerMoved as exc:  # deposed meanwhile (a pause longer than the session): write nothing
            self.fenced(exc)
            return
        if written is None:
            # lost a CAS (the leader changed the ISR meanwhile); re-read and retry
            fresh = self.store.read_state(topic, p)
            if fresh is not None:
                self._fresh[(topic, p)] = fresh
            self._events.put(("tick", None))
            return
        self._fresh[(topic, p)] = written
        log.info("%s-%d: leader %d epoch %d isr %s (%s)", topic, p, new.leader, new.leader_epoch,
                 list(new.isr), why)

    def _write_all(self, writes: list[tuple[str, int, LeaderAndIsr, str]]) -> None:
        """The state writes of many partitions, WRITE_BATCH to a ZooKeeper transaction: a broker's
        failure with 1,000 partitions was 1,000 round trips one after another (4-29 s beyond the
        session timeout in bench/failover_bench.py). A write whose partition changed meanwhile
        (a leader's own ISR change) leaves its batch for _write's re-read and retry, and the rest
        of the batch goes again."""
        for i in range(0, len(writes), WRITE_BATCH):
            pending = writes[i:i + WRITE_BATCH]
            while pending:
                fence = self.fence()
                if self._stopping or fence is None:
                    return
                if len(pending) == 1:
                    self._write(*pending[0])
                    break
                try:
                    result = self.store.write_states([(topic, p, new) for topic, p, new, _why in pending], fence)
                except ControllerMoved as exc:
                    self.fenced(exc)
                    return
                if isinstance(result, int):
                    self._write(*pending[result])
                    pending = pending[:result] + pending[result + 1:]
                    continue
                for (topic, p, new, why), state in zip(pending, result, strict=True):
                    self._fresh[(topic, p)] = state
                    log.info("%s-%d: leader %d epoch %d isr %s (%s)", topic, p, new.leader, new.leader_epoch,
                             list(new.isr), why)
                break

    def _elect_leaders(self) -> None:
        """Partitions whose leader is gone get a new one; dead followers leave the ISR."""
        writes: list[tuple[str, int, LeaderAndIsr, str]] = []
        self._plan_elections(writes)
        # the partitions without a leader first: the ISR shrinks of the others can wait a little
        writes.sort(key=lambda w: w[3] == SHRINK)
        self._write_all(writes)

    def _plan_elections(self, writes: list[tuple[str, int, LeaderAndIsr, str]]) -> None:
        live = self._live
        topics = self.store.seen.topics
        for (topic, p), state in self._states():
            meta = topics.get(topic)
            if meta is None or p >= meta.partitions:
                continue
            replicas = meta.replicas[p]
            if state.leader in live:
                isr = tuple(b for b in state.isr if b in live)
                if isr != state.isr and state.leader in isr:
                    writes.append((topic, p, LeaderAndIsr(state.leader, state.leader_epoch, isr, self.epoch,
                                                          state.zk_version), SHRINK))
                continue
            candidates = [b for b in replicas if b in state.isr and b in live]
            why = "leader lost"
            if not candidates and _unclean(meta.configs, self.config):
                candidates = [b for b in replicas if b in live]
                why = "unclean election"
            if candidates:
                leader = candidates[0]
                isr = tuple(b for b in state.isr if b in live) if why != "unclean election" else (leader,)
                if leader not in isr:
                    isr = (leader, *isr)
                new = LeaderAndIsr(leader, state.leader_epoch + 1, isr, self.epoch, state.zk_version)
                writes.append((topic, p, new, why))
            elif state.leader != -1:
                # No live in-sync replica: offline until one returns (Kafka keeps the last ISR).
                new = LeaderAndIsr(-1, state.leader_epoch + 1, state.isr, self.epoch, state.zk_version)
                writes.append((topic, p, new, "offline: no live in-sync replica"))

    def _rebalance_preferred(self) -> None:
        topics = self.store.seen.topics
        for (topic, p), state in self._states():
            meta = topics.get(topic)
            if meta is None or p >= meta.partitions:
                continue
            preferred = meta.replicas[p][0]
            if state.leader != preferred and preferred in self._live and preferred in state.isr \
                    and state.leader in self._live:
                new = LeaderAndIsr(preferred, state.leader_epoch + 1, state.isr, self.epoch, state.zk_version)
                self._write(topic, p, new, "preferred replica back")


def _unclean(configs: dict[str, str], broker_config: Any) -> bool:
    try:
        return bool(topic_config_value("unclean.leader.election.enable", configs, broker_config))
    except (ValueError, KeyError, TypeError):  # an unparsable topic value: the broker's
        return bool(broker_config.unclean_leader_election_enable)
