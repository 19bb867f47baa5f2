"""Admin calls that write cluster metadata, run off the event loop.

In cluster mode CreateTopics, DeleteTopics, CreatePartitions, AlterConfigs of a topic and a
topic's auto-creation are ZooKeeper writes (a transaction, a few round trips, up to a session
timeout when ZooKeeper is slow or gone); handlers run them with `off_loop` in the ZooKeeper
store's executor, so other requests on the event loop go on meanwhile. What the broker does
after such a write on the loop (creating the logs, taking up roles) it posts there itself
(ClusterBroker.topics_changed), before the handler resumes. A single-node broker runs the call
in place and its store writes topics.json on the store's thread: the answer waits until the
file holds the change (LocalMetadataStore.synced).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def off_loop(broker: Any, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`fn` off the event loop, answered once topics.json holds what it changed."""
    result = await off_loop_unsynced(broker, fn, *args, **kwargs)
    await metadata_synced(broker)
    return result


async def off_loop_unsynced(broker: Any, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """`off_loop` without the wait for topics.json: a request of several changes (a CreateTopics
    of N topics) awaits `metadata_synced` once after the last, one write instead of N in a row."""
    store = getattr(broker, "store", None)
    executor = getattr(store, "executor", None)
    if executor is None:
        return fn(*args, **kwargs)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))


async def metadata_synced(broker: Any) -> None:
    """Return once a single-node broker's topics.json holds every change made so far (a ZooKeeper
    write is durable when its call returns)."""
    synced = getattr(getattr(broker, "metadata", None), "synced", None)
    if synced is not None:
        await synced()
