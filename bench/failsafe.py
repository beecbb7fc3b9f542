"""What the on-VM failsafe costs and how fast it acts, with the very script cloud-init installs.

1. One run of ``maider-failsafe.py`` (Python start-up, reading vLLM's /metrics from a fake vLLM, the verdict): its
   wall time, the price the VM pays every minute.
2. From maider's last heartbeat to the DELETE reaching the cloud's API, on a compressed clock (``--speed``), for a
   limit of one simulated minute; the check runs every ``60 / speed`` s, as the systemd timer does every minute.

    .venv/bin/python bench/failsafe.py [--runs 20] [--speed 30]

Goal: a run well under a second of wall time; deletion within two limits of the last heartbeat.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.domain import vm_contract  # noqa: E402
from app.domain.cloud_init import TEMPLATE_DIR, fill_template  # noqa: E402

METRICS = "vllm:request_success_total{finished_reason=\"stop\"} 12.0\nvllm:num_requests_running 0.0\n"


class _Cloud(BaseHTTPRequestHandler):
    deleted_at: float | None = None

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        body = METRICS.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_DELETE(self) -> None:  # noqa: N802
        type(self).deleted_at = type(self).deleted_at or time.time()
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *_args: object) -> None:
        pass


def _arm(root: str, port: int, silence_minutes: float) -> None:
    config = Path(root + vm_contract.FAILSAFE_CONFIG)
    config.parent.mkdir(parents=True, exist_ok=True)
    now = time.time()
    config.write_text(json.dumps({"instance_id": "1", "api_url": f"http://127.0.0.1:{port}/v4", "token": "t",
                                  "silence_minutes": silence_minutes, "started_at": now, "armed_at": now,
                                  "hourly_price": 0.52}))
    beat = Path(root + vm_contract.FAILSAFE_HEARTBEAT)
    beat.parent.mkdir(parents=True, exist_ok=True)
    beat.touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--speed", type=float, default=30.0)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Cloud)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    with tempfile.TemporaryDirectory() as root:
        script = Path(root) / "maider-failsafe.py"
        script.write_text(fill_template((TEMPLATE_DIR / "maider-failsafe.py").read_text()))
        env = {**os.environ, "MAIDER_FAILSAFE_ROOT": root, "MAIDER_FAILSAFE_METRICS_URL":
               f"http://127.0.0.1:{port}/metrics"}

        _arm(root, port, silence_minutes=600)
        times = []
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run([sys.executable, str(script)], env=env, check=True, capture_output=True)
            times.append((time.perf_counter() - started) * 1000)
        print(f"one check (python start-up, /metrics, verdict): median {statistics.median(times):.0f} ms, "
              f"max {max(times):.0f} ms over {args.runs} runs")

        _arm(root, port, silence_minutes=1)
        beat = os.stat(root + vm_contract.FAILSAFE_HEARTBEAT).st_mtime
        env["MAIDER_FAILSAFE_SPEED"] = str(args.speed)
        tick = 60 / args.speed
        limit = 60 / args.speed
        while _Cloud.deleted_at is None and time.time() - beat < 10 * limit:
            time.sleep(tick)
            subprocess.run([sys.executable, str(script)], env=env, check=False, capture_output=True)
        server.shutdown()
    if _Cloud.deleted_at is None:
        print("the failsafe did not delete within ten limits")
        sys.exit(1)
    after = _Cloud.deleted_at - beat
    print(f"silence to DELETE: {after:.2f} s for a limit of {limit:.2f} s ({after / limit:.2f} limits; "
          f"check every {tick:.2f} s)")


if __name__ == "__main__":
    main()
