#!/usr/bin/env python3
"""maider's failsafe: the VM deletes itself when maider is silent and nobody uses it, or its time or money ran out.

Run every minute by ``maider-failsafe.timer``. Python 3 standard library only (the Ubuntu image has it). maider writes
the configuration over SSH once the VM answers (0600, root: it holds a short-lived provider token) and touches the
heartbeat file at every monitor tick. Without a configuration (failsafe off, or not armed yet) this does nothing.

The VM deletes itself when any of these holds:
- maider's heartbeat is older than ``silence_minutes`` AND vLLM has had no request for as long (requests through the
  tunnel keep a VM alive even when the laptop's panel is asleep or behind);
- the hard lifetime has passed (``max_lifetime_hours`` since ``started_at``);
- the budget is spent (``hourly_price`` x hours since ``started_at`` >= ``budget_usd``).

``MAIDER_FAILSAFE_ROOT`` (a folder prefixed to every path), ``MAIDER_FAILSAFE_SPEED`` (simulated seconds per real
second) and ``MAIDER_FAILSAFE_METRICS_URL`` exist for maider's simulated VMs, which run this very script on a
compressed clock.
"""
from __future__ import annotations

import json
import os
import re
import sys
import time
import urllib.error
import urllib.request

ROOT = os.environ.get("MAIDER_FAILSAFE_ROOT", "")
SPEED = float(os.environ.get("MAIDER_FAILSAFE_SPEED", "1") or 1)
CONFIG = ROOT + "{{FAILSAFE_CONFIG}}"
HEARTBEAT = ROOT + "{{FAILSAFE_HEARTBEAT}}"
STATE = ROOT + "{{FAILSAFE_STATE}}"
DEFAULT_METRICS_URL = "http://127.0.0.1:{{VLLM_PORT}}/metrics"
ACTIVITY_METRICS = ("vllm:request_success_total", "vllm:num_requests_running", "vllm:num_requests_waiting",
                    "vllm:prompt_tokens_total", "vllm:generation_tokens_total")
DELETE_ATTEMPTS = 4
HTTP_TIMEOUT_S = 20
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)")


def log(message: str) -> None:
    """stdout of a systemd service goes to the journal (``journalctl -u maider-failsafe``)."""
    print(f"maider-failsafe: {message}", flush=True)


def read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def write_json(path: str, value: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = path + ".tmp"
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as handle:
        json.dump(value, handle)
    os.replace(temporary, path)


def activity_counter(metrics_url: str) -> float | None:
    """A number that grows with every request vLLM sees (None when vLLM does not answer: that counts as idle)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            text = response.read().decode("utf-8", "replace")
    except (OSError, ValueError):
        return None
    total = 0.0
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match and match.group(1) in ACTIVITY_METRICS:
            try:
                total += float(match.group(2))
            except ValueError:
                continue
    return total


def vllm_idle_seconds(config: dict, now: float) -> float:
    """Seconds (on the failsafe's clock) since vLLM last showed a request, remembered across runs."""
    state = read_json(STATE) or {}
    counter = activity_counter(os.environ.get("MAIDER_FAILSAFE_METRICS_URL") or DEFAULT_METRICS_URL)
    armed = float(config.get("armed_at") or now)
    last_change = max(float(state.get("last_change") or armed), armed)
    if counter is not None and counter != state.get("counter"):
        if state.get("counter") is not None:  # the first reading is a baseline, not activity
            last_change = now
        state["counter"] = counter
    state["last_change"] = last_change
    write_json(STATE, state)
    return (now - last_change) * SPEED


def heartbeat_age_seconds(config: dict, now: float) -> float:
    try:
        beat = os.stat(HEARTBEAT).st_mtime
    except OSError:
        beat = float(config.get("armed_at") or now)
    return max(now - max(beat, float(config.get("armed_at") or 0)), 0.0) * SPEED


def reason_to_delete(config: dict, now: float) -> str | None:
    """Why this VM must go now, or None. Lifetime and budget first: they hold whatever maider says."""
    started = float(config.get("started_at") or now)
    hours = max(now - started, 0.0) * SPEED / 3600
    lifetime = float(config.get("max_lifetime_hours") or 0)
    if lifetime and hours >= lifetime:
        return f"maximum lifetime of {lifetime:g} h reached"
    budget = float(config.get("budget_usd") or 0)
    price = float(config.get("hourly_price") or 0)
    if budget and price and price * hours >= budget:
        return f"budget of ${budget:.2f} spent (${price:.2f}/h for {hours:.2f} h)"
    limit = float(config.get("silence_minutes") or 0) * 60
    if not limit:
        return None
    idle = vllm_idle_seconds(config, now)  # read at every run, so that the idle clock is current
    silent = heartbeat_age_seconds(config, now)
    if silent < limit:
        return None
    if idle < limit:
        log(f"maider silent for {silent / 60:.1f} min, but vLLM served a request {idle / 60:.1f} min ago: keeping")
        return None
    return f"maider silent for {silent / 60:.0f} min and vLLM idle for {idle / 60:.0f} min"


def delete_instance(config: dict) -> bool:
    """DELETE this instance through the provider API; a 404 means it is already gone (success too)."""
    url = f"{str(config['api_url']).rstrip('/')}/linode/instances/{config['instance_id']}"
    for attempt in range(1, DELETE_ATTEMPTS + 1):
        request = urllib.request.Request(url, method="DELETE", headers={
            "Authorization": f"Bearer {config['token']}", "User-Agent": "maider-failsafe"})
        try:
            with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S):
                pass
            log(f"deleted instance {config['instance_id']}")
            return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                log(f"instance {config['instance_id']} is already gone")
                return True
            problem = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            problem = type(exc).__name__
        log(f"delete attempt {attempt} of {DELETE_ATTEMPTS} failed ({problem})")
        if attempt < DELETE_ATTEMPTS:
            time.sleep(min(2 ** attempt / SPEED, 30))
    return False


def on_this_clock(config: dict) -> dict:
    """maider wrote its times on the laptop's clock; the file's modification time is this VM's clock at the moment
    it was written (``written_at`` on the laptop's), so the difference moves every time onto this VM's clock."""
    try:
        shift = os.stat(CONFIG).st_mtime - float(config["written_at"])
    except (OSError, KeyError, TypeError, ValueError):
        return config
    return {**config, **{key: float(config[key]) + shift for key in ("started_at", "armed_at") if config.get(key)}}


def main() -> int:
    config = read_json(CONFIG)
    if not config or not config.get("token") or not config.get("instance_id") or not config.get("api_url"):
        return 0  # not armed (maider has not written it yet, or the failsafe is off)
    config = on_this_clock(config)
    now = time.time()
    reason = reason_to_delete(config, now)
    if reason is None:
        return 0
    log(f"deleting this VM: {reason}")
    report = {**(read_json(STATE) or {}), "reason": reason, "decided_at": now}
    write_json(STATE, report)
    return 0 if delete_instance(config) else 1


if __name__ == "__main__":
    sys.exit(main())
