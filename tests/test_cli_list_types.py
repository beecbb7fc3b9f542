"""``maider list-types`` through click, the Linode provider and the real SDK, against the fake Linode API."""
from __future__ import annotations

from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from app.cli import main
from app.providers.linode import NO_TOKEN_MESSAGE
from fakes.linode_api import FakeLinodeApi

TYPES = "/v4/linode/types"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeLinodeApi]:
    fake = FakeLinodeApi().start()
    monkeypatch.setenv("MAIDER_LINODE_API_URL", fake.base_url)
    monkeypatch.setenv("LINODE_TOKEN", fake.token)
    yield fake
    fake.stop()


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, ["list-types", *args])


def _line(output: str, plan: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(plan + " "))


def test_lists_the_plans_of_a_region_with_its_price_and_vram(api: FakeLinodeApi) -> None:
    result = _run("--region", "us-ord")
    assert result.exit_code == 0, result.output
    assert "PLAN" in result.output and "$/HOUR" in result.output
    assert _line(result.output, "g2-gpu-rtx4000a1-s").split()[:7] == [
        "g2-gpu-rtx4000a1-s", "1", "RTX", "4000", "Ada", "20", "GB"]
    assert "$0.52" in _line(result.output, "g2-gpu-rtx4000a1-s")
    assert "80 GB" in _line(result.output, "g2-gpu-rtx4000a4-m")
    assert "rtx6000" not in result.output  # not offered in us-ord
    assert "netint" not in result.output.lower()


def test_a_region_with_its_own_price_shows_that_price(api: FakeLinodeApi) -> None:
    result = _run("--region", "jp-osa")
    assert result.exit_code == 0, result.output
    assert "$0.62" in _line(result.output, "g2-gpu-rtx4000a1-s")


def test_quadro_rtx_6000_is_24_gb_per_gpu(api: FakeLinodeApi) -> None:
    result = _run("--region", "us-east")
    assert result.exit_code == 0, result.output
    line = _line(result.output, "g1-gpu-rtx6000-2")
    assert "Quadro RTX 6000" in line and "24 GB" in line and "48 GB" in line  # 2 x 24, never 48 per GPU
    assert "$3.00" in line


def test_a_refused_token_exits_1_with_the_fix(api: FakeLinodeApi, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINODE_TOKEN", "maider-planted-token-8d2e")
    result = _run("--region", "us-ord")
    assert result.exit_code == 1
    assert "Linode refused the token (401)" in result.output and "cloud.linode.com/profile/tokens" in result.output
    assert "maider-planted-token-8d2e" not in result.output and "Traceback" not in result.output


def test_no_token_lists_the_demo_clouds_plans_and_says_so(api: FakeLinodeApi,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """As 'maider serve' does without a token: demo mode, so a first look at the plans works and says it is the
    demo; Linode is never asked."""
    monkeypatch.delenv("LINODE_TOKEN")
    result = CliRunner().invoke(main, ["list-types", "--region", "us-ord"])
    assert result.exit_code == 0, result.output + result.stderr
    assert "No Linode token found" in result.stderr and "demo mode" in result.stderr
    assert "GPU plans on simulated in us-ord" in result.output and "$0.52" in _line(result.output, "g2-gpu-rtx4000a1-s")
    assert NO_TOKEN_MESSAGE not in result.output and api.requests == []


def test_an_unknown_region_is_a_one_line_error(api: FakeLinodeApi) -> None:
    result = _run("--region", "mars-1")
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: 'mars-1' is not a linode region with GPUs; GPU regions: ap-south, ap-west, de-fra-2, eu-central, "
        "fr-par, jp-osa, sg-sin-2, us-east, us-ord, us-sea, us-southeast"]


def test_the_catalog_is_cached_until_refresh(api: FakeLinodeApi) -> None:
    assert _run("--region", "us-ord").exit_code == 0
    assert api.count("GET", TYPES) == 1
    assert _run("--region", "us-ord").exit_code == 0
    assert api.count("GET", TYPES) == 1 and api.count("GET", "/v4/regions") == 1  # both from the cache
    assert _run("--region", "us-ord", "--refresh").exit_code == 0
    assert api.count("GET", TYPES) == 2 and api.count("GET", "/v4/regions") == 2


def test_help_explains_the_options() -> None:
    result = _run("--help")
    assert result.exit_code == 0
    assert "--region" in result.output and "--refresh" in result.output and "hourly price" in result.output
