"""The event loop's own lateness, measured and explained.

One loop serves every connection, so a synchronous stretch anywhere (a large
request, a file walk, a collection) delays every other request by as long. A
timer that should fire every 20 ms measures how late it fires; the lateness goes
to the `odradek_event_loop_lag_ms` histogram, and a stall over
`event.loop.stall.threshold.ms` is logged in one line with the slowest request
the dispatcher finished since the previous tick (what most likely held the loop),
the garbage collections that ran meanwhile (the other usual suspect), and how much
of the late tick the loop's thread actually ran: on a machine busier than its cores
a stall is mostly the process waiting for a CPU (a 40 ms stall in which the thread
ran 3 ms is not the broker's work; one in which it ran 40 ms is).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from odradek.server.dispatcher import Dispatcher
    from odradek.server.metrics import BrokerMetrics

log = logging.getLogger("odradek.loop")

INTERVAL_S = 0.02


class GcTimes:
    """What the collector took since the last `take`: total ms, the longest pause and its generation."""

    def __init__(self) -> None:
        self.total_ms = 0.0
        self.longest_ms = 0.0
        self.generation = -1
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        ms = (time.perf_counter() - self._started) * 1000
        self.total_ms += ms
        if ms > self.longest_ms:
            self.longest_ms, self.generation = ms, int(info.get("generation", -1))

    def take(self) -> str | None:
        """A few words on the collections since the last call (None if they took under 1 ms)."""
        total, longest, generation = self.total_ms, self.longest_ms, self.generation
        self.total_ms = self.longest_ms = 0.0
        self.generation = -1
        if total < 1:
            return None
        return f"garbage collection {total:.0f} ms (longest {longest:.0f} ms, generation {generation})"


async def watch_loop(metrics: BrokerMetrics, dispatcher: Dispatcher, threshold_ms: float) -> None:
    loop = asyncio.get_running_loop()
    observe = metrics.loop_lag_ms.observe
    gc_times = GcTimes()
    gc.callbacks.append(gc_times)
    try:
        while True:
            started = loop.time()
            ran_before = time.thread_time()
            dispatcher.slowest = None
            gc_times.take()
            await asyncio.sleep(INTERVAL_S)
            elapsed = loop.time() - started
            lag_ms = max((elapsed - INTERVAL_S) * 1000, 0.0)
            observe(lag_ms)
            if lag_ms > threshold_ms:
                ran_ms = (time.thread_time() - ran_before) * 1000
                slowest = dispatcher.slowest
                what = (f"the slowest request since the last tick: {slowest[1]} ({slowest[0]:.0f} ms)"
                        if slowest is not None else "no request finished meanwhile")
                collected = gc_times.take()
                log.warning("the event loop stalled for %.0f ms; %s%s; its thread ran %.0f ms of the %.0f ms "
                            "since the tick before", lag_ms, what, f"; {collected}" if collected else "",
                            ran_ms, elapsed * 1000)
    finally:
        gc.callbacks.remove(gc_times)
