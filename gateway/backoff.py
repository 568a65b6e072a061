"""Capped exponential backoff with jitter, shared by every reconnecting link.

Jitter matters on a plant network: after a switch reboots, a hundred devices must not all be
retried in the same millisecond.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(self, initial: float = 0.5, cap: float = 30.0, factor: float = 2.0) -> None:
        self.initial = initial
        self.cap = cap
        self.factor = factor
        self.attempt = 0

    def next_delay(self) -> float:
        """The next wait: initial * factor**n, capped, with +-20 % jitter."""
        base = min(self.cap, self.initial * self.factor**self.attempt)
        self.attempt += 1
        return base * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self.attempt = 0
