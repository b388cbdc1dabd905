"""Codegen support: keeping the cyclic garbage collector out of the way of a generation run.

Loading a spec allocates tens of thousands of small objects (YAML nodes, located values, model nodes) that
all stay alive until the run ends; every few hundred allocations CPython's cyclic collector walks them again
looking for garbage that is not there, which cost about a third of load time. A run creates next to no
reference cycles, so the collector is simply paused for its duration and restored afterwards.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic garbage collector for the block; nested use and an already disabled GC are fine."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:
            # Re-enabling alone would make the next allocation scan every object made in the block (a
            # young-generation collection over tens of thousands of live objects). Freezing then unfreezing
            # moves them straight into the oldest generation instead, without a scan, and resets the young
            # count; garbage among them is still found by the next full collection. Skipped when someone
            # else has frozen objects, whose freeze this must not undo.
            gc.freeze()
            gc.unfreeze()
        gc.enable()
