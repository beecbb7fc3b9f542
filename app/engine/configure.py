"""Configure steps: wait for cloud-init, reboot only if the NVIDIA driver is not loaded, then start the stack."""
from __future__ import annotations

import json
import logging

from app.domain import vm_contract as vm
from app.engine import failsafe
from app.engine.state import record_event, transition
from app.engine.steps import StepContext, connection_lost, deadline_passed, fail_launch, poll_later
from app.models import Reason, SessionState
from app.remote import RemoteError, RemoteHost

log = logging.getLogger(__name__)


def _gpu_visible(remote: RemoteHost) -> bool:
    return remote.run(vm.CMD_GPU_QUERY, timeout=30).exit_code == 0


def _start_stack(ctx: StepContext, remote: RemoteHost) -> None:
    result = remote.run(vm.CMD_START_STACK, timeout=60)
    if result.exit_code != 0:
        record_event(ctx.session, "warning", f"starting the stack returned {result.exit_code}: "
                                             f"{(result.stderr or result.stdout).strip()[:300]}")
    transition(ctx.session, SessionState.STARTING, now=ctx.now)


def step_configuring(ctx: StepContext) -> None:
    """Poll ``cloud-init status``; on done, check the driver and either start vLLM or reboot once."""
    session = ctx.session
    if deadline_passed(ctx, ctx.timings.configure_deadline):
        fail_launch(ctx, Reason.LAUNCH_TIMEOUT, "cloud-init did not finish in time (drivers, Docker)")
        return
    try:
        remote = ctx.remote()
        # Armed as soon as SSH answers, not when cloud-init is done: a laptop closed during the first minutes of
        # provisioning must not leave the VM billing. Each poll is a heartbeat until the monitor takes over.
        failsafe.arm(session, ctx.runtime.provider_for(session), remote, ctx.now)
        failsafe.beat(session, remote, ctx.now)
        result = remote.run(vm.CMD_CLOUD_INIT_STATUS, timeout=30)
        try:
            status = json.loads(result.stdout or "{}")
        except ValueError:
            status = {"status": "running"}
        state = status.get("status", "running")
        if state == "error":
            tail = remote.run(vm.CMD_CLOUD_INIT_LOG_TAIL, timeout=30).stdout.strip()
            errors = "; ".join(str(e) for e in status.get("errors", []))[:500]
            record_event(session, "error", "cloud-init failed", errors=errors, log_tail=tail[-4000:])
            fail_launch(ctx, Reason.CLOUD_INIT_ERROR,
                        f"cloud-init failed on the VM: {errors or 'see the log tail in the session history'}")
            return
        if state != "done":
            poll_later(ctx, "installing NVIDIA driver, Docker and the container toolkit")
            return
        record_event(session, "stage", "cloud-init finished")
        if _gpu_visible(remote):
            note = remote.run(vm.CMD_READ_DRIVER_NOTE, timeout=20).stdout.strip()
            if note:  # the image's own driver: say why this launch was fast
                record_event(session, "note", note[:300])
            _start_stack(ctx, remote)
            return
        if not getattr(ctx.runtime.provider_for(session), "reboots_allowed", True):
            fail_launch(ctx, Reason.LAUNCH_FAILED,
                        "the host's NVIDIA driver is not working (nvidia-smi failed), and maider does not reboot "
                        "machines it did not create: fix the driver until nvidia-smi works, then launch again")
            return
        session.engine_state = {**(session.engine_state or {}), "boot_id_before_reboot":
                                (session.engine_state or {}).get("boot_id")}
        transition(session, SessionState.REBOOTING, message="the NVIDIA driver needs a reboot to load", now=ctx.now)
        try:
            remote.run(vm.CMD_REBOOT, timeout=10)
        except RemoteError:
            pass  # the connection may drop before the command returns: that is the reboot
        ctx.runtime.drop_remote(session.uid)
    except RemoteError as exc:
        connection_lost(ctx, exc, "waiting for cloud-init")


def step_rebooting(ctx: StepContext) -> None:
    """Wait for the VM to come back with a new boot id, then check the driver and start vLLM."""
    session = ctx.session
    if deadline_passed(ctx, ctx.timings.reboot_deadline):
        fail_launch(ctx, Reason.LAUNCH_TIMEOUT, "the VM did not come back from its reboot in time")
        return
    try:
        remote = ctx.remote()
        boot_id = remote.run(vm.CMD_BOOT_ID, timeout=20).stdout.strip()
        if boot_id == (session.engine_state or {}).get("boot_id_before_reboot"):
            ctx.runtime.drop_remote(session.uid)
            poll_later(ctx, "waiting for the reboot")
            return
        session.engine_state = {**(session.engine_state or {}), "boot_id": boot_id}
        record_event(session, "stage", "VM rebooted")
        failsafe.beat(session, remote, ctx.now)
        if not _gpu_visible(remote):
            fail_launch(ctx, Reason.LAUNCH_FAILED,
                        "the NVIDIA driver did not load even after a reboot; set NVIDIA_DRIVER to another "
                        "driver package or pick another plan")
            return
        _start_stack(ctx, remote)
    except RemoteError as exc:
        connection_lost(ctx, exc, "waiting for the VM to come back")
