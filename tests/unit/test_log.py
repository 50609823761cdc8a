"""The log_file writer: one JSON object per line, filtered by level, never failing the call."""

import json
import os
import re

from whereabouts.plugin.log import Log, open_log


def lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_one_json_object_per_line_with_bound_fields(tmp_path):
    path = tmp_path / "w.log"
    log = open_log(str(path), "debug")
    log.bind(verb="ADD", container_id="c1")
    log.debug("lock", pool="10.0.0.0-24", wait=0.25)
    log.info("done", addresses=["10.0.0.1"], note="é")
    first, second = lines(path)
    assert list(first) == ["verb", "container_id", "pool", "wait", "event", "level", "timestamp"]
    assert first["event"] == "lock" and first["level"] == "debug" and first["wait"] == 0.25
    assert second == {**second, "verb": "ADD", "event": "done", "level": "info", "addresses": ["10.0.0.1"],
                      "note": "é"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["timestamp"])
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"


def test_levels_filter(tmp_path):
    for level, events in [("debug", ["d", "i", "e"]), ("verbose", ["i", "e"]), ("info", ["i", "e"]),
                          ("error", ["e"]), ("panic", [])]:
        path = tmp_path / f"{level}.log"
        log = open_log(str(path), level)
        log.debug("d")
        log.info("i")
        log.error("e")
        assert [x["event"] for x in lines(path)] == events, level


def test_values_json_cannot_encode_are_written_as_repr(tmp_path):
    path = tmp_path / "w.log"
    open_log(str(path), "info").info("done", thing=Log())
    assert lines(path)[0]["thing"].startswith("<whereabouts.plugin.log.Log object")


def test_a_full_disk_drops_the_line(tmp_path):
    log = open_log("/dev/full", "debug")
    log.info("done")  # ENOSPC: dropped, no exception
    log.error("failed")
