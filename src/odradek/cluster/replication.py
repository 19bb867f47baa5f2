"""Replication: the leader's ISR and high watermark, and the followers' fetchers.

Leader side (Kafka's Partition): each follower reports its log end offset by
fetching; the high watermark is the minimum log end offset over the ISR and
never moves back; acks=-1 produces wait on futures keyed by the offset they
need; a follower that has not caught up for replica.lag.time.max.ms leaves the
ISR, one whose fetch offset reaches the high watermark (and the start of the
current leader epoch) comes back. ISR changes are compare-and-set writes of the
state znode, run in an executor so the loop never waits for ZooKeeper.

Follower side: which partitions follow which leader at which epoch; the
fetching itself is fetcher.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kazoo.exceptions import KazooException  # type: ignore[import-untyped]
from kio.schema.errors import ErrorCode

from odradek.cluster.fetcher import Fetcher
from odradek.cluster.zk import LeaderAndIsr

if TYPE_CHECKING:
    from odradek.cluster.host import ReplicaHost
    from odradek.storage.log import PartitionLog

log = logging.getLogger("odradek.replication")

TopicPartition = tuple[str, int]


def monotonic_ms() -> float:
    return time.monotonic() * 1000.0


# -- leader side ---------------------------------------------------------------

@dataclass
class LeaderState:
    """What the leader of one partition tracks about its followers."""

    topic: str
    partition: int
    plog: PartitionLog
    state: LeaderAndIsr
    replicas: list[int]
    epoch_start_offset: int
    follower_leo: dict[int, int] = field(default_factory=dict)
    last_caught_up_ms: dict[int, float] = field(default_factory=dict)
    last_fetch_ms: dict[int, float] = field(default_factory=dict)
    leo_at_last_fetch: dict[int, int] = field(default_factory=dict)
    waiters: deque[tuple[int, asyncio.Future[ErrorCode]]] = field(default_factory=deque)
    isr_write_pending: bool = False
    # replicas a reassignment is removing: they stay in the ISR until the controller drops
    # them, but one that fell out is not taken back
    removing: frozenset[int] = frozenset()

    @property
    def tp(self) -> TopicPartition:
        return (self.topic, self.partition)

    def wait_for(self, offset: int) -> asyncio.Future[ErrorCode]:
        fut: asyncio.Future[ErrorCode] = asyncio.get_running_loop().create_future()
        self.waiters.append((offset, fut))
        return fut

    def release(self, hw: int) -> None:
        while self.waiters and self.waiters[0][0] <= hw:
            _, fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(ErrorCode.none)

    def fail_all(self, code: ErrorCode) -> None:
        while self.waiters:
            _, fut = self.waiters.popleft()
            if not fut.done():
                fut.set_result(code)


@dataclass
class FollowState:
    topic: str
    partition: int
    plog: PartitionLog
    leader: int
    leader_epoch: int
    truncated: bool = False
    backoff_until: float = 0.0
    in_sync: bool = False  # caught up with the leader's high watermark at the last fetch


class ReplicaManager:
    """Leader and follower roles of this broker's partitions."""

    def __init__(self, broker: ReplicaHost) -> None:
        self.broker = broker
        self.node_id = broker.node_id
        self.leaders: dict[TopicPartition, LeaderState] = {}
        self.following: dict[TopicPartition, FollowState] = {}
        self.fetchers: dict[int, Fetcher] = {}
        self.lag_ms = broker.config.replica_lag_time_max_ms
        self._tasks: set[asyncio.Task[Any]] = set()
        # set by close(): a partition-state event still queued on the loop at shutdown must not
        # start a fetcher nobody would stop (it would outlive the logs it appends to)
        self.closed = False

    # -- roles -------------------------------------------------------------------

    def become_leader(self, plog: PartitionLog, state: LeaderAndIsr, replicas: list[int]) -> bool:
        """True when this is a new leadership (not an ISR update of the current one)."""
        if self.closed:
            return False
        tp = (plog.topic, plog.partition)
        current = self.leaders.get(tp)
        if current is not None and current.state.leader_epoch == state.leader_epoch:
            if state.zk_version > current.state.zk_version:
                current.state = state
                current.replicas = replicas
                self.advance_high_watermark(current)
            return False
        if current is not None and state.leader_epoch > current.state.leader_epoch:
            # still the leader, at a new epoch (a reassignment dropped replicas from the ISR): the
            # new epoch starts at the log end; pending acks=all produces and the followers stay
            plog.assign_leader_epoch(state.leader_epoch, plog.log_end_offset)
            current.state, current.replicas, current.epoch_start_offset = state, replicas, plog.log_end_offset
            log.info("%s-%d: leader with epoch %d, isr %s", plog.topic, plog.partition, state.leader_epoch,
                     list(state.isr))
            self.advance_high_watermark(current)
            return False
        self.stop_following(tp)
        if current is not None:
            current.fail_all(ErrorCode.not_leader_or_follower)
        # Kafka: the new leader starts its epoch at its log end offset and does not truncate.
        plog.assign_leader_epoch(state.leader_epoch, plog.log_end_offset)
        now = monotonic_ms()
        ls = LeaderState(plog.topic, plog.partition, plog, state, replicas, plog.log_end_offset)
        for b in state.isr:
            ls.last_caught_up_ms[b] = now
        self.leaders[tp] = ls
        log.info("%s-%d: leader with epoch %d, isr %s, log end offset %d, high watermark %d",
                 plog.topic, plog.partition, state.leader_epoch, list(state.isr), plog.log_end_offset,
                 plog.high_watermark)
        self.advance_high_watermark(ls)
        return True

    def become_follower(self, plog: PartitionLog, state: LeaderAndIsr) -> bool:
        """True when this broker stopped leading the partition."""
        tp = (plog.topic, plog.partition)
        was_leader = self.resign(tp)
        current = self.following.get(tp)
        if current is not None and current.leader == state.leader and current.leader_epoch == state.leader_epoch:
            return was_leader
        self.stop_following(tp)
        if state.leader >= 0 and state.leader != self.node_id and not self.closed:
            fs = FollowState(plog.topic, plog.partition, plog, state.leader, state.leader_epoch)
            self.following[tp] = fs
            fetcher = self.fetchers.get(state.leader)
            if fetcher is None or fetcher.done:
                fetcher = self.fetchers[state.leader] = Fetcher(self, state.leader)
            fetcher.add(fs)
            log.info("%s-%d: following leader %d at epoch %d from offset %d",
                     plog.topic, plog.partition, state.leader, state.leader_epoch, plog.log_end_offset)
        return was_leader

    def resign(self, tp: TopicPartition) -> bool:
        ls = self.leaders.pop(tp, None)
        if ls is None:
            return False
        ls.fail_all(ErrorCode.not_leader_or_follower)
        log.info("%s-%d: no longer leader", tp[0], tp[1])
        return True

    def stop_following(self, tp: TopicPartition) -> None:
        fs = self.following.pop(tp, None)
        if fs is not None:
            fetcher = self.fetchers.get(fs.leader)
            if fetcher is not None:
                fetcher.remove(tp)

    def forget(self, tp: TopicPartition) -> None:
        self.resign(tp)
        self.stop_following(tp)

    # -- leader: high watermark, acks=-1, ISR ---------------------------------------

    def advance_high_watermark(self, ls: LeaderState) -> None:
        plog = ls.plog
        leo = plog.log_end_offset
        lowest = leo
        for b in ls.state.isr:
            if b == self.node_id:
                continue
            f = ls.follower_leo.get(b)
            if f is None:
                return  # a new leader learns each ISR follower's position from its first fetch
            lowest = min(lowest, f)
        if lowest > plog.high_watermark:
            plog.high_watermark = lowest
            ls.release(lowest)
            self.broker.purgatory.notify(ls.tp)

    def on_follower_fetch(self, tp: TopicPartition, replica_id: int, fetch_offset: int) -> None:
        ls = self.leaders.get(tp)
        if ls is None or replica_id not in ls.replicas:
            return
        now = monotonic_ms()
        leo = ls.plog.log_end_offset
        # Kafka's lastCaughtUpTime: caught up now, or as of the previous fetch if it reached
        # the log end offset the leader had back then.
        if fetch_offset >= leo:
            ls.last_caught_up_ms[replica_id] = now
        elif fetch_offset >= ls.leo_at_last_fetch.get(replica_id, leo + 1):
            ls.last_caught_up_ms[replica_id] = ls.last_fetch_ms.get(replica_id, now)
        ls.leo_at_last_fetch[replica_id] = leo
        ls.last_fetch_ms[replica_id] = now
        ls.follower_leo[replica_id] = min(fetch_offset, leo)
        if replica_id in ls.state.isr:
            self.advance_high_watermark(ls)
        elif fetch_offset >= ls.plog.high_watermark and fetch_offset >= ls.epoch_start_offset \
                and replica_id not in ls.removing:
            ls.last_caught_up_ms[replica_id] = now
            self._change_isr(ls, (*ls.state.isr, replica_id), f"follower {replica_id} caught up")

    def check_isr(self) -> None:
        """Shrink the ISR of followers that have not caught up for replica.lag.time.max.ms."""
        now = monotonic_ms()
        for ls in list(self.leaders.values()):
            laggards = [b for b in ls.state.isr
                        if b != self.node_id and now - ls.last_caught_up_ms.get(b, now) > self.lag_ms]
            if laggards:
                isr = tuple(b for b in ls.state.isr if b not in laggards)
                self._change_isr(ls, isr, f"follower(s) {laggards} lag more than {self.lag_ms} ms")

    def _change_isr(self, ls: LeaderState, isr: tuple[int, ...], why: str) -> None:
        if ls.isr_write_pending or not self.broker.zk_ok:
            return
        ls.isr_write_pending = True
        s = ls.state
        new = LeaderAndIsr(s.leader, s.leader_epoch, isr, s.controller_epoch, s.zk_version)
        task = asyncio.get_running_loop().create_task(self._write_isr(ls, new, why))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write_isr(self, ls: LeaderState, new: LeaderAndIsr, why: str) -> None:
        loop = asyncio.get_running_loop()
        store = self.broker.store
        try:
            written = await loop.run_in_executor(store.executor, store.write_state, ls.topic, ls.partition, new, None)
            if written is None:
                fresh = await loop.run_in_executor(store.executor, store.read_state, ls.topic, ls.partition)
                if fresh is not None and self.leaders.get(ls.tp) is ls and fresh.leader == self.node_id \
                        and fresh.leader_epoch == ls.state.leader_epoch and fresh.zk_version > ls.state.zk_version:
                    ls.state = fresh  # someone else (the controller) changed the ISR; retry later
                return
            if self.leaders.get(ls.tp) is ls and written.zk_version > ls.state.zk_version:
                log.info("%s-%d: isr %s -> %s (%s)", ls.topic, ls.partition, list(ls.state.isr),
                         list(written.isr), why)
                # Kafka's IsrShrinksPerSec / IsrExpandsPerSec, marked by the leader that changed it
                metrics = self.broker.metrics
                (metrics.isr_shrinks if len(written.isr) < len(ls.state.isr) else metrics.isr_expands).inc()
                ls.state = written
                self.advance_high_watermark(ls)
        except (KazooException, OSError) as exc:  # ZooKeeper unreachable (ZkError), closed, or refusing
            log.warning("%s-%d: ISR change failed: %r", ls.topic, ls.partition, exc)
        finally:
            ls.isr_write_pending = False

    async def run_isr_checks(self) -> None:
        interval = max(0.05, self.lag_ms / 2000.0)
        while True:
            await asyncio.sleep(interval)
            self.check_isr()

    async def close(self) -> None:
        self.closed = True
        for fetcher in list(self.fetchers.values()):
            await fetcher.stop()
        self.close_now()

    def close_now(self) -> None:
        """close() without waiting (the broker's close, also after a cut-short stop): the
        fetchers are cancelled and append nothing more, waiting produces fail, ISR writes end."""
        self.closed = True
        for fetcher in list(self.fetchers.values()):
            fetcher.cancel()
        for ls in self.leaders.values():
            ls.fail_all(ErrorCode.not_leader_or_follower)
        for task in list(self._tasks):
            task.cancel()
