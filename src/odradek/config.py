"""Broker configuration under Kafka's own key names.

Precedence, lowest first: built-in defaults, a `server.properties` file,
`ODRADEK_*` environment variables (`log.segment.bytes` -> ODRADEK_LOG_SEGMENT_BYTES),
then command-line flags. Attribute names are the Kafka keys with dots turned into
underscores; `BrokerConfig.kafka_items()` gives them back under Kafka's names.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError


class ConfigError(ValueError):
    """A configuration mistake, reported to the user as one sentence."""


def parse_host_port(value: str, default_port: int = 9092) -> tuple[str, int]:
    """Split `HOST:PORT` (IPv6 hosts in brackets); a bare host gets the default port."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.lstrip(":")
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:
        host, port = value, ""
    if not host:
        host = "0.0.0.0"
    try:
        port_num = int(port) if port else default_port
    except ValueError:
        raise ConfigError(f"{value!r} is not HOST:PORT (the port must be a number)") from None
    if not 0 <= port_num <= 65535:
        raise ConfigError(f"{value!r} has a port outside 0-65535")
    return host, port_num


class BrokerConfig(BaseSettings):
    """Static broker configuration (server.properties)."""

    model_config = SettingsConfigDict(env_prefix="ODRADEK_", extra="ignore", validate_assignment=True)

    # odradek's own
    listen: str = "127.0.0.1:9092"
    advertise: str | None = None
    data_dir: Path = Path("odradek-data")
    zookeeper: str | None = None
    metrics_port: int | None = None
    event_loop_stall_threshold_ms: int = 100  # odradek's own: a longer stall is logged
    storage: str = "file"  # "file" or "memory"

    # Listeners and security (Kafka's names). `listeners` wins over `listen` when set.
    listeners: str | None = None
    advertised_listeners: str | None = None
    listener_security_protocol_map: str = (
        "PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL"
    )
    inter_broker_listener_name: str | None = None
    security_inter_broker_protocol: str = "PLAINTEXT"
    ssl_keystore_type: str = "PEM"
    ssl_keystore_location: str | None = None
    ssl_keystore_password: SecretStr | None = None
    ssl_key_password: SecretStr | None = None
    ssl_truststore_type: str = "PEM"
    ssl_truststore_location: str | None = None
    ssl_client_auth: str = "none"
    ssl_principal_mapping_rules: str = "DEFAULT"
    ssl_endpoint_identification_algorithm: str = "https"
    sasl_enabled_mechanisms: str = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    sasl_mechanism_inter_broker_protocol: str = "PLAIN"
    sasl_jaas_config: SecretStr | None = None
    sasl_oauthbearer_jwks_endpoint_url: str | None = None
    sasl_oauthbearer_expected_issuer: str | None = None
    sasl_oauthbearer_expected_audience: str | None = None
    sasl_oauthbearer_sub_claim_name: str = "sub"
    connections_max_reauth_ms: int = 0
    connection_failed_authentication_delay_ms: int = 100
    authorizer_class_name: str = ""
    super_users: str = ""
    allow_everyone_if_no_acl_found: bool = False
    # `listener.name.<listener>.<key>` entries, as Kafka scopes a key to one listener
    # (`listener.name.sasl_ssl.plain.sasl.jaas.config=...`): lower-case listener -> key -> value.
    listener_name_overrides: dict[str, dict[str, str]] = Field(default_factory=dict)

    # Kafka's names (dots -> underscores)
    broker_id: int = Field(default=-1)
    cluster_id: str | None = None
    auto_create_topics_enable: bool = True
    num_partitions: int = 1
    default_replication_factor: int = 1
    message_max_bytes: int = 1048588
    socket_request_max_bytes: int = 104857600
    # Connection limits (Kafka's names and defaults). Idle: no complete request and no
    # response for connections.max.idle.ms; a request running longer is also cut off.
    max_connections: int = 2147483647
    max_connections_per_ip: int = 2147483647
    max_connections_per_ip_overrides: str = ""
    connections_max_idle_ms: int = 600000
    queued_max_requests: int = 500
    # SO_RCVBUF / SO_SNDBUF of client sockets (-1: the OS's, which autotunes). Kafka's defaults are
    # 102400 both; 1 MiB receives a 600 KB Produce in one window (100 KiB cost 45% more broker CPU a
    # request) and still bounds what a client can leave in the broker's kernel (autotuned: 32 MB)
    socket_receive_buffer_bytes: int = 1048576
    socket_send_buffer_bytes: int = -1
    # KIP-578's partition limit of one broker; -1: Kafka's Int.MAX_VALUE (segment files open
    # lazily, at most a bounded number at once: the open-file limit does not bound partitions).
    max_broker_partitions: int = -1
    log_segment_bytes: int = 1073741824
    log_roll_ms: int = 604800000
    log_index_interval_bytes: int = 4096
    log_index_size_max_bytes: int = 10485760
    log_retention_ms: int = 604800000
    log_retention_bytes: int = -1
    log_retention_check_interval_ms: int = 300000
    log_cleanup_policy: str = "delete"
    log_message_timestamp_type: str = "CreateTime"
    log_flush_interval_messages: int = 9223372036854775807
    log_cleaner_enable: bool = True
    log_cleaner_backoff_ms: int = 15000
    log_cleaner_min_cleanable_ratio: float = 0.5
    log_cleaner_delete_retention_ms: int = 86400000
    log_cleaner_min_compaction_lag_ms: int = 0
    log_cleaner_max_compaction_lag_ms: int = 9223372036854775807
    delete_topic_enable: bool = True
    min_insync_replicas: int = 1
    unclean_leader_election_enable: bool = False
    auto_leader_rebalance_enable: bool = True
    replica_lag_time_max_ms: int = 30000
    replica_fetch_wait_max_ms: int = 500
    zookeeper_session_timeout_ms: int = 18000
    # Rack awareness (KIP-36, KIP-392): this broker's rack, placed into replica assignments and
    # matched against consumers' client.rack by RackAwareReplicaSelector
    broker_rack: str | None = None
    replica_selector_class: str | None = None
    # KIP-227 fetch sessions (Kafka's names and defaults)
    max_incremental_fetch_session_cache_slots: int = 1000
    min_incremental_fetch_session_eviction_ms: int = 120000
    controlled_shutdown_enable: bool = True
    controlled_shutdown_max_retries: int = 3
    controlled_shutdown_retry_backoff_ms: int = 5000
    offsets_topic_num_partitions: int = 50
    offsets_topic_replication_factor: int = 1
    offsets_retention_minutes: int = 10080
    offsets_retention_check_interval_ms: int = 600000
    offsets_commit_timeout_ms: int = 5000  # every group coordinator write waits this long for the ISR
    group_initial_rebalance_delay_ms: int = 3000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1800000
    # KIP-848 consumer groups (Kafka's names and defaults)
    group_consumer_session_timeout_ms: int = 45000
    group_consumer_heartbeat_interval_ms: int = 5000
    group_consumer_assignors: str = "uniform,range"
    group_consumer_migration_policy: str = "bidirectional"
    transaction_max_timeout_ms: int = 900000
    transactional_id_expiration_ms: int = 604800000
    transaction_state_log_num_partitions: int = 50
    transaction_state_log_replication_factor: int = 1
    # min.insync.replicas of __transaction_state, set when it is created (Kafka's default is 2 beside a
    # replication factor of 3; odradek's factor defaults to 1, and so does this)
    transaction_state_log_min_isr: int = 1
    transaction_abort_timed_out_transaction_cleanup_interval_ms: int = 10000
    # KIP-932 share groups (Kafka's names and defaults)
    group_share_session_timeout_ms: int = 45000
    group_share_heartbeat_interval_ms: int = 5000
    group_share_record_lock_duration_ms: int = 30000
    group_share_delivery_count_limit: int = 5
    group_share_partition_max_record_locks: int = 2000
    share_coordinator_state_topic_num_partitions: int = 50
    share_coordinator_state_topic_replication_factor: int = 1

    @field_validator("authorizer_class_name", mode="after")
    @classmethod
    def _known_authorizer(cls, value: str) -> str:
        from odradek.security.authorizer import authorizer_enabled  # security imports config

        authorizer_enabled(value)  # Kafka's two class names or empty; ValueError otherwise
        return value.strip()

    @field_validator("super_users", mode="after")
    @classmethod
    def _principals(cls, value: str) -> str:
        from odradek.security.authorizer import parse_super_users

        parse_super_users(value)  # `User:admin;User:bob`; ValueError for a malformed one
        return value

    @field_validator("broker_id", mode="after")
    @classmethod
    def _broker_id_from_ordinal(cls, value: int) -> int:
        return value if value >= 0 else broker_id_from_hostname(os.environ.get("HOSTNAME", ""))

    @property
    def listen_address(self) -> tuple[str, int]:
        return parse_host_port(self.listen)

    @property
    def advertised_address(self) -> tuple[str, int]:
        """What clients are told to connect to: --advertise, else the listener."""
        if self.advertise:
            return parse_host_port(self.advertise)
        host, port = self.listen_address
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return host, port

    def kafka_items(self) -> dict[str, Any]:
        """The Kafka-named keys and their values, as `kafka-configs.sh --describe` shows them;
        passwords and JAAS configs stay SecretStr (DescribeConfigs answers them as sensitive)."""
        own = {"listen", "advertise", "data_dir", "zookeeper", "metrics_port", "storage",
               "event_loop_stall_threshold_ms",
               "listener_name_overrides"}
        items: dict[str, Any] = {
            name.replace("_", "."): getattr(self, name)
            for name in type(self).model_fields
            if name not in own
        }
        for listener, scoped in sorted(self.listener_name_overrides.items()):
            for key, value in sorted(scoped.items()):
                secret = "password" in key or key.endswith("jaas.config")
                items[f"listener.name.{listener}.{key}"] = SecretStr(value) if secret else value
        return items


_ORDINAL = re.compile(r"-(\d+)$")


def broker_id_from_hostname(hostname: str) -> int:
    """A StatefulSet pod `odradek-2` is broker 2; any other host is broker 0."""
    match = _ORDINAL.search(hostname)
    return int(match.group(1)) if match else 0


def read_properties(path: Path) -> dict[str, str]:
    """Read a Java-style .properties file (`key=value` or `key: value`, `#` comments)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        match = re.match(r"([^=:\s]+)\s*[=:]\s*(.*)$", line)
        if match is None:
            raise ConfigError(f"{path}: line {raw!r} is not key=value")
        result[match.group(1)] = match.group(2).strip()
    return result


# Kafka keys whose attribute name differs from the key with dots replaced.
_ALIASES = {"log.dirs": "data_dir", "log.dir": "data_dir", "zookeeper.connect": "zookeeper"}



def load_config(config_file: Path | None = None, **overrides: Any) -> BrokerConfig:
    """Build the configuration: defaults < file < ODRADEK_* env < overrides (flags)."""
    file_values: dict[str, Any] = {}
    if config_file is not None:
        for key, value in read_properties(config_file).items():
            if key.startswith("listener.name."):
                listener, _, rest = key[len("listener.name."):].partition(".")
                overrides_by_listener = file_values.setdefault("listener_name_overrides", {})
                overrides_by_listener.setdefault(listener.lower(), {})[rest] = value
                continue
            name = _ALIASES.get(key, key.replace(".", "_").replace("-", "_"))
            if name == "data_dir":
                value = value.split(",")[0]
            if name in BrokerConfig.model_fields:
                file_values[name] = value
    env_names = {name for name in BrokerConfig.model_fields if f"ODRADEK_{name.upper()}" in os.environ}
    for name in env_names:
        file_values.pop(name, None)  # env beats the file; BaseSettings reads env itself
    values = {**file_values, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return BrokerConfig(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(p) for p in first.get("loc", ())).replace("_", ".")
        message = str(first.get("msg", "")).removeprefix("Value error, ")  # a validator's own sentence
        raise ConfigError(f"invalid value for {key}: {message}") from None
    except SettingsError as exc:  # an ODRADEK_* variable pydantic-settings could not read
        raise ConfigError(str(exc)) from None
