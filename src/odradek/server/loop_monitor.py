"""The event loop's own lateness, measured and explained.

One loop serves every connection, so a synchronous stretch anywhere (a large
request, a file walk, a collection) delays every other request by as long. A
timer that should fire every 20 ms measures how late it fires; the lateness goes
to the `odradek_event_loop_lag_ms` histogram, and a stall over
`event.loop.stall.threshold.ms` is logged in one line with the slowest request
that began and finished within the late tick (what most likely held the loop;
a request begun before the previous tick, such as a parked Fetch, is not named:
the loop ran that tick while it waited, so its time is mostly waiting, not loop
time), the garbage collections that ran meanwhile (the other usual suspect), and how much
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

from odradek.protocol.apis import api_name

if TYPE_CHECKING:
    from odradek.server.dispatcher import Dispatcher
    from odradek.server.metrics import BrokerMetrics

log = logging.getLogger("odradek.loop")

INTERVAL_S = 0.02


class LoopWork:
    """The requests the dispatcher finished since the monitor's last tick: the slowest of those
    begun after that tick (its whole time lies in the late tick, so it may have held the loop), and
    how many begun before it (they were suspended while the loop ran the tick: waiting, such as a
    Fetch parked for fetch.max.wait.ms, and their time says nothing of what held the loop)."""

    __slots__ = ("slowest", "tick", "waited")

    def __init__(self) -> None:
        self.tick = 0.0  # time.perf_counter() at the monitor's last tick
        self.slowest: tuple[float, int, int] | None = None  # (ms, api key, api version)
        self.waited = 0

    def finished(self, started: float, elapsed_ms: float, api_key: int, api_version: int) -> None:
        """A request begun at `started` (time.perf_counter()) was answered after `elapsed_ms`."""
        if started < self.tick:
            self.waited += 1
        elif self.slowest is None or elapsed_ms > self.slowest[0]:
            self.slowest = (elapsed_ms, api_key, api_version)

    def next_tick(self) -> None:
        self.tick = time.perf_counter()
        self.slowest = None
        self.waited = 0

    def describe(self) -> str:
        """What the requests finished since the last tick say of a stall."""
        slowest, waited = self.slowest, self.waited
        if slowest is not None:
            what = (f"the slowest request begun since the tick before: {api_name(slowest[1])} v{slowest[2]} "
                    f"({slowest[0]:.0f} ms)")
        else:
            what = "no request begun since the tick before finished meanwhile"
        if waited:
            what += " (requests begun before it, waiting across the tick, not counted)"
        return what


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
    work = dispatcher.loop_work
    gc.callbacks.append(gc_times)
    try:
        while True:
            started = loop.time()
            ran_before = time.thread_time()
            work.next_tick()
            gc_times.take()
            await asyncio.sleep(INTERVAL_S)
            elapsed = loop.time() - started
            lag_ms = max((elapsed - INTERVAL_S) * 1000, 0.0)
            observe(lag_ms)
            if lag_ms > threshold_ms:
                ran_ms = (time.thread_time() - ran_before) * 1000
                what = work.describe()
                collected = gc_times.take()
                log.warning("the event loop stalled for %.0f ms; %s%s; its thread ran %.0f ms of the %.0f ms "
                            "since the tick before", lag_ms, what, f"; {collected}" if collected else "",
                            ran_ms, elapsed * 1000)
    finally:
        gc.callbacks.remove(gc_times)
