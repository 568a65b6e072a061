"""Poll phases: devices spread over ten slots of their interval, on a grid shared per slot."""

from __future__ import annotations

from collections import Counter

import pytest

from gateway.schedule import PHASES, grid_due, poll_phase, slot_phase


def test_a_device_keeps_its_phase_and_devices_spread_over_the_slots() -> None:
    assert poll_phase("press-01") == poll_phase("press-01")
    slots = Counter(poll_phase(f"dev{n:04d}") for n in range(1000))
    assert set(slots) == {slot / PHASES for slot in range(PHASES)}
    assert min(slots.values()) > 60  # ~100 each: no slot is left empty or crowded


@pytest.mark.parametrize("phase", [0.0, 0.3, 0.9])
def test_due_times_sit_on_the_grid_and_missed_slots_are_skipped(phase: float) -> None:
    interval = 0.5
    # From an immediate first poll at 12.34 s onto the grid: half to one and a half intervals
    # later, so the second value comes about one interval after the first.
    first = grid_due(12.34, interval, now=12.35, phase=phase)
    assert 12.34 + interval / 2 <= first < 12.34 + 1.5 * interval
    assert round((first / interval - phase) % 1, 9) in (0.0, 1.0)
    # On time: exactly one interval later, the same float for every device of the phase.
    assert grid_due(first, interval, now=first + 0.01, phase=phase) == pytest.approx(
        first + interval
    )
    # Fell behind by 2.3 intervals: the next grid point after now, not a burst of catch-ups.
    late = first + 2.3 * interval
    assert grid_due(first, interval, now=late, phase=phase) == pytest.approx(first + 3 * interval)


@pytest.mark.parametrize(
    ("interval", "slots"), [(1.0, 10), (0.5, 10), (0.25, 5), (0.1, 2), (0.05, 1), (0.01, 1)]
)
def test_short_intervals_have_fewer_slots_at_least_50_ms_apart(interval: float, slots: int) -> None:
    phases = {slot_phase(poll_phase(f"dev{n:04d}"), interval) for n in range(1000)}
    assert phases == {slot / slots for slot in range(slots)}
