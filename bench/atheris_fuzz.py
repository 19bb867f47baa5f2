"""Coverage-guided fuzzing (atheris, libFuzzer) of request decoding and every handler,
with a real in-process broker behind them (issue 13, "Hostile input").

Each input picks an (api key, version) from ROUTES (its first two bytes) and one of
three shapes (the third):

  raw         a valid request header, then the input's own bytes as the body
  structured  a request entity of that version whose every field is drawn from the
              input with atheris' FuzzedDataProvider: null arrays and strings where
              the schema allows them, negative, extreme and small numbers, known and
              unknown topics, groups and transactional ids, real record batches
  mutated     a structured request, encoded, then cut, flipped or given a lying
              length where the input says

The frame goes through `framing.decode_request` and then `Dispatcher.dispatch(None,
frame)` of an embedded broker (`odradek.testing.Broker`; file storage, as `odradek
serve` keeps its logs, or --storage memory, the embedded tests' choice). A crash is
any exception other than CloseConnection or FrameError, and any traceback the broker
logs or leaves in a task. A request still waiting after --timeout-ms (a long poll, a
rebalance) is cancelled, as a closed connection would cancel it.

    .venv/bin/python bench/atheris_fuzz.py -runs=20000 -seed=1
    .venv/bin/python bench/atheris_fuzz.py --coverage -max_total_time=600 -seed=1
    .venv/bin/python bench/atheris_fuzz.py --findings /tmp/odradek-atheris-corpus.findings.jsonl

Flags with one dash go to libFuzzer (-runs, -max_total_time, -seed, -max_len, ...);
the script's own have two:

  --corpus DIR      the corpus (default: $TMPDIR/odradek-atheris-corpus), seeded with
                    inputs for every (api key, version) and shape when empty
  --coverage        fuzz in a child process, then replay the corpus under coverage.py
                    and print the coverage of protocol/ and server/handlers/
  --keep-going      print each distinct finding once instead of stopping at the first;
                    either way each finding goes to DIR.findings.jsonl with the inputs
                    the broker had seen since it started (findings can need that state)
  --findings FILE   replay each finding of a findings.jsonl on a fresh broker, cut its
                    history to the inputs it needs and print them as requests
  --reset-every N   a fresh broker every N inputs (default 1000), so state stays small
  --storage KIND    file (default) or memory
  --timeout-ms N    how long one request may wait (default 50)
  --replay FILE...  run these inputs once each, in order, on one broker, and report findings
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import json
import logging
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from dataclasses import dataclass, fields
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Union, get_args, get_origin

import atheris

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "odradek"
INSTRUMENTED = ["odradek.protocol", "odradek.server", "odradek.coordinator", "odradek.storage"]
RAW, STRUCTURED, MUTATED = 0, 1, 2
SHAPES = ("raw", "structured", "mutated")

# The coverage replay imports this module plainly: coverage.py measures it, not atheris.
PLAIN = os.environ.get("ODRADEK_FUZZ_PLAIN") == "1"
with contextlib.nullcontext() if PLAIN else atheris.instrument_imports(include=INSTRUMENTED):
    from odradek.protocol.build import build
    from odradek.protocol.framing import FrameError, encode_request, request_type
    from odradek.protocol.records import CONTROL_BIT, TRANSACTIONAL_BIT, encode_batch
    from odradek.server.dispatcher import CloseConnection, Dispatcher
    from odradek.server.handlers import ROUTES
    from odradek.testing import Broker

PAIRS = [(k, v) for k, r in sorted(ROUTES.items()) for v in range(r.min_version, r.max_version + 1)]
INT_RANGES = {"int8": (-(2**7), 2**7 - 1), "int16": (-(2**15), 2**15 - 1),
              "int32": (-(2**31), 2**31 - 1), "int64": (-(2**63), 2**63 - 1),
              "timedelta_i32": (-(2**31), 2**31 - 1), "timedelta_i64": (-(2**40), 2**40)}
TOPICS = ["fuzz", "compact", "new-topic", "__consumer_offsets", "__transaction_state", "", "bad/name",
          "x" * 250]
GROUPS = ["group", "other-group", ""]
TXN_IDS = ["txn", "other-txn", ""]
WORDS = ["consumer", "range", "member-1", "client", "cleanup.policy", "compact", "delete",
         "retention.ms", "segment.bytes", "max.message.bytes", "min.insync.replicas", "-1", "0",
         "1000", "producer", "fuzz", "group", "txn", ""]


# -- a request entity from the input ------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldPlan:
    name: str
    kafka_type: str | None  # None: a nested entity
    nullable: bool  # the field (an array's whole value, or a scalar) may be null
    is_array: bool
    element_nullable: bool
    entity: type | None
    type_name: str  # TopicName, GroupId, TransactionalId, ... picks a pool of names


def _strip_none(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (UnionType, Union) and NoneType in get_args(tp):
        return next(a for a in get_args(tp) if a is not NoneType), True
    return tp, False


_PLANS: dict[type, tuple[FieldPlan, ...]] = {}


def plan(cls: type) -> tuple[FieldPlan, ...]:
    if cls not in _PLANS:
        out = []
        for f in fields(cls):
            tp, nullable = _strip_none(f.type)
            is_array = get_origin(tp) is tuple
            element_nullable = False
            if is_array:
                tp, element_nullable = _strip_none(get_args(tp)[0])
            entity = tp if hasattr(tp, "__dataclass_fields__") else None
            out.append(FieldPlan(f.name, f.metadata.get("kafka_type"), nullable, is_array, element_nullable,
                                 entity, getattr(tp, "__name__", "")))
        _PLANS[cls] = tuple(out)
    return _PLANS[cls]


class Draw:
    """Field values from a FuzzedDataProvider; an exhausted input gives the smallest ones."""

    def __init__(self, fdp: atheris.FuzzedDataProvider, topic_ids: list[uuid.UUID]) -> None:
        self.fdp = fdp
        self.topic_ids = topic_ids

    def entity(self, cls: type, depth: int = 0) -> Any:
        return cls(**{p.name: self.field(p, depth) for p in plan(cls)})

    def field(self, p: FieldPlan, depth: int) -> Any:
        fdp = self.fdp
        if p.nullable and fdp.ConsumeIntInRange(0, 7) == 0:
            return None
        if p.is_array:
            n = fdp.ConsumeIntInRange(0, 3 if depth < 2 else 1)
            return tuple(None if p.element_nullable and fdp.ConsumeIntInRange(0, 7) == 0
                         else self.value(p, depth) for _ in range(n))
        return self.value(p, depth)

    def value(self, p: FieldPlan, depth: int) -> Any:
        fdp = self.fdp
        if p.entity is not None:
            return self.entity(p.entity, depth + 1)
        kt = p.kafka_type
        if kt in INT_RANGES:
            lo, hi = INT_RANGES[kt]
            choice = fdp.ConsumeIntInRange(0, 2)
            if choice == 0:
                n = fdp.ConsumeIntInRange(-1, 8)
            elif choice == 1:
                n = fdp.PickValueInList([v for v in (lo, hi, -1, 0, 1, 100, 1000, 2**31 - 1) if lo <= v <= hi])
            else:
                n = fdp.ConsumeIntInRange(lo, hi)
            return datetime.timedelta(milliseconds=n) if kt.startswith("timedelta") else n
        if kt == "bool":
            return fdp.ConsumeBool()
        if kt == "string":
            pool = {"TopicName": TOPICS, "GroupId": GROUPS, "TransactionalId": TXN_IDS}.get(p.type_name, WORDS)
            if fdp.ConsumeIntInRange(0, 3):
                return fdp.PickValueInList(pool)
            return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, 24))
        if kt == "bytes":
            return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64))
        if kt == "records":
            return self.records()
        if kt == "uuid":
            choice = fdp.ConsumeIntInRange(0, 2)
            if choice == 0:
                return uuid.UUID(int=0)
            if choice == 1 and self.topic_ids:
                return fdp.PickValueInList(self.topic_ids)
            return uuid.UUID(bytes=fdp.ConsumeBytes(16).ljust(16, b"\0"))
        raise AssertionError(f"no generator for kafka_type {kt!r} ({p.name})")

    def records(self) -> bytes:
        """A real batch most of the time (idempotent, transactional, control, compressed),
        sometimes with one byte flipped, sometimes bytes that only claim to be one."""
        fdp = self.fdp
        choice = fdp.ConsumeIntInRange(0, 5)
        if choice == 0:
            return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 80))
        n = fdp.ConsumeIntInRange(1, 3)
        recs = [(fdp.PickValueInList([None, b"k", b"key-2"]), fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 16)),
                 (("h", b"v"),) if fdp.ConsumeBool() else ()) for _ in range(n)]
        attributes = fdp.PickValueInList([0, 0, TRANSACTIONAL_BIT, TRANSACTIONAL_BIT | CONTROL_BIT])
        idempotent = fdp.ConsumeBool()
        batch = bytearray(encode_batch(
            recs, compression=fdp.ConsumeIntInRange(0, 4), attributes=attributes,
            producer_id=fdp.ConsumeIntInRange(-1, 3) if idempotent else -1,
            producer_epoch=fdp.ConsumeIntInRange(-1, 2) if idempotent else -1,
            base_sequence=fdp.ConsumeIntInRange(-1, 5) if idempotent else -1,
            timestamp_ms=fdp.PickValueInList([1_700_000_000_000, 0, -1, 2**62])))
        if choice == 1:
            i = fdp.ConsumeIntInRange(0, len(batch) - 1)
            batch[i] ^= fdp.ConsumeIntInRange(1, 255)
        if choice == 2:  # two batches in one record set
            batch = batch + batch
        return bytes(batch)


def raw_header(api_key: int, version: int, client_id: bytes = b"fuzz") -> bytes:
    head = struct.pack(">hhih", api_key, version, 7, len(client_id)) + client_id
    return head + b"\0" if request_type(api_key, version).__flexible__ else head


LIES = [b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\xff\xff\xff\xff\x0f", b"\x80\x80\x80\x80\x08",
        b"\x00\x00\x00\x00", b"\xff\xff"]


def mutate(frame: bytearray, fdp: atheris.FuzzedDataProvider) -> bytearray:
    """Cuts, flips and lying length prefixes, after api key and version."""
    for _ in range(fdp.ConsumeIntInRange(1, 4)):
        if len(frame) <= 4:
            break
        at = fdp.ConsumeIntInRange(4, len(frame) - 1)
        op = fdp.ConsumeIntInRange(0, 3)
        if op == 0:
            del frame[at:]
        elif op == 1:
            frame[at] ^= fdp.ConsumeIntInRange(1, 255)
        elif op == 2:
            lie = fdp.PickValueInList(LIES)
            frame[at:at + len(lie)] = lie
        else:
            frame[at:at] = fdp.ConsumeBytes(fdp.ConsumeIntInRange(1, 8))
    return frame


KEYS = sorted(ROUTES)


def pick_api(key_byte: int, version_byte: int) -> tuple[int, int]:
    """The first two input bytes are the api key and version themselves when ROUTES has
    them (so a corpus keeps its meaning when APIs are added), else they are folded in."""
    api_key = key_byte if key_byte in ROUTES else KEYS[key_byte % len(KEYS)]
    route = ROUTES[api_key]
    span = route.max_version - route.min_version + 1
    version = version_byte if route.min_version <= version_byte <= route.max_version else (
        route.min_version + version_byte % span)
    return api_key, version


def frame_of(data: bytes, topic_ids: list[uuid.UUID]) -> tuple[int, int, int, bytes] | None:
    """(api key, version, shape, request frame without its size) for one fuzz input."""
    if len(data) < 3:
        return None
    api_key, version = pick_api(data[0], data[1])
    shape = data[2] % 3
    if shape == RAW:
        return api_key, version, shape, raw_header(api_key, version) + data[3:]
    fdp = atheris.FuzzedDataProvider(data[3:])
    body = Draw(fdp, topic_ids).entity(request_type(api_key, version))
    client_id = fdp.PickValueInList(["fuzz", "", None, "rdkafka"])
    frame = encode_request(api_key, version, fdp.ConsumeIntInRange(-(2**31), 2**31 - 1), body,
                           client_id=client_id)[4:]
    if shape == MUTATED:
        frame = bytes(mutate(bytearray(frame), fdp))
    return api_key, version, shape, frame


# -- the broker ---------------------------------------------------------------------


class Finding(Exception):
    """What the fuzzer counts as a crash; `error` is the exception behind it."""

    def __init__(self, message: str, error: BaseException | None) -> None:
        super().__init__(message)
        self.error = error
        self.__cause__ = error  # atheris prints the handler's traceback under ours
        self.history: list[bytes] = []  # the inputs since the broker started, this one last


class Traces(logging.Handler):
    """Exceptions the broker logs: the dispatcher's "internal error" (a handler raised; it
    closes the connection with one line and keeps the traceback at debug) and any other
    record that carries a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, BaseException]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[1] is not None:
            self.seen.append((f"{record.name}: {record.getMessage()}", record.exc_info[1]))


class Target:
    def __init__(self, reset_every: int, timeout_ms: int, storage: str, data_dir: Path) -> None:
        self.reset_every = reset_every
        self.storage = storage
        # One data dir, emptied at each start: libFuzzer ends the process with exit(), so
        # no Python clean-up runs, and a temporary dir per broker would be left behind.
        self.data_dir = data_dir
        self.timeout = timeout_ms / 1000
        self.loop = asyncio.new_event_loop()
        self.loop.set_exception_handler(self._loop_error)
        self.loop_errors: list[str] = []
        self.traces = Traces()
        root = logging.getLogger()
        root.handlers[:] = [self.traces]
        root.setLevel(logging.WARNING)
        logging.getLogger("odradek.dispatcher").setLevel(logging.DEBUG)
        self.broker: Broker | None = None
        self.starts = 0
        self.dispatcher: Dispatcher | None = None
        self.topic_ids: list[uuid.UUID] = []
        self.runs = 0
        self.history: list[bytes] = []
        self.started = time.monotonic()
        self._start()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        text = "".join(traceback.format_exception(exc)) if exc is not None else ""
        self.loop_errors.append(f"{context.get('message')}\n{text}")

    def _start(self) -> None:
        if self.broker is not None:
            self.loop.run_until_complete(self.broker.stop_async())
        broker_dir = None
        if self.storage == "file":
            # a fresh directory each start (one finding: a stopped broker's file work meeting its
            # successor's logs in the same directory), the earlier ones removed
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.starts += 1
            broker_dir = self.data_dir / f"broker-{self.starts}"
            broker_dir.mkdir(parents=True)
        self.broker = Broker(storage=self.storage, data_dir=broker_dir, auto_create_topics_enable=True)
        self.loop.run_until_complete(self.broker.start_async())
        server = self.broker.server
        self.dispatcher = Dispatcher(server.broker, ROUTES)
        self.topic_ids = []
        self.history = []
        for name, partitions, configs in (("fuzz", 3, {}), ("compact", 1, {"cleanup.policy": "compact"})):
            meta = server.broker.create_topic(name, partitions, -1, configs)
            if meta is not None:
                self.topic_ids.append(meta.topic_id)
        produce = build(request_type(0, 9), acks=1, timeout_ms=1000, topic_data=[{
            "name": "fuzz", "partition_data": [
                {"index": p, "records": encode_batch([(b"k%d" % i, b"v%d" % i, ()) for i in range(5)])}
                for p in range(3)]}])
        self.call(encode_request(0, 9, 1, produce)[4:])

    def call(self, frame: bytes) -> str | None:
        """Dispatch one frame; the reason when the broker closes the connection."""
        assert self.dispatcher is not None
        try:
            self.loop.run_until_complete(asyncio.wait_for(self.dispatcher.dispatch(None, frame), self.timeout))
        except (CloseConnection, FrameError) as exc:
            return str(exc)  # what a hostile frame may get: a closed connection ...
        except TimeoutError:
            pass  # ... or a wait (long poll, rebalance), cancelled as a closing client would
        return None

    def run(self, data: bytes) -> None:
        self.runs += 1
        if self.runs % self.reset_every == 0:
            self._start()
        self.history.append(data)
        try:
            self._run(data)
        except Finding as finding:
            finding.history = list(self.history)
            raise

    def _run(self, data: bytes) -> None:
        picked = frame_of(data, self.topic_ids)
        if picked is None:
            return
        api_key, version, shape, frame = picked
        where = f"api {api_key} v{version} ({SHAPES[shape]})"
        try:
            closed = self.call(frame)
        except (Exception, asyncio.CancelledError) as exc:  # a CancelledError not of our timeout's making too
            raise Finding(f"{where}: {type(exc).__name__}: {exc}", exc) from exc
        logged, self.traces.seen = self.traces.seen, []
        errors, self.loop_errors = self.loop_errors, []
        if logged:
            raise Finding(f"{where}: {closed or logged[0][0]}", logged[0][1])
        if closed is not None and closed.startswith("internal error"):
            raise Finding(f"{where}: {closed}", None)
        if errors:
            raise Finding(f"{where}: the event loop reported: {errors[0]}", None)


# -- seeds, findings, coverage ------------------------------------------------------


def write_seeds(corpus: Path, seed: int) -> int:
    """Per (api key, version): a structured input of zeros and of random bytes, a raw
    input carrying a valid encoded body, and a mutated one."""
    rng = random.Random(seed)
    corpus.mkdir(parents=True, exist_ok=True)
    n = 0
    for api_key, version in PAIRS:
        sel = bytes([api_key, version])
        inputs = [sel + bytes([STRUCTURED]) + bytes(64),
                  sel + bytes([STRUCTURED]) + rng.randbytes(96),
                  sel + bytes([MUTATED]) + rng.randbytes(96)]
        entity = Draw(atheris.FuzzedDataProvider(rng.randbytes(96)), []).entity(request_type(api_key, version))
        body = encode_request(api_key, version, 7, entity, client_id="fuzz")[4 + len(raw_header(api_key, version)):]
        inputs.append(sel + bytes([RAW]) + body)
        for data in inputs:
            (corpus / hashlib.sha1(data).hexdigest()).write_bytes(data)
            n += 1
    return n


def signature(finding: Finding) -> str:
    """Where a finding came from: the exception's type and innermost odradek frame."""
    error = finding.error
    if error is None:
        return str(finding).split(": ", 1)[-1][:120]
    frames = [f for f in traceback.extract_tb(error.__traceback__) if "/odradek/" in f.filename]
    top = frames[-1] if frames else None
    where = f"{Path(top.filename).name}:{top.lineno}" if top else "?"
    return f"{type(error).__name__}@{where}"


def own_flags(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    opts: dict[str, Any] = {"corpus": Path(tempfile.gettempdir()) / "odradek-atheris-corpus",
                            "coverage": False, "keep_going": False, "reset_every": 1000,
                            "timeout_ms": 50, "replay": None, "findings": None, "storage": "file"}
    rest = [argv[0]]
    it = iter(argv[1:])
    for arg in it:
        if arg == "--coverage":
            opts["coverage"] = True
        elif arg == "--keep-going":
            opts["keep_going"] = True
        elif arg in ("--corpus", "--reset-every", "--timeout-ms", "--storage"):
            value = next(it)
            key = arg[2:].replace("-", "_")
            opts[key] = Path(value) if key == "corpus" else value if key == "storage" else int(value)
        elif arg == "--replay":
            opts["replay"] = [Path(a) for a in it]
        elif arg == "--findings":
            opts["findings"] = Path(next(it))
        else:
            rest.append(arg)
    return opts, rest


def replay(paths: list[Path], target: Target, keep_going: bool = True) -> dict[str, str]:
    findings: dict[str, str] = {}
    for path in paths:
        data = path.read_bytes()
        try:
            target.run(data)
        except Finding as exc:
            sig = signature(exc)
            if sig not in findings:
                findings[sig] = f"{exc} [input {path.name}]"
                print(f"FINDING {sig}: {exc} [input {path.name}]", file=sys.stderr)
            if not keep_going:
                break
    return findings


def broker_dir(opts: dict[str, Any]) -> Path:
    corpus: Path = opts["corpus"]
    return corpus.parent / f"{corpus.name}.broker"


def reproduce(target: Target, inputs: list[bytes], sig: str) -> bool:
    """Whether these inputs, on a fresh broker, end in the finding `sig`."""
    target._start()
    for data in inputs[:-1]:
        with contextlib.suppress(Finding):
            target.run(data)
    try:
        target.run(inputs[-1])
    except Finding as finding:
        return signature(finding) == sig
    return False


def minimize(target: Target, inputs: list[bytes], sig: str) -> list[bytes]:
    """Drop earlier inputs the finding does not need (ddmin over the history)."""
    before, last = inputs[:-1], inputs[-1]
    chunk = max(len(before) // 2, 1)
    while before:
        i, removed = 0, False
        while i < len(before):
            trial = before[:i] + before[i + chunk:]
            if reproduce(target, [*trial, last], sig):
                before, removed = trial, True
            else:
                i += chunk
        if chunk == 1 and not removed:
            break
        chunk = max(chunk // 2, 1)
    return [*before, last]


def describe(data: bytes, topic_ids: list[uuid.UUID]) -> str:
    from odradek.protocol.framing import decode_request

    picked = frame_of(data, topic_ids)
    if picked is None:
        return "(too short to pick a request)"
    api_key, version, shape, frame = picked
    try:
        request = repr(decode_request(frame)[1])
    except FrameError as exc:
        request = f"undecodable ({exc}): {frame.hex()}"
    return f"api {api_key} v{version} ({SHAPES[shape]}): {request[:600]}"


def report_findings(path: Path, opts: dict[str, Any]) -> int:
    """Replay each finding of a findings.jsonl on a fresh broker, cut its history to the
    inputs it needs, and print them as requests."""
    target = Target(10**9, opts["timeout_ms"], opts["storage"], broker_dir(opts))
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    for item in lines:
        inputs = [bytes.fromhex(h) for h in item.get("history") or [item["input"]]]
        sig = item["signature"]
        print(f"\n{sig}\n  {item['finding'][:400]}")
        if not reproduce(target, inputs, sig):
            print(f"  does not reproduce from its {len(inputs)} inputs on a fresh broker")
            continue
        needed = minimize(target, inputs, sig)
        print(f"  reproduces with {len(needed)} of {len(inputs)} inputs on a fresh broker:")
        for data in needed:
            print(f"    {describe(data, target.topic_ids)}\n      input {data.hex()}")
    return len(lines)


def coverage_report(corpus: Path, opts: dict[str, Any]) -> dict[str, float]:
    """Replay the corpus in a fresh interpreter under coverage.py (the atheris child's
    instrumentation is not coverage.py's) and print the figures per room."""
    code = f"""
import sys, json
import coverage
cov = coverage.Coverage(source_pkgs={INSTRUMENTED!r}, data_file=None, branch=False)
cov.start()
sys.path.insert(0, {str(Path(__file__).parent)!r})
import atheris_fuzz
from pathlib import Path
target = atheris_fuzz.Target({opts['reset_every']}, {opts['timeout_ms']}, {opts['storage']!r},
                            Path({str(broker_dir(opts))!r}))
atheris_fuzz.replay(sorted(Path(sys.argv[1]).iterdir()), target)
cov.stop()
rows = {{}}
for name in cov.get_data().measured_files():
    _, statements, _, missing, _ = cov.analysis2(name)
    rows[name] = (len(statements), len(missing))
print("COVERAGE " + json.dumps(rows))
"""
    done = subprocess.run([sys.executable, "-c", code, str(corpus)], capture_output=True, text=True,
                          check=False, env={**os.environ, "ODRADEK_FUZZ_PLAIN": "1"})
    line = next((x for x in done.stdout.splitlines() if x.startswith("COVERAGE ")), None)
    if line is None:
        print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
        raise SystemExit("coverage replay failed")
    rows: dict[str, tuple[int, int]] = json.loads(line[len("COVERAGE "):])
    rooms = {"protocol": SRC / "protocol", "server/handlers": SRC / "server" / "handlers",
             "server (rest)": SRC / "server", "coordinator": SRC / "coordinator", "storage": SRC / "storage"}
    figures: dict[str, float] = {}
    print(f"\ncoverage after replaying {sum(1 for _ in corpus.iterdir())} corpus inputs:")
    for room, path in rooms.items():
        picked = {f: v for f, v in rows.items() if Path(f).parent == path
                  or (room != "server (rest)" and path in Path(f).parents)}
        statements = sum(v[0] for v in picked.values())
        covered = statements - sum(v[1] for v in picked.values())
        figures[room] = 100 * covered / statements if statements else 0.0
        print(f"  src/odradek/{room:<16} {covered:>6} / {statements:<6} statements  {figures[room]:5.1f}%")
        if room in ("protocol", "server/handlers"):
            for f, (n, missing) in sorted(picked.items()):
                print(f"      {Path(f).name:<28} {n - missing:>5} / {n:<5} {100 * (n - missing) / max(n, 1):5.1f}%")
    return figures


def main() -> None:
    opts, libfuzzer_argv = own_flags(sys.argv)
    corpus: Path = opts["corpus"]
    if opts["findings"] is not None:
        report_findings(opts["findings"], opts)
        return
    if opts["replay"] is not None:
        target = Target(opts["reset_every"], opts["timeout_ms"], opts["storage"], broker_dir(opts))
        findings = replay(opts["replay"], target)
        print(f"replayed {len(opts['replay'])} inputs: {len(findings)} distinct findings")
        raise SystemExit(1 if findings else 0)
    if not corpus.exists() or not any(corpus.iterdir()):
        seed = next((int(a.split("=", 1)[1]) for a in libfuzzer_argv if a.startswith("-seed=")), 0)
        print(f"seeded {corpus} with {write_seeds(corpus, seed)} inputs", file=sys.stderr)
    if opts["coverage"]:
        child = [sys.executable, __file__, *(a for a in sys.argv[1:] if a != "--coverage")]
        if "--corpus" not in child:
            child += ["--corpus", str(corpus)]
        started = time.monotonic()
        code = subprocess.run(child, check=False).returncode
        print(f"fuzzing exited {code} after {time.monotonic() - started:.0f} s")
        coverage_report(corpus, opts)
        raise SystemExit(code)
    target = Target(opts["reset_every"], opts["timeout_ms"], opts["storage"], broker_dir(opts))
    findings_file = corpus.parent / f"{corpus.name}.findings.jsonl"
    seen: set[str] = set()

    def one_input(data: bytes) -> None:
        try:
            target.run(data)
        except Finding as finding:
            sig = signature(finding)
            if sig not in seen:
                seen.add(sig)
                print(f"FINDING {sig}: {finding} (history in {findings_file})", file=sys.stderr, flush=True)
                with findings_file.open("a") as out:
                    out.write(json.dumps({"signature": sig, "finding": str(finding), "input": data.hex(),
                                          "history": [h.hex() for h in finding.history]}) + "\n")
            if not opts["keep_going"]:
                raise

    has_dir = any(not a.startswith("-") for a in libfuzzer_argv[1:])
    argv = libfuzzer_argv if has_dir else [*libfuzzer_argv, str(corpus)]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
