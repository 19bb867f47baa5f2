"""The API version table: what odradek advertises in ApiVersions.

Only what is implemented and tested is listed (DESIGN.md). Rooms register their
handlers with `server.dispatcher.register`, which also fills this table, so an
API can never be advertised without a handler behind it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from kio.schema.index import api_key_map


@dataclass(frozen=True, slots=True)
class ApiRange:
    api_key: int
    min_version: int
    max_version: int

    @property
    def name(self) -> str:
        return api_name(self.api_key)

    def supports(self, version: int) -> bool:
        return self.min_version <= version <= self.max_version


@cache
def api_name(api_key: int) -> str:
    """Kafka's CamelCase API name (Produce, ApiVersions, ...) for logs and fault injection."""
    snake = api_key_map.get(api_key)
    if snake is None:
        return f"api-{api_key}"
    return "".join(part.capitalize() for part in snake.split("_"))


def api_key_of(name: str) -> int:
    """The API key for a name such as 'Produce' or 'produce'."""
    wanted = name.replace("_", "").lower()
    for key in api_key_map:
        if api_name(key).lower() == wanted:
            return key
    raise KeyError(f"unknown Kafka API {name!r}")
