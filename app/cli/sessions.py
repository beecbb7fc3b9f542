"""Session commands: up, down, list, status, use, tunnel, extend, switch-model, cleanup -- clients of the API."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import click

from app.cli.client import MaiderClient, connect, resolve_name, set_current_session
from app.config import PROVIDER_NAMES
from app.domain.aider import AIDER_ENV_FILENAME, METADATA_FILENAME, aider_command
from app.files import write_private
from app.services import project_folders
from app.domain.cost import format_duration, format_money
from app.domain.failsafe import format_left
from app.domain.sizing import MAX_CONTEXT_TOKENS, MIN_CONTEXT_TOKENS
from app.domain.vllm_env import parse_env
from datetime import timedelta

POLL_S = 1.0
CONTEXT_RANGE = click.IntRange(MIN_CONTEXT_TOKENS, MAX_CONTEXT_TOKENS)
FINAL = {"ready", "failed", "destroyed"}


def _money(value: float) -> str:
    return format_money(value)


def _runtime(seconds: int) -> str:
    return format_duration(timedelta(seconds=seconds))


def write_aider_files(client: MaiderClient, name: str, directory: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Fetch the hand-off from the server and write .aider-env and the metadata file where the user works.

    The file names are the CLI's own: whatever names the server's answer carries, nothing lands outside
    ``directory``."""
    handoff = client.get(f"/sessions/{name}/aider")
    if not isinstance(handoff.get("env_file"), str) or not isinstance(handoff.get("metadata"), dict):
        raise click.ClickException("the server's aider hand-off was not understood; no file was written")
    env_path = directory / AIDER_ENV_FILENAME
    meta_path = directory / METADATA_FILENAME
    write_private(env_path, handoff["env_file"])
    write_private(meta_path, json.dumps(handoff["metadata"], indent=2) + "\n")
    # Open WebUI's tunnel admits only a browser sent by the signed-in panel: point there, not at the raw port.
    return env_path, meta_path, {**handoff, "webui_url": f"{client.url}/sessions/{name}/webui"}


def _last_event_id(client: MaiderClient, name: str) -> int:
    events = client.get(f"/sessions/{name}/events")["events"]
    return events[-1]["id"] if events else 0


def _follow(client: MaiderClient, name: str, until: set[str] | Callable[[dict[str, Any]], bool],
            after: int = 0) -> dict[str, Any]:
    """Print each event after ``after`` until the session reaches one of ``until`` (states, or a predicate on the
    session); return the final session."""
    done = until if callable(until) else (lambda s: s["status"] in until)
    started = time.monotonic()
    while True:
        for event in client.get(f"/sessions/{name}/events", after=after)["events"]:
            after = event["id"]
            if event["kind"] in ("state", "stage", "heal", "warning", "error", "tunnel", "note", "watchdog"):
                elapsed = _runtime(int(time.monotonic() - started))
                click.echo(f"  [{elapsed:>7}] {event['message']}")
        session = client.get(f"/sessions/{name}")
        if done(session):
            return session
        time.sleep(POLL_S)


def _print_ready(session: dict[str, Any], env_path: Path, meta_path: Path, handoff: dict[str, Any]) -> None:
    click.echo("")
    click.secho(f"✓ {session['name']} is ready: {session['model_id']} as '{session['served_name']}' "
                f"({session['max_model_len'] or '?'} tokens) at {_money(session['hourly_price'])}/h", fg="green")
    click.echo(f"  vLLM API   {handoff['api_base']}")
    click.echo(f"  Open WebUI {handoff['webui_url']} (in a browser signed in to the panel: 'maider open')")
    click.echo(f"  wrote      {env_path} and {meta_path.name}")
    click.echo("")
    click.echo("Start aider:")
    click.echo(f"  {aider_command(str(env_path), str(meta_path))}")


@click.command()
@click.argument("name", required=False)
@click.option("--model", "model_id", help="Hugging Face model id (default: MODEL_ID from .env).")
@click.option("--provider", type=click.Choice(PROVIDER_NAMES), metavar="PROVIDER",
              help=f"Cloud to launch on: {', '.join(PROVIDER_NAMES)} (default: PROVIDER; without a plan either, "
                   "the cheapest provider with credentials whose plan fits).")
@click.option("--region", help="Region (default: REGION).")
@click.option("--plan", "--type", "plan", help="GPU plan (default: TYPE, else the cheapest that fits).")
@click.option("--max-model-len", type=CONTEXT_RANGE, help="Context length (default: VLLM_MAX_MODEL_LEN).")
@click.option("--launch-aider", is_flag=True, help="Start aider in this terminal once the model is ready.")
@click.option("--keep-on-failure", is_flag=True, help="Keep a VM whose launch failed, for debugging (still billed).")
@click.option("--idle-minutes", type=click.IntRange(0, 7 * 24 * 60),
              help="Destroy the VM after N idle minutes; 0: never (default: WATCHDOG_TIMEOUT_MINUTES).")
@click.option("--max-hours", type=click.FloatRange(0, 24 * 31),
              help="Destroy the VM H hours after it was created; 0: no limit (default: MAX_LIFETIME_HOURS).")
@click.option("--budget", "budget_usd", type=click.FloatRange(0, 1_000_000),
              help="Destroy the VM once it has cost USD dollars; 0: no cap (default: BUDGET_USD).")
def up(name, model_id, provider, region, plan, max_model_len, launch_aider, keep_on_failure, idle_minutes, max_hours,
       budget_usd) -> None:
    """Create a GPU VM with vLLM and Open WebUI, and wait until it serves."""
    client = connect()
    body = {"name": name, "model_id": model_id, "provider": provider, "region": region, "plan": plan,
            "max_model_len": max_model_len, "keep_on_failure": keep_on_failure, "workdir": os.getcwd(),
            "idle_minutes": idle_minutes, "max_hours": max_hours, "budget_usd": budget_usd}
    session = client.post("/sessions", body)
    project_folders.remember(Path.cwd())  # the panel offers this folder next
    name = session["name"]
    set_current_session(name)
    click.echo(f"Launching {name}: {session['model_id']} on {session['plan']} ({session['provider']}) in "
               f"{session['region']} at {_money(session['hourly_price'])}/h{' (demo)' if client.demo else ''}")
    try:
        session = _follow(client, name, FINAL)
    except KeyboardInterrupt:
        raise click.ClickException(f"stopped watching; the launch goes on in the server. 'maider status {name}' "
                                   f"shows it, 'maider down {name}' destroys it") from None
    if session["status"] != "ready":
        message = session.get("status_message") or session["status"]
        gone = "the VM was destroyed" if session.get("destroyed_at") else "the VM is still running (billed)"
        raise click.ClickException(f"{name} failed: {message} ({gone})")
    env_path, meta_path, handoff = write_aider_files(client, name, Path.cwd())
    _print_ready(session, env_path, meta_path, handoff)
    if launch_aider:
        _exec_aider(env_path, meta_path)


def _exec_aider(env_path: Path, meta_path: Path) -> None:
    aider = shutil.which("aider")
    if aider is None:
        raise click.ClickException("aider is not installed (pipx install aider-chat); the command above works "
                                   "once it is")
    env = dict(os.environ)
    env.update(parse_env(env_path.read_text().replace("export ", "")))
    os.execve(aider, [aider, "--model", env["AIDER_MODEL"], "--model-metadata-file", str(meta_path)], env)


@click.command()
@click.argument("name", required=False)
@click.option("--force", is_flag=True, help="Do not ask, even if the session is still launching.")
@click.option("--no-wait", is_flag=True, help="Return once the destroy is requested.")
def down(name, force, no_wait) -> None:
    """Destroy a session's VM and show what it cost."""
    client = connect()
    name = resolve_name(name)
    session = client.get(f"/sessions/{name}")
    if session["destroyed_at"] is not None:
        click.echo(f"{name} is already destroyed: it ran {_runtime(session['runtime_seconds'])} and cost "
                   f"{_money(session['cost'])} (estimate).")
        _forget_aider_files(name, session)
        return
    if session["status"] not in ("ready", "failed", "destroying") and not force:
        click.confirm(f"{name} is still {session['status_label'].lower()}. Destroy it anyway?", abort=True)
    after = _last_event_id(client, name)
    client.delete(f"/sessions/{name}")
    click.echo(f"Destroying {name}…")
    if no_wait:
        return
    try:
        # confirmed deleted, not merely "failed": a failed session may still have its VM
        session = _follow(client, name, lambda s: s["destroyed_at"] is not None, after)
    except KeyboardInterrupt:
        raise click.ClickException(f"stopped watching; the server keeps destroying {name}") from None
    click.echo("")
    click.echo(f"Session {name}")
    click.echo(f"  Runtime:     {_runtime(session['runtime_seconds'])}")
    click.echo(f"  Hourly rate: {_money(session['hourly_price'])}")
    click.echo(f"  Total cost:  {_money(session['cost'])} (estimate)")
    _forget_aider_files(name, session)


def _forget_aider_files(name: str, session: dict[str, Any]) -> None:
    """Remove the .aider-env files of this session (here and in its project folder): their port and key are dead."""
    folders = {Path.cwd()} | ({Path(session["workdir"])} if session.get("workdir") else set())
    for folder in sorted(folders):
        env_path = folder / AIDER_ENV_FILENAME
        try:
            written_for = parse_env(env_path.read_text().replace("export ", "")).get("MAIDER_SESSION")
        except (OSError, ValueError):
            continue
        if written_for == name:
            env_path.unlink(missing_ok=True)
            click.echo(f"  Removed {env_path}: its tunnel port and key died with the VM.")


def _autostop(session: dict[str, Any]) -> str:
    """``42 min (idle)``; ``-`` when nothing stops the VM on its own."""
    seconds = session.get("autostop_seconds")
    if seconds is None:
        return "-"
    return f"{format_left(timedelta(seconds=seconds))} ({session['autostop_reason']})"


@click.command("list")
def list_sessions() -> None:
    """List sessions with status, runtime and cost."""
    client = connect()
    data = client.get("/sessions")
    sessions = data["sessions"]
    if not sessions:
        click.echo("No sessions. Start one with 'maider up' or in the panel.")
    else:
        rows = [("NAME", "STATUS", "MODEL", "PLAN", "RUNTIME", "COST", "$/H", "AUTOSTOP IN")]
        for s in sessions:
            status = s["status_label"] + (" (destroy pending)" if s["destroy_pending"] else "")
            rows.append((s["name"], status, s["model_id"], s["plan"], _runtime(s["runtime_seconds"]),
                         _money(s["cost"]), _money(s["hourly_price"]), _autostop(s)))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            click.echo("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    totals = data["totals"]
    click.echo(f"\nBurning {_money(totals['burn_rate'])}/h · today {_money(totals['spent_today'])} · "
               f"all time {_money(totals['spent_total'])} (estimates)")
    for orphan in data.get("orphans", []):
        click.secho(f"! orphan VM {orphan['instance_id']} ({orphan['label']}, {orphan['plan']}) is tagged maider but "
                    "unknown here: adopt or destroy it in the panel", fg="yellow")


@click.command()
@click.argument("name", required=False)
def status(name) -> None:
    """Show one session in detail."""
    client = connect()
    name = resolve_name(name)
    s = client.get(f"/sessions/{name}")
    click.echo(f"{s['name']}: {s['status_label']}" + (f" — {s['stage_detail']}" if s.get("stage_detail") else ""))
    if s.get("status_message"):
        click.echo(f"  {s['status_message']}")
    click.echo(f"  model    {s['model_id']} as '{s['served_name']}'"
               + (f", {s['max_model_len']:,} tokens" if s.get("max_model_len") else ""))
    click.echo(f"  VM       {s['plan']} ({s['gpus']}× {s['gpu_name'] or 'GPU'}) in {s['region']}, "
               f"{s['provider']} {s['instance_id'] or '(not created yet)'}")
    click.echo(f"  cost     {_money(s['cost'])} over {_runtime(s['runtime_seconds'])} at {_money(s['hourly_price'])}/h")
    if s.get("autostop_seconds") is not None:
        click.echo(f"  autostop in {_autostop(s)} ('maider extend' resets the idle clock)")
    if s.get("failsafe_minutes"):
        click.echo(f"  failsafe armed: this VM deletes itself if maider is silent for {s['failsafe_minutes']} min")
    if s.get("api_port"):
        click.echo(f"  tunnel   {s['tunnel_state']}: API http://127.0.0.1:{s['api_port']}/v1, "
                   f"Open WebUI {client.url}/sessions/{name}/webui")
    events = client.get(f"/sessions/{name}/events")["events"][-8:]
    if events:
        click.echo("  recent:")
        for event in events:
            click.echo(f"    {event['at'][11:19]} {event['message']}")


@click.command()
@click.argument("name")
def use(name) -> None:
    """Make NAME the current session and write its aider files here."""
    client = connect()
    session = client.get(f"/sessions/{name}")
    set_current_session(name)
    if session["status"] != "ready":
        click.echo(f"Current session: {name} ({session['status_label'].lower()}; aider files come once it is ready)")
        return
    env_path, meta_path, _ = write_aider_files(client, name, Path.cwd())
    click.echo(f"Current session: {name}; wrote {env_path.name} and {meta_path.name}")
    click.echo(f"  {aider_command(str(env_path), str(meta_path))}")


@click.command()
@click.argument("name", required=False)
def tunnel(name) -> None:
    """Re-establish a session's SSH tunnels (after a network change or sleep)."""
    client = connect()
    name = resolve_name(name)
    client.post(f"/sessions/{name}/tunnel")
    deadline = time.monotonic() + 30
    session = client.get(f"/sessions/{name}")
    while session["tunnel_state"] != "up" and time.monotonic() < deadline:
        time.sleep(POLL_S)
        session = client.get(f"/sessions/{name}")
    if session["tunnel_state"] != "up":
        raise click.ClickException(f"the tunnel for {name} is still {session['tunnel_state']}; maider keeps trying")
    click.echo(f"Tunnel up: API http://127.0.0.1:{session['api_port']}/v1, "
               f"Open WebUI {client.url}/sessions/{name}/webui")


@click.command()
@click.argument("name", required=False)
def extend(name) -> None:
    """Reset the idle watchdog's timer for a session."""
    client = connect()
    name = resolve_name(name)
    session = client.get(f"/sessions/{name}")
    if session.get("autostop_seconds") is None:
        click.echo(f"Nothing to extend: {name} has no idle watchdog or autostop; it runs until 'maider down'.")
        return
    session = client.post(f"/sessions/{name}/extend")
    click.echo(f"Idle timer reset for {name}" + (" (and on the VM, for its failsafe)."
                                                 if session.get("failsafe_minutes") else ".")
               + (f" Autostop in {_autostop(session)}." if session.get("autostop_seconds") is not None else ""))


@click.command("switch-model")
@click.argument("model_id")
@click.argument("name", required=False)
@click.option("--max-model-len", type=CONTEXT_RANGE, help="Context length for the new model.")
@click.option("--tensor-parallel-size", type=click.IntRange(1, 16), help="Tensor parallelism for the new model.")
def switch_model(model_id, name, max_model_len, tensor_parallel_size) -> None:
    """Change the model on a running VM (checked to fit first; the weight cache is kept)."""
    client = connect()
    name = resolve_name(name)
    after = _last_event_id(client, name)
    client.post(f"/sessions/{name}/model", {"model_id": model_id, "max_model_len": max_model_len,
                                            "tensor_parallel_size": tensor_parallel_size})
    click.echo(f"Switching {name} to {model_id}…")
    session = _follow(client, name, {"ready", "failed", "destroyed"}, after)
    if session["status"] != "ready":
        raise click.ClickException(f"switch failed: {session.get('status_message') or session['status']}")
    env_path, meta_path, handoff = write_aider_files(client, name, Path.cwd())
    _print_ready(session, env_path, meta_path, handoff)


@click.command()
@click.option("--session", "session_name", help="Only this session.")
@click.option("--force", is_flag=True, help="With --session: forget it even though the provider was not asked "
                                            "(you deleted the VM by hand).")
def cleanup(session_name, force) -> None:
    """Forget sessions whose VMs the provider confirms are gone."""
    if force and not session_name:
        raise click.UsageError("--force needs --session NAME")
    client = connect()
    result = client.post("/cleanup", {"session": session_name, "force": force})
    for name in result["removed"]:
        click.echo(f"removed {name}")
    for kept in result["kept"]:
        click.echo(f"kept    {kept['name']}: {kept['why']}")
    if not result["removed"] and not result["kept"]:
        click.echo("Nothing to clean up.")


commands = [up, down, list_sessions, status, use, tunnel, extend, switch_model, cleanup]
