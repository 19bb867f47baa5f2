"""The controlled shutdown of a cluster broker (SIGTERM; Kafka's controlled.shutdown.enable).

The broker hands every partition it leads to another ISR member and leaves the ISRs, so clients
move on without errors; as in Kafka, at most controlled.shutdown.max.retries attempts within
max.retries x controlled.shutdown.retry.backoff.ms, each ZooKeeper call bounded, and then the
broker stops all the same (server/cluster_broker.py flushes and checkpoints the logs).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from kazoo.exceptions import KazooException  # type: ignore[import-untyped]

from odradek.cluster.zk import LeaderAndIsr, ZkError

if TYPE_CHECKING:
    from odradek.server.cluster_broker import ClusterBroker

log = logging.getLogger("odradek.cluster")

CONTROLLED_SHUTDOWN_WAIT_S = 3.0  # at most (and at most half the controlled shutdown's time)


async def controlled_shutdown(broker: ClusterBroker) -> None:
    """SIGTERM: hand every leadership to another ISR member and leave the ISRs
    (Kafka's controlled.shutdown.enable), so clients move on without errors.

    As in Kafka, at most controlled.shutdown.max.retries attempts, each in its share of
    max.retries x controlled.shutdown.retry.backoff.ms (a failed one waits out its share);
    then the broker stops all the same: its logs are flushed and checkpointed, and the
    controller moves what it led once its ZooKeeper session ends."""
    retries = max(0, broker.config.controlled_shutdown_max_retries)
    if not broker.config.controlled_shutdown_enable or retries == 0:
        await broker.replicas.close()
        return
    broker.shutting_down = True
    broker.store.closing = True  # from now on a call to a disconnected ZooKeeper fails at once
    loop = asyncio.get_running_loop()
    started = loop.time()
    budget = retries * max(0, broker.config.controlled_shutdown_retry_backoff_ms) / 1000.0
    deadline = started + budget
    try:
        # let the followers fetch what was appended, so pending acks=all produces complete
        wait_until = started + min(CONTROLLED_SHUTDOWN_WAIT_S, budget / 2)
        while loop.time() < wait_until and any(
                ls.plog.high_watermark < ls.plog.log_end_offset and len(ls.state.isr) > 1
                for ls in broker.replicas.leaders.values()):
            await asyncio.sleep(0.02)
        first = loop.time()
        slot = max(0.0, deadline - first) / retries
        moved = [0]
        for attempt in range(1, retries + 1):
            slot_end = first + attempt * slot
            try:
                await asyncio.wait_for(_move_leaderships(broker, moved), max(0.0, slot_end - loop.time()))
            except (ZkError, KazooException, TimeoutError) as exc:
                log.warning("controlled shutdown attempt %d of %d failed: %s", attempt, retries,
                            str(exc) or type(exc).__name__)
                if attempt < retries:
                    await asyncio.sleep(max(0.0, slot_end - loop.time()))
                continue
            log.info("controlled shutdown: moved %d leadership(s) away from broker %d", moved[0], broker.node_id)
            return
        log.warning("controlled shutdown of broker %d failed after %d attempt(s) in %.1f s (moved %d "
                    "leadership(s)); stopping without it: the logs are flushed, the controller moves the "
                    "rest once this broker's ZooKeeper session ends",
                    broker.node_id, retries, loop.time() - started, moved[0])
    finally:
        await broker.replicas.close()

async def _move_leaderships(broker: ClusterBroker, moved: list[int]) -> None:
    """One attempt of the controlled shutdown; raises when ZooKeeper does not answer.
    `moved` counts the leaderships moved, over the attempts."""
    store = broker.store
    if not store.connected:
        raise ZkError("ZooKeeper is not connected")
    loop = asyncio.get_running_loop()
    mine = [key for key, s in store.seen.states.items() if broker.node_id in s.isr or s.leader == broker.node_id]
    for (topic, p) in mine:
        for _ in range(5):
            state = await loop.run_in_executor(store.executor, store.read_state, topic, p)
            if state is None or broker.node_id not in state.isr and state.leader != broker.node_id:
                break
            others = [b for b in state.isr if b != broker.node_id and b in broker.nodes]
            if state.leader == broker.node_id:
                if not others:
                    break  # the only in-sync replica: Kafka leaves such a partition offline-to-be
                new = LeaderAndIsr(others[0], state.leader_epoch + 1, tuple(others),
                                   state.controller_epoch, state.zk_version)
            else:
                rest = tuple(b for b in state.isr if b != broker.node_id)
                new = LeaderAndIsr(state.leader, state.leader_epoch, rest, state.controller_epoch,
                                   state.zk_version)
            if await loop.run_in_executor(store.executor, store.write_state, topic, p, new, None) is not None:
                moved[0] += state.leader == broker.node_id
                break
