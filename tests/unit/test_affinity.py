"""The order in which a node falls back when its own blocks have no room, and its hint note."""

from whereabouts.core.affinity import ADOPT, CLAIM, USE, Stored, fallbacks, format_hints, hint_order, parse_hints


def test_a_block_holding_the_owner_comes_first_then_own_blocks_then_unclaimed_then_fresh_then_others():
    stored = {
        0: Stored("node-a", False, False),
        1: Stored("node-b", True, False),
        2: Stored("", True, False),
        3: Stored("node-a", True, False),
        5: Stored("node-b", True, True),
    }
    assert fallbacks(7, stored, "node-a", tried=set()) == [
        (USE, 5), (USE, 3), (ADOPT, 2), (CLAIM, 4), (CLAIM, 6), (USE, 1)]


def test_own_blocks_already_found_full_are_not_tried_again():
    stored = {0: Stored("node-a", True, False), 1: Stored("node-a", True, False)}
    assert fallbacks(2, stored, "node-a", tried={0}) == [(USE, 1)]


def test_a_full_range_has_no_fallback():
    stored = {0: Stored("node-a", False, False), 1: Stored("", False, False)}
    assert fallbacks(2, stored, "node-b", tried=set()) == []


def test_hints_round_trip_and_damaged_notes_read_as_none():
    assert parse_hints(format_hints(hint_order(3, [1, 3, 2]))) == [3, 1, 2]
    for damaged in (b"", b"[1, 2", b"{}", b"\xff", b'["1", true, -1, 2]'):
        assert parse_hints(damaged) in ([], [2])
