"""A VM no session owns still bills: orphans count in the burn rate the dashboard and the API show."""
from __future__ import annotations

import pytest

from app.extensions import db
from app.models import OrphanInstance


def test_orphans_count_in_the_burn_rate(app, client):
    app.config["MAIDER_API_TOKEN"] = "api-token"
    with app.app_context():
        db.session.add(OrphanInstance(provider="simulated", instance_id="70000042", label="maider-lost",
                                      region="us-ord", plan="g1-gpu-rtx6000-1", hourly_price=1.5))
        db.session.commit()
    totals = client.get("/api/v1/sessions", headers={"Authorization": "Bearer api-token"}).get_json()["totals"]
    assert totals["burn_rate"] == pytest.approx(1.5)
