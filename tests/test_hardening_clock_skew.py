"""Runtime, cost and the budget check run on the provider's clock, whatever this laptop's clock says.

The attack was a laptop clock 20 minutes behind: a VM Linode had billed for 10 minutes was recorded as $0, and the
budget check read the same $0. Here the real linode_api4 SDK talks to the fake Linode API whose clock (``Date``
headers and ``created``) runs 20 minutes ahead of this machine's.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from app.domain.clock_offset import ClockOffset
from app.domain.cost import accrued_cost, runtime
from app.engine import watchdog
from app.extensions import db
from app.models import Session, utcnow
from app.providers.base import InstanceSpec
from app.providers.linode import LinodeProvider
from app.services.sessions import session_cost
from engine_helpers import LINODE_TOKEN, drive, launch
from fakes.linode_api import FakeLinodeApi

SKEW = timedelta(minutes=20)  # Linode's clock minus the laptop's: the laptop is 20 minutes behind
PRICE = 0.52  # g2-gpu-rtx4000a1-s, $/h


def _laptop_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@pytest.fixture
def skewed_linode():
    api = FakeLinodeApi(token=LINODE_TOKEN)
    api.clock_skew = SKEW
    api.start()
    yield api, LinodeProvider(LINODE_TOKEN, base_url=api.base_url, sleep=lambda _s: None)
    api.stop()


@pytest.mark.parametrize("skew", [SKEW, -SKEW, timedelta(0)])
def test_a_ten_minute_vm_costs_ten_minutes_whichever_clock_is_wrong(skewed_linode, skew):
    api, provider = skewed_linode
    api.clock_skew = skew
    created_on_linode = datetime.now(timezone.utc).replace(tzinfo=None, microsecond=0) + skew - timedelta(minutes=10)
    instance = api.add_instance("maider-ten-minutes", tags=["maider"])
    instance["created"] = created_on_linode.isoformat()

    seen = provider.get(str(instance["id"]))
    elapsed = runtime(seen.created_at, None, _laptop_now())
    assert elapsed == pytest.approx(timedelta(minutes=10), abs=timedelta(seconds=3))
    assert accrued_cost(PRICE, elapsed) == pytest.approx(PRICE / 6, abs=0.001)


def test_a_fresh_vm_starts_billing_now_not_in_twenty_minutes(skewed_linode):
    api, provider = skewed_linode
    created = provider.create(InstanceSpec(label="maider-fresh", region="us-ord", plan="g2-gpu-rtx4000a1-s",
                                           user_data="#cloud-config\nwrite_files: []\n"))
    assert abs(created.created_at - _laptop_now()) < timedelta(seconds=3)
    assert provider.clock.offset == pytest.approx(SKEW, abs=timedelta(seconds=2))


def test_budget_check_and_session_cost_use_the_providers_clock(app, linode_world):
    """Launched through the engine on a Linode 20 minutes ahead: ten minutes on, the session has cost ten minutes and
    a budget below that has the watchdog destroy the VM."""
    api, workdir = linode_world["api"], linode_world["workdir"]
    api.clock_skew = SKEW
    with open(workdir / ".env", "a") as env:
        env.write("BUDGET_USD=0.05\n")  # 10 minutes at $0.52/h is $0.087
    name = launch(app, "skewed", workdir)
    drive(app, name, lambda session: session.provider_created_at is not None)
    with app.app_context():
        session = db.session.scalar(db.select(Session).where(Session.name == name))
        ten_minutes_on = utcnow() + timedelta(minutes=10)
        assert session_cost(session, ten_minutes_on).cost == pytest.approx(PRICE / 6, abs=0.002)
        watchdog.check_session(session, ten_minutes_on, warning=timedelta(minutes=5))
        assert session.destroy_requested_at is not None
        assert session.engine_state["destroy_reason"] == "budget_exceeded"
        db.session.rollback()


def test_the_estimate_ignores_one_slow_answer_and_sub_second_noise():
    clock = ClockOffset()
    now = datetime(2026, 12, 1, 12, 0, 0)
    assert clock.offset == timedelta(0)  # nothing measured yet: trust the laptop
    clock.observe(now - timedelta(milliseconds=700), now)  # Date has 1 s resolution: clocks that agree
    assert clock.offset == timedelta(0)
    for _ in range(3):
        clock.observe(now + SKEW, now)
    clock.observe(now + SKEW - timedelta(seconds=30), now)  # an answer that took 30 s to arrive
    assert clock.offset == SKEW
    assert clock.to_local(now + SKEW) == now
