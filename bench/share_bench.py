"""Share group bench (KIP-932): records/s delivered to 1, 4 and 8 share consumers on one partition.

    .venv/bin/python bench/share_bench.py [--records 50000] [--size 100] [--consumers 1,4,8]
        [--bootstrap HOST:PORT]

Without --bootstrap it starts its own `odradek serve` on a free port. The records are
produced once; each run is a new share group (share.auto.offset.reset=earliest, set
with IncrementalAlterConfigs on the GROUP resource) of Kafka's KafkaShareConsumer
(tests/java/ShareClient.java, implicit acknowledgement, no work per record), timed from
its first record to its last. One partition is the case share groups exist for: a
consumer group could give it to one member only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from produce_consume import free_port

ROOT = Path(__file__).resolve().parent.parent
JAVA_DIR = ROOT / "tests" / "java"
JVM_FLAGS = ["-Xmx512m", "-XX:+UseSerialGC"]


def start_broker(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "ODRADEK_OFFSETS_TOPIC_NUM_PARTITIONS": "3",
           "ODRADEK_SHARE_COORDINATOR_STATE_TOPIC_NUM_PARTITIONS": "3",
           "ODRADEK_GROUP_SHARE_HEARTBEAT_INTERVAL_MS": "1000"}
    proc = subprocess.Popen([sys.executable, "-m", "odradek", "serve", "--listen", f"127.0.0.1:{port}",
                             "--data-dir", str(data_dir)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the broker did not start")


def java(classes: Path, bootstrap: str, *args: str) -> list[dict[str, object]]:
    cmd = ["java", *JVM_FLAGS, "-cp", f"{classes}:{JAVA_DIR / 'lib' / '*'}", "ShareClient", bootstrap, *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    errors = [x["error"] for x in lines if "error" in x]
    if done.returncode or errors:
        raise SystemExit(f"ShareClient {args[0]} failed: {errors or done.stderr[-2000:]}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=50000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--consumers", default="1,4,8")
    ap.add_argument("--bootstrap")
    args = ap.parse_args()
    if shutil.which("javac") is None:
        raise SystemExit("javac is needed (JDK 17)")
    with tempfile.TemporaryDirectory() as tmp:
        classes = Path(tmp) / "classes"
        subprocess.run(["javac", "-cp", str(JAVA_DIR / "lib" / "*"), "-d", str(classes),
                        str(JAVA_DIR / "ShareClient.java")], check=True)
        proc = None
        bootstrap = args.bootstrap
        if bootstrap is None:
            proc, bootstrap = start_broker(Path(tmp) / "data")
        try:
            topic = f"share-bench-{int(time.time())}"
            admin = AdminClient({"bootstrap.servers": bootstrap})
            for f in admin.create_topics([NewTopic(topic, 1, 1)]).values():
                f.result(30)
            p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.size": 256 * 1024})
            payload = b"x" * args.size
            for i in range(args.records):
                while True:
                    try:
                        p.produce(topic, payload, key=str(i).encode())
                        break
                    except BufferError:
                        p.poll(0.05)
            p.flush(60)
            print(f"odradek share groups, {platform.node()}, {os.cpu_count()} cores: {args.records} records of "
                  f"{args.size} B on one partition")
            for n in (int(x) for x in args.consumers.split(",")):
                group = f"share-bench-{n}-{int(time.time())}"
                java(classes, bootstrap, "config", group, "share.auto.offset.reset=earliest", "-")
                (line,) = [x for x in java(classes, bootstrap, "bench", group, topic, str(n), str(args.records))
                           if "records_per_s" in x]
                print(f"  {n} consumer{'s' if n > 1 else ''}: {int(float(str(line['records_per_s']))):>8} records/s "
                      f"({line['records']} in {float(str(line['seconds'])):.2f} s)")
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)


if __name__ == "__main__":
    main()
