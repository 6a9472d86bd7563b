"""Review of the page-preparing workers (gateway/sync/prepare.py): each test here failed before its fix."""

from __future__ import annotations

import time

from gateway.sync.prepare import ProcessPreparer


def test_closing_an_idle_worker_is_prompt_and_does_not_kill_it() -> None:
    """_Worker.close closed the engine's end while the reader thread sat in recv on it: the socket stayed open
    (the blocked call holds it), the worker never saw an end of file, and close waited 5 s, then SIGKILLed it."""
    preparer = ProcessPreparer(1)
    lease = preparer.lease()
    assert lease is not None
    worker = lease.workers[0]
    lease.release()
    started = time.monotonic()
    preparer.close()
    assert time.monotonic() - started < 2.0
    assert worker.process.exitcode == 0
