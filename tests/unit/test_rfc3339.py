"""The one RFC 3339 formatter and parser of the plugin side (Lease times, log timestamps)."""

from __future__ import annotations

import json
import re

import pytest

from whereabouts.core.rfc3339 import format_time, parse_time


def test_format_is_utc_with_microseconds():
    assert format_time(0) == "1970-01-01T00:00:00.000000Z"
    assert format_time(1_796_378_400.25) == "2026-12-04T10:00:00.250000Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", format_time())


@pytest.mark.parametrize("ts", [0.0, 1.5, 1_796_378_400.123456, 1_796_378_400.999999])
def test_parse_reads_back_what_format_writes_to_the_microsecond(ts):
    assert parse_time(format_time(ts)) == pytest.approx(ts, abs=1e-6)


@pytest.mark.parametrize("text,ts", [
    ("2026-12-04T10:00:00Z", 1_796_378_400.0),  # creationTimestamp: whole seconds
    ("2026-12-04T12:00:00.5+02:00", 1_796_378_400.5),  # an offset, a short fraction
])
def test_parse_reads_the_forms_the_api_server_and_other_clients_write(text, ts):
    assert parse_time(text) == ts


@pytest.mark.parametrize("text", ["2026-12-04T10:00:00", "yesterday", "", None, 1_796_378_400, {}])
def test_parse_gives_none_for_a_time_without_a_zone_or_not_a_time(text):
    assert parse_time(text) is None


def test_a_log_line_carries_a_timestamp_the_parser_reads(tmp_path):
    from whereabouts.plugin.log import open_log

    log = open_log(str(tmp_path / "log"), "info")
    log.info("added")
    line = json.loads((tmp_path / "log").read_text())
    assert parse_time(line["timestamp"]) is not None and line["timestamp"].endswith("Z")
