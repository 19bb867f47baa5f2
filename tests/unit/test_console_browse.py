"""The console's pure parts: where a page of the message browser starts, how a record's
bytes are shown, what a filter keeps, rates from offsets over time, lag, reset targets,
and the --listen guard."""

from __future__ import annotations

import json

import pytest
import typer

from odradek.cli.client_config import ClientProperties
from odradek.cli.console import is_loopback, parse_listen
from odradek.console import browse
from odradek.console.browse import BrowseError, RateMeter, Watermarks
from odradek.console.session import ConsoleError, login_properties, needs_login, status_of

MARKS = {0: Watermarks(10, 1000), 1: Watermarks(0, 5), 2: Watermarks(7, 7)}


def test_oldest_starts_at_each_log_start_offset() -> None:
    assert browse.plan_starts("oldest", MARKS, 50) == {0: 10, 1: 0, 2: 7}


def test_newest_shares_one_page_among_the_partitions_and_never_goes_below_log_start() -> None:
    # 50 records over 3 partitions: the last 17 of each, as far as each has them
    assert browse.plan_starts("newest", MARKS, 50) == {0: 983, 1: 0, 2: 7}
    assert browse.plan_starts("newest", {0: Watermarks(0, 10_000_000)}, 100) == {0: 9_999_900}


def test_an_offset_is_clamped_into_each_partition() -> None:
    assert browse.plan_starts("offset", MARKS, 50, 3) == {0: 10, 1: 3, 2: 7}
    assert browse.plan_starts("offset", MARKS, 50, 10**12) == {0: 1000, 1: 5, 2: 7}
    with pytest.raises(BrowseError, match="whole number"):
        browse.plan_starts("offset", MARKS, 50, -1)


def test_a_timestamp_past_the_last_record_starts_at_the_log_end() -> None:
    assert browse.plan_starts("timestamp", MARKS, 50, by_time={0: 500, 1: -1, 2: -1}) == {0: 500, 1: 5, 2: 7}
    with pytest.raises(BrowseError, match="one of oldest, newest, offset, timestamp"):
        browse.plan_starts("middle", MARKS, 50)


def test_the_page_before_moves_back_one_share_per_partition() -> None:
    assert browse.older_starts({0: 983, 1: 0, 2: 7}, MARKS, 50) == {0: 966, 1: 0, 2: 7}


def test_cursors_round_trip_and_a_bad_one_is_one_sentence() -> None:
    cursor = {2: 7, 0: 983, 1: 0}
    assert browse.format_cursor(cursor) == "0:983,1:0,2:7"
    assert browse.parse_cursor(browse.format_cursor(cursor)) == cursor
    assert browse.parse_cursor("") == {}
    with pytest.raises(BrowseError, match="is not partition:offset"):
        browse.parse_cursor("0:1,x")


def test_timestamps_are_milliseconds_or_iso_times_in_utc() -> None:
    assert browse.parse_timestamp("1700000000000") == 1_700_000_000_000
    assert browse.parse_timestamp("2024-05-01T12:00:00") == 1_714_564_800_000
    assert browse.parse_timestamp("2024-05-01T14:00:00+02:00") == 1_714_564_800_000
    with pytest.raises(BrowseError, match="neither milliseconds nor an ISO date-time"):
        browse.parse_timestamp("yesterday")


def test_auto_shows_json_indented_text_as_text_and_binary_as_hex() -> None:
    shown = browse.render(b'{"a": [1, 2]}', "auto")
    assert shown is not None and shown["format"] == "json" and json.loads(shown["text"]) == {"a": [1, 2]}
    assert shown["text"].startswith("{\n")
    assert browse.render(b"hello", "auto") == {"size": 5, "truncated": False, "format": "text", "text": "hello"}
    assert browse.render(b"\x00\x01\xff", "auto") == {"size": 3, "truncated": False, "format": "hex", "text": "00 01 ff"}
    assert browse.render(b"42", "auto")["format"] == "text"  # type: ignore[index]  # a bare number reads as text
    assert browse.render(None, "auto") is None


def test_forced_formats_and_what_does_not_fit_them() -> None:
    assert browse.render(b"hi", "hex")["text"] == "68 69"  # type: ignore[index]
    not_json = browse.render(b"plain", "json")
    assert not_json is not None and not_json["format"] == "text" and "not JSON" in not_json["note"]
    assert browse.render(b"\xffok", "text")["text"] == "\ufffdok"  # type: ignore[index]
    with pytest.raises(BrowseError, match="format must be one of"):
        browse.render(b"x", "yaml")


def test_a_large_value_is_cut_and_says_its_size() -> None:
    big = b"x" * (browse.MAX_SHOWN_BYTES + 10)
    shown = browse.render(big, "auto")
    assert shown is not None and shown["truncated"] and shown["size"] == len(big)
    assert len(shown["text"]) == browse.MAX_SHOWN_BYTES


def test_filters_look_in_key_value_or_either() -> None:
    assert browse.matches(b"order-7", b"{}", "order-7", "key")
    assert not browse.matches(b"order-7", b"{}", "order-7", "value")
    assert browse.matches(None, "café".encode(), "fé")
    assert not browse.matches(None, None, "x")
    assert browse.matches(None, None, "")


def test_rates_come_from_totals_over_time_and_restart_when_a_total_falls() -> None:
    meter = RateMeter(window_s=30)
    assert meter.add(0.0, 100) is None
    assert meter.add(2.0, 300) == 100.0
    assert meter.add(4.0, 700) == 150.0  # 600 records in 4 s
    assert meter.add(5.0, 10) is None  # a topic deleted: no negative rate
    for t in range(6, 60):
        meter.add(float(t), 10 + 20 * (t - 5))
    assert meter.rate() == pytest.approx(20.0)
    assert meter.samples[-1][0] - meter.samples[0][0] <= 31


def test_lag_and_reset_targets_follow_kafka_consumer_groups() -> None:
    assert browse.lag(90, 100) == 10
    assert browse.lag(None, 100) is None
    marks = Watermarks(5, 100)
    assert browse.reset_target("earliest", marks) == 5
    assert browse.reset_target("latest", marks) == 100
    assert browse.reset_target("offset", marks, 1) == 5
    assert browse.reset_target("offset", marks, 1000) == 100
    assert browse.reset_target("timestamp", marks, by_time=-1) == 100
    assert browse.reset_target("timestamp", marks, by_time=42) == 42
    with pytest.raises(BrowseError, match="earliest, latest, offset or timestamp"):
        browse.reset_target("shift-by", marks)


def test_a_sasl_configuration_without_a_user_asks_for_a_login() -> None:
    assert needs_login(ClientProperties({"security.protocol": "SASL_SSL"}))
    assert not needs_login(ClientProperties({"security.protocol": "SASL_SSL", "sasl.username": "a"}))
    assert not needs_login(ClientProperties({}))
    props = login_properties(ClientProperties({"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "PLAIN"}),
                             "alice", "pw-1234", "SCRAM-SHA-256")
    assert props.values["sasl.mechanism"] == "SCRAM-SHA-256" and "sasl.mechanisms" not in props.values
    assert "pw-1234" in props.secrets() and "pw-1234" not in repr(props)
    with pytest.raises(ConsoleError, match="mechanism must be"):
        login_properties(ClientProperties({}), "alice", "x", "GSSAPI")


def test_kafka_errors_map_to_http_statuses() -> None:
    assert status_of("Topic authorization failed (TOPIC_AUTHORIZATION_FAILED)") == 403
    assert status_of("Broker: Unknown topic or partition (UNKNOWN_TOPIC_OR_PART)") == 404
    assert status_of("Operation timed out (_TIMED_OUT)") == 502
    assert status_of("Invalid replication factor (INVALID_REPLICATION_FACTOR)") == 400


def test_the_console_listens_on_loopback_unless_exposed() -> None:
    assert parse_listen("127.0.0.1:8080", False) == ("127.0.0.1", 8080)
    assert parse_listen("[::1]:9000", False) == ("::1", 9000)
    assert parse_listen("0.0.0.0:8080", True) == ("0.0.0.0", 8080)
    assert is_loopback("localhost") and is_loopback("127.0.0.2") and not is_loopback("10.0.0.1")
    with pytest.raises(typer.Exit):
        parse_listen("0.0.0.0:8080", False)
    with pytest.raises(typer.Exit):
        parse_listen("8080", False)


def test_the_pages_load_nothing_from_outside_the_console() -> None:
    """No CDN: every asset the page names is one of its own under /static/, shipped in the wheel."""
    import re

    from odradek.console.web import static_dir

    files = {p.name: p.read_text() for p in static_dir().iterdir()}
    assert {"index.html", "console.js", "console.css"} <= set(files)
    for name, text in files.items():
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), name
    assert set(re.findall(r'(?:src|href)="(/static/[^"]+)"', files["index.html"])) == {
        "/static/console.js", "/static/console.css"}
