"""How fast the panel answers its pollers: 50 sessions in a temporary database, waitress on a free port, 8 pollers.

Run: ``.venv/bin/python bench/panel.py [--seconds 20] [--pollers 8] [--sessions 50] [--tabs]``.

Default (stress): each poller is a thread with its own httpx client that requests, back to back with no pause, the
dashboard page, the totals, the session list and one live card -- far more than a tab asks for, so the figures are
mostly time spent queueing for the two CPUs. ``--tabs`` models real browser tabs instead: each tab loads the
dashboard once, then polls every live card every 3 s and the totals and the list every 5 s, as the templates say,
over 6 connections like a browser. Prints p50/p95/max per endpoint; the target is the dashboard partials (card,
totals) under 50 ms at p95.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app  # noqa: E402
from app.engine.state import record_event  # noqa: E402
from app.extensions import db  # noqa: E402
from app.models import LAUNCH_STATES, Session, SessionState, utcnow  # noqa: E402

TARGET_P95_MS = 50.0
EVENTS_PER_SESSION = 30
LOG_LINES = 80


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def seed(count: int) -> list[str]:
    """``count`` sessions in a realistic mix of states, each with events, a log tail and GPU figures."""
    now = utcnow()
    states = [SessionState.READY] * 6 + list(LAUNCH_STATES) + [SessionState.SWITCHING_MODEL, SessionState.DESTROYED,
                                                                SessionState.FAILED]
    names = []
    for index in range(count):
        state = states[index % len(states)]
        uid = uuid.uuid4().hex
        started = now - timedelta(minutes=random.randint(2, 600))
        session = Session(
            uid=uid, name=f"bench-{index:02d}", provider="simulated", label=f"maider-{uid[:12]}", region="us-ord",
            plan="g2-gpu-rtx4000a1-s", gpus=1, gpu_name="RTX 4000 Ada", model_id="Qwen/Qwen2.5-Coder-7B-Instruct-AWQ",
            served_name="coder", hourly_price=0.52, status=state.value, created_at=started,
            instance_id=str(70000000 + index), provider_created_at=started + timedelta(seconds=5),
            api_port=8000 + index, webui_port=3000 + index, tunnel_state="up", workdir="/home/me/project",
            stage_detail="Downloading model weights" if state in LAUNCH_STATES else None,
            destroyed_at=now - timedelta(minutes=1) if state == SessionState.DESTROYED else None,
            engine_state={
                "log_tail": "\n".join(f"INFO 11-27 10:{i:02d}:00 [engine.py:{i}] step {i}" for i in range(LOG_LINES)),
                "gpus": [{"index": 0, "name": "RTX 4000 Ada", "memory_total_mb": 20475, "memory_used_mb": 18000,
                          "utilization": 40, "temperature": 55}],
                "metrics": {"tokens_per_s": 40.0, "running": 1, "waiting": 0, "kv_cache_usage": 0.2},
            },
        )
        db.session.add(session)
        for number in range(EVENTS_PER_SESSION):
            record_event(session, "stage", f"bench event {number}", at=started + timedelta(seconds=number))
        names.append(session.name)
    db.session.commit()
    return names


def _timed_get(client: httpx.Client, label: str, path: str, headers: dict[str, str] | None,
               shown: dict[str, str], timings: dict[str, list[float]], lock: threading.Lock) -> None:
    """One GET as the page would send it (the list poll sends back the version it shows), timed in ms."""
    url = f"{path}?v={shown[path]}" if path in shown else path
    started = time.perf_counter()
    response = client.get(url, headers=headers)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code not in (200, 204):
        raise SystemExit(f"{url}: HTTP {response.status_code}")
    if response.status_code == 200 and path.endswith("/list"):
        shown[path] = response.text.split("v=", 1)[1].split('"', 1)[0]
    with lock:
        timings[label].append(elapsed)


def poller(base: str, paths: list[str], stop: threading.Event, timings: dict[str, list[float]],
           lock: threading.Lock) -> None:
    headers = {"HX-Request": "true"}
    shown: dict[str, str] = {}  # like a browser: the list poll sends back the version it shows
    with httpx.Client(base_url=base, timeout=10) as client:
        while not stop.is_set():
            for label, path in paths:
                _timed_get(client, label, path, headers if label != "dashboard page" else None, shown, timings, lock)
                if stop.is_set():
                    break


def tab(base: str, cards: list[str], stop: threading.Event, timings: dict[str, list[float]],
        lock: threading.Lock, connections: int = 6) -> None:
    """One browser tab on the dashboard: load it, then poll what its elements poll, at their intervals."""
    polls = [("card partial", f"/sessions/{name}/card", 3.0) for name in cards]
    polls += [("totals partial", "/sessions/totals", 5.0), ("session list partial", "/sessions/list", 5.0)]
    with httpx.Client(base_url=base, timeout=10) as client:
        started = time.perf_counter()
        client.get("/").raise_for_status()
        with lock:
            timings["dashboard page"].append((time.perf_counter() - started) * 1000)
    shares = [polls[i::connections] for i in range(connections)]
    workers = [threading.Thread(target=_connection, args=(base, share, stop, timings, lock), daemon=True)
               for share in shares if share]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def _connection(base: str, polls: list[tuple[str, str, float]], stop: threading.Event,
                timings: dict[str, list[float]], lock: threading.Lock) -> None:
    headers = {"HX-Request": "true"}
    now = time.monotonic()
    due = [now + random.uniform(0, interval) for _, _, interval in polls]
    shown: dict[str, str] = {}
    with httpx.Client(base_url=base, timeout=10) as client:
        while not stop.is_set():
            index = min(range(len(polls)), key=due.__getitem__)
            wait = due[index] - time.monotonic()
            if wait > 0 and stop.wait(wait):
                break
            label, path, interval = polls[index]
            _timed_get(client, label, path, headers, shown, timings, lock)
            due[index] += interval


def _serve(home: str, port: int) -> None:
    """The panel in a child process: waitress with 8 threads over the seeded database."""
    from waitress import serve

    os.chdir(home)
    serve(create_app({"MAIDER_HOME": home, "MAIDER_WORKDIR": home, "MAIDER_DEMO": True}), host="127.0.0.1",
          port=port, threads=8, ident="maider", _quiet=True)


def _wait_until_up(base: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            httpx.get(f"{base}/api/v1/health").raise_for_status()
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--pollers", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--detail", action="store_true", help="stress: also poll a session page's sections")
    parser.add_argument("--tabs", action="store_true", help="model browser tabs polling at the templates' rates")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="maider-bench-") as tmp:
        os.chdir(tmp)
        app = create_app({"MAIDER_HOME": tmp, "MAIDER_WORKDIR": tmp, "MAIDER_DEMO": True})
        with app.app_context():
            names = seed(args.sessions)
        port = _free_port()
        # The panel runs in its own process, as `maider serve` does: the pollers (browsers) do not share its GIL.
        server = multiprocessing.get_context("spawn").Process(target=_serve, args=(tmp, port), daemon=True)
        server.start()
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(base)

        timings: dict[str, list[float]] = defaultdict(list)
        lock = threading.Lock()
        stop = threading.Event()
        threads = []
        with app.app_context():
            live = [s.name for s in Session.query.filter(Session.status.notin_(["destroyed", "failed"]))]
        for number in range(args.pollers if args.tabs else 0):
            thread = threading.Thread(target=tab, args=(base, live, stop, timings, lock), daemon=True)
            thread.start()
            threads.append(thread)
        for number in range(0 if args.tabs else args.pollers):
            name = names[number % len(names)]
            paths = [("dashboard page", "/"), ("totals partial", "/sessions/totals"),
                     ("session list partial", "/sessions/list"), ("card partial", f"/sessions/{name}/card")]
            if args.detail:
                paths += [("session header", f"/sessions/{name}/header"),
                          ("log section", f"/sessions/{name}/sections/log"),
                          ("timeline section", f"/sessions/{name}/sections/timeline"),
                          ("events section", f"/sessions/{name}/sections/events")]
            thread = threading.Thread(target=poller, args=(base, paths, stop, timings, lock), daemon=True)
            thread.start()
            threads.append(thread)
        time.sleep(args.seconds)
        stop.set()
        for thread in threads:
            thread.join(timeout=15)
        server.terminate()
        server.join(10)


    mode = "browser tabs at the templates' polling rates" if args.tabs else "stress pollers, no pause"
    print(f"{args.pollers} {mode}; {args.sessions} sessions; {args.seconds:.0f} s; panel in its own process, "
          "waitress 8 threads; "
          f"{os.cpu_count()} CPUs")
    print(f"{'endpoint':<24}{'requests':>9}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    worst_partial = 0.0
    for label, values in timings.items():
        values.sort()
        p50 = statistics.median(values)
        p95 = values[min(len(values) - 1, int(len(values) * 0.95))]
        if label in ("totals partial", "card partial"):
            worst_partial = max(worst_partial, p95)
        print(f"{label:<24}{len(values):>9}{p50:>9.1f}{p95:>9.1f}{values[-1]:>9.1f}")
    verdict = "meets" if worst_partial < TARGET_P95_MS else "MISSES"
    print(f"dashboard partials p95 {worst_partial:.1f} ms: {verdict} the {TARGET_P95_MS:.0f} ms target")
    return 0 if worst_partial < TARGET_P95_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
