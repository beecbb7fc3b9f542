#!/usr/bin/env python3
"""maider: apply maider's cloud-config on a machine the user already runs (no cloud-init there, or not for us).

Run as root by maider over SSH (``sudo -n``). Two phases:

- ``--start --input FILE``: record the deployment (DEPLOYMENT_FILE) and a "running" status, keep the cloud-config
  root-only, then run the second phase in the background as a transient systemd unit, logging to BOOTSTRAP_LOG, so
  the SSH command returns at once and the work survives the connection.
- ``--config FILE``: write ``write_files`` and run ``runcmd`` in order, as cloud-init would, then record the status
  in the shape of ``cloud-init status --format json`` (maider reads it with the same command it uses on a cloud VM).

What this runner never applies, because the machine is the user's and so is its identity: SSH host keys
(``ssh_keys``, ``ssh_deletekeys``, ``ssh_genkeytypes``), users and passwords (``users``, ``ssh_authorized_keys``,
``disable_root``, ``ssh_pwauth``, ``chpasswd``), the host name, and any ``write_files`` entry under the SSH
configuration, a home's ``.ssh`` or the account databases. maider logs in with the session key it added to root's
authorized_keys itself, and pins the host key the user confirmed at ``maider host add``.

``--root DIR`` prefixes every path (tests); ``--dry-run`` writes the files but prints ``runcmd`` instead of running
it and never changes owners or starts units. Only the standard library is used (the machine may lack PyYAML; maider
sends JSON, and YAML is read only when PyYAML is there).
"""
from __future__ import annotations

import argparse
import base64
import contextlib
import grp
import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import PurePosixPath

STATE_DIR = "/var/lib/maider"
LLM_DIR = "/opt/llm"  # maider's stack: written here, and removed whole when the session is destroyed
DEPLOYMENT_FILE = STATE_DIR + "/deployment.json"
STATUS_FILE = STATE_DIR + "/bootstrap-status.json"
CONFIG_FILE = STATE_DIR + "/cloud-config.json"
LOG_FILE = "/var/log/maider-bootstrap.log"
UNIT = "maider-bootstrap"
# Top-level keys applied here; everything else is reported as skipped.
APPLIED_KEYS = ("write_files", "runcmd")
IDENTITY_KEYS = ("ssh_keys", "ssh_deletekeys", "ssh_genkeytypes", "ssh_authorized_keys", "users", "disable_root",
                 "ssh_pwauth", "chpasswd", "hostname", "fqdn", "groups")
# write_files paths that would change who may log in, or how: never written on the user's own machine.
PROTECTED_PREFIXES = ("/etc/ssh/", "/root/.ssh/", "/home/", "/etc/sudoers", "/etc/passwd", "/etc/shadow",
                      "/etc/group", "/etc/gshadow", "/etc/pam.d/")
OWN_MACHINE_ENV = "MAIDER_OWN_MACHINE"  # tells provision.sh not to touch the firewall, driver or Docker config


def now_text() -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())


def under(root: str, path: str) -> str:
    """``path`` (absolute on the machine) inside ``root``."""
    return os.path.join(root, path.lstrip("/")) if root != "/" else path


def write_atomic(path: str, data: bytes, mode: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def write_status(root: str, status: str, errors: list[str]) -> None:
    body = {"boot_status_code": "not-applicable", "datasource": "maider-ssh-host",
            "detail": "maider bootstrap on a machine you run", "errors": errors, "extended_status": status,
            "last_update": now_text(), "recoverable_errors": {}, "status": status}
    write_atomic(under(root, STATUS_FILE), (json.dumps(body, indent=1) + "\n").encode(), 0o644)


def read_document(path: str) -> dict:
    """A cloud-config as JSON, or as ``#cloud-config`` YAML when PyYAML is installed."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    if text.lstrip().startswith("#cloud-config"):
        try:
            import yaml
        except ImportError:
            raise SystemExit("maider: this cloud-config is YAML and PyYAML is not installed; send it as JSON") from None
        document = yaml.safe_load(text) or {}
    else:
        document = json.loads(text)
    if not isinstance(document, dict):
        raise SystemExit("maider: the cloud-config is not a mapping")
    return document


def is_protected(path: str) -> bool:
    clean = str(PurePosixPath("/") / path)
    return ".." in PurePosixPath(path).parts or any(clean.startswith(p) or clean == p.rstrip("/")
                                                   for p in PROTECTED_PREFIXES)


def set_owner(path: str, owner: str) -> None:
    user, _, group = owner.partition(":")
    uid = pwd.getpwnam(user).pw_uid if user else -1
    gid = grp.getgrnam(group).gr_gid if group else -1
    os.chown(path, uid, gid)


def write_files(config: dict, root: str, dry_run: bool) -> list[str]:
    """Write every allowed entry; return the paths written."""
    written = []
    for entry in config.get("write_files") or []:
        path = str(entry.get("path") or "")
        if not path.startswith("/") or is_protected(path):
            print(f"maider: skipped write_files {path!r}: this machine keeps its own SSH identity and users")
            continue
        content = entry.get("content") or ""
        data = (base64.b64decode(content) if str(entry.get("encoding", "")).lower() in ("b64", "base64")
                else content.encode())
        target = under(root, path)
        mode = int(str(entry.get("permissions") or "0644"), 8)
        if entry.get("append"):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "ab") as handle:
                handle.write(data)
        else:
            write_atomic(target, data, mode)
        if entry.get("owner") and not dry_run:
            set_owner(target, str(entry["owner"]))
        written.append(path)
        print(f"maider: wrote {path}")
    return written


def run_commands(config: dict, dry_run: bool) -> list[str]:
    """Run ``runcmd`` in order (a list runs as is, a string through sh); stop at the first failure."""
    env = {**os.environ, OWN_MACHINE_ENV: "1"}
    for index, command in enumerate(config.get("runcmd") or []):
        argv = [str(part) for part in command] if isinstance(command, list) else ["sh", "-c", str(command)]
        if dry_run:
            print(f"maider: would run {argv}")
            continue
        print(f"maider: running {argv}", flush=True)
        code = subprocess.run(argv, env=env, check=False).returncode
        if code != 0:
            return [f"runcmd[{index}] {argv[:2]} exited {code}: see {LOG_FILE}"]
    return []


def apply(config_path: str, root: str, dry_run: bool) -> int:
    """Phase two: the cloud-config's files and commands, then the final status."""
    try:
        config = read_document(config_path)
    finally:
        if os.path.exists(config_path):
            os.remove(config_path)  # it holds the .env's secrets: from now on they live in that file only
    for key in config:
        if key not in APPLIED_KEYS:
            why = "this machine keeps its own SSH identity and users" if key in IDENTITY_KEYS else "not applied here"
            print(f"maider: skipped {key}: {why}")
    try:
        write_files(config, root, dry_run)
        errors = run_commands(config, dry_run)
    except Exception as exc:  # any failure must end as an "error" status maider can show
        errors = [f"{type(exc).__name__}: {exc}"]
    write_status(root, "error" if errors else "done", errors)
    print(f"maider: bootstrap {'failed: ' + '; '.join(errors) if errors else 'done'}", flush=True)
    return 1 if errors else 0


def start(input_path: str, root: str, dry_run: bool) -> int:
    """Phase one: record the deployment, keep the cloud-config root-only, start phase two in the background."""
    with open(input_path, encoding="utf-8") as handle:
        payload = json.load(handle)
    os.remove(input_path)
    deployment = payload["deployment"]
    current = under(root, DEPLOYMENT_FILE)
    if os.path.exists(current):
        with open(current, encoding="utf-8") as handle:
            known = json.load(handle)
        if known.get("label") != deployment.get("label"):
            print(f"maider: this machine already runs maider session {known.get('label')!r}", file=sys.stderr)
            return 3
        print("maider: bootstrap already started")
        return 0
    if os.path.lexists(under(root, LLM_DIR)):
        print(f"maider: this machine already has {LLM_DIR}, which is not maider's: maider writes its stack there and "
              "removes the folder when the session ends; move it elsewhere and launch again", file=sys.stderr)
        state_dir = under(root, STATE_DIR)
        if os.path.dirname(os.path.abspath(__file__)) == os.path.abspath(state_dir):
            os.remove(os.path.abspath(__file__))  # nothing of maider's stays on a machine it did not start on
            with contextlib.suppress(OSError):
                os.rmdir(state_dir)
        return 4
    os.makedirs(under(root, STATE_DIR), mode=0o700, exist_ok=True)
    write_atomic(current, (json.dumps(deployment) + "\n").encode(), 0o600)
    write_status(root, "running", [])
    config_path = under(root, CONFIG_FILE)
    write_atomic(config_path, json.dumps(payload["cloud_config"]).encode(), 0o600)
    if dry_run:
        return apply(config_path, root, dry_run)
    log = under(root, LOG_FILE)
    done = subprocess.run(["systemd-run", f"--unit={UNIT}", "--collect", f"--property=StandardOutput=append:{log}",
                           f"--property=StandardError=append:{log}", sys.executable, os.path.abspath(__file__),
                           "--config", config_path], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        write_status(root, "error", [f"systemd-run failed: {(done.stderr or done.stdout).strip()[:300]}"])
        print(done.stderr, file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--start", action="store_true", help="record the deployment, then apply in the background")
    mode.add_argument("--config", help="apply this cloud-config (JSON, or #cloud-config YAML) now")
    parser.add_argument("--input", help="with --start: the JSON payload maider sent")
    parser.add_argument("--root", default="/", help="prefix for every path (tests)")
    parser.add_argument("--dry-run", action="store_true", help="write files, print runcmd instead of running it")
    args = parser.parse_args()
    if args.start:
        if not args.input:
            parser.error("--start needs --input")
        return start(args.input, args.root, args.dry_run)
    return apply(args.config, args.root, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
