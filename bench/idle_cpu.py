"""An idle broker's CPU: a fresh `odradek serve` (no client), its CPU over a window after start-up.

    .venv/bin/python bench/idle_cpu.py [--settle 8] [--seconds 20] [--rounds 2] [--before-src DIR]

Prints ms of CPU a second (user + system, /proc/PID/stat) per round; with --before-src, rounds of
the broker from that source tree (PYTHONPATH) alternate with the checkout's. Each run is a fresh
data dir; the broker is stopped with SIGTERM and waited for.
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one(src: str | None, settle: float, seconds: float) -> float:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "odradek", "serve", "--listen", f"127.0.0.1:{free_port()}",
               "--data-dir", f"{tmp}/data"]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        try:
            time.sleep(settle)
            if proc.poll() is not None:
                raise SystemExit(f"the broker exited with {proc.returncode}")
            before = cpu_s(proc.pid)
            time.sleep(seconds)
            return (cpu_s(proc.pid) - before) / seconds * 1000
        finally:
            proc.terminate()
            proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settle", type=float, default=8.0, help="seconds after start before measuring")
    ap.add_argument("--seconds", type=float, default=20.0, help="the measured window")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--before-src", help="a source tree to compare (its src/ directory)")
    args = ap.parse_args()
    trees = [("before", args.before_src), ("after", None)] if args.before_src else [("odradek", None)]
    for r in range(args.rounds):
        for name, src in trees:
            print(f"round {r + 1} {name}: {one(src, args.settle, args.seconds):.1f} ms of CPU a second", flush=True)


if __name__ == "__main__":
    main()
