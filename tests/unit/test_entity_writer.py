"""protocol/writer.py writes every request and response schema kio knows byte for byte as
kio's own writer does (the broker's answers and the requests it sends go through it)."""

from __future__ import annotations

import importlib
import io
import pkgutil
from typing import Any

import kio.schema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.serial import entity_writer as kio_entity_writer
from kio.serial.writers import write_unsigned_varint
from kio.static.primitive import Records

from odradek.protocol.writer import encode, uvarint

st.register_type_strategy(Records, st.binary(max_size=64).map(Records))


def _schemas() -> list[type[Any]]:
    found = []
    for module in pkgutil.walk_packages(kio.schema.__path__, "kio.schema."):
        if not module.name.endswith((".request", ".response")):
            continue
        loaded = importlib.import_module(module.name)
        for name in dir(loaded):
            value = getattr(loaded, name)
            if (isinstance(value, type) and value.__module__ == loaded.__name__
                    and name.endswith(("Request", "Response")) and hasattr(value, "__flexible__")):
                found.append(value)
    return found


SCHEMAS = _schemas()


def kio_bytes(entity: Any) -> bytes:
    buf = io.BytesIO()
    kio_entity_writer(type(entity))(buf, entity)
    return buf.getvalue()


def test_every_api_schema_is_covered() -> None:
    assert len(SCHEMAS) > 600  # every version of every request and response of kio 0.6


@pytest.mark.parametrize("schema", SCHEMAS, ids=lambda t: t.__module__.removeprefix("kio.schema."))
def test_the_writer_matches_kio(schema: type[Any]) -> None:
    @settings(max_examples=3, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.from_type(schema))
    def same(entity: Any) -> None:
        assert encode(entity) == kio_bytes(entity)

    same()


@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 16383, 16384, 2**21, 2**28, 2**31 - 1, 2**32])
def test_unsigned_varints_as_kio_writes_them(value: int) -> None:
    buf = io.BytesIO()
    write_unsigned_varint(buf, value)  # type: ignore[arg-type]
    assert uvarint(value) == buf.getvalue()
