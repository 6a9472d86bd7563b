"""The service processes' garbage-collector settings (gateway/gctune.py), checked in a child interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import Settings


def test_tune_for_service_freezes_start_up_objects_and_raises_the_young_threshold() -> None:
    code = (
        "import gc, json; from gateway.gctune import tune_for_service, YOUNG_THRESHOLD;"
        "from gateway.settings import Settings; tune_for_service(Settings(gc_tuning=False));"
        "before = gc.get_threshold(); assert gc.get_freeze_count() == 0; tune_for_service(Settings(gc_tuning=True));"
        "print(json.dumps([before, gc.get_threshold(), gc.get_freeze_count(), YOUNG_THRESHOLD]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after, frozen, young = json.loads(out)
    assert before == [700, 10, 10] and after == [young, 10, 10] and frozen > 1_000


def test_it_is_on_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KPIGW_GC_TUNING")  # the test suite turns it off for in-process commands (conftest)
    assert Settings().gc_tuning is True
    monkeypatch.setenv("KPIGW_GC_TUNING", "false")
    assert Settings().gc_tuning is False


def test_a_replaced_mapping_set_is_freed_without_the_cycle_collector() -> None:
    """Frozen objects are never collected when they form cycles: the set in force at start-up is frozen, so a
    reload must free it by reference counting alone (no cycles), or every reload would leak a set."""
    code = (
        "import gc, weakref; from pathlib import Path; from gateway.mapping.mappingset import load_mappings;"
        "gc.disable(); ms = load_mappings(Path('mappings')); ref = weakref.ref(ms); del ms; print(ref() is None)"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root).stdout
    assert out.strip() == "True"
