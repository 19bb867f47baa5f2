"""Schema-driven Kafka requests for fuzzing the broker's handlers (issue 13).

Every (api_key, version) in ROUTES has a kio request dataclass whose fields carry
their Kafka type (`metadata["kafka_type"]`), their nullability (`X | None`) and
their arrays (`tuple[X, ...]`). `request_strategy(api_key, version)` turns that
schema into a hypothesis strategy of whole requests that mix what a real client
sends (the broker's topics, partitions 0-2, small offsets, its groups and
transactional ids, valid record batches, consumer-protocol metadata) with what
the schema still allows a hostile client to send: null wherever a field is
nullable, empty and large arrays, duplicate entries, -1 and the extremes of every
integer width, empty, illegal and over-long strings, random and broken bytes for
records, and unknown tagged fields in flexible versions.

The field names decide the realistic values (a `partition_index` draws 0-2, a
`group_id` the vocabulary's groups); the kafka type alone decides the hostile
ones, so a field added to a schema is fuzzed without a change here.

hypothesis is imported only when a strategy is built: `FuzzRequest.frame()` and
the byte helpers work without it (the network and atheris fuzzers reuse them).
"""

from __future__ import annotations

import datetime
import io
import struct
import uuid
from collections.abc import Sequence
from dataclasses import MISSING, Field, dataclass, fields
from typing import TYPE_CHECKING, Any

from kio.serial._implicit_defaults import get_tagged_field_default
from kio.serial._introspect import (
    EntityField,
    EntityTupleField,
    PrimitiveTupleField,
    classify_field,
    get_field_tag,
    is_optional,
)

from odradek.protocol.bounds import uvarint_bytes
from odradek.protocol.framing import encode_body, request_type
from odradek.protocol.records import TRANSACTIONAL_BIT, encode_batch

if TYPE_CHECKING:
    from hypothesis.strategies import DrawFn, SearchStrategy

__all__ = ["FuzzRequest", "Vocabulary", "all_routes", "consumer_assignment", "consumer_subscription",
           "encode", "request_strategy", "uvarint"]

I8 = (-(2**7), 2**7 - 1)
I16 = (-(2**15), 2**15 - 1)
I32 = (-(2**31), 2**31 - 1)
I64 = (-(2**63), 2**63 - 1)
# kio writes timedelta fields through datetime.timedelta, which cannot hold all of int64
TIMEDELTA_MS = (-(10**16), 10**16)


@dataclass(frozen=True)
class Vocabulary:
    """The realistic half of the values: names the broker knows, and size bounds."""

    topics: tuple[str, ...] = ("fuzz-a", "fuzz-b")
    topic_ids: tuple[uuid.UUID, ...] = ()
    groups: tuple[str, ...] = ("fuzz-group",)
    transactional_ids: tuple[str, ...] = ("fuzz-txn",)
    producer_ids: tuple[int, ...] = ()
    node_id: int = 0
    # Timeouts that make a handler wait (Fetch max_wait, JoinGroup rebalance_timeout, ...)
    # stay below this, so that a run is bounded; negative extremes are always drawn.
    max_wait_ms: int = 100
    max_array: int = 4  # entries of an ordinary array
    huge_array: int = 200  # entries of a "huge" array (primitives; entities are repeated)
    max_string: int = 300  # characters of a drawn string (Kafka allows 32,767)


@dataclass(frozen=True)
class FuzzRequest:
    """One request: a kio body plus unknown tagged fields for the header and the body."""

    api_key: int
    version: int
    body: Any
    header_tags: tuple[tuple[int, bytes], ...] = ()
    body_tags: tuple[tuple[int, bytes], ...] = ()
    client_id: str | None = "odradek-fuzz"

    def frame(self, correlation_id: int = 1) -> bytes:
        """The whole frame, size prefix included."""
        return encode(self, correlation_id)

    def describe(self) -> str:
        tags = f" header_tags={list(self.header_tags)} body_tags={list(self.body_tags)}" if (
            self.header_tags or self.body_tags) else ""
        return f"{type(self.body).__name__} v{self.version}: {self.body!r}{tags}"


# -- bytes ---------------------------------------------------------------------


uvarint = uvarint_bytes


def _tag_section(tags: Sequence[tuple[int, bytes]]) -> bytes:
    return uvarint(len(tags)) + b"".join(uvarint(t) + uvarint(len(d)) + d for t, d in tags)


def _legacy_nullable_string(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def encode(request: FuzzRequest, correlation_id: int = 1) -> bytes:
    """Request header (v1, or v2 with tagged fields when flexible) and body, size-prefixed.

    The body's own unknown tagged fields replace its empty top-level tag section, which
    kio writes last (`body_tags` is only drawn when no known top-level tag is set).
    """
    body = request.body
    flexible = bool(body.__flexible__)
    buf = io.BytesIO()
    buf.write(struct.pack(">hhi", request.api_key, request.version, correlation_id))
    buf.write(_legacy_nullable_string(request.client_id))  # KIP-482: always a legacy string
    if flexible:
        buf.write(_tag_section(request.header_tags))
    data = encode_body(body)  # as kio's writer, faster (a fuzzed request may hold millions of entities)
    if flexible and request.body_tags:
        if not data.endswith(b"\0"):
            raise ValueError("body_tags need a body without known top-level tagged fields")
        data = data[:-1] + _tag_section(request.body_tags)
    buf.write(data)
    payload = buf.getvalue()
    return struct.pack(">i", len(payload)) + payload


def consumer_subscription(topics: Sequence[str], version: int = 0, user_data: bytes | None = None) -> bytes:
    """ConsumerProtocolSubscription v0: version, topics, user data (what JoinGroup carries)."""
    out = struct.pack(">hi", version, len(topics))
    for t in topics:
        out += _legacy_nullable_string(t)
    return out + (struct.pack(">i", -1) if user_data is None else struct.pack(">i", len(user_data)) + user_data)


def consumer_assignment(partitions: dict[str, list[int]], version: int = 0) -> bytes:
    """ConsumerProtocolAssignment v0: version, [topic, [partition]], user data (SyncGroup)."""
    out = struct.pack(">hi", version, len(partitions))
    for t, ps in partitions.items():
        out += _legacy_nullable_string(t) + struct.pack(">i", len(ps)) + b"".join(struct.pack(">i", p) for p in ps)
    return out + struct.pack(">i", -1)


# -- strategies ------------------------------------------------------------------


def request_strategy(api_key: int, version: int, vocab: Vocabulary | None = None) -> SearchStrategy[FuzzRequest]:
    """Requests of one API version, realistic and hostile values mixed."""
    from hypothesis import strategies as st

    vocab = vocab or Vocabulary()
    cls = request_type(api_key, version)
    body = _entity(cls, vocab)

    @st.composite
    def build(draw: DrawFn) -> FuzzRequest:
        entity = draw(body)
        header_tags: tuple[tuple[int, bytes], ...] = ()
        body_tags: tuple[tuple[int, bytes], ...] = ()
        if cls.__flexible__:
            header_tags = draw(_unknown_tags(frozenset()))  # request header v2 defines no tag of its own
            if not _has_known_tags(entity):
                body_tags = draw(_unknown_tags(_known_tags(cls)))
        client_id = draw(st.sampled_from(["odradek-fuzz", "", None, "c" * 1000]))
        return FuzzRequest(api_key, version, entity, header_tags, body_tags, client_id)

    return build()


def _known_tags(cls: type) -> frozenset[int]:
    return frozenset(t for f in fields(cls) if (t := get_field_tag(f)) is not None)


def _has_known_tags(entity: Any) -> bool:
    for f in fields(entity):
        if get_field_tag(f) is None:
            continue
        value = getattr(entity, f.name)
        default = f.default if f.default is not MISSING else get_tagged_field_default(f)
        if value != default:
            return True
    return False


def _unknown_tags(known: frozenset[int]) -> SearchStrategy[tuple[tuple[int, bytes], ...]]:
    from hypothesis import strategies as st

    tag = st.one_of(st.integers(0, 40), st.sampled_from([127, 128, 2**14, 2**21, 2**31 - 1])).filter(
        lambda t: t not in known)
    some = st.lists(st.tuples(tag, st.binary(max_size=40)), max_size=3, unique_by=lambda x: x[0])
    return st.one_of(st.just(()), some.map(lambda items: tuple(sorted(items))))


_ENTITIES: dict[tuple[type, Vocabulary], SearchStrategy[Any]] = {}


def _entity(cls: type, vocab: Vocabulary) -> SearchStrategy[Any]:
    """Instances of a kio entity class (one strategy per class and vocabulary)."""
    from hypothesis import strategies as st

    strategy = _ENTITIES.get((cls, vocab))
    if strategy is None:
        parts = {f.name: _field(cls, f, vocab) for f in fields(cls)}
        strategy = _ENTITIES[(cls, vocab)] = st.fixed_dictionaries(parts).map(lambda kwargs: cls(**kwargs))
    return strategy


def _field(owner: type, f: Field[Any], vocab: Vocabulary) -> SearchStrategy[Any]:
    from hypothesis import strategies as st

    kind = classify_field(f)
    # A tagged field is absent or present, never null: kio writes None as the default.
    nullable = is_optional(f) and get_field_tag(f) is None
    if isinstance(kind, EntityTupleField):
        strategy = _array(_entity(kind.type_, vocab), vocab, entity=True)
    elif isinstance(kind, EntityField):
        strategy = _entity(kind.type_, vocab)
    elif isinstance(kind, PrimitiveTupleField):
        strategy = _array(_primitive(owner, f, vocab), vocab, entity=False)
    else:
        strategy = _primitive(owner, f, vocab)
        if f.metadata.get("kafka_type") == "uuid":
            nullable = False  # kio writes a null uuid as the zero uuid, which _primitive draws
    if nullable:
        strategy = st.one_of(st.none(), strategy)
    return strategy


def _array(element: SearchStrategy[Any], vocab: Vocabulary, *, entity: bool) -> SearchStrategy[tuple[Any, ...]]:
    """Ordinary arrays, empty ones, arrays with duplicates, and huge ones (bounded)."""
    from hypothesis import strategies as st

    ordinary = st.lists(element, max_size=vocab.max_array)

    @st.composite
    def with_duplicates(draw: DrawFn) -> list[Any]:
        items = draw(st.lists(element, min_size=1, max_size=vocab.max_array))
        return items + items[: draw(st.integers(1, len(items)))]

    @st.composite
    def huge(draw: DrawFn) -> list[Any]:
        size = draw(st.integers(vocab.max_array + 1, vocab.huge_array))
        if entity:  # one drawn entity repeated: big on the wire, cheap to draw
            return [draw(element)] * size
        return draw(st.lists(element, min_size=size, max_size=size))

    return st.one_of(ordinary, st.just([]), with_duplicates(), huge()).map(tuple)


def _ints(low: int, high: int, realistic: Sequence[int]) -> SearchStrategy[int]:
    from hypothesis import strategies as st

    edges = sorted({v for v in (low, high, -1, 0, 1, low + 1, high - 1) if low <= v <= high})
    return st.one_of(
        st.sampled_from(list(realistic)) if realistic else st.nothing(),
        st.sampled_from(edges),
        st.integers(low, high),
    )


def _strings(realistic: Sequence[str], vocab: Vocabulary) -> SearchStrategy[str]:
    from hypothesis import strategies as st

    hostile = ["", " ", ".", "..", "a" * 249, "a" * 250, "bad/name", "bad name", "ü-ñ", "\x00",
               "__consumer_offsets", "__transaction_state", "x" * vocab.max_string]
    return st.one_of(
        st.sampled_from(list(realistic)) if realistic else st.nothing(),
        st.sampled_from(hostile),
        st.text(max_size=20),
    )


def _timedelta(realistic: Sequence[int], low: int, high: int) -> SearchStrategy[datetime.timedelta]:
    return _ints(low, high, realistic).map(lambda ms: datetime.timedelta(milliseconds=ms))


# realistic values by field name; a field not named here gets its type's values
_PARTITIONS = (0, 1, 2, 3)
_OFFSETS = (0, 1, 5, -1, -2)


def _name_values(owner: type, name: str, vocab: Vocabulary) -> Sequence[Any] | None:
    topics = vocab.topics
    owner_name = owner.__name__
    if name in ("topic", "topic_names") or (name == "name" and "Topic" in owner_name):
        return topics
    if name == "resource_name":
        return (*topics, str(vocab.node_id), "")
    if name in ("group_id", "groups", "groups_names"):
        return vocab.groups
    if name == "key" or name == "coordinator_keys":
        return (*vocab.groups, *vocab.transactional_ids)
    if name.endswith("transactional_id") or name == "transactional_ids":
        return vocab.transactional_ids
    if name == "member_id":
        return ("", "unknown-member")
    if name == "group_instance_id":
        return ("instance-1",)
    if name == "protocol_type":
        return ("consumer", "connect")
    if name in ("protocol_name",) or (name == "name" and owner_name == "JoinGroupRequestProtocol"):
        return ("range", "roundrobin", "cooperative-sticky")
    if name == "configuration_keys" or (name == "name" and "Config" in owner_name):
        return ("cleanup.policy", "retention.ms", "segment.bytes", "max.message.bytes", "min.insync.replicas",
                "message.timestamp.type", "no.such.config")
    if name == "value" and "Config" in owner_name:
        return ("compact", "delete", "compact,delete", "-1", "0", "1000", "CreateTime", "nonsense")
    if name in ("states_filter", "state_filters"):
        return ("Stable", "Empty", "PreparingRebalance", "Ongoing", "CompleteCommit", "Dead")
    if name == "types_filter":
        return ("classic", "consumer")
    if name in ("partition", "partition_index", "index", "partitions", "partition_indexes"):
        return _PARTITIONS
    if name.endswith("offset") or name == "timestamp":
        return _OFFSETS
    if name.endswith("producer_id") or name == "producer_id_filters":
        return (-1, 0, *vocab.producer_ids)
    if name.endswith("producer_epoch"):
        return (-1, 0, 1, 32766)
    if name in ("replica_id", "broker_ids", "node_id"):
        return (-1, vocab.node_id)
    if name in ("num_partitions", "count"):
        return (-1, 1, 2, 3, 4, 10001)
    if name == "replication_factor":
        return (-1, 1, 3)
    if name == "acks":
        return (0, 1, -1)
    if name in ("generation_id", "generation_id_or_member_epoch", "member_epoch"):
        return (-1, 0, 1, 2)
    if name.endswith("leader_epoch"):
        return (-1, 0, 1)
    if name in ("max_bytes", "partition_max_bytes"):
        return (1, 1024, 1 << 20)
    if name == "min_bytes":
        return (0, 1)
    if name in ("isolation_level",):
        return (0, 1)
    if name == "key_type":
        return (0, 1)
    if name == "resource_type":
        return (2, 4)
    if name == "config_operation":
        return (0, 1, 2, 3)
    return None


# fields whose value is how long the handler may wait: bounded above by vocab.max_wait_ms
_WAITS = {"max_wait", "rebalance_timeout", "timeout"}


def _primitive(owner: type, f: Field[Any], vocab: Vocabulary) -> SearchStrategy[Any]:
    from hypothesis import strategies as st

    kind = f.metadata.get("kafka_type")
    name = f.name
    realistic = _name_values(owner, name, vocab) or ()
    if kind == "bool":
        return st.booleans()
    if kind in ("int8", "int16", "int32", "int64"):
        low, high = {"int8": I8, "int16": I16, "int32": I32, "int64": I64}[kind]
        return _ints(low, high, [v for v in realistic if low <= v <= high])
    if kind in ("uint8", "uint16", "uint32", "uint64"):
        bits = {"uint8": 8, "uint16": 16, "uint32": 32, "uint64": 64}[kind]
        return _ints(0, 2**bits - 1, [])
    if kind == "float64":
        return st.one_of(st.sampled_from([0.0, -1.0, 1e308, -1e308]), st.floats(allow_nan=False, allow_infinity=False))
    if kind == "timedelta_i32":
        if name in _WAITS:
            return _timedelta((0, 1, 10, vocab.max_wait_ms), I32[0], vocab.max_wait_ms)
        if name == "session_timeout":
            return _timedelta((6000, 10000, 45000), *I32)
        return _timedelta((0, 1000, 60000), *I32)
    if kind == "timedelta_i64":
        return _timedelta((-1, 0, 1000), *TIMEDELTA_MS)
    if kind == "datetime_i64":
        return st.datetimes(min_value=datetime.datetime(1970, 1, 1), max_value=datetime.datetime(2200, 1, 1),
                            timezones=st.just(datetime.UTC))
    if kind == "uuid":
        return st.one_of(st.just(uuid.UUID(int=0)), st.sampled_from(vocab.topic_ids) if vocab.topic_ids
                         else st.nothing(), st.uuids())
    if kind == "string":
        return _strings([v for v in realistic if isinstance(v, str)], vocab)
    if kind == "records":
        return _records(vocab)
    if kind == "bytes":
        if name == "metadata":
            return _blobs([consumer_subscription(vocab.topics), consumer_subscription(vocab.topics[:1], 3),
                           consumer_subscription([])])
        if name == "assignment":
            return _blobs([consumer_assignment({t: [0] for t in vocab.topics}), consumer_assignment({})])
        return _blobs([])
    raise NotImplementedError(f"no strategy for kafka type {kind!r} ({owner.__name__}.{name})")


def _blobs(realistic: list[bytes]) -> SearchStrategy[bytes]:
    from hypothesis import strategies as st

    hostile = [b"", b"\xff" * 4, struct.pack(">hi", 0, 2**31 - 1), struct.pack(">hi", -1, -1)]
    return st.one_of(st.sampled_from(realistic) if realistic else st.nothing(), st.sampled_from(hostile),
                     st.binary(max_size=64))


def _records(vocab: Vocabulary) -> SearchStrategy[bytes]:
    """Valid v2 batches (plain, idempotent, transactional, compressed, several) and broken ones."""
    from hypothesis import strategies as st

    def batch(n: int, **kw: Any) -> bytes:
        return encode_batch([(b"k%d" % i, b"v%d" % i, ()) for i in range(n)], **kw)

    valid = [
        batch(1), batch(3), batch(2, compression=1), batch(1) + batch(2),
        batch(1, producer_id=vocab.producer_ids[0] if vocab.producer_ids else 0, producer_epoch=0, base_sequence=0),
        batch(1, producer_id=vocab.producer_ids[0] if vocab.producer_ids else 0, producer_epoch=0,
              base_sequence=0, attributes=TRANSACTIONAL_BIT),
    ]
    good = batch(2)

    @st.composite
    def broken(draw: DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(valid)))
        how = draw(st.sampled_from(["truncate", "flip", "length", "magic", "count", "crc-fixed-count"]))
        if how == "truncate":
            return bytes(data[: draw(st.integers(0, len(data) - 1))])
        if how == "flip":
            at = draw(st.integers(0, len(data) - 1))
            data[at] ^= draw(st.integers(1, 255))
        elif how == "length":
            struct.pack_into(">i", data, 8, draw(st.sampled_from([-1, 0, 1, 2**31 - 1, len(data) * 2])))
        elif how == "magic":
            data[16] = draw(st.sampled_from([0, 1, 3, 255]))
        elif how == "count":
            struct.pack_into(">i", data, 57, draw(st.sampled_from([-1, 0, 2**31 - 1])))
        else:  # a lying record count under a correct CRC: only a full decode notices
            struct.pack_into(">i", data, 57, 2**31 - 1)
            _fix_crc(data)
        return bytes(data)

    return st.one_of(st.sampled_from(valid), broken(), st.just(b""), st.binary(max_size=128),
                     st.just(good * 50))


def _fix_crc(batch: bytearray) -> None:
    import crc32c

    struct.pack_into(">I", batch, 17, crc32c.crc32c(bytes(batch[21:])))


def all_routes() -> list[tuple[int, int]]:
    """Every (api_key, version) the broker routes, in key order."""
    from odradek.server.handlers import ROUTES

    return [(k, v) for k, r in sorted(ROUTES.items()) for v in range(r.min_version, r.max_version + 1)]

