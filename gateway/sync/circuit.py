"""A circuit per source: after repeated failed runs the source rests, then one trial run decides.

closed --(N consecutive failures)--> open --(cool-down elapsed)--> half-open --success--> closed
                                                                         \\--failure--> open (longer)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATE_NAMES = ("closed", "open", "half-open")  # the gauge kpigw_source_circuit_state uses the numbers


@dataclass
class Circuit:
    threshold: int = 3
    cooldown: float = 120.0
    max_cooldown: float = 3600.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    state: int = CLOSED
    _opened_at: float = field(default=0.0, repr=False)
    _current_cooldown: float = field(default=0.0, repr=False)

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]

    def allows(self) -> bool:
        if self.state == OPEN and self.clock() - self._opened_at >= self._current_cooldown:
            self.state = HALF_OPEN
        return self.state != OPEN

    def record(self, *, ok: bool) -> None:
        if ok:
            self.failures, self.state, self._current_cooldown = 0, CLOSED, 0.0
            return
        self.failures += 1
        if self.state == HALF_OPEN or self.failures >= self.threshold:
            base = self._current_cooldown * 2 if self.state == HALF_OPEN else self.cooldown
            self._current_cooldown = min(base or self.cooldown, self.max_cooldown)
            self.state, self._opened_at = OPEN, self.clock()
