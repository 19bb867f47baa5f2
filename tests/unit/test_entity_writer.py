"""protocol/writer.py writes every request and response schema kio knows byte for byte as
kio's own writer does (the broker's answers and the requests it sends go through it)."""

from __future__ import annotations

import importlib
import io
import pkgutil
import random
import sys
import threading
from typing import Any

import kio.schema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kio.serial import entity_writer as kio_entity_writer
from kio.serial.writers import write_unsigned_varint
from kio.static.primitive import Records

from odradek.protocol import writer
from odradek.protocol.bounds import BoundsError, check_entity, uvarint_bytes
from odradek.protocol.writer import encode

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
def test_the_writer_matches_kio_and_the_length_check_takes_exactly_what_it_wrote(schema: type[Any]) -> None:
    # bounds.py walks every frame before kio reads it (fixed-size fields in runs, arrays of ints in
    # one step): it must end where the entity ends and refuse the entity cut short (every cut of a
    # short one, 64 spread over a longer one and its last byte)
    @settings(max_examples=3, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.from_type(schema))
    def same(entity: Any) -> None:
        data = encode(entity)
        assert data == kio_bytes(entity)
        assert check_entity(schema, data, 0) == len(data)
        cuts = set(range(0, len(data), max(1, len(data) // 64))) | ({len(data) - 1} if data else set())
        for cut in sorted(cuts):
            with pytest.raises(BoundsError):
                check_entity(schema, data[:cut], 0)

    same()


@pytest.mark.parametrize("value", [0, 1, 127, 128, 255, 16383, 16384, 2**21, 2**28, 2**31 - 1, 2**32])
def test_unsigned_varints_as_kio_writes_them(value: int) -> None:
    buf = io.BytesIO()
    write_unsigned_varint(buf, value)  # type: ignore[arg-type]
    assert uvarint_bytes(value) == buf.getvalue()


def test_threads_making_writers_at_once_each_get_the_finished_writer(monkeypatch: pytest.MonkeyPatch) -> None:
    # the broker's start-up thread makes writers while its loop may already want one: a writer half
    # made must not be handed to another thread
    monkeypatch.setattr(writer, "_WRITERS", {})
    monkeypatch.setattr(writer, "_MAKING", {})
    got: list[dict[type[Any], Any]] = [{} for _ in range(4)]
    errors: list[BaseException] = []
    start = threading.Barrier(len(got))

    def make(i: int) -> None:
        order = SCHEMAS[:]
        random.Random(i).shuffle(order)
        start.wait()
        try:
            for schema in order:
                got[i][schema] = writer.entity_writer(schema)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=make, args=(i,)) for i in range(len(got))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors
    made = writer._WRITERS
    assert not writer._MAKING
    assert all(got[i][schema] is made[schema] for i in range(len(got)) for schema in SCHEMAS)
