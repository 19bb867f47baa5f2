"""Network fuzzer: hostile frames over many connections while a real client produces and consumes.

Starts `odradek serve` (free port, temporary data dir; or --bootstrap for a broker you run),
replays the captured client sessions of bench/fuzz_corpus/sessions.json once as they are
(the corpus's topics, groups and transactions then exist), starts a real client's load -
a confluent-kafka producer (acks=all, idempotent) counting every acked record, and a
consumer group reading them back - and then sends --frames frames of hostile sessions
(bench/fuzz_mutate.py: lying length prefixes, nulls, extreme numbers, flipped bytes,
truncation, splices, random versions, lying frame sizes, duplicated and reordered frames)
over --connections concurrent connections, one request at a time on each, as clients do.
Every --health-every frames, and every --health-seconds, a fresh connection must get an
ApiVersions answer within 1 s.

Reports, with targets (exit status 1 when one is missed):
  crashes               the broker process died                                      0
  unhandled exceptions  tracebacks / 'internal error' lines in the broker's log      0
  RSS growth            VmRSS after - before                 at most 50 MB per 1,000,000 frames
  health checks failed  ApiVersions not answered within 1 s                          0
  records lost          acked by the broker, never read back by the consumer         0
  client stalls         longest wait for the next ack / read while some are due      under --max-stall s
Each crash and exception is then replayed on a fresh broker to find the frame that causes
it alone (or the whole connection's frames); the report gives them in hex with the log line.

    .venv/bin/python bench/net_fuzz.py [--frames 100000] [--seed 1] [--seconds 900] [--connections 8]
        [--health-every 1000] [--bootstrap HOST:PORT [--broker-pid PID] [--broker-log FILE]] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fuzz_capture import broker_properties
from fuzz_mutate import CORPUS, Captured, Mutator, Send, load_corpus
from produce_consume import free_port

ROOT = Path(__file__).resolve().parent.parent
RSS_BUDGET_MB_PER_MILLION = 50.0
_HEALTH_CORRELATION = 0x7FFF0001


def api_versions_v3() -> bytes:
    client_id = b"fz-health"
    body = (struct.pack(">hhih", 18, 3, _HEALTH_CORRELATION, len(client_id)) + client_id + b"\0"
            + b"\x03fz" + b"\x021" + b"\0")
    return struct.pack(">i", len(body)) + body


def recv_exactly(s: socket.socket, n: int, deadline: float) -> bytes:
    data = b""
    while len(data) < n:
        s.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = s.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def health_check(host: str, port: int, limit: float = 1.0) -> float | None:
    """Seconds until a fresh connection's ApiVersions was answered without error, None if not within `limit`."""
    t0 = time.monotonic()
    deadline = t0 + limit
    try:
        with socket.create_connection((host, port), timeout=limit) as s:
            s.sendall(api_versions_v3())
            (size,) = struct.unpack(">i", recv_exactly(s, 4, deadline))
            frame = recv_exactly(s, size, deadline)
        correlation_id, error_code = struct.unpack_from(">ih", frame)
        if correlation_id != _HEALTH_CORRELATION or error_code != 0:
            return None
    except (OSError, struct.error):
        return None
    elapsed = time.monotonic() - t0
    return elapsed if elapsed <= limit else None


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- the broker under test ----------------------------------------------------------

class Broker:
    """`odradek serve` as a subprocess, or a broker given by --bootstrap."""

    def __init__(self, workdir: Path, bootstrap: str | None, pid: int | None, log: Path | None,
                 log_level: str = "info", sasl_bootstrap: str | None = None) -> None:
        self.workdir = workdir
        self.external = bootstrap is not None
        self.host, port = (bootstrap or f"127.0.0.1:{free_port()}").rsplit(":", 1)
        self.port = int(port)
        # the SASL_PLAINTEXT listener (PLAIN and SCRAM logins, fuzz_capture's users) for the captured SASL sessions
        self.sasl_port = int(sasl_bootstrap.rsplit(":", 1)[1]) if sasl_bootstrap else (
            self.port if self.external else free_port())
        self.pid = pid
        self.log_path = log if log is not None else workdir / "broker.log"
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def port_for(self, listener: str) -> int:
        return self.sasl_port if listener == "sasl" else self.port

    def start(self) -> None:
        if self.external:
            return
        props = self.workdir / "server.properties"
        props.write_text(broker_properties(self.port, self.sasl_port))
        cmd = [sys.executable, "-m", "odradek", "serve", "--config", str(props),
               "--data-dir", str(self.workdir / "data"), "--log-level", self.log_level]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                                         env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.pid = self.proc.pid
        self.starts += 1
        deadline = time.monotonic() + 30
        while health_check(self.host, self.port) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"broker did not start (exit {self.proc.poll()}); see {self.log_path}")
            time.sleep(0.1)

    def alive(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is None
        if self.pid is not None:
            return Path(f"/proc/{self.pid}").exists()
        return health_check(self.host, self.port, 5.0) is not None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_from(self, offset: int) -> tuple[str, int]:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            return "", offset
        return data.decode(errors="replace"), offset + len(data)


# -- the broker's log: exceptions ---------------------------------------------------

_PEER = re.compile(r"127\.0\.0\.1:(\d+)")
_CHAIN = ("During handling of the above exception", "The above exception was the direct cause")


@dataclass
class LogEvent:
    signature: str  # exception line (numbers blurred) + the innermost odradek frame
    text: str  # the log line and the traceback
    peer_port: int | None


def log_events(text: str) -> list[LogEvent]:
    """Tracebacks (a chain counts once) and 'internal error' lines without one."""
    lines = text.splitlines()
    events: list[LogEvent] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("Traceback (most recent call last)") or ("internal error" in line.lower()):
            start = i - 1 if line.startswith("Traceback") and i > 0 else i
            j = i + 1 if not line.startswith("Traceback") else i
            exc_line, where = line.strip(), ""
            if j < len(lines) and lines[j].startswith("Traceback"):
                while j < len(lines):
                    cur = lines[j]
                    if cur.startswith(("Traceback", " ", *_CHAIN)) or not cur.strip():
                        m = re.search(r'File "([^"]*odradek[^"]*)", line (\d+), in (\S+)', cur)
                        if m:
                            where = f"{Path(m.group(1)).name}:{m.group(2)} {m.group(3)}"
                        j += 1
                        continue
                    exc_line = cur.strip()  # the exception; a chained one goes on after a blank line
                    j += 1
                    if j + 1 < len(lines) and not lines[j].strip() and lines[j + 1].startswith(_CHAIN):
                        continue
                    break
            else:
                j = i + 1
            head = lines[start]
            peer = _PEER.search(head)
            signature = blur(exc_line) + (f" @ {where}" if where else "")
            events.append(LogEvent(signature, "\n".join(lines[start:j])[-3000:], int(peer.group(1)) if peer else None))
            i = j
            continue
        i += 1
    return events


def blur(line: str) -> str:
    """A log line without what changes from one occurrence to the next (time, peer, ids, sizes)."""
    text = line
    for marker in ("internal error", "closing connection from"):
        if marker in text:
            text = text[text.index(marker):]
            break
    text = re.sub(r"\(correlation id -?\d+\)", "", text)
    text = _PEER.sub("PEER", text)
    return re.sub(r"-?\d+", "N", text)[:240]


_LAST_WORDS = re.compile(r"memory allocation of|panicked at|Fatal Python error|Segmentation fault|^error: |"
                         r"^\w+Error: ")


def last_words(log_text: str) -> str:
    """The line of a dead broker's log that says why: an allocation failure, a panic, a fatal error."""
    lines = [line.strip() for line in log_text.splitlines() if line.strip()]
    for line in reversed(lines):
        if _LAST_WORDS.search(line):
            return line
    return lines[-1] if lines else ""


# -- the real client's load ---------------------------------------------------------

class Load:
    """A confluent-kafka producer (acks=all) counting acked records, and a consumer group reading them."""

    def __init__(self, bootstrap: str, rate: int) -> None:
        self.bootstrap = bootstrap
        self.rate = rate
        self.topic = f"fz-load-{uuid.uuid4().hex[:8]}"  # its own topic and group, also on a broker used before
        self.acked: set[int] = set()
        self.read: set[int] = set()
        self.delivery_errors: list[str] = []
        self.produced = 0
        self.flush_seconds = 60.0
        self.stop_producing = threading.Event()
        self.stop_consuming = threading.Event()
        self.last_ack = self.last_read = time.monotonic()
        self.max_ack_stall = self.max_read_stall = 0.0
        self.watching = False
        self._threads: list[threading.Thread] = []
        self._producer = None

    def start(self) -> None:
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for f in admin.create_topics([NewTopic(self.topic, 3, 1)], operation_timeout=15).values():
            f.result(30)
        for target in (self._produce, self._consume, self._watch):
            t = threading.Thread(target=target, daemon=True)
            t.start()
            self._threads.append(t)

    def _produce(self) -> None:
        from confluent_kafka import Producer

        p = Producer({"bootstrap.servers": self.bootstrap, "acks": "all", "enable.idempotence": True,
                      "linger.ms": 5})
        self._producer = p

        def delivered(err: object, msg: object) -> None:
            if err is None:
                self.acked.add(int(msg.value()))  # type: ignore[attr-defined]
                self.last_ack = time.monotonic()
            else:
                self.delivery_errors.append(str(err))

        t0 = time.monotonic()
        while not self.stop_producing.is_set():
            due = int((time.monotonic() - t0) * self.rate)
            while self.produced < due:
                p.produce(self.topic, value=str(self.produced).encode(), on_delivery=delivered)
                self.produced += 1
            p.poll(0.02)
        remaining = p.flush(self.flush_seconds)
        if remaining:
            self.delivery_errors.append(f"{remaining} records unacknowledged after a {self.flush_seconds:.0f} s flush")
        self._producer = None

    def _consume(self) -> None:
        from confluent_kafka import Consumer

        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": self.topic,
                      "auto.offset.reset": "earliest", "enable.auto.commit": True})
        c.subscribe([self.topic])
        try:
            while not self.stop_consuming.is_set():
                for m in c.consume(500, 0.2):
                    if m.error() is None:
                        self.read.add(int(m.value()))
                        self.last_read = time.monotonic()
        finally:
            c.close()

    def _watch(self) -> None:
        """The longest time without a new ack (records in flight) or a new read (acked ones unread)."""
        while not self.stop_consuming.is_set():
            time.sleep(0.25)
            now = time.monotonic()
            if not self.watching:
                self.last_ack = self.last_read = now
                continue
            if self._producer is not None and len(self._producer) > 0:
                self.max_ack_stall = max(self.max_ack_stall, now - self.last_ack)
            if len(self.read) < len(self.acked):
                self.max_read_stall = max(self.max_read_stall, now - self.last_read)
            else:
                self.last_read = now

    def wait_flowing(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.read and time.monotonic() < deadline:
            time.sleep(0.1)
        if not self.read:
            raise RuntimeError("the load client read nothing within 60 s")
        self.last_ack = self.last_read = time.monotonic()
        self.watching = True

    def finish(self, timeout: float = 60) -> None:
        self.watching = False
        self.flush_seconds = timeout
        self.stop_producing.set()
        self._threads[0].join(timeout + 30)
        deadline = time.monotonic() + timeout
        while not self.acked <= self.read and time.monotonic() < deadline:
            time.sleep(0.1)
        self.stop_consuming.set()
        for t in self._threads[1:]:
            t.join(15)


# -- the fuzzing --------------------------------------------------------------------

@dataclass
class Conn:
    port: int
    sent: list[Send] = field(default_factory=list)
    answered: int = 0  # frames of `sent` known handled (an answer came after them)


@dataclass
class Finding:
    kind: str  # 'crash', 'hang' (no health for 6 s: killed), 'slow' (a health check failed) or 'exception'
    signature: str
    log: str
    suspects: list[Send]
    history: list[Send]
    count: int = 1
    culprit: str = ""  # hex of the frame that reproduces it alone
    reproduced: str = "not tried"


@dataclass
class Stats:
    frames: int = 0
    mutated: int = 0
    warmup_frames: int = 0
    connections: int = 0
    answered: int = 0
    closed_by_broker: int = 0
    timeouts: int = 0
    timeouts_by_api: dict[str, int] = field(default_factory=dict)
    by_mutation: dict[str, list[int]] = field(default_factory=dict)  # how -> [sent, answered, closed, no answer]
    connect_failures: int = 0
    health_checks: int = 0
    health_failed: int = 0
    health_worst_s: float = 0.0
    crashes: int = 0
    hangs: int = 0
    exceptions: int = 0


class Fuzzer:
    def __init__(self, broker: Broker, sessions: list[Captured], args: argparse.Namespace) -> None:
        self.broker = broker
        self.sessions = sessions
        self.args = args
        self.stats = Stats()
        self.recent: collections.OrderedDict[int, Conn] = collections.OrderedDict()
        self.active: set[int] = set()
        self.findings: dict[str, Finding] = {}
        self.log_offset = 0
        self.deadline = 0.0
        self.broker_up: asyncio.Event | None = None
        self._health_running = False
        self._next_health = args.health_every
        self._restarting = False
        self._killed = False
        self.dead = False
        self.last_healthy = time.monotonic()
        self.unanswered: collections.deque[tuple[float, Send]] = collections.deque(maxlen=512)

    def done(self) -> bool:
        return self.stats.frames >= self.args.frames or time.monotonic() >= self.deadline

    async def run(self) -> None:
        self.deadline = time.monotonic() + self.args.seconds
        mutators = [Mutator(self.sessions, self.args.seed * 1000 + w) for w in range(self.args.connections)]
        clock = asyncio.create_task(self._health_clock())
        await asyncio.gather(*(self._worker(m) for m in mutators))
        clock.cancel()
        while self._health_running:
            await asyncio.sleep(0.05)

    async def warmup(self) -> None:
        """Every captured session once, as captured."""
        self.broker_up = asyncio.Event()
        self.broker_up.set()
        self.deadline = time.monotonic() + 300
        for captured in self.sessions:
            await self._session([Send(f, "", captured.listener) for f in captured.frames], timeout=2.0)
        self.stats.warmup_frames, self.stats.frames = self.stats.frames, 0
        self.stats.mutated = self.stats.answered = self.stats.closed_by_broker = self.stats.timeouts = 0
        self.stats.timeouts_by_api = {}
        self.stats.by_mutation = {}
        self.stats.connections = 0

    async def _worker(self, mutator: Mutator) -> None:
        while not self.done():
            assert self.broker_up is not None
            await self.broker_up.wait()
            await self._session(mutator.session())

    async def _session(self, sends: list[Send], timeout: float = 0.5) -> None:
        if not sends:
            return
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.broker.host, self.broker.port_for(sends[0].listener)), 5)
        except (TimeoutError, OSError):
            self.stats.connect_failures += 1
            await self._check_alive()
            return
        conn = Conn(writer.get_extra_info("sockname")[1])
        self.recent[conn.port] = conn
        self.active.add(conn.port)
        while len(self.recent) > 4096:
            self.recent.popitem(last=False)
        self.stats.connections += 1
        answers = asyncio.Event()
        state = {"answers": 0, "closed": False}

        async def read_answers() -> None:
            try:
                while True:
                    (size,) = struct.unpack(">i", await reader.readexactly(4))
                    await reader.readexactly(size)
                    state["answers"] += 1
                    conn.answered = len(conn.sent)
                    answers.set()
            except (asyncio.IncompleteReadError, ConnectionError, OSError, struct.error):
                state["closed"] = True
                answers.set()

        reading = asyncio.create_task(read_answers())
        quiet = 0
        try:
            for send in sends:
                if state["closed"] or self.done():
                    break
                conn.sent.append(send)
                data = send.wire()
                before = state["answers"]
                try:
                    if send.pieces > 1:
                        step = max(len(data) // send.pieces, 1)
                        for i in range(0, len(data), step):
                            writer.write(data[i:i + step])
                            await asyncio.wait_for(writer.drain(), 2)
                            await asyncio.sleep(0.001)
                    else:
                        writer.write(data)
                        await asyncio.wait_for(writer.drain(), 2)
                except (TimeoutError, ConnectionError, OSError):
                    break
                self.stats.frames += 1
                self.stats.mutated += bool(send.how)
                self._maybe_health()
                wait = 0.3 if send.frame[:2] == b"\0\0" else timeout  # acks=0 produce gets no answer
                try:
                    while state["answers"] == before and not state["closed"]:
                        answers.clear()
                        await asyncio.wait_for(answers.wait(), wait)
                except TimeoutError:
                    self.stats.timeouts += 1
                    self._tally(send.how, 3)
                    self.unanswered.append((time.monotonic(), send))
                    key = str(struct.unpack_from(">h", send.frame)[0]) if len(send.frame) >= 2 else "?"
                    self.stats.timeouts_by_api[key] = self.stats.timeouts_by_api.get(key, 0) + 1
                    quiet += 1
                    if quiet >= 2:  # parked (a long poll, a join) or waiting for bytes a lying size promised
                        break
                    continue
                quiet = 0
                if state["closed"]:
                    self.stats.closed_by_broker += 1
                else:
                    self.stats.answered += 1
                self._tally(send.how, 2 if state["closed"] else 1)
        finally:
            writer.close()
            reading.cancel()
            self.active.discard(conn.port)
        if state["closed"] and not self.broker.alive():
            await self._check_alive()

    def _tally(self, how: str, outcome: int) -> None:
        counts = self.stats.by_mutation.setdefault(how or "as captured", [0, 0, 0, 0])
        counts[0] += 1
        counts[outcome] += 1

    # -- health, crashes, log -----------------------------------------------------

    async def _health_clock(self) -> None:
        """Also a check each --health-seconds: a broker that stops reading also stops the frame count."""
        while True:
            await asyncio.sleep(self.args.health_seconds)
            if not self._health_running:
                self._health_running = True
                asyncio.get_running_loop().create_task(self._health())

    def _maybe_health(self) -> None:
        if self.stats.frames >= self._next_health and not self._health_running:
            self._next_health = self.stats.frames + self.args.health_every
            self._health_running = True
            asyncio.get_running_loop().create_task(self._health())

    async def _health(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            if self._restarting or self.dead:
                return
            starts = self.broker.starts
            took = await loop.run_in_executor(None, health_check, self.broker.host, self.broker.port, 1.0)
            if self._restarting or self.broker.starts != starts:
                return  # it died and is restarting meanwhile: a crash, counted there
            self.stats.health_checks += 1
            if took is not None:
                self.stats.health_worst_s = max(self.stats.health_worst_s, took)
                self.last_healthy = time.monotonic()
            else:
                self.stats.health_failed += 1
                print(f"health check failed at frame {self.stats.frames}", file=sys.stderr)
                if self.broker.alive():
                    suspects = self._suspects(self.last_healthy - 1.0)
                    again = await loop.run_in_executor(None, health_check, self.broker.host, self.broker.port, 5.0)
                    if self._restarting or self.broker.starts != starts:
                        pass
                    elif again is None and self.broker.alive():  # stuck: restarted, the campaign goes on
                        self._hang(suspects)
                    elif again is not None:
                        self._add(Finding("slow", "no ApiVersions answer within 1 s (answered within 5 s)",
                                          f"broker RSS {rss_mb(self.broker.pid)} MB", suspects, []))
            self.scan_log()
            await self._check_alive()
        finally:
            self._health_running = False

    def _suspects(self, since: float) -> list[Send]:
        """Frames without an answer: on open connections, and those that timed out after `since`."""
        late = [send for t, send in self.unanswered if t >= since]
        open_now = [s for p in list(self.active) if (c := self.recent.get(p)) for s in c.sent[c.answered:]]
        return (late + [s for s in open_now if s not in late])[:64]

    def _hang(self, suspects: list[Send]) -> None:
        self.stats.hangs += 1
        rss = rss_mb(self.broker.pid)
        text, _ = self.broker.log_from(self.log_offset)
        tail = "\n".join(text.strip().splitlines()[-3:])
        print(f"HANG at frame {self.stats.frames}: broker RSS {rss} MB", file=sys.stderr)
        self._add(Finding("hang", "no ApiVersions answer within 1 s, nor within 5 s",
                          f"broker RSS {rss} MB; log ends:\n{tail}", suspects, []))
        if not self.broker.external and self.args.keep_going:
            self.broker.kill()
            self._killed = True
        else:
            self.dead = True
            self.deadline = 0

    async def _check_alive(self) -> None:
        if self._restarting or self.dead or self.broker.alive():
            return
        self._restarting = True
        assert self.broker_up is not None
        self.broker_up.clear()
        try:
            text, self.log_offset = self.broker.log_from(self.log_offset)
            self._record_events(text)
            if self._killed:  # we ended a hung broker: a hang, not a crash
                self._killed = False
            else:
                code = self.broker.proc.returncode if self.broker.proc is not None else None
                why = last_words(text)
                signature = f"exit {code}: " + blur(why)
                self.stats.crashes += 1
                self._add(Finding("crash", signature, why, self._suspects(time.monotonic() - 2.0), []))
                print(f"CRASH at frame {self.stats.frames}: {signature}", file=sys.stderr)
            if self.broker.external or not self.args.keep_going:
                self.dead = True
                self.deadline = 0
                return
            try:
                await asyncio.get_running_loop().run_in_executor(None, self.broker.start)
            except RuntimeError as exc:  # it does not come back (its log says why): the campaign ends here
                print(f"restart failed: {exc}", file=sys.stderr)
                text, self.log_offset = self.broker.log_from(self.log_offset)
                why = last_words(text)
                self.stats.crashes += 1
                self._add(Finding("crash", "restart failed: " + blur(why), why, [], []))
                self.dead = True
                self.deadline = 0
                return
            self.last_healthy = time.monotonic()
        finally:
            self._restarting = False
            self.broker_up.set()

    def scan_log(self) -> None:
        text, self.log_offset = self.broker.log_from(self.log_offset)
        self._record_events(text)

    def _record_events(self, text: str) -> None:
        for event in log_events(text):
            self.stats.exceptions += 1
            conn = self.recent.get(event.peer_port) if event.peer_port is not None else None
            suspects = conn.sent[max(conn.answered - 1, 0):] if conn else []
            self._add(Finding("exception", event.signature, event.text, suspects, list(conn.sent) if conn else []))

    def _add(self, finding: Finding) -> None:
        known = self.findings.get(finding.signature)
        if known is None:
            self.findings[finding.signature] = finding
        else:
            known.count += 1
            if not known.suspects and finding.suspects:
                known.suspects, known.history = finding.suspects, finding.history


# -- triage: which frame does it alone? ----------------------------------------------

def send_alone(broker: Broker, frames: list[Send], wait: float = 1.0) -> None:
    """`frames` on one fresh connection, each waiting up to `wait` for an answer."""
    if not frames:
        return
    try:
        with socket.create_connection((broker.host, broker.port_for(frames[0].listener)), timeout=wait) as s:
            for send in frames:
                s.sendall(send.wire())
                try:
                    s.settimeout(wait)
                    if not s.recv(65536):
                        return
                except TimeoutError:
                    pass
    except OSError:
        pass


def triage(findings: list[Finding], workdir: Path, seconds: float, corpus: Path) -> None:
    """Replay each finding's frames on a fresh broker: first each suspect alone, then the connection's frames.

    The broker has the corpus replayed first (the state the fuzzed one had: its topics, groups,
    transactions); after a crash or a hang the next tries get a new one in a new data dir.
    """
    deadline = time.monotonic() + seconds
    made = 0
    broker: Broker | None = None

    def fresh() -> Broker:
        nonlocal made
        made += 1
        b = Broker(workdir / f"triage{made}", None, None, None)
        b.workdir.mkdir(parents=True, exist_ok=True)
        b.start()
        for captured in load_corpus(corpus):
            send_alone(b, [Send(f, "", captured.listener) for f in captured.frames], 0.5)
        return b

    try:
        for finding in findings:
            finding.reproduced = "no"
            ordered = finding.suspects if finding.kind in ("hang", "slow") else list(reversed(finding.suspects))
            ordered = [s for s in ordered if s.how] + [s for s in ordered if not s.how]  # mutated ones first
            tries = [[s] for s in ordered[:24]]
            if finding.history:
                tries.append(finding.history)
            for frames in tries:
                if time.monotonic() > deadline:
                    finding.reproduced = "no (out of triage time)"
                    break
                if broker is None or not broker.alive():
                    if broker is not None:
                        broker.kill()
                    broker = fresh()
                hit, text = replay(broker, finding, frames)
                if hit:
                    finding.reproduced = "alone" if len(frames) == 1 else f"with its connection's {len(frames)} frames"
                    finding.culprit = " ".join(f.wire().hex() for f in frames)
                    if finding.kind != "exception":
                        finding.log = text or finding.log
                        broker.kill()
                    break
    except RuntimeError as exc:  # a triage broker did not start: the rest stays untried
        print(f"triage stopped: {exc}", file=sys.stderr)
    finally:
        if broker is not None:
            broker.stop()


def replay(broker: Broker, finding: Finding, frames: list[Send]) -> tuple[bool, str]:
    """Whether sending `frames` on one connection does what the finding says, and the evidence."""
    _, offset = broker.log_from(0)
    if finding.kind in ("hang", "slow"):  # does the broker stop answering while it handles this?
        rss0 = rss_mb(broker.pid) or 0.0
        sender = threading.Thread(target=send_alone, args=(broker, frames, 2.0), daemon=True)
        sender.start()
        time.sleep(0.05)
        hit = health_check(broker.host, broker.port) is None
        sender.join(10)
        rss = rss_mb(broker.pid) or 0.0
        return hit, f"broker RSS {rss0:.0f} -> {rss:.0f} MB, no ApiVersions answer within 1 s"
    send_alone(broker, frames)
    time.sleep(0.2)
    text, _ = broker.log_from(offset)
    if finding.kind == "crash":
        time.sleep(0.3)
        text, _ = broker.log_from(offset)
        return not broker.alive(), last_words(text)
    events = [e for e in log_events(text) if e.signature == finding.signature]
    return bool(events), events[0].text if events else ""


async def campaign(fuzzer: Fuzzer, load: Load) -> tuple[float | None, float | None, float]:
    """Warm-up, the client's load, the fuzzing, a last health check: (RSS before, RSS after, seconds)."""
    broker = fuzzer.broker
    loop = asyncio.get_running_loop()
    await fuzzer.warmup()
    await loop.run_in_executor(None, load.start)
    await loop.run_in_executor(None, load.wait_flowing)
    await asyncio.sleep(1)
    fuzzer.scan_log()
    rss_before = rss_mb(broker.pid)
    t0 = time.monotonic()
    await fuzzer.run()
    elapsed = time.monotonic() - t0
    if not fuzzer.dead:
        final = await loop.run_in_executor(None, health_check, broker.host, broker.port, 1.0)
        fuzzer.stats.health_checks += 1
        if final is None:
            fuzzer.stats.health_failed += 1
            await fuzzer._check_alive()
    rss_after = rss_mb(broker.pid) if broker.starts <= 1 else None
    await loop.run_in_executor(None, load.finish, 5.0 if fuzzer.dead else 60.0)
    fuzzer.scan_log()
    return rss_before, rss_after, elapsed


# -- the run ------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--frames", type=int, default=100_000, help="frames to send (hostile sessions)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=900, help="time cap of the fuzzing")
    ap.add_argument("--connections", type=int, default=8, help="concurrent fuzzing connections")
    ap.add_argument("--health-every", type=int, default=1000, help="frames between health checks")
    ap.add_argument("--health-seconds", type=float, default=1.0, help="and seconds between health checks")
    ap.add_argument("--rate", type=int, default=200, help="records/s the load producer sends")
    ap.add_argument("--max-stall", type=float, default=10.0, help="longest wait for an ack or read (s)")
    ap.add_argument("--bootstrap", help="fuzz this broker instead of starting one")
    ap.add_argument("--broker-pid", type=int, help="with --bootstrap: its pid, for RSS and crashes")
    ap.add_argument("--broker-log", type=Path, help="with --bootstrap: its log, for exceptions")
    ap.add_argument("--sasl-bootstrap", help="with --bootstrap: its SASL_PLAINTEXT listener (fuzz_capture's users)")
    ap.add_argument("--corpus", type=Path, default=CORPUS)
    ap.add_argument("--skip-apis", default="", help="api keys whose captured frames are left out (e.g. 19,37)")
    ap.add_argument("--no-keep-going", dest="keep_going", action="store_false",
                    help="stop at the first crash instead of restarting the broker")
    ap.add_argument("--triage-seconds", type=float, default=120)
    ap.add_argument("--json", type=Path, help="write the report here too")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (data, logs)")
    args = ap.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="odradek-netfuzz-"))
    broker = Broker(workdir, args.bootstrap, args.broker_pid, args.broker_log, sasl_bootstrap=args.sasl_bootstrap)
    skip = {int(k) for k in args.skip_apis.split(",") if k.strip()}
    sessions = [Captured([f for f in s.frames if struct.unpack_from(">h", f)[0] not in skip], s.listener)
                for s in load_corpus(args.corpus)]
    load: Load | None = None
    report: dict[str, object] = {}
    try:
        broker.start()
        fuzzer = Fuzzer(broker, sessions, args)
        _, fuzzer.log_offset = broker.log_from(0)
        load = Load(broker.bootstrap, args.rate)
        rss_before, rss_after, elapsed = asyncio.run(campaign(fuzzer, load))
        rank = {"crash": 0, "hang": 1, "exception": 2, "slow": 3}
        findings = sorted(fuzzer.findings.values(), key=lambda f: (rank[f.kind], -f.count))
        if findings and not broker.external:
            triage(findings, workdir, args.triage_seconds, args.corpus)
        stats = fuzzer.stats
        budget = RSS_BUDGET_MB_PER_MILLION * max(1.0, stats.frames / 1_000_000)
        growth = None if rss_before is None or rss_after is None else rss_after - rss_before
        lost = len(load.acked - load.read)
        targets = {
            "crashes": stats.crashes == 0,
            "hangs": stats.hangs == 0,
            "unhandled exceptions": stats.exceptions == 0,
            "RSS growth": growth is None or growth <= budget,
            "health checks failed": stats.health_failed == 0,
            "records lost": lost == 0 and len(load.acked) > 0,
            "delivery errors": not load.delivery_errors,
            "client stalls": max(load.max_ack_stall, load.max_read_stall) < args.max_stall,
        }
        report = {
            "command": " ".join(sys.argv), "machine": f"{platform.node()} {os.cpu_count()} cpus",
            "seconds": round(elapsed, 1), "frames_per_s": round(stats.frames / elapsed) if elapsed else 0,
            **asdict(stats), "health_worst_s": round(stats.health_worst_s, 3),
            "rss_before_mb": rss_before and round(rss_before, 1), "rss_after_mb": rss_after and round(rss_after, 1),
            "rss_growth_mb": growth and round(growth, 1), "rss_budget_mb": budget,
            "records_produced": load.produced, "records_acked": len(load.acked),
            "records_read_back": len(load.acked & load.read), "records_lost": lost,
            "delivery_errors": load.delivery_errors[:5], "max_ack_stall_s": round(load.max_ack_stall, 2),
            "max_read_stall_s": round(load.max_read_stall, 2), "broker_starts": broker.starts,
            "targets_missed": [k for k, ok in targets.items() if not ok],
            "findings": [{"kind": f.kind, "count": f.count, "signature": f.signature, "log": f.log,
                          "reproduced": f.reproduced, "frame_hex": f.culprit,
                          "suspects_hex": [s.wire().hex() for s in f.suspects[-8:]],
                          "suspects_how": [s.how for s in f.suspects[-8:]]} for f in findings],
        }
        print_report(report)
    finally:
        if load is not None:
            load.stop_producing.set()
            load.stop_consuming.set()
        broker.stop()
        if args.json:
            args.json.write_text(json.dumps(report, indent=1) + "\n")
        if args.keep or not report or report.get("targets_missed"):
            print(f"work dir kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if not report or report["targets_missed"] else 0


def print_report(r: dict[str, object]) -> None:
    print(f"\n{r['command']}\n{r['machine']}")
    print(f"frames sent            {r['frames']:>10,}  ({r['mutated']:,} mutated; {r['frames_per_s']:,}/s over "
          f"{r['seconds']} s, {r['connections']:,} connections; answered {r['answered']:,}, closed by the "
          f"broker {r['closed_by_broker']:,}, no answer within 0.5 s {r['timeouts']:,})")
    print(f"crashes                {r['crashes']:>10}   (target 0)")
    print(f"hangs (restarted)      {r['hangs']:>10}   (target 0)")
    print(f"unhandled exceptions   {r['exceptions']:>10}   (target 0)")
    print(f"broker RSS             {r['rss_before_mb']} -> {r['rss_after_mb']} MB  "
          f"(growth {r['rss_growth_mb']} MB, target at most {r['rss_budget_mb']:.0f})")
    print(f"health checks failed   {r['health_failed']:>10}   of {r['health_checks']} (target 0; slowest "
          f"{r['health_worst_s']} s)")
    print(f"records acked / read   {r['records_acked']:>10,} / {r['records_read_back']:,}  (lost {r['records_lost']}, "
          f"target 0; produced {r['records_produced']:,}; delivery errors {len(r['delivery_errors'])})")  # type: ignore[arg-type]
    print(f"client stalls          ack {r['max_ack_stall_s']} s, read {r['max_read_stall_s']} s")
    for f in r["findings"]:  # type: ignore[attr-defined]
        print(f"\n{f['kind'].upper()} x{f['count']}: {f['signature']}\n  reproduced: {f['reproduced']}")
        if f["frame_hex"]:
            print(f"  frame: {f['frame_hex'][:2000]}")
        else:
            for how, hx in zip(f["suspects_how"], f["suspects_hex"]):
                print(f"  suspect ({how or 'as captured'}): {hx[:400]}")
        print("  log: " + f["log"][-1500:].replace("\n", "\n       "))
    missed = r["targets_missed"]
    print("\nall targets met" if not missed else f"\nTARGETS MISSED: {', '.join(missed)}")  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
