"""Topic-level configs: Kafka's keys, their broker-level defaults, validation.

Each topic key falls back to a broker key (`retention.ms` <- `log.retention.ms`),
as in Kafka's LogConfig; DescribeConfigs reports where a value came from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from odradek.config import BrokerConfig


class InvalidConfigError(ValueError):
    """INVALID_CONFIG, with the sentence Kafka would send."""


def _int(lo: int | None = None) -> Callable[[str], Any]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise InvalidConfigError(f"value {value!r} is not an integer") from None
        if lo is not None and number < lo:
            raise InvalidConfigError(f"value {number} must be at least {lo}")
        return number

    return parse


def _float01(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InvalidConfigError(f"value {value!r} is not a number") from None
    if not 0.0 <= number <= 1.0:
        raise InvalidConfigError(f"value {number} must be between 0 and 1")
    return number


def _bool(value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise InvalidConfigError(f"value {value!r} is not true or false")
    return value.lower() == "true"


def _choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in options:
            raise InvalidConfigError(f"value {value!r} must be one of {', '.join(options)}")
        return value

    return parse


def _cleanup_policy(value: str) -> str:
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or any(p not in ("delete", "compact") for p in parts):
        raise InvalidConfigError(f"value {value!r} must be a list of delete and compact")
    return ",".join(sorted(set(parts), key=parts.index))


def _throttled_replicas(value: str) -> str:
    """Kafka's ThrottledReplicaListValidator: '*' or partitionId:brokerId,..."""
    items = [v.strip() for v in value.split(",") if v.strip()]
    if items != ["*"] and any(not (p.isdigit() and b.isdigit()) for p, _, b in (i.partition(":") for i in items)):
        raise InvalidConfigError(f"{value!r} must be the literal '*' or a list of replicas in the form "
                                 "[partitionId]:[brokerId],[partitionId]:[brokerId],...")
    return ",".join(items)


@dataclass(frozen=True, slots=True)
class ConfigKey:
    name: str
    broker_key: str | None  # the broker config it defaults to (synonym)
    parse: Callable[[str], Any]
    default: str
    kind: str  # DescribeConfigs config_type: BOOLEAN, STRING, INT, LONG, DOUBLE, LIST
    sensitive: bool = False
    doc: str | None = None  # DescribeConfigs v3+ documentation


_L = 2**63 - 1
TOPIC_CONFIGS: dict[str, ConfigKey] = {
    k.name: k
    for k in [
        ConfigKey("cleanup.policy", "log.cleanup.policy", _cleanup_policy, "delete", "LIST",
                  doc="How old segments are dropped: delete (by retention time or size), compact (the last record of each key is kept), or both."),
        ConfigKey("compression.type", "compression.type", _choice("producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"), "producer", "STRING",
                  doc="The codec batches are stored with: producer keeps what the producer sent; uncompressed, gzip, snappy, lz4 or zstd recompress."),
        ConfigKey("delete.retention.ms", "log.cleaner.delete.retention.ms", _int(0), "86400000", "LONG",
                  doc="How long a tombstone (a null value) stays in a compacted log, so that readers can see the delete."),
        ConfigKey("file.delete.delay.ms", "log.segment.delete.delay.ms", _int(0), "60000", "LONG",
                  doc="How long a deleted segment's files are kept before they are removed from disk."),
        ConfigKey("flush.messages", "log.flush.interval.messages", _int(1), str(_L), "LONG",
                  doc="Force an fsync of the log after this many records (the default leaves flushing to the operating system)."),
        ConfigKey("flush.ms", "log.flush.interval.ms", _int(0), str(_L), "LONG",
                  doc="Force an fsync of the log when this much time passed since the last one."),
        ConfigKey("follower.replication.throttled.replicas", None, _throttled_replicas, "", "LIST",
                  doc="The replicas (partition:broker, or *) whose replication the follower throttles to follower.replication.throttled.rate."),
        ConfigKey("index.interval.bytes", "log.index.interval.bytes", _int(0), "4096", "INT",
                  doc="How many bytes of records lie between two entries of the offset index."),
        ConfigKey("leader.replication.throttled.replicas", None, _throttled_replicas, "", "LIST",
                  doc="The replicas (partition:broker, or *) whose replication the leader throttles to leader.replication.throttled.rate."),
        ConfigKey("max.compaction.lag.ms", "log.cleaner.max.compaction.lag.ms", _int(1), str(_L), "LONG",
                  doc="The longest time a record may stay uncompacted in a compacted log."),
        ConfigKey("max.message.bytes", "message.max.bytes", _int(0), "1048588", "INT",
                  doc="The largest record batch the topic accepts, after compression."),
        ConfigKey("message.timestamp.type", "log.message.timestamp.type", _choice("CreateTime", "LogAppendTime"), "CreateTime", "STRING",
                  doc="Whether record timestamps are the producer's (CreateTime) or the broker's at append (LogAppendTime)."),
        ConfigKey("min.cleanable.dirty.ratio", "log.cleaner.min.cleanable.ratio", _float01, "0.5", "DOUBLE",
                  doc="The share of a compacted log not yet compacted above which the cleaner compacts it."),
        ConfigKey("min.compaction.lag.ms", "log.cleaner.min.compaction.lag.ms", _int(0), "0", "LONG",
                  doc="The shortest time a record stays uncompacted in a compacted log."),
        ConfigKey("min.insync.replicas", "min.insync.replicas", _int(1), "1", "INT",
                  doc="How many in-sync replicas must have a write for an acks=all produce to succeed."),
        ConfigKey("preallocate", "log.preallocate", _bool, "false", "BOOLEAN",
                  doc="Whether a new segment's file is allocated to its full size on disk when it is created."),
        ConfigKey("retention.bytes", "log.retention.bytes", _int(-1), "-1", "LONG",
                  doc="The size a partition's log may reach before its oldest segments are deleted (-1: no limit)."),
        ConfigKey("retention.ms", "log.retention.ms", _int(-1), "604800000", "LONG",
                  doc="How long records are kept before their segment is deleted (-1: no limit)."),
        ConfigKey("segment.bytes", "log.segment.bytes", _int(14), "1073741824", "INT",
                  doc="The size at which a partition's active segment is closed and a new one begun."),
        ConfigKey("segment.index.bytes", "log.index.size.max.bytes", _int(4), "10485760", "INT",
                  doc="The size of each segment's offset and time indexes."),
        ConfigKey("segment.jitter.ms", "log.roll.jitter.ms", _int(0), "0", "LONG",
                  doc="A random time up to this subtracted from segment.ms, so that segments do not all roll at once."),
        ConfigKey("segment.ms", "log.roll.ms", _int(1), "604800000", "LONG",
                  doc="The age at which a partition's active segment is closed and a new one begun, even if not full."),
        ConfigKey("unclean.leader.election.enable", "unclean.leader.election.enable", _bool, "false", "BOOLEAN",
                  doc="Whether a replica out of the in-sync set may become leader, at the risk of losing records."),
    ]
}


def validate_topic_configs(configs: Mapping[str, str | None]) -> dict[str, str]:
    """Check names and values; returns the normalised string values."""
    result: dict[str, str] = {}
    for name, value in configs.items():
        key = TOPIC_CONFIGS.get(name)
        if key is None:
            raise InvalidConfigError(f"unknown topic config name: {name}")
        if value is None:
            raise InvalidConfigError(f"null value not supported for topic config {name}")
        try:
            parsed = key.parse(value)
        except InvalidConfigError as exc:
            raise InvalidConfigError(f"invalid value for {name}: {exc}") from None
        result[name] = value if not isinstance(parsed, str) else parsed
    return result


@dataclass(frozen=True, slots=True)
class ConfigValue:
    name: str
    value: str | None  # None for a password (is_sensitive), as Kafka answers
    source: str  # TOPIC_CONFIG, STATIC_BROKER_CONFIG, DEFAULT_CONFIG
    kind: str
    synonyms: tuple[tuple[str, str | None, str], ...]  # (name, value, source), most specific first
    documentation: str | None = None


def _broker_value(broker: BrokerConfig, broker_key: str | None) -> str | None:
    if broker_key is None:
        return None
    value = getattr(broker, broker_key.replace(".", "_"), None)
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# Broker keys Kafka leaves null by default (log.retention.ms falls back to log.retention.hours):
# a topic config names them as its synonym only when the broker sets them (ConfigHelper.configSynonyms)
_NULL_BY_DEFAULT = frozenset({"log.retention.ms", "log.roll.ms", "log.roll.jitter.ms", "log.flush.interval.ms"})


def effective_topic_configs(topic_configs: Mapping[str, str], broker: BrokerConfig) -> list[ConfigValue]:
    """Every topic config with its effective value and source, as DescribeConfigs shows them: the
    synonyms are the topic's own value, the broker key's configured value, then its default."""
    out = []
    for key in TOPIC_CONFIGS.values():
        synonyms: list[tuple[str, str, str]] = []
        if key.name in topic_configs:
            synonyms.append((key.name, topic_configs[key.name], "TOPIC_CONFIG"))
        if key.broker_key is not None:
            broker_value = _broker_value(broker, key.broker_key)
            if broker_value is not None and broker_value != key.default:
                synonyms.append((key.broker_key, broker_value, "STATIC_BROKER_CONFIG"))
            if key.broker_key not in _NULL_BY_DEFAULT:
                synonyms.append((key.broker_key, key.default, "DEFAULT_CONFIG"))
        _, value, source = synonyms[0] if synonyms else (key.name, key.default, "DEFAULT_CONFIG")
        out.append(ConfigValue(key.name, value, source, key.kind, tuple(synonyms), key.doc))
    return out


def topic_config_value(name: str, topic_configs: Mapping[str, str], broker: BrokerConfig) -> Any:
    """The parsed effective value of one topic config."""
    key = TOPIC_CONFIGS[name]
    raw = topic_configs.get(name)
    if raw is None:
        raw = _broker_value(broker, key.broker_key)
    if raw is None:
        raw = key.default
    return key.parse(raw)


def broker_config_entries(broker: BrokerConfig) -> list[ConfigValue]:
    """Broker configs for DescribeConfigs on a BROKER resource."""
    defaults = BrokerConfig.model_construct()
    docs = {k.broker_key: k.doc for k in TOPIC_CONFIGS.values() if k.broker_key is not None}
    out = []
    for name, value in broker.kafka_items().items():
        default = getattr(defaults, name.replace(".", "_"), None)
        source = "DEFAULT_CONFIG" if value == default else "STATIC_BROKER_CONFIG"
        if isinstance(value, SecretStr):
            out.append(ConfigValue(name, None, source, "PASSWORD", ((name, None, source),)))
            continue
        text = "true" if value is True else "false" if value is False else ("" if value is None else str(value))
        kind = "BOOLEAN" if isinstance(value, bool) else "LONG" if isinstance(value, int) else "DOUBLE" if isinstance(value, float) else "STRING"
        out.append(ConfigValue(name, text, source, kind, ((name, text, source),), docs.get(name)))
    return out
