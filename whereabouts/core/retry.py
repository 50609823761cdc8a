"""The one backoff of every conflicting write, plugin and operator alike."""

from __future__ import annotations


def backoff_pause(attempt: int) -> float:
    """Seconds to wait before retry `attempt` (1, 2, ...): doubling from 20 ms up to 0.5 s, with
    +-50% jitter, so that writers that collided once do not collide again in step."""
    import random  # only a conflict pays for it

    return min(0.5, 0.01 * 2 ** attempt) * random.uniform(0.5, 1.5)
