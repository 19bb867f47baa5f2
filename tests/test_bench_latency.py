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
    and 3 consumers over 6 partitions, every record timed and none lost, the load's own CPU given;
    with --wire, each Produce and Fetch request timed to its answer on the loopback wire."""
    done = subprocess.run(
        [sys.executable, str(BENCH), "--clients", "3", "--rates", "200", "--seconds", "1", "--warmup", "0.2",
         "--broker-warmup", "0", "--load-client", "franz", "--wire"],
        capture_output=True, text=True, timeout=240, check=False, cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    row = CLIENTS_ROW.search(done.stdout)
    assert row is not None, done.stdout
    assert 0 < float(row.group(1)) <= float(row.group(2)), done.stdout
    assert float(row.group(5)) > 0, f"no broker CPU measured:\n{done.stdout}"
    assert row.group(6) == "0", f"records lost:\n{done.stdout}"
    assert "franz-go in one Go process" in done.stdout and "the franz-go load at 3 x 200 msg/s took" in done.stdout
    assert "odradek at 3 x 200 msg/s on the wire (tcpdump on lo, the whole run):" in done.stdout, done.stdout
    for api in ("Produce", "Fetch"):
        line = re.search(rf"^  {api} request -> its answer \(broker\)\s+p50 ([\d.]+) / p99 ([\d.]+) .* ms; "
                         r"([\d,]+) answered$", done.stdout, re.MULTILINE)
        assert line is not None, done.stdout
        assert float(line.group(1)) <= float(line.group(2)), done.stdout
        # at least the 1.2 s of 200 records a second from each of 3 producers, one request a record at most
        assert int(line.group(3).replace(",", "")) >= (50 if api == "Produce" else 3), done.stdout
        assert re.search(rf"^    {api} requests of its connection unanswered as one is sent \(itself included\): "
                         r"1: \d+%", done.stdout, re.MULTILINE), done.stdout


WIRE_LINE = re.compile(r"^  (.+?)\s+p50 ([\d.]+) / p99 ([\d.]+) / p99\.9 ([\d.]+) / max [\d.]+ ms$", re.MULTILINE)
PLACED = re.compile(r"^  records placed on the wire ([\d,]+)(.*)$", re.MULTILINE)


def test_wire_split_places_every_timed_record_on_the_loopback_wire() -> None:
    """--wire: tcpdump on `lo` while odradek serves the run; every timed record is found in its
    Produce request, that request's answer and a Fetch answer, and its time split into four steps."""
    done = subprocess.run(
        [sys.executable, str(BENCH), "--rates", "500", "--seconds", "1", "--warmup", "0.2", "--broker-warmup", "0",
         "--wire"],
        capture_output=True, text=True, timeout=240, check=False, cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "odradek at 500 msg/s on the wire (tcpdump on lo):" in done.stdout, done.stdout
    steps = {m.group(1): [float(m.group(i)) for i in (2, 3, 4)] for m in WIRE_LINE.finditer(done.stdout)}
    assert set(steps) == {"produce() -> Produce on the wire (client)", "Produce on the wire -> its answer (broker)",
                          "Produce on the wire -> Fetch answer with it (broker)",
                          "that Fetch answer -> poll() returns it (client)"}, done.stdout
    for name, (p50, p99, p999) in steps.items():
        assert 0 <= p50 <= p99 <= p999, (name, done.stdout)
    placed = PLACED.search(done.stdout)
    assert placed is not None, done.stdout
    # 500 records timed (a second at 500 msg/s), every one of them found: no "without a ..." clause
    assert int(placed.group(1).replace(",", "")) >= 450 and placed.group(2) == "", done.stdout
    rows = {m.group(1): m for m in ROW.finditer(done.stdout)}
    assert rows["odradek"].group(6) == "0", done.stdout
