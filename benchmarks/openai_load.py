"""A bounded load test of the OpenAI-compatible endpoint: `prompttune serve` on SmolLM2-135M-Instruct
with eight prompts (four soft prompts, four prefixes) in its registry, on loopback, and
`--clients` concurrent streaming clients (OpenAI's Python client), each sending `--requests`
completions to prompts in turn, at most `--new-tokens` tokens each (greedy), first against a server
with `--batching static`, then against one with `--batching continuous`.

Reports for each requests per second, time to first token and end-to-end latency (p50 and p99), new
tokens per second (as `usage` counts them), the errors (the target is none), and the ratios.

    python -m benchmarks.openai_load           # a few minutes on 2 quiet CPU cores
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import environment, write_results


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def make_registry(model: str, root: Path, count: int) -> list[str]:
    from prompttune import Backbone, PromptModel, Registry, save_prompt
    from prompttune.tasks import GenerationConfig

    backbone = Backbone.from_pretrained(model)
    registry = Registry(root / "registry")
    names = []
    for i in range(count):
        method, options = (
            ("soft_prompt", {"num_virtual_tokens": 20})
            if i % 2 == 0
            else ("prefix", {"num_virtual_tokens": 10, "hidden_size": 64})
        )
        name = f"p{i}-{method}"
        model_ = PromptModel.create(backbone, method, GenerationConfig(max_target_length=64), options, seed=i)
        registry.push(save_prompt(model_, root / name), name)
        names.append(name)
    return names


async def client_loop(
    url: str, token: str, names: list[str], offset: int, requests: int, new_tokens: int, results: list, errors: list
) -> None:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url + "/v1", api_key=token, max_retries=0, timeout=600)
    for r in range(requests):
        name = names[(offset + r) % len(names)]
        start = time.perf_counter()
        first = None
        pieces = 0
        try:
            stream = await client.completions.create(
                model=name,
                prompt="name[The Eagle], eatType[coffee shop], food[Japanese], area[riverside]",
                max_tokens=new_tokens,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
            tokens = 0
            async for chunk in stream:
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
                if chunk.choices and chunk.choices[0].text:
                    pieces += 1
                    if first is None:
                        first = time.perf_counter() - start
            results.append(
                {
                    "ttft": first if first is not None else time.perf_counter() - start,
                    "latency": time.perf_counter() - start,
                    "pieces": pieces,
                    "tokens": tokens,
                }
            )
        except Exception as error:
            errors.append(f"{type(error).__name__}: {error}")
    await client.close()


def serve_and_load(args, root: Path, names: list[str], batching: str) -> dict:
    """A server with `--batching batching`, the clients' requests against it, and their summary."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "load-test"
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prompttune",
            "serve",
            "--model",
            args.model,
            "--registry",
            str(root / "registry"),
            "--port",
            str(port),
            "--token",
            token,
            "--log-level",
            "warning",
            "--max-request-tokens",
            str(max(8192, args.new_tokens * 2)),
            "--batching",
            batching,
        ],
        stdout=open(root / f"server-{batching}.log", "w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PROMPTTUNE_TOKEN": ""},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        from prompttune.serving.client import Client

        with Client(url) as probe:
            probe.wait_ready(timeout=600, process=server)
        results, errors = [], []

        async def run():
            await asyncio.gather(
                *(
                    client_loop(url, token, names, c, args.requests, args.new_tokens, results, errors)
                    for c in range(args.clients)
                )
            )

        start = time.perf_counter()
        asyncio.run(run())
        seconds = time.perf_counter() - start
    finally:
        server.terminate()
        server.wait(timeout=60)
    total = args.clients * args.requests
    ttft = [r["ttft"] for r in results]
    latency = [r["latency"] for r in results]
    summary = {
        "requests": total,
        "completed": len(results),
        "errors": len(errors),
        "seconds": seconds,
        "requests_per_second": len(results) / seconds,
        "tokens_per_second": sum(r["tokens"] for r in results) / seconds,
        "ttft_p50": percentile(ttft, 0.5) if ttft else None,
        "ttft_p99": percentile(ttft, 0.99) if ttft else None,
        "latency_p50": percentile(latency, 0.5) if latency else None,
        "latency_p99": percentile(latency, 0.99) if latency else None,
        "mean_pieces": statistics.fmean(r["pieces"] for r in results) if results else None,
    }
    return {"summary": summary, "errors": errors}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4, help="per client")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    root = Path(tempfile.mkdtemp(prefix="openai-load-"))
    names = make_registry(args.model, root, args.prompts)
    runs = {mode: serve_and_load(args, root, names, mode) for mode in ("static", "continuous")}
    lines = [
        "# The OpenAI-compatible endpoint under load: SmolLM2-135M-Instruct",
        "",
        (
            f"`prompttune serve` on loopback with {args.prompts} prompts (half soft prompts, half prefixes); "
            f"{args.clients} concurrent streaming clients (OpenAI's Python client), {args.requests} completions each "
            f"to the prompts in turn, {args.new_tokens} new tokens at most, greedy; the same requests against "
            "`--batching static` (a request waits for the batch decoding before it) and `--batching continuous` "
            "(it joins that batch at its next step), one server after the other. 2 CPU cores."
        ),
        "",
        "Command: `python -m benchmarks.openai_load`",
        "",
        (
            "| batching | requests | errors | seconds | requests / s | new tokens / s | TTFT p50 | TTFT p99 | "
            "latency p50 | latency p99 |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode, run in runs.items():
        summary = run["summary"]
        lines.append(
            f"| {mode} | {summary['requests']} | {summary['errors']} | {summary['seconds']:.1f} | "
            f"{summary['requests_per_second']:.2f} | {summary['tokens_per_second']:.1f} | "
            f"{summary['ttft_p50'] or 0:.2f} s | {summary['ttft_p99'] or 0:.2f} s | "
            f"{summary['latency_p50'] or 0:.2f} s | {summary['latency_p99'] or 0:.2f} s |"
        )
    static, continuous = runs["static"]["summary"], runs["continuous"]["summary"]
    ratios = {
        "requests_per_second": continuous["requests_per_second"] / static["requests_per_second"],
        "ttft_p50": static["ttft_p50"] / continuous["ttft_p50"],
        "latency_p50": static["latency_p50"] / continuous["latency_p50"],
        "latency_p99": static["latency_p99"] / continuous["latency_p99"],
    }
    lines += [
        "",
        (
            f"Continuous against static batching: {ratios['requests_per_second']:.2f}x the requests per second, "
            f"time to first token p50 {ratios['ttft_p50']:.2f}x shorter, latency p50 {ratios['latency_p50']:.2f}x "
            f"and p99 {ratios['latency_p99']:.2f}x shorter."
        ),
    ]
    errors = [f"{mode}: {e}" for mode, run in runs.items() for e in run["errors"]]
    if errors:
        lines += ["", "Errors:", ""] + [f"- {e}" for e in errors[:10]]
    markdown = "\n".join(lines) + "\n"
    print(markdown)
    if not args.no_write:
        write_results(
            "openai_load",
            {
                "args": vars(args),
                "environment": environment(),
                "runs": {mode: run["summary"] for mode, run in runs.items()},
                "ratios": ratios,
                "errors": errors,
            },
            markdown,
        )


if __name__ == "__main__":
    main()
