"""The protocol, explored: hypothesis steps ADD, DEL, GC, CHECK, reconciler sweeps, node-slice passes
and the Go plugin's writes through every interleaving, lost answer, timeout and crash at a Store
call, in each allocation mode, and checks the invariants of `tests.model.machine` after every step.

In-process over the FakeStore (no API server). A few hundred examples per mode by default,
derandomized so CI is repeatable; `--full` or WHEREABOUTS_FULL=1 runs many more, at random.

What it found on the code before the fixes of issue 18 (29bbdc5), shrunk (see the lead's notes
for the full texts): defect 1 in mode single, 2 in slices, 3 in blocks, 4 in multi.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.model.machine import MODES, ProtocolMachine


@pytest.mark.parametrize("mode", sorted(MODES))
def test_protocol_model(mode: str, full: bool) -> None:
    full = full or os.environ.get("WHEREABOUTS_FULL") == "1"
    machine = type(f"Protocol_{mode}", (ProtocolMachine,), {"mode": mode})
    run_state_machine_as_test(machine, settings=settings(
        max_examples=5000 if full else int(os.environ.get("MODEL_N", "150")), stateful_step_count=60 if full else 40, deadline=None,
        derandomize=not full, database=None, suppress_health_check=list(HealthCheck)))
