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
    store = getattr(broker, "store", None)
    executor = getattr(store, "executor", None)
    if executor is None:
        result = fn(*args, **kwargs)
        synced = getattr(getattr(broker, "metadata", None), "synced", None)
        if synced is not None:
            await synced()
        return result
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, functools.partial(fn, *args, **kwargs))
