"""bench/latency.py in short (issue 20's end-to-end latency figures come from it): one producer and
one consumer against librdkafka's mock cluster and a fresh odradek, every record timed and none
lost. The figures themselves are the bench's, not this test's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "latency.py"
ROW = re.compile(r"^(client alone \(mock\)|odradek)\s+500\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\S+\s+(\d+)$",
                 re.MULTILINE)


def test_latency_bench_times_every_record_against_the_mock_and_odradek() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--rates", "500", "--seconds", "1", "--warmup", "0.2", "--broker-warmup", "0"],
        capture_output=True, text=True, timeout=240, check=False, cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {m.group(1): m for m in ROW.finditer(done.stdout)}
    assert set(rows) == {"client alone (mock)", "odradek"}, done.stdout
    for name, row in rows.items():
        p50, p99 = float(row.group(2)), float(row.group(3))
        assert 0 < p50 <= p99, (name, done.stdout)
        assert row.group(6) == "0", f"{name} lost records:\n{done.stdout}"


CLIENTS_ROW = re.compile(r"^odradek\s+3x200\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)$", re.MULTILINE)


def test_many_clients_bench_with_franz_go_times_every_record() -> None:
    """--clients with --load-client franz (tests/go/latency, built by ./dev test): 3 franz-go producers
    and 3 consumers over 6 partitions, every record timed and none lost, the load's own CPU given."""
    done = subprocess.run(
        [sys.executable, str(BENCH), "--clients", "3", "--rates", "200", "--seconds", "1", "--warmup", "0.2",
         "--broker-warmup", "0", "--load-client", "franz"],
        capture_output=True, text=True, timeout=240, check=False, cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    row = CLIENTS_ROW.search(done.stdout)
    assert row is not None, done.stdout
    assert 0 < float(row.group(1)) <= float(row.group(2)), done.stdout
    assert float(row.group(5)) > 0, f"no broker CPU measured:\n{done.stdout}"
    assert row.group(6) == "0", f"records lost:\n{done.stdout}"
    assert "franz-go in one Go process" in done.stdout and "the franz-go load at 3 x 200 msg/s took" in done.stdout
