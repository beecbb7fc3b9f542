"""maider's benchmark client and vLLM's own (``vllm bench serve``) on one real server: same prompts (a ShareGPT
file both read), same concurrency, ignore_eos so every request makes exactly ``output_len`` tokens."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from real_vllm_server import VENV_PYTHON, RealVllm

from app.benchmark.client import Level, Target, run_sweep
from app.benchmark.prompts import random_prompts, sharegpt_prompts
from app.domain.benchmark_stats import summarize

HERE = Path(__file__).resolve().parent
NUM_PROMPTS = 12
INPUT_WORDS = 300
OUTPUT_LEN = 96
CONCURRENCY = 1  # maider's default max_num_seqs is 1: more would only queue
FIGURES = ("mean_ttft_ms", "mean_itl_ms", "output_throughput")
COUNTS = ("completed", "total_input_tokens", "total_output_tokens")


def write_prompts(path: Path) -> Path:
    """maider's random prompts as a ShareGPT file."""
    prompts = random_prompts(NUM_PROMPTS, input_len=INPUT_WORDS, output_len=OUTPUT_LEN)
    path.write_text(json.dumps([{"id": str(i), "conversations": [
        {"from": "human", "value": p.text}, {"from": "gpt", "value": "ok " * OUTPUT_LEN}]}
        for i, p in enumerate(prompts)]))
    return path


def maider_run(server: RealVllm, dataset: Path) -> dict[str, float]:
    """maider's client (app.benchmark), summarised with maider's own statistics."""
    prompts = sharegpt_prompts(dataset, NUM_PROMPTS, output_len=OUTPUT_LEN)
    target = Target(f"http://127.0.0.1:{server.port}", server.served_name, server.api_key)
    [run] = run_sweep(target, prompts, [Level(CONCURRENCY)], ignore_eos=True, warmup=1)
    result = summarize(run.outcomes, run.duration)
    return {name: float(result[name]) for name in (*COUNTS, *FIGURES)}  # type: ignore[arg-type]


def vllm_run(server: RealVllm, dataset: Path, tokenizer: Path, out: Path) -> dict[str, float]:
    """``vllm bench serve`` from the vLLM venv, its --save-result JSON read back."""
    command = [str(VENV_PYTHON), str(HERE / "vllm_bench_serve.py"), "--backend", "vllm",
               "--base-url", f"http://127.0.0.1:{server.port}", "--endpoint", "/v1/completions",
               "--model", server.served_name, "--tokenizer", str(tokenizer),
               "--dataset-name", "sharegpt", "--dataset-path", str(dataset), "--sharegpt-output-len", str(OUTPUT_LEN),
               "--num-prompts", str(NUM_PROMPTS), "--max-concurrency", str(CONCURRENCY), "--request-rate", "inf",
               "--ignore-eos", "--num-warmups", "1", "--disable-tqdm", "--save-result",
               "--result-dir", str(out.parent), "--result-filename", out.name]
    env = {**os.environ, "OPENAI_API_KEY": server.api_key, "HF_HUB_OFFLINE": "1"}
    finished = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600,
                              check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"vllm bench serve failed:\n{finished.stdout[-3000:]}{finished.stderr[-3000:]}")
    result = json.loads(out.read_text())
    return {name: float(result[name]) for name in (*COUNTS, *FIGURES)}


def figures_line(client: str, result: dict[str, float]) -> str:
    return f"{client:7} " + ", ".join(f"{name}={result[name]:.2f}" for name in FIGURES)
