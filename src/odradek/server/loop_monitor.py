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
ran 3 ms is not the broker's work; one in which it ran 40 ms is). The rest of the
late tick is split, where Linux tells (/proc/thread-self/schedstat), into the time
the thread waited on a run queue for a CPU and the time it was blocked: waiting
for the GIL while another thread of the broker ran Python (the line then gives how
much CPU the broker's other threads used in the late tick, and which ran most) or
in a blocking system call.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from odradek.protocol.apis import api_name

if TYPE_CHECKING:
    from odradek.server.dispatcher import Dispatcher
    from odradek.server.metrics import BrokerMetrics

log = logging.getLogger("odradek.loop")

INTERVAL_S = 0.02
# After a tick in which no request began or finished the ticks slow to this, until a request
# begins: a wake-up of this VM's timer costs ~150 us of CPU, and 50 a second were ~80% of an idle
# broker's CPU. A stall longer than it is still always seen, a shorter one now and then.
IDLE_INTERVAL_S = 0.25
THREAD_SAMPLE_S = 1.0  # the other threads' CPU is sampled once a second (and at each stall)


def _run_and_queued_ns(fd: int) -> tuple[int, int] | None:
    """A thread's schedstat: ns on a CPU, ns waiting on a run queue (None if unreadable)."""
    try:
        run, queued = os.pread(fd, 64, 0).split()[:2]
        return int(run), int(queued)
    except (OSError, ValueError):
        return None


class SchedStat:
    """The loop thread's run-queue wait, and every thread's CPU time by name, from Linux's
    schedstat (nanoseconds); absent elsewhere, where a stall line leaves these parts out."""

    def __init__(self) -> None:
        try:
            self._fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._fd = None
        self._threads: dict[int, int] = {}

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def queued_ns(self) -> int | None:
        """ns this (the loop's) thread has waited for a CPU so far."""
        if self._fd is None:
            return None
        stat = _run_and_queued_ns(self._fd)
        return None if stat is None else stat[1]

    def threads_ns(self) -> dict[int, int]:
        """ns on a CPU so far, by native thread id, of every thread of the process."""
        ran: dict[int, int] = {}
        if self._fd is None:
            return ran
        try:
            tids = os.listdir("/proc/self/task")
        except OSError:
            return ran
        for tid in tids:
            try:
                fd = os.open(f"/proc/self/task/{tid}/schedstat", os.O_RDONLY)
            except OSError:  # the thread ended meanwhile
                continue
            try:
                stat = _run_and_queued_ns(fd)
            finally:
                os.close(fd)
            if stat is not None:
                ran[int(tid)] = stat[0]
        return ran

    def sample_threads(self) -> None:
        self._threads = self.threads_ns()

    def busiest_threads(self, own: int) -> str | None:
        """The other threads that ran most since the last sample (at most a second before the
        late tick, or the previous stall; a thread begun since, all its time), with their Python
        names; then a new sample."""
        before, now = self._threads, self.threads_ns()
        self._threads = now
        names = {t.native_id: t.name for t in threading.enumerate()}
        ran = sorted(((ns - before.get(tid, 0), tid) for tid, ns in now.items() if tid != own), reverse=True)
        named = [f"{names.get(tid, f'thread {tid}')} {ns / 1e6:.0f} ms" for ns, tid in ran[:2] if ns >= 1e6]
        return ", ".join(named) if named else None


class LoopWork:
    """The requests the dispatcher began and finished since the monitor's last tick. A request
    begun after that tick lies in the late tick: the slowest of those finished may have held the
    loop, and one begun but not yet answered ran its synchronous part there (a CreateTopics making
    its logs, then awaiting the topics.json write). A request begun before the tick was suspended
    while the loop ran the tick: waiting, such as a Fetch parked for fetch.max.wait.ms, and its
    time says nothing of what held the loop; such requests are counted, not named."""

    __slots__ = ("begun", "slowest", "tick", "waited", "wake")

    def __init__(self) -> None:
        self.tick = 0.0  # time.perf_counter() at the monitor's last tick
        self.slowest: tuple[float, int, int] | None = None  # (ms, api key, api version)
        self.begun: dict[float, tuple[int, int]] = {}  # started -> (api key, version), unanswered
        self.waited = 0
        self.wake: Callable[[], None] | None = None  # set while the monitor ticks slowly

    def begin(self, started: float, api_key: int, api_version: int) -> None:
        """A request begins at `started` (time.perf_counter())."""
        self.begun[started] = (api_key, api_version)
        wake = self.wake
        if wake is not None:
            self.wake = None
            wake()

    def idle(self) -> bool:
        """No request began or finished since the last tick."""
        return self.slowest is None and not self.begun and not self.waited

    def finished(self, started: float, elapsed_ms: float, api_key: int, api_version: int) -> None:
        """The request begun at `started` was answered after `elapsed_ms`."""
        if self.begun.pop(started, None) is None and started < self.tick:
            self.waited += 1
        elif self.slowest is None or elapsed_ms > self.slowest[0]:
            self.slowest = (elapsed_ms, api_key, api_version)

    def next_tick(self) -> None:
        self.tick = time.perf_counter()
        self.slowest = None
        self.begun.clear()
        self.waited = 0

    def describe(self) -> str:
        """What the requests since the last tick say of a stall."""
        slowest, waited = self.slowest, self.waited
        if slowest is not None:
            what = (f"the slowest request begun since the tick before: {api_name(slowest[1])} v{slowest[2]} "
                    f"({slowest[0]:.0f} ms)")
        else:
            what = "no request begun since the tick before finished meanwhile"
        if self.begun:
            key, version = self.begun[min(self.begun)]
            what += f"; begun since the tick before and not yet answered: {api_name(key)} v{version}"
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


class _Ticks:
    """The monitor's timer: a loop.call_later callback every INTERVAL_S, not a task sleeping (a
    task's wake-up is a second loop iteration: on this machine's VM 200 us of CPU a tick, not
    110; 50 ticks a second were most of an idle broker's CPU). Each tick measures its own
    lateness and takes the readings that explain the next one."""

    def __init__(self, loop: asyncio.AbstractEventLoop, metrics: BrokerMetrics, dispatcher: Dispatcher,
                 threshold_ms: float) -> None:
        self.loop = loop
        self.observe = metrics.loop_lag_ms.observe
        self.threshold_ms = threshold_ms
        self.work = dispatcher.loop_work
        self.gc_times = GcTimes()
        self.sched = SchedStat()
        self.own = threading.get_native_id()
        self.sampled = 0.0  # loop.time() of the other threads' last CPU sample
        self.interval = INTERVAL_S
        self.started = self.ran_before = self.cpu_before = 0.0
        self.queued_before: int | None = None
        self.handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        gc.callbacks.append(self.gc_times)
        self.sched.sample_threads()
        self.sampled = self.loop.time()
        self._arm(INTERVAL_S)

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if self.gc_times in gc.callbacks:
            gc.callbacks.remove(self.gc_times)
        self.sched.close()
        self.work.wake = None

    def _arm(self, interval: float, new_tick: bool = True) -> None:
        self.started = now = self.loop.time()
        self.ran_before = time.thread_time()
        self.cpu_before = time.process_time()
        self.queued_before = self.sched.queued_ns()
        if new_tick:
            self.work.next_tick()
            self.gc_times.take()
        if now - self.sampled >= THREAD_SAMPLE_S:
            self.sampled = now
            self.sched.sample_threads()
        self.interval = interval
        self.work.wake = self._wake if interval > INTERVAL_S else None
        self.handle = self.loop.call_later(interval, self._tick)

    def _wake(self) -> None:
        """A request begins while the ticks are slow: the next one comes within INTERVAL_S (the
        slow tick under way is dropped, not measured; the request that woke it is the new tick's)."""
        if self.handle is not None:
            self.handle.cancel()
        self._arm(INTERVAL_S, new_tick=False)

    def _tick(self) -> None:
        elapsed = self.loop.time() - self.started
        lag_ms = max((elapsed - self.interval) * 1000, 0.0)
        self.observe(lag_ms)
        if lag_ms > self.threshold_ms:
            self._report(lag_ms, elapsed)
        self._arm(IDLE_INTERVAL_S if self.work.idle() else INTERVAL_S)

    def _report(self, lag_ms: float, elapsed: float) -> None:
        ran_ms = (time.thread_time() - self.ran_before) * 1000
        others_ms = max((time.process_time() - self.cpu_before) * 1000 - ran_ms, 0.0)
        queued_after = self.sched.queued_ns()
        what = self.work.describe()
        collected = self.gc_times.take()
        split = ""
        if self.queued_before is not None and queued_after is not None:
            queued_ms = (queued_after - self.queued_before) / 1e6
            # what is left past the tick's own wait (its interval, in epoll_wait)
            blocked_ms = max((elapsed - self.interval) * 1000 - ran_ms - queued_ms, 0.0)
            split = (f", waited {queued_ms:.0f} ms for a CPU and at least {blocked_ms:.0f} ms blocked "
                     "(the GIL, or a system call)")
        busiest = self.sched.busiest_threads(self.own)
        self.sampled = self.loop.time()
        log.warning("the event loop stalled for %.0f ms; %s%s; its thread ran %.0f ms of the %.0f ms "
                    "since the tick before%s; the broker's other threads ran %.0f ms%s", lag_ms, what,
                    f"; {collected}" if collected else "", ran_ms, elapsed * 1000, split, others_ms,
                    f" (most since the last sample: {busiest})" if busiest else "")


async def watch_loop(metrics: BrokerMetrics, dispatcher: Dispatcher, threshold_ms: float) -> None:
    """Tick until cancelled (the broker's shutdown)."""
    loop = asyncio.get_running_loop()
    ticks = _Ticks(loop, metrics, dispatcher, threshold_ms)
    ticks.start()
    try:
        await loop.create_future()  # never set: the ticks run as timer callbacks meanwhile
    finally:
        ticks.stop()
