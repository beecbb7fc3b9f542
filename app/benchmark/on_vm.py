"""Run the same benchmark client on the VM, inside the vLLM container, against vLLM's own 127.0.0.1:8000.

So the figures exclude the SSH tunnel and the laptop's network. The client's four modules (standard library and
httpx only; the vLLM image ships httpx with the openai package) travel over SSH on stdin as one script, with the
prompts and the load; the script prints every request's measurements as JSON and the laptop summarises them with
the very same statistics code.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.benchmark.client import Level, LevelRun, Target
from app.benchmark.prompts import Prompt
from app.domain import vm_contract as vc
from app.domain.benchmark_stats import RequestOutcome

CMD_RUN_BENCHMARK = f"docker exec -i {vc.VLLM_CONTAINER} python3 -"
VM_BASE_URL = f"http://127.0.0.1:{vc.VLLM_PORT}"
_APP = Path(__file__).resolve().parent.parent
_MODULES = (  # in import order
    ("app.domain.benchmark_stats", _APP / "domain" / "benchmark_stats.py"),
    ("app.benchmark.prompts", _APP / "benchmark" / "prompts.py"),
    ("app.benchmark.wire", _APP / "benchmark" / "wire.py"),
    ("app.benchmark.client", _APP / "benchmark" / "client.py"),
)
_BOOTSTRAP = '''
import dataclasses, json, math, sys, types
for package in ("app", "app.domain", "app.benchmark"):
    module = types.ModuleType(package)
    module.__path__ = []
    sys.modules[package] = module
for name, source in SOURCES:
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, name, "exec"), module.__dict__)
from app.benchmark.client import Level, Target, run_sweep
from app.benchmark.prompts import Prompt
target = Target(**ARGS["target"])
prompts = [Prompt(*p) for p in ARGS["prompts"]]
levels = [Level(c, math.inf if r is None else r) for c, r in ARGS["levels"]]
runs = run_sweep(target, prompts, levels, ARGS["ignore_eos"], warmup=ARGS["warmup"], seed=ARGS["seed"])
print(json.dumps([{"duration": run.duration, "outcomes": [dataclasses.astuple(o) for o in run.outcomes]}
                  for run in runs]))
'''


class VmRunFailed(Exception):
    """The run on the VM did not produce results; the message carries its error output."""


def script(target: Target, prompts: Sequence[Prompt], levels: Sequence[Level], ignore_eos: bool, warmup: int,
           seed: int) -> bytes:
    """The whole program the VM runs: the client's sources, the arguments, and a few lines that call it."""
    sources = [(name, path.read_text(encoding="utf-8")) for name, path in _MODULES]
    args = {"target": {"base_url": VM_BASE_URL, "model": target.model, "api_key": target.api_key,
                       "endpoint": target.endpoint},
            "prompts": [[p.text, p.output_len, p.input_len] for p in prompts],
            "levels": [[lv.max_concurrency, None if math.isinf(lv.request_rate) else lv.request_rate]
                       for lv in levels],
            "ignore_eos": ignore_eos, "warmup": warmup, "seed": seed}
    header = f"import json\nSOURCES = {sources!r}\nARGS = json.loads({json.dumps(args)!r})\n"
    return (header + _BOOTSTRAP).encode()


def parse_output(stdout: str, levels: Sequence[Level]) -> list[LevelRun]:
    """The VM's JSON back into LevelRuns, ready for the same summaries as a tunnel run."""
    try:
        data: list[dict[str, Any]] = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise VmRunFailed(f"the VM printed no results: {stdout[-300:]!r}") from None
    runs = []
    for level, item in zip(levels, data, strict=False):
        outcomes = [RequestOutcome(bool(o[0]), int(o[1]), int(o[2]), float(o[3]), float(o[4]),
                                   tuple(float(x) for x in o[5]), float(o[6]), str(o[7])) for o in item["outcomes"]]
        runs.append(LevelRun(level, outcomes, float(item["duration"])))
    return runs


def run_on_vm(run_command: Callable[[str, bytes], tuple[int, str, str]], target: Target,
              prompts: Sequence[Prompt], levels: Sequence[Level], ignore_eos: bool, warmup: int,
              seed: int) -> list[LevelRun]:
    """Send the script over SSH (``run_command(command, stdin)`` -> exit code, stdout, stderr) and read results."""
    code, stdout, stderr = run_command(CMD_RUN_BENCHMARK, script(target, prompts, levels, ignore_eos, warmup, seed))
    if code != 0:
        last = (stderr or stdout).strip().splitlines()[-1:] or [f"exit status {code}"]
        raise VmRunFailed(f"the benchmark on the VM failed: {last[0][:300]}")
    return parse_output(stdout, levels)
