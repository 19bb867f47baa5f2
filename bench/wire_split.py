"""Where a record's time goes, read off the loopback wire (bench/latency.py --wire).

tcpdump captures one broker port on `lo` while bench/latency.py's producer and consumer run; the
capture is read back into the Kafka frames each side wrote (per connection and direction, in TCP
sequence order), each timed by the packet that completed it. A record's stamp (its first 8 bytes,
the producer's clock at produce()) is found in the Produce request that carried it, in that
request's answer (by correlation id), and in the first Fetch answer that held it, so its trip splits
into: produce() -> Produce on the wire (the client library), Produce -> its answer (the broker),
Produce -> the Fetch answer holding the record (the broker, waiting fetch included), and that Fetch
answer -> Consumer.poll() returning the record (the client library again).

The packet times are the kernel's as tcpdump saw them on `lo` (the sender's side of loopback),
CLOCK_REALTIME; the stamps are CLOCK_MONOTONIC, converted with the offset between the two clocks
taken in the measuring process just before its run. Needs tcpdump and the right to capture (root).
"""
from __future__ import annotations

import collections
import struct
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

PRODUCE, FETCH = 0, 1
MAX_FRAME = 100 * 1024 * 1024  # a larger length prefix means the stream was not followed from a frame start
_LINK_HEADER = {0: 4, 1: 14, 12: 0, 101: 0, 113: 16, 276: 20}  # BSD loopback, Ethernet, raw IP, Linux SLL, SLL2


@contextmanager
def capture(port: int, path: str, timeout: float = 10.0) -> Iterator[list[str]]:
    """tcpdump writing `lo`'s packets to and from `port` to `path` until the block ends; yields a list
    that then holds tcpdump's closing lines (its count of packets the kernel dropped)."""
    proc = subprocess.Popen(
        # --immediate-mode: each packet handed over as it comes, not a block at a time (the last
        # block, not yet full when tcpdump stops, would be lost)
        # only segments that carry bytes (not bare acknowledgements: half the packets, and under load
        # tcpdump falls behind and the kernel drops packets); a 64 MiB buffer for bursts
        ["tcpdump", "-i", "lo", "-s", "0", "-U", "--immediate-mode", "-B", "65536", "-w", path,
         f"tcp port {port} and (ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2)) != 0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    # "listening on lo, link-type EN10MB ...": capturing from here on (an empty line: tcpdump exited)
    first = proc.stderr.readline()
    if "listening on" not in first:
        proc.kill()
        raise RuntimeError(f"tcpdump did not start capturing: {first.strip() or f'exit status {proc.wait(timeout)}'}")
    closing: list[str] = []
    try:
        yield closing
    finally:
        time.sleep(0.2)  # the last packets through tcpdump's reads before it stops
        proc.terminate()
        _, err = proc.communicate(timeout=timeout)
        closing.extend(line for line in err.splitlines() if line.strip())


@dataclass
class Frame:
    t_ns: int  # CLOCK_REALTIME of the packet that completed the frame
    client_port: int
    to_broker: bool
    data: bytes  # the frame without its 4-byte length


@dataclass
class _Stream:
    next_seq: int
    buf: bytearray = field(default_factory=bytearray)


def frames(pcap: bytes, broker_port: int) -> list[Frame]:
    """The Kafka frames in a capture of IPv4 TCP traffic to and from `broker_port`, in capture order."""
    if len(pcap) < 24:
        return []
    magic = pcap[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        end = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        end = ">"
    else:
        raise ValueError("not a pcap capture")
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    link = struct.unpack_from(end + "I", pcap, 20)[0] & 0xFFFF
    if link not in _LINK_HEADER:
        raise ValueError(f"link type {link} not read here")
    skip = _LINK_HEADER[link]
    record = struct.Struct(end + "IIII")
    streams: dict[tuple[int, bool], _Stream] = {}
    out: list[Frame] = []
    pos = 24
    while pos + 16 <= len(pcap):
        sec, frac, incl, _ = record.unpack_from(pcap, pos)
        pos += 16
        packet = memoryview(pcap)[pos:pos + incl]
        pos += incl
        t_ns = sec * 1_000_000_000 + (frac if nano else frac * 1000)
        ip = packet[skip:]
        if len(ip) < 20 or ip[0] >> 4 != 4 or ip[9] != 6:  # IPv4, TCP
            continue
        tcp = ip[(ip[0] & 15) * 4:]
        if len(tcp) < 20:
            continue
        sport, dport, seq = struct.unpack_from(">HHI", tcp, 0)
        payload = bytes(tcp[(tcp[12] >> 4) * 4:])
        if not payload or broker_port not in (sport, dport):
            continue
        to_broker = dport == broker_port
        key = (sport if to_broker else dport, to_broker)
        stream = streams.get(key)
        if stream is None:
            stream = streams[key] = _Stream(seq)
        if stream.next_seq < 0:  # lost track of this stream's frames
            continue
        ahead = (seq - stream.next_seq) & 0xFFFFFFFF
        if ahead >= 0x80000000:  # all or part of it seen before (a retransmission)
            behind = 0x100000000 - ahead
            if behind >= len(payload):
                continue
            payload = payload[behind:]
        elif ahead:  # bytes missing from the capture: follow this stream no further
            streams[key] = _Stream(-1)
            continue
        stream.next_seq = (stream.next_seq + len(payload)) & 0xFFFFFFFF
        buf = stream.buf
        buf += payload
        at = 0
        while len(buf) - at >= 4:
            (size,) = struct.unpack_from(">i", buf, at)
            if size < 0 or size > MAX_FRAME:  # not at a frame's start: follow this stream no further
                streams[key] = _Stream(-1)
                at = len(buf)
                break
            if len(buf) - at - 4 < size:
                break
            out.append(Frame(t_ns, key[0], to_broker, bytes(buf[at + 4:at + 4 + size])))
            at += 4 + size
        del buf[:at]
    return out


@dataclass
class WireTimes:
    """CLOCK_REALTIME ns of each stamped record's steps, keyed by its stamp (the producer's clock)."""
    produce_sent: dict[int, int] = field(default_factory=dict)
    produce_answered: dict[int, int] = field(default_factory=dict)
    fetch_answered: dict[int, int] = field(default_factory=dict)


def stamps_in(data: bytes, pad: bytes) -> Iterator[int]:
    """The 8-byte big-endian stamps in front of each `pad` (a record's value after its stamp).

    A stamp may end in the pad's own byte, so the value is taken to end where the run of pad bytes
    does (a record's header count follows it, 0 here)."""
    fill = pad[-1]
    at = data.find(pad)
    while at >= 0:
        end = at + len(pad)
        while end < len(data) and data[end] == fill:
            end += 1
        if end - len(pad) >= 8:
            yield struct.unpack_from(">q", data, end - len(pad) - 8)[0]
        at = data.find(pad, end)


def paired(all_frames: list[Frame]) -> Iterator[tuple[Frame, int, Frame | None]]:
    """Each request as (frame, its API, None), and each answer found by correlation id on its connection
    as (frame, the request's API, the request); answers to requests not seen are left out."""
    asked: dict[tuple[int, int], tuple[int, Frame]] = {}  # (client port, correlation id) -> (api, request)
    for f in all_frames:
        if f.to_broker:
            if len(f.data) >= 8:
                api, _, correlation = struct.unpack_from(">hhi", f.data, 0)
                asked[(f.client_port, correlation)] = (api, f)
                yield f, api, None
        elif len(f.data) >= 4:
            request = asked.pop((f.client_port, struct.unpack_from(">i", f.data, 0)[0]), None)
            if request is not None:
                yield f, request[0], request[1]


def wire_times(all_frames: list[Frame], pad: bytes) -> WireTimes:
    """Each record's Produce request, its answer and the first Fetch answer holding it, on the wire."""
    times = WireTimes()
    carried: dict[int, list[int]] = {}  # id() of an unanswered Produce request -> the stamps it carries
    for f, api, request in paired(all_frames):
        if api == PRODUCE:
            if request is None:
                stamps, when = carried.setdefault(id(f), list(stamps_in(f.data, pad))), times.produce_sent
            else:
                stamps, when = carried.pop(id(request), []), times.produce_answered
            for s in stamps:
                when.setdefault(s, f.t_ns)
        elif api == FETCH and request is not None:
            for s in stamps_in(f.data, pad):
                times.fetch_answered.setdefault(s, f.t_ns)
    return times


@dataclass
class Split:
    """The steps of each record's trip, in ns (bench/latency.py adds rounds together)."""
    to_wire: list[int] = field(default_factory=list)  # produce() -> its Produce request whole on the wire
    produce_answer: list[int] = field(default_factory=list)  # Produce on the wire -> its answer
    fetch_answer: list[int] = field(default_factory=list)  # Produce on the wire -> the Fetch answer holding it
    to_app: list[int] = field(default_factory=list)  # that Fetch answer -> Consumer.poll() returned it
    unmatched: collections.Counter[str] = field(default_factory=collections.Counter)  # timed records not found
    notes: list[str] = field(default_factory=list)

    def add(self, times: WireTimes, stamps: list[int], latencies: list[int], offset_ns: int) -> None:
        """Records timed end to end (their stamps and latencies, CLOCK_MONOTONIC ns) placed on the wire;
        `offset_ns` is CLOCK_REALTIME - CLOCK_MONOTONIC in the measuring process."""
        for stamp, latency in zip(stamps, latencies, strict=True):
            sent = times.produce_sent.get(stamp)
            answered = times.produce_answered.get(stamp)
            fetched = times.fetch_answered.get(stamp)
            if sent is None or answered is None or fetched is None:
                self.unmatched["Produce request" if sent is None else "Produce answer" if answered is None
                               else "Fetch answer"] += 1
                continue
            self.to_wire.append(sent - (stamp + offset_ns))
            self.produce_answer.append(answered - sent)
            self.fetch_answer.append(fetched - sent)
            self.to_app.append(stamp + latency + offset_ns - fetched)

    def lines(self, spread: Callable[[list[float]], str]) -> list[str]:
        """One line a step, its figures in ms as `spread` (bench/latency.py's) gives them."""
        def q(values: list[int]) -> str:
            return spread([v / 1e6 for v in values]) if values else "none"

        return [
            f"produce() -> Produce on the wire (client)             {q(self.to_wire)}",
            f"Produce on the wire -> its answer (broker)             {q(self.produce_answer)}",
            f"Produce on the wire -> Fetch answer with it (broker)   {q(self.fetch_answer)}",
            f"that Fetch answer -> poll() returns it (client)        {q(self.to_app)}",
            f"records placed on the wire {len(self.to_wire):,}"
            + "".join(f", {n:,} without a {what}" for what, n in sorted(self.unmatched.items())),
        ] + self.notes

    def merge(self, other: Split) -> None:
        """Another round's records added to these (every field is a list or a counter)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


API_NAMES = {PRODUCE: "Produce", FETCH: "Fetch"}


@dataclass
class Exchanges:
    """Requests and their answers on the wire, by API (bench/latency.py --wire with --clients): each
    request's time to its answer, how many of its connection's requests of that API were unanswered
    as it was sent (itself included: what the client keeps in flight), and the time from an answer
    to the connection's next request of that API (the client's own share)."""
    answer_ns: dict[int, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    in_flight: dict[int, collections.Counter[int]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter))
    next_request_ns: dict[int, list[int]] = field(default_factory=lambda: collections.defaultdict(list))
    notes: list[str] = field(default_factory=list)

    def add(self, all_frames: list[Frame]) -> None:
        unanswered: collections.Counter[tuple[int, int]] = collections.Counter()  # (client port, api)
        last_answer: dict[tuple[int, int], int] = {}  # (client port, api) -> ns
        for f, api, request in paired(all_frames):
            key = (f.client_port, api)
            if request is not None:
                self.answer_ns[api].append(f.t_ns - request.t_ns)
                unanswered[key] -= 1
                last_answer[key] = f.t_ns
                continue
            unanswered[key] += 1
            self.in_flight[api][unanswered[key]] += 1
            answered = last_answer.pop(key, None)
            if answered is not None and unanswered[key] == 1:  # the client's turn since that answer
                self.next_request_ns[api].append(f.t_ns - answered)

    def lines(self, spread: Callable[[list[float]], str]) -> list[str]:
        """Produce's and Fetch's lines (any other API's requests are few: set-up, metadata)."""
        out = []
        for api, name in API_NAMES.items():
            times = self.answer_ns.get(api)
            if not times:
                continue
            flights = self.in_flight[api]
            sent = sum(flights.values())
            shares = ", ".join(f"{n}: {count / sent:.0%}" for n, count in sorted(flights.items())[:6])
            out.append(f"{name} request -> its answer (broker)   {spread([t / 1e6 for t in times])}; "
                       f"{len(times):,} answered")
            out.append(f"  {name} requests of its connection unanswered as one is sent (itself included): {shares}")
            gaps = self.next_request_ns.get(api)
            if gaps:
                out.append(f"  an answer -> the connection's next {name} request (client) "
                           f"{spread([g / 1e6 for g in gaps])}")
        return out + self.notes

    def merge(self, other: Exchanges) -> None:
        for api, times in other.answer_ns.items():
            self.answer_ns[api] += times
        for api, flights in other.in_flight.items():
            self.in_flight[api] += flights
        for api, gaps in other.next_request_ns.items():
            self.next_request_ns[api] += gaps
        self.notes += other.notes
