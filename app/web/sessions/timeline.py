"""The session page's stage timeline, built from the session's state and stage events.

Launch stages (queued → VM creation → boot → configure → reboot → vLLM start), vLLM's start-up phases, every model
switch and the teardown, each with its start and duration.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from app.models import LAUNCH_STATES, Event, Session, SessionState, utcnow
from app.web.sessions.views import is_polling, version_key

TICK = timedelta(seconds=5)  # running durations on the timeline move in steps of this
PHASE_LABELS = {
    "pulling": "Image pull",
    "downloading": "Weight download",
    "loading": "Model load",
    "warming": "Warm-up (CUDA graphs)",
    "serving": "Readiness check",
}

STATE_STAGE_LABELS = {
    SessionState.REQUESTED: "Queued",
    SessionState.CREATING: "VM creation",
    SessionState.BOOTING: "Boot",
    SessionState.CONFIGURING: "Configure (drivers, Docker)",
    SessionState.REBOOTING: "Reboot",
    SessionState.STARTING: "vLLM start",
    SessionState.SWITCHING_MODEL: "Model switch",
    SessionState.DESTROYING: "Destroy",
}


@dataclass(frozen=True)
class Stage:
    key: str
    label: str
    started_at: datetime
    seconds: float | None  # None: still running without a known end
    running: bool
    note: str | None = None


@dataclass(frozen=True)
class Timeline:
    launch: list[Stage]  # from the request to the first Ready
    startup: list[Stage]  # the vLLM start-up phases (pull, download, load, ...) of the launch
    switches: list[Stage]  # each model switch, switch request to ready (or still running)
    teardown: Stage | None  # destroying → destroyed (or still running), after the launch
    time_to_ready: float | None  # seconds from the request to the first Ready
    model_load_seconds: float | None  # vLLM's own figure, when logged

    @property
    def total_seconds(self) -> float:
        return sum(stage.seconds or 0 for stage in self.launch)


def _state_events(events: list[Event]) -> list[Event]:
    return [e for e in events if e.kind == "state" and isinstance(e.detail, dict) and e.detail.get("to")]


def build_timeline(session: Session, events: list[Event], now: datetime | None = None) -> Timeline:
    """Stage durations from the session's "state" and "stage" events (each event's time starts the next stage)."""
    now = now or utcnow()
    states = _state_events(events)
    first_ready = next((e for e in states if e.detail.get("to") == SessionState.READY.value), None)
    launch_end = first_ready.at if first_ready else None

    launch: list[Stage] = []
    marks: list[tuple[str, datetime]] = [(SessionState.REQUESTED.value, session.created_at)]
    for event in states:
        if launch_end is not None and event.at > launch_end:
            break
        marks.append((event.detail["to"], event.at))
    for index, (status, started) in enumerate(marks):
        try:
            state = SessionState(status)
        except ValueError:
            continue
        if state not in STATE_STAGE_LABELS or state == SessionState.SWITCHING_MODEL:
            continue
        if index + 1 < len(marks):
            seconds, running = (marks[index + 1][1] - started).total_seconds(), False
        else:
            active = session.state == state and is_polling(session)
            seconds = (now - started).total_seconds() if active else None
            running = active
        launch.append(Stage(state.value, STATE_STAGE_LABELS[state], started, seconds, running))
        if state == SessionState.DESTROYING:
            break

    startup = _startup_phases(session, events, launch_end, now)
    switches = _switches(session, states, now)
    load_seconds = None
    for event in events:
        if event.kind == "stage" and isinstance(event.detail, dict) and event.detail.get("model_load_seconds"):
            load_seconds = float(event.detail["model_load_seconds"])
    ttr = (launch_end - session.created_at).total_seconds() if launch_end else None
    teardown = _teardown(session, states, launch_end, now) if launch_end else None
    return Timeline(launch, startup, switches, teardown, ttr, load_seconds)


def _teardown(session: Session, states: list[Event], after: datetime, now: datetime) -> Stage | None:
    start = next((e for e in states if e.at >= after and e.detail.get("to") == SessionState.DESTROYING.value), None)
    if start is None:
        return None
    end = next((e for e in states if e.at >= start.at and e.detail.get("to") in (
        SessionState.DESTROYED.value, SessionState.FAILED.value)), None)
    if end is not None:
        return Stage("destroying", "Destroy", start.at, (end.at - start.at).total_seconds(), False)
    running = session.state == SessionState.DESTROYING
    return Stage("destroying", "Destroy", start.at, (now - start.at).total_seconds() if running else None, running)


def _startup_phases(session: Session, events: list[Event], launch_end: datetime | None,
                    now: datetime) -> list[Stage]:
    phase_events = [e for e in events if e.kind == "stage" and isinstance(e.detail, dict)
                    and e.detail.get("phase") in PHASE_LABELS and (launch_end is None or e.at <= launch_end)]
    stages = []
    for index, event in enumerate(phase_events):
        end = phase_events[index + 1].at if index + 1 < len(phase_events) else launch_end
        running = end is None and session.state == SessionState.STARTING
        seconds = (end - event.at).total_seconds() if end else ((now - event.at).total_seconds() if running else None)
        key = event.detail["phase"]
        note = None
        if key == "loading" and event.detail.get("model_load_seconds"):
            note = f"vLLM: {float(event.detail['model_load_seconds']):.1f}s"
        stages.append(Stage(key, PHASE_LABELS[key], event.at, seconds, running, note))
    return stages


def _switches(session: Session, states: list[Event], now: datetime) -> list[Stage]:
    switches = []
    for index, event in enumerate(states):
        if event.detail.get("to") != SessionState.SWITCHING_MODEL.value:
            continue
        end = next((e for e in states[index + 1:]), None)
        message = event.message.split(": ", 1)[1] if ": " in event.message else None
        if end is not None:
            outcome = "ready" if end.detail.get("to") == SessionState.READY.value else end.detail.get("to")
            note = f"{message} ({outcome})" if message else outcome
            switches.append(Stage("switch", "Model switch", event.at, (end.at - event.at).total_seconds(), False,
                                  note))
        else:
            running = session.state == SessionState.SWITCHING_MODEL
            switches.append(Stage("switch", "Model switch", event.at,
                                  (now - event.at).total_seconds() if running else None, running, message))
    return switches


def timeline_version(session: Session, last_event_id: int, now: datetime) -> str:
    moving = session.state in LAUNCH_STATES or session.state in (SessionState.SWITCHING_MODEL,
                                                                 SessionState.DESTROYING)
    tick = int(now.timestamp() // TICK.total_seconds()) if moving else 0
    return version_key("timeline", session.status, last_event_id, tick, is_polling(session))
