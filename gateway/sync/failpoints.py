"""Failpoints: named places in the sync where a test can make the process die, as a real crash would.

``KPIGW_FAILPOINT=page_archived:3`` SIGKILLs the process the third time the engine passes ``page_archived``.
Read once when the engine is built (never at import time); absent in production, a dict lookup per page.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Mapping

ENV_VAR = "KPIGW_FAILPOINT"


class Failpoints:
    def __init__(self, plan: Mapping[str, int] | None = None) -> None:
        self._plan = dict(plan or {})
        self._hits: Counter[str] = Counter()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Failpoints:
        spec = (environ if environ is not None else os.environ).get(ENV_VAR, "")
        plan = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, count = part.partition(":")
            plan[name] = int(count or 1)
        return cls(plan)

    def hit(self, name: str) -> None:
        if not self._plan or name not in self._plan:
            return
        self._hits[name] += 1
        if self._hits[name] >= self._plan[name]:
            os.kill(os.getpid(), signal.SIGKILL)
