"""The streaming benchmark client against the fake vLLM over real HTTP (waitress, SSE)."""
import math
import random

import pytest

from app.benchmark.client import (Cancelled, Level, RunControl, Target, WarmupFailed, _arrival_gaps, request_body,
                                  run_sweep)
from app.benchmark.prompts import DatasetError, Prompt, random_prompts, sharegpt_prompts
from app.domain.benchmark_stats import summarize
from app.simulator.fake_vllm import FakeVllmConfig, FakeVllmServer

KEY = "sk-bench-test"


@pytest.fixture
def vllm():
    server = FakeVllmServer(FakeVllmConfig(model_id="org/model", served_name="coder", api_key=KEY,
                                           ttft_s=0.01, itl_s=0.002))
    yield server
    server.stop()


def _target(server, **kw) -> Target:
    return Target(f"http://127.0.0.1:{server.port}", kw.pop("model", "coder"), kw.pop("api_key", KEY), **kw)


def test_a_sweep_measures_every_level_with_token_counts_from_usage(vllm):
    prompts = random_prompts(6, input_len=40, output_len=12)
    runs = run_sweep(_target(vllm), prompts, [Level(1), Level(4)], ignore_eos=True)
    assert [r.level.max_concurrency for r in runs] == [1, 4]
    for run in runs:
        assert len(run.outcomes) == 6 and all(o.success for o in run.outcomes)
        assert all(o.output_len == 12 for o in run.outcomes)  # ignore_eos: exactly max_tokens
        assert all(len(o.itl) == 11 for o in run.outcomes)  # one gap per token chunk after the first
        assert all(o.prompt_len == 40 for o in run.outcomes)  # the server's count, 4 characters a token
        assert all(o.ttft >= 0.01 for o in run.outcomes)
        result = summarize(run.outcomes, run.duration)
        assert result["completed"] == 6 and result["total_output_tokens"] == 72
    serial = runs[0].outcomes  # concurrency 1: each request starts after the previous one ended
    assert all(later.started_at >= earlier.started_at + earlier.latency
               for earlier, later in zip(serial, serial[1:]))


def test_chat_counts_tokens_from_usage_not_chunks(vllm):
    """The chat stream has an extra role chunk: counting chunks would say 9 tokens, usage says 8."""
    runs = run_sweep(_target(vllm, endpoint="chat"), random_prompts(2, 10, 8), [Level(2)], ignore_eos=True)
    assert all(o.output_len == 8 and len(o.itl) == 8 for o in runs[0].outcomes)


def test_without_ignore_eos_the_server_may_stop_early(vllm):
    runs = run_sweep(_target(vllm), [Prompt("hello there", 200, 3)], [Level(1)], ignore_eos=False, warmup=0)
    assert runs[0].outcomes[0].output_len == 20  # the fake's natural reply length


def test_wrong_key_fails_the_warmup_with_the_servers_reason(vllm):
    with pytest.raises(WarmupFailed, match="HTTP 401"):
        run_sweep(_target(vllm, api_key="wrong"), random_prompts(2, 5, 4), [Level(1)], ignore_eos=True)


def test_wrong_model_is_a_failed_request_not_a_crash(vllm):
    runs = run_sweep(_target(vllm, model="nope"), random_prompts(2, 5, 4), [Level(1)], ignore_eos=True, warmup=0)
    assert [o.success for o in runs[0].outcomes] == [False, False]
    assert "does not exist" in runs[0].outcomes[0].error
    assert summarize(runs[0].outcomes, runs[0].duration)["failed"] == 2


def test_cancel_stops_the_sweep_and_keeps_finished_levels(vllm):
    control = RunControl()

    def progress(level, done, total, tokens, elapsed):
        if level == 1 and done >= 1:
            control.cancel.set()

    control.on_progress = progress
    with pytest.raises(Cancelled) as caught:
        run_sweep(_target(vllm), random_prompts(4, 5, 30), [Level(4), Level(1), Level(2)], ignore_eos=True,
                  control=control)
    assert [r.level.max_concurrency for r in caught.value.runs] == [4]


def test_request_body_asks_for_usage_and_exact_lengths():
    body = request_body(Target("http://x", "m"), Prompt("hi", 64, 1), ignore_eos=True)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["max_tokens"] == 64 and body["ignore_eos"] is True and body["prompt"] == "hi"


def test_poisson_arrivals_average_one_over_the_rate_and_infinite_rate_sends_at_once():
    gaps = _arrival_gaps(20000, Level(None, request_rate=4.0), random.Random(1))
    assert sum(gaps) / len(gaps) == pytest.approx(0.25, rel=0.03)
    assert _arrival_gaps(3, Level(None, math.inf), random.Random(1)) == [0.0, 0.0, 0.0]


def test_random_prompts_differ_and_have_the_asked_length():
    prompts = random_prompts(3, input_len=50, output_len=7, seed=3)
    assert len({p.text for p in prompts}) == 3
    assert all(len(p.text.split()) == 50 and p.output_len == 7 for p in prompts)
    assert random_prompts(3, 50, 7, seed=3) == prompts  # same seed, same prompts


def test_sharegpt_takes_the_first_turn_and_the_reply_length(tmp_path):
    path = tmp_path / "sg.json"
    path.write_text('[{"conversations": [{"from": "human", "value": "' + "word " * 20 + '"},'
                    ' {"from": "gpt", "value": "' + "x" * 80 + '"}]},'
                    ' {"conversations": [{"from": "human", "value": "hi"}]}]')
    prompts = sharegpt_prompts(path, 3)
    assert len(prompts) == 3 and prompts[0].output_len == 20 and prompts[0].text.startswith("word")
    assert sharegpt_prompts(path, 1, output_len=5)[0].output_len == 5


@pytest.mark.parametrize("content, message", [("{", "not JSON"), ('{"a": 1}', "JSON list"),
                                               ("[]", "no usable conversation")])
def test_bad_sharegpt_files_say_why(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=message):
        sharegpt_prompts(path, 2)
    with pytest.raises(DatasetError, match="cannot read"):
        sharegpt_prompts(tmp_path / "missing.json", 2)


def test_demo_vllm_timing_depends_on_prompt_length_load_and_gpu():
    from app.simulator.fake_vllm import gpu_timing
    ada = FakeVllmConfig(model_id="m", served_name="m", ttft_s=0.05,
                         **gpu_timing("NVIDIA RTX 4000 Ada Generation", 1, 0.02, 3000.0, 0.03))
    assert ada.ttft_for(2048, 1) > ada.ttft_for(16, 1)  # prefill
    assert ada.ttft_for(16, 64) > ada.ttft_for(16, 1) and ada.itl_for(64) > ada.itl_for(1)  # a busier batch
    two_gpus = gpu_timing("NVIDIA RTX 4000 Ada Generation", 2, 0.02, 3000.0, 0.03)
    turing = gpu_timing("Quadro RTX 6000", 1, 0.02, 3000.0, 0.03)
    assert two_gpus["itl_s"] < ada.itl_s and turing["itl_s"] < ada.itl_s
    assert two_gpus["prefill_tokens_per_s"] > ada.prefill_tokens_per_s
