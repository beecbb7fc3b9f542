"""The supervisor: background threads inside ``maider serve`` that drive every session forward.

Each worker is a loop calling one ``run_once(app)`` function with jitter, inside an app context, catching and logging
every exception so a bug in one tick never kills the thread. Tests call the ``run_once`` functions directly.
"""
from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from datetime import timedelta

from flask import Flask

from app.extensions import db

log = logging.getLogger(__name__)

JITTER = 0.2  # fraction of the tick added at random, so loops do not fire in lockstep


class Supervisor:
    """Starts and stops the worker threads of one app."""

    def __init__(self, app: Flask, loops: dict[str, tuple[Callable[[Flask], object], timedelta]] | None = None) -> None:
        self.app = app
        self.loops = loops if loops is not None else default_loops(app)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Reclaim the live sessions' tunnel ports first, so no new session can take a port an .aider-env names."""
        from app.engine.session_tunnels import restore_tunnels

        try:
            restore_tunnels(self.app)
        except Exception:  # noqa: BLE001 -- the monitor reopens tunnels too; the workers must start regardless
            log.exception("restoring tunnels at start-up failed")
        for name, (func, interval) in self.loops.items():
            thread = threading.Thread(target=self._run, args=(name, func, interval), name=f"maider-{name}",
                                      daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the loops, then close tunnels and SSH connections (VMs keep running; a restart reattaches)."""
        from app.engine.runtime import runtime

        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        runtime(self.app).close()

    def _run(self, name: str, func: Callable[[Flask], object], interval: timedelta) -> None:
        while not self._stop.is_set():
            try:
                with self.app.app_context():
                    func(self.app)
            except Exception:  # noqa: BLE001 -- a worker must survive any bug in one tick
                log.exception("worker %s: tick failed", name)
            finally:
                with self.app.app_context():
                    db.session.remove()
            self._stop.wait(interval.total_seconds() * (1 + random.random() * JITTER))


PROVISION_THREADS = 3  # one slow step (an SSH timeout) must not hold up every other session


def default_loops(app: Flask) -> dict[str, tuple[Callable[[Flask], object], timedelta]]:
    """The workers ``maider serve`` runs."""
    from app.engine import monitor, provision, reconcile, watchdog
    from app.engine.runtime import runtime

    timings = runtime(app).timings
    loops: dict[str, tuple[Callable[[Flask], object], timedelta]] = {
        f"provision-{n}": (provision.run_once, timedelta(milliseconds=500)) for n in range(1, PROVISION_THREADS + 1)
    }
    loops["monitor"] = (monitor.run_once, timings.health_interval)
    loops["watchdog"] = (watchdog.run_once, timedelta(seconds=20))
    loops["reconcile"] = (reconcile.run_once, timings.reconcile_interval)
    return loops
