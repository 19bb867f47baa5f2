"""bench/wire_floor.py in short: the 50 x 50 load's exchanges against relays that do no Kafka work
(the Python one on uvloop, the Go one from tests/go/wirefloor) and odradek under the franz-go load,
every record timed and none lost; and the Python relay's part, frame by frame. The figures
themselves are the bench's, not this test's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent / "bench" / "wire_floor.py"
sys.path.insert(0, str(BENCH.parent))

from wire_floor import ACK, Relay

ROW = re.compile(r"^(Python relay \(uvloop\)|Go relay|odradek \(franz-go\))\s+3x200\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)"
                 r"\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)\s+(\d+)$", re.MULTILINE)


def test_wire_floor_times_every_record_through_both_relays_and_odradek() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH), "--clients", "3", "--rates", "200", "--seconds", "1", "--warmup", "0.2",
         "--odradek"],
        capture_output=True, text=True, timeout=240, check=False, cwd=BENCH.parent,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {m.group(1): m for m in ROW.finditer(done.stdout)}
    assert set(rows) == {"Python relay (uvloop)", "Go relay", "odradek (franz-go)"}, done.stdout
    for name, row in rows.items():
        assert 0 < float(row.group(2)) <= float(row.group(3)), (name, done.stdout)
        assert float(row.group(6)) > 0 and int(row.group(7)) > 0, f"no server CPU measured for {name}:\n{done.stdout}"
        assert row.group(9) == "0", f"{name} lost records:\n{done.stdout}"


class Wire:
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def connect(boxes: dict[int, Any], hello: bytes) -> tuple[Relay, Wire]:
    relay, wire = Relay(boxes), Wire()
    relay.connection_made(wire)  # type: ignore[arg-type]
    relay.data_received(frame(hello))
    return relay, wire


def test_python_relay_acknowledges_and_hands_records_to_the_parked_fetch_only() -> None:
    boxes: dict[int, Any] = {}
    producer, acks = connect(boxes, b"P 7")
    consumer, fetched = connect(boxes, b"C 7")
    first, second = b"a" * 100, b"b" * 100
    # a record before any fetch: acknowledged, kept
    producer.data_received(frame(first))
    assert acks.written == [ACK] and fetched.written == []
    # the fetch takes it at once; the next fetch parks until a record comes, split across reads
    consumer.data_received(frame(b"\0") + frame(b"\0")[:2])
    assert fetched.written == [frame(first)]
    consumer.data_received(frame(b"\0")[2:])
    whole = frame(second)
    producer.data_received(whole[:50])
    assert fetched.written == [frame(first)] and acks.written == [ACK]
    producer.data_received(whole[50:])
    assert fetched.written == [frame(first), frame(second)] and acks.written == [ACK, ACK]
    # a frame larger than any relay takes closes the connection
    producer.data_received((1 << 30).to_bytes(4, "big"))
    assert acks.closed
