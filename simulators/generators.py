"""Value generators for simulated points: each turns elapsed time into a plausible value.

Generators are functions of time, evaluated when a client reads, so the simulator needs no timer
and costs nothing between polls.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from gateway.config.sim import SimSpec

Generated = bool | int | float | str
Generator = Callable[[float], Generated]


def make_generator(spec: SimSpec | None, data_type: str, seed: int = 0) -> Generator:
    """The generator for a point; a sensible default per type when ``spec`` is None."""
    if spec is None:
        return _default(data_type, seed)
    if spec.constant is not None:
        constant = spec.constant
        return lambda _t: constant
    if spec.sine is not None:
        s = spec.sine
        mid, amp = (s.max + s.min) / 2, (s.max - s.min) / 2
        return lambda t: mid + amp * math.sin(2 * math.pi * t / s.period)
    if spec.ramp is not None:
        r = spec.ramp
        return lambda t: r.min + (r.max - r.min) * ((t % r.period) / r.period)
    if spec.counter is not None:
        c = spec.counter
        return lambda t: c.start + c.step * int(t // c.interval)
    if spec.toggle is not None:
        period = spec.toggle.period
        return lambda t: int(t // (period / 2)) % 2 == 1
    if spec.random_walk is not None:
        return _RandomWalk(spec, seed)
    raise ValueError("empty sim spec")  # SimSpec's validator makes this unreachable


class _RandomWalk:
    def __init__(self, spec: SimSpec, seed: int) -> None:
        walk = spec.random_walk
        assert walk is not None
        self.walk = walk
        self.value = walk.start if walk.start is not None else (walk.min + walk.max) / 2
        self.steps = 0
        self.random = random.Random(seed)

    def __call__(self, t: float) -> float:
        target = int(t // self.walk.interval)
        while self.steps < target:
            self.value += self.random.uniform(-self.walk.step, self.walk.step)
            self.value = min(self.walk.max, max(self.walk.min, self.value))
            self.steps += 1
        return self.value


def _default(data_type: str, seed: int) -> Generator:
    """Distinct, moving values per point, so a user sees at once which point is which."""
    phase = (seed % 7) * 1.3
    if data_type == "bool":
        return lambda t: int((t + phase) // 5) % 2 == 1
    if data_type == "string":
        return lambda _t: f"SIM-{seed:04d}"
    if data_type.startswith(("int", "uint")):
        return lambda t: int(t // 1) % 100 + seed
    return lambda t: round(20 + seed + 5 * math.sin(2 * math.pi * (t + phase) / 30), 3)
