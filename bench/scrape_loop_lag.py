"""The event loop's lateness while a Prometheus scrape renders the broker's metrics on its HTTP
thread (issue 20: a thread running Python makes the loop's thread wait up to the interpreter's 5 ms
switch interval for the GIL after each system call it makes).

A uvloop loop ticks every 2 ms and makes 20 small socket sends and reads a tick (a busy broker's
iteration); its lateness is taken with no scrape, then while a thread renders the text exposition
of a BrokerMetrics holding --topics topics' series over and over, rendered from the registry itself
("whole", as before ScrapeRegistry) and through server/metrics.py's ScrapeRegistry ("sliced", which
lets the GIL go every SCRAPE_SLICE_SAMPLES samples); --rounds alternate the two.

    .venv/bin/python bench/scrape_loop_lag.py [--topics 10000] [--seconds 3] [--rounds 3]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import socket
import threading
import time
from typing import Any

import uvloop
from prometheus_client import generate_latest

from odradek.server.metrics import BrokerMetrics, ScrapeRegistry

TICK_S = 0.002


async def lateness(seconds: float) -> list[float]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    loop = asyncio.get_running_loop()
    late: list[float] = []
    end = time.perf_counter() + seconds
    try:
        while time.perf_counter() < end:
            started = time.perf_counter()
            await asyncio.sleep(TICK_S)
            for _ in range(20):
                a.send(b"x" * 100)
                await loop.sock_recv(b, 100)
            late.append((time.perf_counter() - started - TICK_S) * 1000)
    finally:
        a.close()
        b.close()
    return late


def summary(late: list[float]) -> str:
    late = sorted(late)
    return (f"{len(late):5d} ticks, p50 {late[len(late) // 2]:6.2f} ms, p99 {late[int(len(late) * 0.99)]:7.2f} ms, "
            f"max {late[-1]:7.1f} ms")


async def while_scraping(registry: Any, seconds: float) -> tuple[list[float], list[float]]:
    done, took = threading.Event(), []

    def scrape() -> None:
        while not done.is_set():
            started = time.perf_counter()
            generate_latest(registry)
            took.append(time.perf_counter() - started)

    thread = threading.Thread(target=scrape, name="scrape")
    thread.start()
    try:
        return await lateness(seconds), took
    finally:
        done.set()
        thread.join()


async def main(args: argparse.Namespace) -> None:
    metrics = BrokerMetrics()
    for i in range(args.topics):
        for counter in (metrics.bytes_in, metrics.messages_in, metrics.bytes_out):
            counter.labels(f"topic-{i}").inc(100)
    print(f"{args.topics:,} topics' series; load average {os.getloadavg()[0]:.1f}")
    print(f"no scrape        {summary(await lateness(args.seconds))}")
    for r in range(args.rounds):
        for name, registry in (("whole", metrics.registry), ("sliced", ScrapeRegistry(metrics.registry))):
            late, took = await while_scraping(registry, args.seconds)
            print(f"round {r + 1} {name:<6} {summary(late)}; {len(took)} scrapes, "
                  f"{sum(took) / max(len(took), 1) * 1000:.0f} ms each")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topics", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3)
    uvloop.run(main(ap.parse_args()))
