"""Listeners (Kafka's `listeners`, `advertised.listeners`, `listener.security.protocol.map`).

A listener is a named endpoint with a security protocol: `SASL_SSL://0.0.0.0:9093`
is listener SASL_SSL speaking SASL over TLS. Clients are told the advertised
address of the listener they connected through, so one broker can serve
plaintext on loopback and SASL_SSL to the world. Without `listeners`, odradek's
`--listen HOST:PORT` is one PLAINTEXT listener (the local default).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from odradek.config import BrokerConfig, ConfigError, parse_host_port
from odradek.security import SECURITY_PROTOCOLS


@dataclass(frozen=True, slots=True)
class Listener:
    name: str  # upper case, as Kafka normalises listener names
    security_protocol: str
    host: str
    port: int
    advertised_host: str
    advertised_port: int

    @property
    def tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    def bound(self, port: int) -> Listener:
        """The listener once its socket is bound (port 0 becomes the kernel's choice)."""
        return replace(self, port=port, advertised_port=self.advertised_port or port)


def _split_endpoint(item: str, key: str) -> tuple[str, str]:
    name, sep, address = item.strip().partition("://")
    if not sep or not name:
        raise ConfigError(f"{key} entry {item!r} is not NAME://HOST:PORT")
    return name.upper(), address


def protocol_map(config: BrokerConfig) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in config.listener_security_protocol_map.split(","))):
        name, sep, protocol = item.partition(":")
        protocol = protocol.strip().upper()
        if not sep or protocol not in SECURITY_PROTOCOLS:
            raise ConfigError(
                f"listener.security.protocol.map entry {item!r} is not NAME:PROTOCOL "
                f"(one of {', '.join(SECURITY_PROTOCOLS)})"
            )
        result[name.strip().upper()] = protocol
    return result


def parse_listeners(config: BrokerConfig) -> list[Listener]:
    """The broker's listeners, in the order given; the first is the default one."""
    protocols = protocol_map(config)
    if config.listeners:
        raw = [_split_endpoint(item, "listeners") for item in config.listeners.split(",") if item.strip()]
    else:
        raw = [("PLAINTEXT", config.listen)]
    advertised: dict[str, tuple[str, int]] = {}
    if config.advertised_listeners:
        for item in filter(None, (p.strip() for p in config.advertised_listeners.split(","))):
            name, address = _split_endpoint(item, "advertised.listeners")
            advertised[name] = parse_host_port(address)
    listeners: list[Listener] = []
    for i, (name, address) in enumerate(raw):
        if name not in protocols:
            raise ConfigError(
                f"listener {name} has no security protocol in listener.security.protocol.map"
            )
        if any(existing.name == name for existing in listeners):
            raise ConfigError(f"listener {name} is named twice in listeners")
        host, port = parse_host_port(address)
        if i == 0 and config.advertise:
            adv_host, adv_port = parse_host_port(config.advertise)
        elif name in advertised:
            adv_host, adv_port = advertised[name]
        else:
            adv_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            adv_port = port
        listeners.append(Listener(name, protocols[name], host, port, adv_host, adv_port))
    unknown = set(advertised) - {item.name for item in listeners}
    if unknown:
        raise ConfigError(f"advertised.listeners names {', '.join(sorted(unknown))}, not in listeners")
    inter = config.inter_broker_listener_name
    if inter and inter.upper() not in {item.name for item in listeners}:
        raise ConfigError(f"inter.broker.listener.name {inter} is not one of the listeners")
    return listeners


def inter_broker_listener(config: BrokerConfig, listeners: list[Listener]) -> Listener:
    """The listener brokers replicate over: `inter.broker.listener.name`, else the first
    listener whose protocol is `security.inter.broker.protocol`, else the first."""
    if config.inter_broker_listener_name:
        wanted = config.inter_broker_listener_name.upper()
        return next(item for item in listeners if item.name == wanted)
    protocol = config.security_inter_broker_protocol.upper()
    return next((item for item in listeners if item.security_protocol == protocol), listeners[0])


def listener_setting(config: BrokerConfig, listener: str, key: str) -> Any:
    """`listener.name.<listener>.<key>` if set, else the broker-wide key (Kafka's lookup)."""
    scoped = config.listener_name_overrides.get(listener.lower(), {})
    if key in scoped:
        return scoped[key]
    return getattr(config, key.replace(".", "_").replace("-", "_"), None)
