"""``maider benchmark``: measure a session (or any OpenAI-compatible server) as ``vllm bench serve`` does.

The run happens in the server, so the panel shows it live and stores it beside every other run; this command
starts it, draws its progress, prints the results and writes them to a file. Ctrl-C cancels the run cleanly.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from app.cli.client import MaiderClient, connect, resolve_name

POLL_S = 0.5
BAR_WIDTH = 24
FINISHED = {"done", "failed", "cancelled"}
OUTPUT_SUFFIXES = (".json", ".csv")


def _levels_text(value: str) -> str:
    return ",".join(part.strip() for part in value.split(",") if part.strip())


def _progress_line(run: dict[str, Any]) -> str:
    progress = run.get("progress") or {}
    levels = run["settings"].get("concurrency") or []
    level = int(progress.get("level", 0))
    done, total = int(progress.get("done", 0)), int(progress.get("total") or run["settings"].get("num_prompts", 0))
    filled = int(BAR_WIDTH * done / total) if total else 0
    where = f"concurrency {levels[level % len(levels)]}" if levels else "rate sweep"
    count = progress.get("levels") or max(1, len(levels))
    return (f"\r  level {level + 1}/{count} ({where}) [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] "
            f"{done}/{total} requests  {progress.get('output_tokens_per_s', 0.0):,.0f} tok/s   ")


def _ms(value: Any) -> str:
    return f"{value:,.1f}" if isinstance(value, (int, float)) else "-"


def print_results(levels: list[dict[str, Any]]) -> None:
    """The table at the end: one line per level (times in ms; TPOT excludes the first token, as vLLM's)."""
    header = (f"{'conc':>5} {'rate':>6} {'ok':>5} {'fail':>4} {'req/s':>7} {'out tok/s':>10} {'TTFT p50':>9} "
              f"{'TTFT p99':>9} {'TPOT p50':>9} {'ITL p50':>8} {'ITL p99':>8} {'E2EL p50':>9} {'$/1M out':>9}")
    click.echo(header)
    for lv in levels:
        cost = lv.get("cost_per_1m_output_tokens")
        click.echo(f"{lv['max_concurrency'] or '-':>5} {lv['request_rate']!s:>6} {lv['completed']:>5} "
                   f"{lv['failed']:>4} {lv['request_throughput']:>7.2f} {lv['output_throughput']:>10,.1f} "
                   f"{_ms(lv['p50_ttft_ms']):>9} {_ms(lv['p99_ttft_ms']):>9} {_ms(lv['p50_tpot_ms']):>9} "
                   f"{_ms(lv['p50_itl_ms']):>8} {_ms(lv['p99_itl_ms']):>8} {_ms(lv['p50_e2el_ms']):>9} "
                   f"{('$%.3f' % cost) if cost else '-':>9}")
    click.echo("times in ms; TPOT = (latency - TTFT) / (output tokens - 1): it excludes the first token "
               "(GuideLLM's includes it); ITL pools every gap between streamed chunks")


def _write_output(client: MaiderClient, run_id: int, path: Path) -> None:
    if path.suffix.lower() == ".json":
        results = client.get(f"/benchmarks/{run_id}/results.json")
        path.write_text(json.dumps(results, indent=2) + "\n")
    else:
        path.write_text(_csv_text(client, run_id))
    click.echo(f"wrote {path}")


def _csv_text(client: MaiderClient, run_id: int) -> str:
    """One row per level: the JSON's scalars (the API client reads JSON, so the CSV is built from it here)."""
    import csv
    import io

    rows = [{k: v for k, v in level.items() if not isinstance(v, list)}
            for level in client.get(f"/benchmarks/{run_id}/results.json")]
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in row.items()} for row in rows)
    return out.getvalue()


def _follow(client: MaiderClient, run_id: int) -> dict[str, Any]:
    """Draw progress until the run ends; Ctrl-C asks the server to cancel and waits for it."""
    cancelled = False
    while True:
        try:
            run = client.get(f"/benchmarks/{run_id}")
            if run["status"] in FINISHED:
                click.echo("", err=True)
                return run
            click.echo(_progress_line(run), nl=False, err=True)
            time.sleep(POLL_S)
        except KeyboardInterrupt:
            if cancelled:
                raise
            cancelled = True
            click.echo("\n  cancelling (finished levels are kept)...", err=True)
            client.post(f"/benchmarks/{run_id}/cancel")


@click.command()
@click.argument("name", required=False)
@click.option("--concurrency", default=None,
              help="Levels of concurrent requests, comma-separated; each level sends --num-prompts requests "
                   "[default: 1,2,4,8; none with --request-rate].")
@click.option("--num-prompts", type=click.IntRange(1, 10_000), default=32, show_default=True,
              help="Requests at each level.")
@click.option("--input-len", type=click.IntRange(1, 131_072), default=1024, show_default=True,
              help="Prompt tokens (random dataset).")
@click.option("--output-len", type=click.IntRange(1, 131_072), default=None,
              help="Output tokens: exact for random prompts (ignore_eos) [default: 128; a ShareGPT file's own "
                   "reply lengths].")
@click.option("--dataset", default="random", show_default=True,
              help="'random', or a ShareGPT-format JSON file (first turn as prompt, reply length as max tokens).")
@click.option("--request-rate", default="", help="Requests per second (Poisson arrivals); comma-separated to sweep.")
@click.option("--goodput", default="", help="Service-level limits in ms, e.g. ttft:500,tpot:50,e2el:10000.")
@click.option("--endpoint", type=click.Choice(["completions", "chat"]), default="completions", show_default=True)
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write results: FILE.json (vllm --save-result keys, one object per level) or FILE.csv.")
@click.option("--on-vm", is_flag=True,
              help="Run the client on the VM (inside the vLLM container): figures without the tunnel and network.")
@click.option("--base-url", default="", help="Measure another OpenAI-compatible server instead of a session.")
@click.option("--api-key", default="", envvar="MAIDER_BENCHMARK_API_KEY", help="Its API key (with --base-url).")
@click.option("--model", default="", help="Its served model name (with --base-url).")
def benchmark(name: str | None, concurrency: str | None, num_prompts: int, input_len: int, output_len: int | None,
              dataset: str, request_rate: str, goodput: str, endpoint: str, output: Path | None, on_vm: bool,
              base_url: str, api_key: str, model: str) -> None:
    """Benchmark a session's vLLM through its tunnel: TTFT, TPOT, ITL, E2EL and throughput per level."""
    if output is not None and output.suffix.lower() not in OUTPUT_SUFFIXES:
        raise click.BadParameter("write FILE.json or FILE.csv", param_hint="-o")
    body: dict[str, Any] = {"num_prompts": num_prompts, "input_len": input_len, "endpoint": endpoint}
    if output_len is not None:
        body["output_len"] = output_len
    if concurrency is not None and _levels_text(concurrency):
        body["concurrency"] = _levels_text(concurrency)
    if request_rate:
        body["request_rate"] = _levels_text(request_rate)
    if goodput:
        body["goodput"] = goodput
    if dataset != "random":
        path = Path(dataset).expanduser().resolve()
        if not path.is_file():
            raise click.BadParameter(f"{dataset} is not a file", param_hint="--dataset")
        body["dataset"] = str(path)
    if on_vm:
        body["where"] = "vm"
    if base_url:
        if name or on_vm:
            raise click.UsageError("--base-url measures another server from here: no session NAME, no --on-vm")
        body.update(base_url=base_url, model=model or None, api_key=api_key or None)
        body = {k: v for k, v in body.items() if v is not None}
    else:
        body["session"] = resolve_name(name)
    client = connect()
    run = client.post("/benchmarks", body)
    click.echo(f"benchmark #{run['id']}: {run['title']}  (Ctrl-C cancels)", err=True)
    run = _follow(client, run["id"])
    if run["levels"]:
        print_results(run["levels"])
    if output is not None and run["levels"]:
        _write_output(client, run["id"], output)
    if run["status"] == "cancelled":
        click.echo(f"benchmark #{run['id']} cancelled", err=True)
        sys.exit(130)
    if run["status"] != "done":
        raise click.ClickException(f"benchmark #{run['id']} {run['status']}: {run.get('error') or ''}".strip())


commands = [benchmark]
