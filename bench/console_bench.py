"""Console bench: time to first render of the topics page with 1,000 topics and of the
message browser over a large partition, and the console's memory while following a topic
at 20,000 msg/s.

    .venv/bin/python bench/console_bench.py [--topics 1000] [--partition-mb 300]
        [--follow-rate 20000] [--follow-s 20]

It starts its own `odradek serve` and `odradek console` on free loopback ports and drives
Debian's Chromium with Playwright (headless). "First render" is from page.goto() to the
moment the page shows the data (the topics count line, the browser's first page of
records), median of 5 loads. The browser must page: the large partition's first render
should not grow with its size. Memory is the console process's VmRSS (from /proc) sampled
every 0.5 s while a producer writes --follow-rate records/s of 100 bytes and the page
follows the topic live. Bounded: about 3-5 minutes on 2 vCPUs.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {port}")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def create_topics(bootstrap: str, names: list[str], partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for i in range(0, len(names), 100):
        futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names[i:i + 100]], request_timeout=60)
        for f in futures.values():
            f.result(120)


def timed_loads(page: Page, url: str, ready: str, text: str, runs: int = 5) -> list[float]:
    times = []
    for _ in range(runs):
        page.goto("about:blank")
        start = time.perf_counter()
        page.goto(url)
        page.locator(ready).filter(has_text=text).first.wait_for(timeout=120_000)
        times.append(time.perf_counter() - start)
    return times


def fill_partition(bootstrap: str, topic: str, megabytes: int) -> tuple[int, float]:
    value = b"v" * 1000
    count = megabytes * 1024 * 1024 // len(value)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 1_000_000,
                         "queue.buffering.max.messages": 500_000, "acks": 1})
    start = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, value, f"key-{i}".encode(), partition=0)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(600)
    return count, time.perf_counter() - start


def produce_at_rate(bootstrap: str, topic: str, rate: int, seconds: float, sent: list[int]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10, "acks": 1})
    value = b"x" * 100
    start = time.perf_counter()
    n = 0
    while (elapsed := time.perf_counter() - start) < seconds:
        due = int(elapsed * rate)
        while n < due:
            try:
                producer.produce(topic, value, str(n).encode())
                n += 1
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
        time.sleep(0.005)
    producer.flush(60)
    sent.append(n)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--topics", type=int, default=1000)
    parser.add_argument("--partition-mb", type=int, default=300)
    parser.add_argument("--follow-rate", type=int, default=20_000)
    parser.add_argument("--follow-s", type=float, default=20.0)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="console-bench-"))
    kafka_port, console_port = free_port(), free_port()
    bootstrap = f"127.0.0.1:{kafka_port}"
    procs = []
    try:
        procs.append(subprocess.Popen([sys.executable, "-m", "odradek", "serve", "--listen", bootstrap,
                                       "--data-dir", str(work / "data"), "--log-level", "warning"], cwd=ROOT))
        wait_port(kafka_port)
        console = subprocess.Popen([sys.executable, "-m", "odradek", "console", "-b", bootstrap, "--listen",
                                    f"127.0.0.1:{console_port}", "--log-level", "warning"], cwd=ROOT)
        procs.append(console)
        wait_port(console_port)
        url = f"http://127.0.0.1:{console_port}/"
        results: dict[str, object] = {"machine": f"{platform.machine()}, {platform.python_version()}"}

        start = time.perf_counter()
        create_topics(bootstrap, [f"bench-topic-{i:04d}" for i in range(args.topics)])
        results["create_topics_s"] = round(time.perf_counter() - start, 1)
        big = "bench-large"
        create_topics(bootstrap, [big])
        count, took = fill_partition(bootstrap, big, args.partition_mb)
        results["large_partition"] = {"records": count, "megabytes": args.partition_mb, "fill_s": round(took, 1)}

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            topics = timed_loads(page, url + "#/topics", "#topic-list p", f"{args.topics + 1} of ")
            results["topics_page_first_render_s"] = {"median": round(statistics.median(topics), 3),
                                                     "max": round(max(topics), 3)}
            api_start = time.perf_counter()
            with urllib.request.urlopen(url + "api/topics", timeout=60) as r:
                listed = len(json.load(r))
            results["api_topics_s"] = round(time.perf_counter() - api_start, 3)
            results["api_topics_count"] = listed

            newest = timed_loads(page, url + f"#/messages/{big}", "#msg-info", "50 record(s) shown")
            results["browser_newest_first_render_s"] = {"median": round(statistics.median(newest), 3),
                                                        "max": round(max(newest), 3)}
            q = f"api/topics/{big}/messages?partition=0&start=offset&value={count // 2}&limit=50"
            mids = []
            for _ in range(5):
                t0 = time.perf_counter()
                with urllib.request.urlopen(url + q, timeout=60) as r:
                    page_data = json.load(r)
                mids.append(time.perf_counter() - t0)
            assert len(page_data["records"]) == 50 and page_data["records"][0]["offset"] == count // 2
            results["api_page_mid_partition_s"] = round(statistics.median(mids), 3)
            t0 = time.perf_counter()
            with urllib.request.urlopen(url + f"api/topics/{big}/messages?partition=0&start=oldest&filter=absent",
                                        timeout=60) as r:
                scan = json.load(r)
            results["api_filter_miss"] = {"s": round(time.perf_counter() - t0, 3), "scanned": scan["scanned"]}

            follow = "bench-follow"
            create_topics(bootstrap, [follow], partitions=3)
            page.goto("about:blank")  # not a hash change: the last page's #msg-info must not answer the wait
            page.goto(url + f"#/messages/{follow}")
            page.locator("#msg-info").filter(has_text="scanned").wait_for()
            page.check("#msg-follow")
            before = rss_mib(console.pid)
            sent: list[int] = []
            producer = threading.Thread(target=produce_at_rate,
                                        args=(bootstrap, follow, args.follow_rate, args.follow_s, sent))
            producer.start()
            samples = []
            started = time.perf_counter()
            while producer.is_alive():
                samples.append(rss_mib(console.pid))
                time.sleep(0.5)
            elapsed = time.perf_counter() - started
            shown = page.locator("#msg-info").inner_text()
            results["follow"] = {"rate_sent_msg_s": round(sent[0] / elapsed) if sent else None,
                                 "seconds": round(elapsed, 1), "rss_before_mib": round(before, 1),
                                 "rss_max_mib": round(max(samples), 1), "rss_end_mib": round(samples[-1], 1),
                                 "page": shown, "page_error": page.locator("#browse-form .error").inner_text()}
            browser.close()
        print(json.dumps(results, indent=2))
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
