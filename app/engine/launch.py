"""Launch steps: requested → creating (the cloud call) → booting (until SSH answers with the pinned key)."""
from __future__ import annotations

import logging

from app.config import ConfigError
from app.domain.cloud_init import CloudInitInputs, render_user_data
from app.domain.vllm_env import Images, render_env
from app.engine.identity import pin_host_key
from app.engine.state import record_event, transition
from app.engine.steps import StepContext, connection_lost, deadline_passed, fail_launch, poll_later, retry_after
from app.errors import SecretResolutionError
from app.models import Reason, SessionState
from app.providers.base import (
    AuthError, CapacityError, InstanceSpec, InstanceStatus, InvalidRequest, OWNER_TAG, ProviderError, RateLimited,
)
from app.domain.vm_contract import CMD_BOOT_ID
from app.remote import RemoteError, SshAuthError
from app.engine.vllm_config import images_for, vllm_settings_for

log = logging.getLogger(__name__)


def step_requested(ctx: StepContext) -> None:
    """Create the session's keys, then hand over to the create step."""
    ctx.identity()
    transition(ctx.session, SessionState.CREATING, now=ctx.now)


def _instance_spec(ctx: StepContext) -> InstanceSpec:
    session = ctx.session
    settings = ctx.runtime.settings_for(session)
    identity = ctx.identity()
    hf_token = settings.hf_token.reveal() if settings.hf_token else None
    images: Images = images_for(settings)
    env_file = render_env(vllm_settings_for(session), identity.api_key, hf_token, identity.webui_secret, images)
    user_data = render_user_data(CloudInitInputs(
        host_key_private=identity.host_private, host_key_public=identity.host_public,
        authorized_key=identity.client_public, env_file=env_file, images=images,
        nvidia_driver=settings.nvidia_driver, model_id=session.model_id, hostname=session.label,
    ))
    return InstanceSpec(label=session.label, region=session.region, plan=session.plan, user_data=user_data,
                        tags=(OWNER_TAG, f"maider-session-{session.uid[:12]}"),
                        authorized_keys=(identity.client_public,), firewall_id=settings.firewall_id)


def step_creating(ctx: StepContext) -> None:
    """Ask the provider for the VM. Idempotent by label: a retry or a resumed launch never makes a second VM."""
    session = ctx.session
    try:
        spec = _instance_spec(ctx)
        instance = ctx.runtime.provider_for(session).create(spec)
    except (SecretResolutionError, ConfigError) as exc:
        fail_launch(ctx, Reason.LAUNCH_FAILED, str(exc))
        return
    except AuthError as exc:
        ctx.runtime.forget_provider(session.provider, session.workdir)
        fail_launch(ctx, Reason.AUTH_ERROR, str(exc))
        return
    except CapacityError as exc:
        fail_launch(ctx, Reason.NO_CAPACITY, f"{exc} Try another region or plan.")
        return
    except InvalidRequest as exc:
        fail_launch(ctx, Reason.PROVIDER_ERROR, f"the provider rejected the request: {exc}")
        return
    except ProviderError as exc:
        if deadline_passed(ctx, ctx.timings.create_deadline):
            fail_launch(ctx, Reason.PROVIDER_ERROR, f"could not create the VM: {exc}")
        elif isinstance(exc, RateLimited) and exc.retry_after:
            retry_after(ctx, exc.retry_after, f"provider busy, retrying: {exc}")
        else:
            poll_later(ctx, f"provider error, retrying: {exc}")
        record_event(session, "warning", f"create failed, will retry: {exc}")
        return
    session.instance_id = instance.id
    if instance.host_key:  # a machine with its own SSH identity: pin the key the provider vouches for
        pin_host_key(ctx.runtime.home, session.uid, instance.host_key)
    session.provider_created_at = instance.created_at or ctx.now
    session.ssh_host = instance.ssh_host
    session.ssh_port = instance.ssh_port
    if instance.hourly_price:
        session.hourly_price = instance.hourly_price
    record_event(session, "stage", f"VM {instance.id} created in {instance.region}", instance_id=instance.id)
    transition(session, SessionState.BOOTING, now=ctx.now)


def step_booting(ctx: StepContext) -> None:
    """Wait for the VM to run and for SSH to answer with exactly the host key maider generated."""
    session = ctx.session
    if deadline_passed(ctx, ctx.timings.boot_deadline):
        fail_launch(ctx, Reason.SSH_UNREACHABLE,
                    f"the VM did not answer SSH within {int(ctx.timings.boot_deadline.total_seconds() // 60) or 1} "
                    "minutes")
        return
    if not session.ssh_host:
        try:
            instance = ctx.runtime.provider_for(session).get(session.instance_id or "")
        except ProviderError as exc:
            poll_later(ctx, f"waiting for the VM's address ({exc})")
            return
        session.ssh_host, session.ssh_port = instance.ssh_host, instance.ssh_port
        if not instance.ssh_host or instance.status != InstanceStatus.RUNNING:
            poll_later(ctx, f"VM is {instance.status.value}")
            return
    try:
        remote = ctx.remote()
        boot_id = remote.run(CMD_BOOT_ID, timeout=20).stdout.strip()
    except SshAuthError as exc:
        connection_lost(ctx, exc, "waiting for the VM to accept maider's SSH key")
        return
    except RemoteError as exc:
        connection_lost(ctx, exc, "waiting for the VM to answer SSH")
        return
    session.engine_state = {**(session.engine_state or {}), "boot_id": boot_id}
    record_event(session, "stage", "SSH is up; host key verified")
    transition(session, SessionState.CONFIGURING, now=ctx.now)
