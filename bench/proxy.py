"""How much the OpenAI-compatible proxy adds on top of the session's tunnel port: per request and per streamed chunk.

Run: ``.venv/bin/python bench/proxy.py [--requests N] [--streams N]``. Loopback only, bounded loops, about a minute.

Three processes, so no two share a GIL: a fake vLLM standing at the session's tunnel port (the tunnel's own cost is
``bench/tunnel.py``'s), the panel served by waitress as ``maider serve`` serves it, and this client. Both paths are
measured in the same run, alternating, with one keep-alive httpx client each:
- direct: the client sends the VM's key to the tunnel port, as the owner's aider does;
- proxy: the client sends a teammate's key to ``/sessions/<name>/openai/v1``, and the panel forwards.
Figures: p50/p99 of a kept-alive ``GET /models`` and a non-streamed chat completion; for streams, the gap between
chunks (ITL) and when each chunk lands after the request was sent, both paths. "Added" = proxy - direct.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from loopback import free_port, percentile  # noqa: E402

TOKEN_GAP_S = 0.02
TOKENS = 40
SESSION = "bench"


def serve_vllm(api_key: str, port: int) -> None:
    """Child process: the fake vLLM at the session's tunnel port."""
    from app.simulator.fake_vllm import FakeVllmConfig, FakeVllmServer

    FakeVllmServer(FakeVllmConfig("Qwen/Qwen2.5-Coder-7B-Instruct-AWQ", "coder", api_key=api_key, ttft_s=0.001,
                                  itl_s=TOKEN_GAP_S, tokens_per_reply=TOKENS), port=port)
    while True:
        time.sleep(3600)


def serve_panel(home: str, port: int) -> None:
    """Child process: the panel, as ``maider serve`` runs it (waitress, 8 threads)."""
    from waitress import serve

    from app import create_app

    app = create_app({"MAIDER_HOME": home, "MAIDER_PORT": port})
    serve(app, host="127.0.0.1", port=port, threads=8, ident="maider", _quiet=True)


def seed(home: Path, vllm_port: int) -> tuple[str, str]:
    """A ready session whose tunnel port is the fake vLLM, and a teammate with a proxy key. Returns both keys."""
    from app import create_app
    from app.engine.identity import ensure_identity
    from app.extensions import db
    from app.models import Session, utcnow
    from app.services import users

    app = create_app({"MAIDER_HOME": str(home)})
    with app.app_context():
        uid = uuid.uuid4().hex
        vm_key = ensure_identity(home, uid).api_key
        now = utcnow()
        db.session.add(Session(uid=uid, name=SESSION, provider="simulated", label=f"maider-{uid[:12]}",
                               region="us-ord", plan="g2-gpu-rtx4000a1-s", model_id="m/m", served_name="coder",
                               status="ready", api_port=vllm_port, webui_port=1, tunnel_state="up", created_at=now,
                               ready_at=now, instance_id="1"))
        db.session.commit()
        teammate = users.add_user("bench", "operator", actor="bench").user
        proxy_key = users.create_api_key(teammate, "bench")
        db.session.remove()
        db.engine.dispose()
    return vm_key, proxy_key


def wait_up(url: str, headers: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, headers=headers, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} never answered")


def time_requests(client: httpx.Client, method: str, url: str, body: dict | None) -> float:
    started = time.perf_counter()
    response = client.request(method, url, json=body)
    response.read()
    assert response.status_code == 200, response.text[:200]
    return time.perf_counter() - started


def time_stream(client: httpx.Client, url: str) -> tuple[list[float], list[float]]:
    """Gaps between streamed content chunks, and each chunk's arrival after the request was sent."""
    body = {"model": "coder", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    arrivals = []
    started = time.perf_counter()
    with client.stream("POST", url, json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data: {") and '"content"' in line:
                arrivals.append(time.perf_counter() - started)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    return gaps, arrivals


def ms(value: float) -> str:
    return f"{value * 1000:7.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="kept-alive requests per path and kind")
    parser.add_argument("--streams", type=int, default=8, help="streamed completions per path")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        vllm_port, panel_port = free_port(), free_port()
        vm_key, proxy_key = seed(home, vllm_port)
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
        children = [
            subprocess.Popen([sys.executable, __file__, "--child-vllm", vm_key, str(vllm_port)], env=env),
            subprocess.Popen([sys.executable, __file__, "--child-panel", str(home), str(panel_port)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        ]
        try:
            paths = {
                "direct": (f"http://127.0.0.1:{vllm_port}/v1", vm_key),
                "proxy": (f"http://127.0.0.1:{panel_port}/sessions/{SESSION}/openai/v1", proxy_key),
            }
            clients = {name: httpx.Client(headers={"Authorization": f"Bearer {key}"}, timeout=30)
                       for name, (_, key) in paths.items()}
            for name, (base, key) in paths.items():
                wait_up(f"{base}/models", {"Authorization": f"Bearer {key}"})
            results: dict[str, dict[str, list[float]]] = {name: {"models": [], "chat": [], "gaps": [], "first": [],
                                                                 "last": []} for name in paths}
            chat = {"model": "coder", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
            for _ in range(20):  # warm both paths (connections, caches)
                for name, (base, _) in paths.items():
                    time_requests(clients[name], "GET", f"{base}/models", None)
            for _ in range(args.requests):  # alternate, so drift on the machine hits both paths alike
                for name, (base, _) in paths.items():
                    results[name]["models"].append(time_requests(clients[name], "GET", f"{base}/models", None))
                    results[name]["chat"].append(time_requests(clients[name], "POST", f"{base}/chat/completions",
                                                               chat))
            for _ in range(args.streams):
                for name, (base, _) in paths.items():
                    gaps, arrivals = time_stream(clients[name], f"{base}/chat/completions")
                    results[name]["gaps"] += gaps
                    results[name]["first"].append(arrivals[0])
                    results[name]["last"].append(arrivals[-1])
            report(results, args)
        finally:
            for child in children:
                child.terminate()
                child.wait(10)


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    print(f"bench/proxy.py: {args.requests} kept-alive requests per kind and path, {args.streams} streams of "
          f"{TOKENS} tokens {TOKEN_GAP_S * 1000:.0f} ms apart; {os.cpu_count()} CPUs")
    print(f"{'kind':<34}{'direct p50':>11}{'proxy p50':>11}{'added p50':>11}{'direct p99':>11}{'proxy p99':>11}"
          f"{'added p99':>11}   (ms)")
    summary = {}
    for kind, label in (("models", "GET /models (keep-alive)"), ("chat", "chat, 1 token, not streamed"),
                        ("gaps", "gap between streamed chunks"), ("first", "first chunk after request"),
                        ("last", "last chunk after request")):
        d, p = results["direct"][kind], results["proxy"][kind]
        row = {q: (percentile(d, q), percentile(p, q)) for q in (0.5, 0.99)}
        summary[kind] = {q: p_ - d_ for q, (d_, p_) in row.items()}
        print(f"{label:<34}{ms(row[0.5][0]):>11}{ms(row[0.5][1]):>11}{ms(summary[kind][0.5]):>11}"
              f"{ms(row[0.99][0]):>11}{ms(row[0.99][1]):>11}{ms(summary[kind][0.99]):>11}")
    gap_mean = statistics.fmean(results["proxy"]["gaps"]) - statistics.fmean(results["direct"]["gaps"])
    print(f"mean gap between chunks: direct {statistics.fmean(results['direct']['gaps']) * 1000:.2f} ms, proxy "
          f"{statistics.fmean(results['proxy']['gaps']) * 1000:.2f} ms (added {gap_mean * 1000:+.2f} ms)")
    print(json.dumps({"added_ms": {k: {f"p{int(q * 100)}": round(v * 1000, 3) for q, v in s.items()}
                                   for k, s in summary.items()}}))
    per_request = summary["models"][0.5] * 1000
    per_chunk = (summary["last"][0.5] - summary["first"][0.5]) / (TOKENS - 1) * 1000
    print(f"summary: proxy adds {per_request:.2f} ms p50 per kept-alive request (goal <= 2) and "
          f"{per_chunk:+.3f} ms per streamed chunk beyond the first (goal <= 1)")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--child-vllm":
        serve_vllm(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) == 4 and sys.argv[1] == "--child-panel":
        serve_panel(sys.argv[2], int(sys.argv[3]))
    else:
        main()
