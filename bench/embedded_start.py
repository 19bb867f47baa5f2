"""Start-up time and idle memory of an embedded odradek broker.

For each storage (file, memory), in a fresh Python process each time:
  - time from `Broker()` to the first answered ApiVersions request (raw socket),
  - resident memory (VmRSS) of the idle process with the broker running.
In the same run, the time a JVM-free alternative (Tansu, --tansu PATH) takes from
exec to its first answered ApiVersions.

    .venv/bin/python bench/embedded_start.py [--runs 5] [--tansu PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import struct
import subprocess
import sys
import time

CHILD = r"""
import json, socket, struct, sys, time
t_import = time.perf_counter()
from odradek.testing import Broker
t0 = time.perf_counter()
b = Broker(storage=sys.argv[1]).start()
host, port = b.bootstrap_servers.split(":")
frame = struct.pack(">hhih", 18, 0, 1, 5) + b"bench"
with socket.create_connection((host, int(port))) as s:
    s.sendall(struct.pack(">i", len(frame)) + frame)
    size = struct.unpack(">i", s.recv(4))[0]
    data = b""
    while len(data) < size:
        data += s.recv(size - len(data))
t1 = time.perf_counter()
time.sleep(0.5)
rss = 0
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        rss = int(line.split()[1]) / 1024
b.stop()
print(json.dumps({"start_ms": (t1 - t0) * 1000, "import_ms": (t0 - t_import) * 1000, "rss_mb": rss}))
"""


def api_versions_answered(port: int) -> bool:
    frame = struct.pack(">hhih", 18, 0, 1, 5) + b"bench"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(struct.pack(">i", len(frame)) + frame)
            return len(s.recv(4)) == 4
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tansu_start_ms(path: str) -> float:
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    t0 = time.perf_counter()
    proc = subprocess.Popen([path, "broker", "--listener-url", url, "--advertised-listener-url", url,
                             "--storage-engine", "memory://tansu/"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while not api_versions_answered(port):
            if time.perf_counter() - t0 > 20:
                raise TimeoutError("tansu did not answer")
            time.sleep(0.002)
        return (time.perf_counter() - t0) * 1000
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tansu", help="path to a tansu binary")
    args = ap.parse_args()
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}")
    report = {}
    for storage in ("file", "memory"):
        runs = [json.loads(subprocess.check_output([sys.executable, "-c", CHILD, storage]))
                for _ in range(args.runs)]
        start = statistics.median(r["start_ms"] for r in runs)
        rss = statistics.median(r["rss_mb"] for r in runs)
        imp = statistics.median(r["import_ms"] for r in runs)
        report[storage] = {"start_ms": start, "rss_mb": rss, "import_ms": imp}
        print(f"odradek {storage:<6} Broker() -> first ApiVersions: {start:6.1f} ms (median of {args.runs}; "
              f"import of odradek.testing {imp:.0f} ms before that), idle RSS {rss:.0f} MB")
    if args.tansu:
        t = statistics.median(tansu_start_ms(args.tansu) for _ in range(args.runs))
        report["tansu"] = {"start_ms": t}
        print(f"tansu (memory)  exec -> first ApiVersions:     {t:6.1f} ms (median of {args.runs})")
    print(json.dumps(report))


if __name__ == "__main__":
    main()
