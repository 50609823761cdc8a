"""Which block a node allocates in, when its own blocks gave it nothing: the order of the fallbacks.

A node allocates in blocks it claimed (their IPPool records it), so nodes do not contend
and need no Lease: the node-local lock orders one node's invocations and the pool's
resourceVersion settles the rare cross-node write. When its blocks are full it takes, in
this order: a block already holding the owner's address (an idempotent ADD), one of its
own with room, an unclaimed stored block with room (adopted), a block nobody created yet
(claimed by creating it), and only then room in another node's block.
"""

from __future__ import annotations

from whereabouts import jsontext
from whereabouts.core.record import Record

USE, ADOPT, CLAIM = "use", "adopt", "claim"


class Stored(Record):
    """What a listing says of one stored block."""

    __slots__ = ("node", "room", "holds_owner")
    node: str
    room: bool
    holds_owner: bool


def fallbacks(count: int, stored: dict[int, Stored], node: str, tried: set[int]) -> list[tuple[str, int]]:
    """The (action, block index) pairs to try in order; `tried` are own blocks already found full."""
    held = [(USE, i) for i, s in sorted(stored.items()) if s.holds_owner]
    own = [(USE, i) for i, s in sorted(stored.items()) if s.node == node and s.room and i not in tried]
    unclaimed = [(ADOPT, i) for i, s in sorted(stored.items()) if not s.node and s.room]
    fresh = [(CLAIM, i) for i in range(count) if i not in stored]
    others = [(USE, i) for i, s in sorted(stored.items()) if s.node and s.node != node and s.room]
    return list(dict.fromkeys(held + own + unclaimed + fresh + others))


def parse_hints(data: bytes) -> list[int]:
    """The blocks this node allocated in, as last noted (its own, and other nodes' blocks it spilled
    into); [] for a missing or damaged note."""
    try:
        value = jsontext.loads(data or b"[]")
    except ValueError:
        return []
    if not isinstance(value, list):
        return []
    return [i for i in value if isinstance(i, int) and not isinstance(i, bool) and i >= 0]


def hint_order(served: int, noted: list[int]) -> list[int]:
    """The noted blocks in the order the next ADD tries them for a new address (its own ones only):
    the one that served last first (it most likely has room), then the others."""
    return list(dict.fromkeys([served, *noted]))


def format_hints(indexes: list[int]) -> bytes:
    return jsontext.dumps(indexes).encode()
