"""Run the same benchmark client on the VM, inside the vLLM container, against vLLM's own 127.0.0.1:8000.

So the figures exclude the SSH tunnel and the laptop's network. The client's four modules (standard library and
httpx only; the vLLM image ships httpx with the openai package) travel over SSH on stdin as one line, with the prompts
and the load. While it runs, the program prints one JSON line per progress step and per finished level, which the
laptop reads as they arrive (live progress, each level stored as it ends) and summarises with the very same
statistics code. stdin stays open after that line: when the laptop closes the channel (a cancel, or maider going
away) the program sees end-of-file and exits at once, so no load is left running on the GPU.
"""
from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.benchmark.client import Cancelled, Level, LevelRun, Target
from app.benchmark.prompts import Prompt
from app.domain import vm_contract as vc
from app.domain.benchmark_stats import RequestOutcome

# The program comes as one line of stdin (not ``python3 -``, which waits for end-of-file before it starts): the rest of
# stdin stays open, and its end tells the program to stop.
VM_LOADER = "import sys; exec(sys.stdin.readline())"
CMD_RUN_BENCHMARK = f"docker exec -i {vc.VLLM_CONTAINER} python3 -u -c '{VM_LOADER}'"
PROGRESS_EVERY_S = 0.25  # the VM prints progress at most this often (and at each level's last request)
VM_BASE_URL = f"http://127.0.0.1:{vc.VLLM_PORT}"
_APP = Path(__file__).resolve().parent.parent
_MODULES = (  # in import order
    ("app.domain.benchmark_stats", _APP / "domain" / "benchmark_stats.py"),
    ("app.benchmark.prompts", _APP / "benchmark" / "prompts.py"),
    ("app.benchmark.wire", _APP / "benchmark" / "wire.py"),
    ("app.benchmark.client", _APP / "benchmark" / "client.py"),
)
_BOOTSTRAP = '''
import dataclasses, json, math, os, sys, threading, time, types
def _stop_at_end_of_input():
    sys.stdin.buffer.read()  # returns when the laptop closes the channel: stop the load now
    os._exit(143)
threading.Thread(target=_stop_at_end_of_input, daemon=True).start()
for package in ("app", "app.domain", "app.benchmark"):
    module = types.ModuleType(package)
    module.__path__ = []
    sys.modules[package] = module
for name, source in SOURCES:
    module = types.ModuleType(name)
    sys.modules[name] = module
    exec(compile(source, name, "exec"), module.__dict__)
from app.benchmark.client import Level, RunControl, Target, run_sweep
from app.benchmark.prompts import Prompt
def emit(message):
    sys.stdout.write(json.dumps(message) + "\\n")
    sys.stdout.flush()
shown = [0.0]
def on_progress(index, done, total, output_tokens, elapsed):
    now = time.monotonic()
    if done == total or now - shown[0] >= PROGRESS_EVERY_S:
        shown[0] = now
        emit({"progress": [index, done, total, output_tokens, elapsed]})
def on_level(run):
    emit({"level": {"duration": run.duration, "outcomes": [dataclasses.astuple(o) for o in run.outcomes]}})
target = Target(**ARGS["target"])
prompts = [Prompt(*p) for p in ARGS["prompts"]]
levels = [Level(c, math.inf if r is None else r) for c, r in ARGS["levels"]]
try:
    run_sweep(target, prompts, levels, ARGS["ignore_eos"], RunControl(on_progress=on_progress, on_level=on_level),
              warmup=ARGS["warmup"], seed=ARGS["seed"])
    emit({"end": True})
except BaseException:
    import traceback
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)
os._exit(0)  # not a normal exit: the thread still reading stdin would abort the interpreter's shutdown
'''


class VmRunFailed(Exception):
    """The run on the VM did not produce results; the message carries its error output."""


# stream(command, stdin, on_line, cancel) -> (exit code, stderr): runs the command over SSH, calls on_line with each
# line of its stdout as it arrives, and closes the channel as soon as ``cancel`` is set.
StreamCommand = Callable[[str, bytes, Callable[[str], None], threading.Event], tuple[int, str]]
Progress = Callable[[int, int, int, int, float], None]  # as RunControl.on_progress


def script(target: Target, prompts: Sequence[Prompt], levels: Sequence[Level], ignore_eos: bool, warmup: int,
           seed: int) -> bytes:
    """The line the VM's loader executes: the client's sources, the arguments, and a few lines that call it."""
    sources = [(name, path.read_text(encoding="utf-8")) for name, path in _MODULES]
    args = {"target": {"base_url": VM_BASE_URL, "model": target.model, "api_key": target.api_key,
                       "endpoint": target.endpoint},
            "prompts": [[p.text, p.output_len, p.input_len] for p in prompts],
            "levels": [[lv.max_concurrency, None if math.isinf(lv.request_rate) else lv.request_rate]
                       for lv in levels],
            "ignore_eos": ignore_eos, "warmup": warmup, "seed": seed}
    program = (f"import json\nSOURCES = {sources!r}\nARGS = json.loads({json.dumps(args)!r})\n"
               f"PROGRESS_EVERY_S = {PROGRESS_EVERY_S!r}\n" + _BOOTSTRAP)
    return f"exec(compile({program!r}, 'maider-benchmark', 'exec'))\n".encode()


def level_run(level: Level, item: dict[str, Any]) -> LevelRun:
    """One level's JSON from the VM back into a LevelRun, ready for the same summaries as a tunnel run."""
    outcomes = [RequestOutcome(bool(o[0]), int(o[1]), int(o[2]), float(o[3]), float(o[4]),
                               tuple(float(x) for x in o[5]), float(o[6]), str(o[7])) for o in item["outcomes"]]
    return LevelRun(level, outcomes, float(item["duration"]))


class _Reader:
    """Turns the VM's lines into progress calls and finished levels, in the order they come."""

    def __init__(self, levels: Sequence[Level], on_progress: Progress | None,
                 on_level: Callable[[LevelRun], None] | None) -> None:
        self.levels, self.on_progress, self.on_level = levels, on_progress, on_level
        self.runs: list[LevelRun] = []
        self.ended = False
        self.noise: list[str] = []  # lines that are not the program's messages (a warning printed by a library)

    def __call__(self, line: str) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            self.noise = [*self.noise[-4:], line[:300]]
            return
        if "progress" in message and self.on_progress:
            index, done, total, output_tokens, elapsed = message["progress"]
            self.on_progress(int(index), int(done), int(total), int(output_tokens), float(elapsed))
        elif "level" in message and len(self.runs) < len(self.levels):
            run = level_run(self.levels[len(self.runs)], message["level"])
            self.runs.append(run)
            if self.on_level:
                self.on_level(run)
        elif message.get("end"):
            self.ended = True


def run_on_vm(stream: StreamCommand, target: Target, prompts: Sequence[Prompt], levels: Sequence[Level],
              ignore_eos: bool, warmup: int, seed: int, on_progress: Progress | None = None,
              on_level: Callable[[LevelRun], None] | None = None,
              cancel: threading.Event | None = None) -> list[LevelRun]:
    """Run the sweep on the VM with live progress; each level reaches ``on_level`` as it ends.

    Raises Cancelled (with the finished levels) when ``cancel`` is set, VmRunFailed when the program failed.
    """
    cancel = cancel or threading.Event()
    reader = _Reader(levels, on_progress, on_level)
    code, stderr = stream(CMD_RUN_BENCHMARK, script(target, prompts, levels, ignore_eos, warmup, seed), reader,
                          cancel)
    if cancel.is_set() and not reader.ended:
        raise Cancelled(reader.runs)
    if code != 0 or not reader.ended:
        last = (stderr.strip().splitlines() or reader.noise or [f"exit status {code}"])[-1]
        raise VmRunFailed(f"the benchmark on the VM failed: {last[:300]}")
    return reader.runs
