"""maider's benchmark client and ``vllm bench serve`` on the same real server, same prompts, same concurrency.

Here they must agree on what was measured: every request done, the same prompt tokens (the same prompts reached
the server) and the same output tokens. Their timing figures are printed (``-s``), not asserted: on a shared
two-core machine the client competes with the server for the CPU. ``bench/real_vllm_agreement.py`` takes turns
several times and checks the 10 % agreement of the TTFT, ITL and throughput means.
"""
from __future__ import annotations

from pathlib import Path

from client_comparison import NUM_PROMPTS, OUTPUT_LEN, figures_line, maider_run, vllm_run, write_prompts
from real_vllm_server import RealVllm, tiny_model


def test_both_clients_measure_the_same_requests(real_vllm: RealVllm, tmp_path: Path) -> None:
    dataset = write_prompts(tmp_path / "prompts.json")
    theirs = vllm_run(real_vllm, dataset, tiny_model("tiny-qwen2-a"), tmp_path / "vllm.json")
    ours = maider_run(real_vllm, dataset)
    print("\n" + figures_line("vllm", theirs) + "\n" + figures_line("maider", ours))
    assert ours["completed"] == theirs["completed"] == NUM_PROMPTS
    assert ours["total_output_tokens"] == theirs["total_output_tokens"] == NUM_PROMPTS * OUTPUT_LEN
    assert ours["total_input_tokens"] == theirs["total_input_tokens"] > NUM_PROMPTS * 100
    assert all(ours[name] > 0 and theirs[name] > 0 for name in ("mean_ttft_ms", "mean_itl_ms", "output_throughput"))
