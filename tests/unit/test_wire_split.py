"""bench/wire_split.py's reading of a capture (bench/latency.py --wire): Kafka frames followed across
TCP segments and retransmissions, and each record's stamp found in its Produce request, that
request's answer and the Fetch answer holding it."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from wire_split import Exchanges, Split, WireTimes, frames, stamps_in, wire_times

BROKER, CLIENT, CONSUMER = 9092, 50000, 50001
PAD = b"x" * 92


def packet(t_us: int, sport: int, dport: int, seq: int, payload: bytes) -> bytes:
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x18, 65535, 0, 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0, 64, 6, 0, b"\x7f\0\0\1", b"\x7f\0\0\1") + tcp
    frame = b"\0" * 12 + b"\x08\x00" + ip  # Ethernet, as tcpdump writes `lo`
    return struct.pack("<IIII", t_us // 1_000_000, t_us % 1_000_000, len(frame), len(frame)) + frame


def pcap(*packets: bytes) -> bytes:
    return struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1) + b"".join(packets)


def record_values(*stamps: int) -> bytes:
    # what surrounds each value in a batch does not matter here, only that a header count (0) follows it
    return b"".join(b"\x10" + struct.pack(">q", s) + PAD + b"\x00" for s in stamps)


def request(api: int, correlation: int, body: bytes) -> bytes:
    frame = struct.pack(">hhi", api, 9, correlation) + body
    return struct.pack(">i", len(frame)) + frame


def answer(correlation: int, body: bytes) -> bytes:
    frame = struct.pack(">i", correlation) + body
    return struct.pack(">i", len(frame)) + frame


def test_frames_follow_segments_and_skip_retransmitted_bytes() -> None:
    produce = request(0, 7, record_values(1_000, 2_000))
    cut = 20
    capture = pcap(
        packet(1_000, CLIENT, BROKER, 100, produce[:cut]),
        packet(1_100, CLIENT, BROKER, 100, produce[:cut]),  # retransmitted whole
        packet(1_200, CLIENT, BROKER, 100 + cut - 5, produce[cut - 5:]),  # overlapping the first segment
        packet(1_500, BROKER, CLIENT, 900, answer(7, b"ok")),
    )
    got = frames(capture, BROKER)
    assert [(f.t_ns, f.client_port, f.to_broker) for f in got] == [
        (1_200_000, CLIENT, True), (1_500_000, CLIENT, False)]
    assert got[0].data == produce[4:]
    assert got[1].data == struct.pack(">i", 7) + b"ok"


def test_a_gap_in_the_capture_stops_that_stream_only() -> None:
    first = request(0, 1, record_values(5))
    capture = pcap(
        packet(10, CLIENT, BROKER, 1, first),
        packet(20, CLIENT, BROKER, 1 + len(first) + 50, request(0, 2, record_values(6))),  # 50 bytes missing
        packet(30, BROKER, CLIENT, 1, answer(1, b"")),
    )
    got = frames(capture, BROKER)
    assert [f.data[:8] for f in got] == [first[4:12], struct.pack(">i", 1)]


def test_stamps_ending_in_the_pad_byte_are_read_whole() -> None:
    stamps = [0x0102030405060778, 0x7878787878787878, 42]
    assert list(stamps_in(record_values(*stamps), PAD)) == stamps


def test_each_record_is_placed_on_its_produce_answer_and_first_fetch_answer() -> None:
    capture = pcap(
        packet(1_000, CONSUMER, BROKER, 1, request(1, 30, b"fetch")),
        packet(2_000, CLIENT, BROKER, 1, request(0, 8, record_values(111, 222))),
        packet(2_300, BROKER, CLIENT, 1, answer(8, b"")),
        packet(2_600, BROKER, CONSUMER, 1, answer(30, record_values(111, 222))),
        packet(3_000, CONSUMER, BROKER, 100, request(1, 31, b"fetch")),
        packet(3_100, BROKER, CONSUMER, 500, answer(31, record_values(222))),  # again: the first one counts
    )
    times = wire_times(frames(capture, BROKER), PAD)
    assert times == WireTimes(produce_sent={111: 2_000_000, 222: 2_000_000},
                              produce_answered={111: 2_300_000, 222: 2_300_000},
                              fetch_answered={111: 2_600_000, 222: 2_600_000})
    split = Split()
    # stamps are the producer's monotonic clock: offset 1,999,000 ns places stamp 111 at 1,999,111 ns
    split.add(times, [111, 222, 333], [900_000, 800_000, 1], 1_999_000)
    assert split.to_wire == [2_000_000 - 1_999_111, 2_000_000 - 1_999_222]
    assert split.produce_answer == [300_000, 300_000]
    assert split.fetch_answer == [600_000, 600_000]
    assert split.to_app == [1_999_111 + 900_000 - 2_600_000, 1_999_222 + 800_000 - 2_600_000]
    assert dict(split.unmatched) == {"Produce request": 1}


def test_rounds_add_up() -> None:
    one, two = Split(to_wire=[1], produce_answer=[2], notes=["a"]), Split(to_wire=[3], fetch_answer=[4])
    one.unmatched["Fetch answer"] += 1
    two.unmatched["Fetch answer"] += 2
    one.merge(two)
    assert (one.to_wire, one.produce_answer, one.fetch_answer, one.notes) == ([1, 3], [2], [4], ["a"])
    assert one.unmatched == {"Fetch answer": 3}


def test_exchanges_time_each_answer_and_count_what_each_connection_keeps_in_flight() -> None:
    """--wire with --clients: a producer pipelining two Produce requests, a consumer with one Fetch at
    a time; each answer found by correlation id on its own connection."""
    seq = {CLIENT: 100, CONSUMER: 500}
    back = {CLIENT: 900, CONSUMER: 1900}
    packets = []

    def sent(t_us: int, port: int, data: bytes) -> None:
        packets.append(packet(t_us, port, BROKER, seq[port], data))
        seq[port] += len(data)

    def answered(t_us: int, port: int, data: bytes) -> None:
        packets.append(packet(t_us, BROKER, port, back[port], data))
        back[port] += len(data)

    sent(1_000, CLIENT, request(0, 1, b"a"))
    sent(1_100, CONSUMER, request(1, 1, b"f"))
    sent(1_200, CLIENT, request(0, 2, b"b"))  # the second in flight
    answered(3_000, CLIENT, answer(1, b"ok"))
    answered(3_500, CONSUMER, answer(1, b"records"))
    answered(4_200, CLIENT, answer(2, b"ok"))
    sent(4_700, CONSUMER, request(1, 2, b"f"))  # 1.2 ms after its answer
    sent(5_000, CLIENT, request(0, 3, b"c"))  # 0.8 ms after the last answer, nothing in flight
    answered(6_000, CONSUMER, answer(2, b"records"))
    answered(7_000, CLIENT, answer(3, b"ok"))
    seen = Exchanges()
    seen.add(frames(pcap(*packets), BROKER))
    assert seen.answer_ns[0] == [2_000_000, 3_000_000, 2_000_000]
    assert seen.answer_ns[1] == [2_400_000, 1_300_000]
    assert seen.in_flight[0] == {1: 2, 2: 1}
    assert seen.in_flight[1] == {1: 2}
    assert seen.next_request_ns[0] == [800_000]
    assert seen.next_request_ns[1] == [1_200_000]
    lines = seen.lines(lambda values: f"max {max(values):.1f} ms")
    assert lines[0] == "Produce request -> its answer (broker)   max 3.0 ms; 3 answered"
    assert "1: 67%, 2: 33%" in lines[1]
    assert lines[3].startswith("Fetch request")
    other = Exchanges()
    other.add(frames(pcap(*packets), BROKER))
    seen.merge(other)
    assert len(seen.answer_ns[0]) == 6 and seen.in_flight[0] == {1: 4, 2: 2}
