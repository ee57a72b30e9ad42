"""How the sync worker wakes up (memstate_pg/sync/worker.py, run_forever): a NOTIFY after
an idle moment is served at once; only empty NOTIFY wakes in a row are rate-limited
(test_sync_isolation.py::test_a_notify_storm_does_not_multiply_cycles holds that bound)."""

from __future__ import annotations

import threading
import time

from memstate_pg import Fact, MemoryStore
from memstate_pg.mirrors import InMemoryMirror
from memstate_pg.sync import SyncWorker
from tests.support.sync_procs import wait_for


class CountingWorker(SyncWorker):
    cycles = 0

    def _cycle(self):
        self.cycles += 1
        return super()._cycle()


def test_a_notify_after_an_idle_cycle_is_served_at_once(store: MemoryStore) -> None:
    """Before: any cycle that found nothing held the next NOTIFY until `wake_interval` after
    that cycle began, so a commit right after an idle moment waited that long (up to 50 ms
    of sync lag with the default; here 5 s, so that the hold cannot hide in the noise)."""
    mirror = InMemoryMirror()
    store.add_mirror(mirror, "m")
    worker = CountingWorker(store, poll_interval=30.0, wake_interval=5.0)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        assert wait_for(lambda: worker.cycles >= 1, timeout=10)
        time.sleep(0.2)  # the first cycle found nothing: the worker waits for a NOTIFY
        t0 = time.monotonic()
        store.commit(Fact(type="note", payload={"text": "right after an idle cycle"}))
        assert wait_for(lambda: mirror.count() == 1, timeout=10)
        assert time.monotonic() - t0 < 2.5  # not held until 5 s after the idle cycle
    finally:
        worker.stop()
        thread.join(10)
        worker.close()
