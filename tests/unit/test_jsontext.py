"""`whereabouts.jsontext` gives exactly what `json` gives, for any value and any text."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, strategies as st

from whereabouts import jsontext

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


def same(a, b) -> bool:
    """Equal, with NaN equal to itself."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True) if a != a or b != b else a == b


def outcome(fn, arg):
    try:
        return "ok", fn(arg)
    except (ValueError, RecursionError) as e:
        return "error", f"{type(e).__name__}: {e}"


@given(values)
def test_dumps_is_json_dumps(value):
    assert jsontext.dumps(value) == json.dumps(value)
    assert jsontext.dumps(value, compact=True) == json.dumps(value, separators=(",", ":"))
    assert jsontext.dumps(value, ensure_ascii=False) == json.dumps(value, ensure_ascii=False)


@given(values, st.sampled_from(["", " ", "\n\t", "\r\n  "]))
def test_loads_reads_what_json_writes(value, ws):
    text = ws + json.dumps(value) + ws
    for data in (text, text.encode()):
        got = jsontext.loads(data)
        assert json.dumps(got, sort_keys=True) == json.dumps(json.loads(data), sort_keys=True)


@given(st.text(max_size=40) | st.binary(max_size=40))
def test_loads_agrees_with_json_on_any_input(data):
    mine, theirs = outcome(jsontext.loads, data), outcome(json.loads, data)
    assert mine[0] == theirs[0]
    if mine[0] == "error":
        assert mine[1] == theirs[1]
    else:
        assert json.dumps(mine[1], sort_keys=True) == json.dumps(theirs[1], sort_keys=True)


@pytest.mark.parametrize("data", [b'\xef\xbb\xbf{"a": 1}', '{"a": 1}'.encode("utf-16"), b'"\xed\xa0\x80"',
                                  "[1] x", "", "NaN", "[-Infinity]", '{"a": 1e999}'])
def test_the_edges_json_handles_specially(data):
    mine, theirs = outcome(jsontext.loads, data), outcome(json.loads, data)
    assert mine[0] == theirs[0] and (mine[0] == "error" or same(mine[1], theirs[1]) or math.isnan(mine[1]))
    if mine[0] == "error":
        assert mine[1] == theirs[1]


def test_unserializable_values_raise_as_json_does():
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        jsontext.dumps({1})
    assert jsontext.dumps({"a": {1}}, default=repr) == json.dumps({"a": {1}}, default=repr)


def test_in_a_process_that_never_imported_json_errors_are_still_jsons():
    """The plugin's process never imports json; the C scanner's error path must still give json's error."""
    import subprocess
    import sys

    root = str(__import__("pathlib").Path(__file__).resolve().parents[2])
    code = (f"import sys; sys.path.insert(0, {root!r}); from whereabouts import jsontext\n"
            "assert jsontext.loads(b' {\"a\": [1, 2.5, null]} ') == {'a': [1, 2.5, None]}\n"
            "assert jsontext.dumps({'a': 1}) == '{\"a\": 1}'\n"
            "assert 'json' not in sys.modules and 're' not in sys.modules\n"
            "for bad in (b'{\"cniVersion\": \"1.0.0\"', b'[1,]', b'not json', b'\\xff\\xfe'):\n"
            "    try:\n"
            "        jsontext.loads(bad)\n"
            "    except ValueError as e:\n"
            "        print(type(e).__name__, e)\n")
    proc = subprocess.run([sys.executable, "-S", "-c", code], capture_output=True, text=True)  # -S: no site
    assert proc.returncode == 0, proc.stderr
    expected = []
    for bad in (b'{"cniVersion": "1.0.0"', b"[1,]", b"not json", b"\xff\xfe"):
        try:
            json.loads(bad)
        except ValueError as e:
            expected.append(f"{type(e).__name__} {e}")
    assert proc.stdout.splitlines() == expected
