"""The registry refresh of each worker: every interval, for as long as the worker runs.

Feast's app refreshes the registry in a timer thread that dies on the first exception,
and a registry database outage raises one: the refresh then falls back to the SQL
registry's own cycle (`cache_ttl_seconds`). This loop replaces both: the app is built
with Feast's refresh off, and the SQL registry's own timer (`cache_mode: thread`) is
stopped when the loop starts, so each worker re-reads the registry once per interval
(only a digest of its rows, when they did not change: feast_seam/registry.py). A
registry that did not change keeps its cached copy, and with it the read plans built
from it (`fastpath/plans.py`); a change drops only the plans whose feature service or
views changed. A failed refresh is one JSON log
line naming the error type (never its text, which can carry the DSN), counted in a
Prometheus counter; the server keeps serving the registry it last loaded, and the next
interval tries again.
"""

from __future__ import annotations

import logging
import threading
import time

from feast import FeatureStore

from feature_platform.feast_seam.registry import reload_cache, stop_refresh_timer
from feature_platform.serving import metrics

log = logging.getLogger("feature_platform.server")


class RegistryRefresher:
    def __init__(self, store: FeatureStore, interval_s: float) -> None:
        self.store = store
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._last_success = time.time()

    def start(self) -> None:
        stop_refresh_timer(self.store)
        metrics.REGISTRY_LAST_REFRESH.set(self._last_success)
        threading.Thread(target=self._run, name="registry-refresh", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.refresh()

    def refresh(self) -> bool:
        started, clock = time.time(), time.perf_counter()
        try:
            # Not Feast's refresh, which swallows its errors: a failure here is seen.
            changed = reload_cache(self.store)
        except Exception as exc:
            metrics.REGISTRY_REFRESH_FAILURES.inc()
            log.warning(
                "registry refresh failed (%s); serving the registry loaded %.0fs ago",
                type(exc).__name__,
                time.time() - self._last_success,
            )
            return False
        self._last_success = time.time()
        metrics.REGISTRY_LAST_REFRESH.set(self._last_success)
        # when and how long: a latency spike after a refresh is matched to it by these
        log.info(
            "registry reloaded at %.3f in %.1f ms (%s)",
            started,
            (time.perf_counter() - clock) * 1e3,
            "changed" if changed else "unchanged",
        )
        return True
