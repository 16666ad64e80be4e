"""A soak and load test of `prompttune serve` on loopback: SmolLM2-135M-Instruct with four prompts in
its registry (two soft prompts, two prefixes, over its chat template and an instruction), decoded
in the continuous batch, and `--clients`
streaming clients for `--minutes`, each drawing what it sends next with the run's seed:

- a good request (eight in ten): a streamed completion of at most `--new-tokens` tokens to one of the
  prompts, read to its `data: [DONE]`;
- a client that leaves (one in ten): the same request, closed after the first piece of text;
- a hostile request (one in ten), one of four kinds, each with the refusal it must get: four stop
  strings of 250,000 characters (400), `n` of a million (400), a lone surrogate in the prompt (400),
  and a body that declares 1,000 bytes and sends 10 (408 after the server's `--body-timeout`).

Reported: requests served, outcomes by kind (the target: no error on a good request, every hostile
one refused as it should be), p50/p99 latency of good requests in the first and the last minute
(target: the last within 1.2x the first), the server's resident memory over time (target: no growth
beyond 5% after the warm-up, the first two minutes of ten), and the sequences left in the continuous batch once every
client has gone (target: none). Loopback only; the run stops by itself.

    python -m benchmarks.soak                  # 10 minutes, 16 clients (about 12 minutes in all)
    python -m benchmarks.soak --minutes 1 --clients 4 --name soak_short
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.common import environment, write_results
from benchmarks.openai_load import percentile

TOKEN = "soak-test"
SOURCES = [
    "name[The Eagle], eatType[coffee shop], food[French], area[riverside]",
    "name[The Mill], eatType[pub], food[Italian], priceRange[cheap]",
    "name[Zizzi], eatType[restaurant], customer rating[5 out of 5], familyFriendly[yes]",
    "name[Aromi], food[Japanese], area[city centre], near[The Rice Boat]",
]
HOSTILE = ("long_stops", "huge_n", "lone_surrogate", "slow_body")
EXPECTED = {"long_stops": 400, "huge_n": 400, "lone_surrogate": 400, "slow_body": 408}


def make_registry(model: str, root: Path) -> list[str]:
    """Two soft prompts and two prefixes over the instruct model's chat template and an instruction,
    so that answers run to a sentence or more rather than ending at once."""
    from prompttune import Backbone, PromptModel, Registry, save_prompt
    from prompttune.tasks import GenerationConfig

    backbone = Backbone.from_pretrained(model)
    registry = Registry(root / "registry")
    config = GenerationConfig(
        max_target_length=64, chat=True, instruction="Describe this restaurant to a visitor in two or three sentences."
    )
    names = []
    made = [
        ("soft_prompt", {"num_virtual_tokens": 20}),
        ("prefix", {"num_virtual_tokens": 10}),
        ("soft_prompt", {"num_virtual_tokens": 10}),
        ("prefix", {"num_virtual_tokens": 5}),
    ]
    for i, (method, options) in enumerate(made):
        name = f"p{i}-{method}"
        registry.push(save_prompt(PromptModel.create(backbone, method, config, options, seed=i), root / name), name)
        names.append(name)
    return names


async def good(client, name: str, source: str, new_tokens: int, leave: bool) -> dict:
    body = {
        "model": name,
        "prompt": source,
        "max_tokens": new_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    events, reason, tokens = 0, None, None
    async with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            return {"status": response.status_code, "error": (await response.aread()).decode()[:200]}
        async for line in response.aiter_lines():
            if line == "data: [DONE]":
                return {
                    "status": 200,
                    "done": True,
                    "reason": reason,
                    "latency": time.perf_counter() - start,
                    "events": events,
                    "tokens": tokens,
                }
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    return {"status": 200, "error": chunk["error"]["message"][:200]}
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
                if not chunk["choices"]:
                    continue
                events += 1
                reason = chunk["choices"][0].get("finish_reason") or reason
                if leave:  # gone after the first piece of text
                    return {"status": 200, "left": True}
    return {"status": 200, "error": "the stream ended without data: [DONE]"}


async def slow_body(url: str) -> dict:
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b'\r\nContent-Length: 1000\r\n\r\n{"model": '
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 120)
        return {"status": int(status_line.split()[1]) if status_line else None}
    finally:
        writer.close()


async def hostile(client, url: str, name: str, kind: str) -> dict:
    if kind == "slow_body":
        return await slow_body(url)
    if kind == "long_stops":
        body = json.dumps(
            {"model": name, "prompt": SOURCES[0], "stream": True, "stop": [c * 250_000 for c in "wxyz"]}
        ).encode()
    elif kind == "huge_n":
        body = json.dumps({"model": name, "prompt": SOURCES[0], "n": 1_000_000, "stream": True}).encode()
    else:
        body = b'{"model": "%s", "prompt": "a\\udfff", "stream": true}' % name.encode()
    response = await client.post("/v1/completions", content=body, headers={"Content-Type": "application/json"})
    return {"status": response.status_code}


async def client_loop(index: int, url: str, names: list[str], args, end: float, records: list) -> None:
    import httpx

    rng = random.Random(args.seed * 1000 + index)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=300) as client:
        r = 0
        while time.monotonic() < end:
            name, source = names[(index + r) % len(names)], SOURCES[(index * 7 + r) % len(SOURCES)]
            draw = rng.random()
            kind = "leave" if draw < 0.1 else rng.choice(HOSTILE) if draw < 0.2 else "good"
            started = time.monotonic()
            try:
                if kind in HOSTILE:
                    outcome = await hostile(client, url, name, kind)
                else:
                    outcome = await good(client, name, source, args.new_tokens, leave=kind == "leave")
            except Exception as error:
                outcome = {"error": f"{type(error).__name__}: {error}"[:200]}
            records.append({"client": index, "kind": kind, "started": started, **outcome})
            r += 1


def sample_memory(pid: int, start: float, stop: threading.Event, samples: list) -> None:
    import psutil

    process = psutil.Process(pid)
    while not stop.is_set():
        samples.append((time.monotonic() - start, process.memory_info().rss))
        stop.wait(5)


def active_sequences(url: str) -> dict:
    import httpx

    text = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).text
    found = dict(re.findall(r'prompttune_decoding_sequences_active\{state="(\w+)"\} ([0-9.]+)', text))
    return {state: float(value) for state, value in found.items()}


def judge(records: list, start: float, minutes: float) -> dict:
    """Outcomes by kind, latency by minute, and the targets."""
    by_kind = {}
    for record in records:
        kind = record["kind"]
        if kind == "good":
            ok = record.get("done") and record.get("reason") in ("stop", "length") and "error" not in record
        elif kind == "leave":
            ok = bool(record.get("left")) or (record.get("done") and "error" not in record)
        else:
            ok = record.get("status") == EXPECTED[kind]
        outcome = "as expected" if ok else (record.get("error") or f"status {record.get('status')}")
        by_kind.setdefault(kind, {}).setdefault(outcome, 0)
        by_kind[kind][outcome] += 1
    good = [r for r in records if r["kind"] == "good" and r.get("done")]

    def window(first: float, last: float) -> dict:
        latencies = [r["latency"] for r in good if first <= r["started"] - start < last]
        if not latencies:
            return {"requests": 0}
        return {"requests": len(latencies), "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99)}

    total = minutes * 60
    return {"by_kind": by_kind, "first_minute": window(0, 60), "last_minute": window(total - 60, total)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--body-timeout", type=float, default=10.0, help="the server's --body-timeout")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="soak")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="prompttune-soak-"))
    names = make_registry(args.model, root)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(root / "server.log", "w")
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
            TOKEN,
            "--log-level",
            "warning",
            "--body-timeout",
            str(args.body_timeout),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PROMPTTUNE_TOKEN": ""},
    )
    url = f"http://127.0.0.1:{port}"
    records, memory = [], []
    stop = threading.Event()
    try:
        from prompttune.serving.client import Client

        with Client(url) as probe:
            probe.wait_ready(timeout=600, process=server)
        start = time.monotonic()
        sampler = threading.Thread(target=sample_memory, args=(server.pid, start, stop, memory), daemon=True)
        sampler.start()
        end = start + args.minutes * 60

        async def run():
            await asyncio.gather(*(client_loop(c, url, names, args, end, records) for c in range(args.clients)))

        asyncio.run(run())
        seconds = time.monotonic() - start
        time.sleep(2)  # a step or two for the last leavers' sequences to go
        left = active_sequences(url)
        stop.set()
        sampler.join()
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=60)
    judged = judge(records, start, args.minutes)
    warmup = min(120.0, args.minutes * 60 / 5)  # two minutes of a 10-minute run
    warm = [rss for t, rss in memory if t >= warmup] or [rss for _, rss in memory]
    growth = (max(warm) - warm[0]) / warm[0]
    first, last = judged["first_minute"], judged["last_minute"]
    ratio = {q: last[q] / first[q] for q in ("p50", "p99")} if first.get("requests") and last.get("requests") else None
    good_errors = sum(n for outcome, n in judged["by_kind"].get("good", {}).items() if outcome != "as expected")
    hostile_wrong = sum(
        n for kind in HOSTILE for outcome, n in judged["by_kind"].get(kind, {}).items() if outcome != "as expected"
    )
    log.close()
    tracebacks = (root / "server.log").read_text().count("Traceback")
    targets = {
        "no error on a good request": good_errors == 0,
        "every hostile request refused as it should be": hostile_wrong == 0,
        "last minute's p50 and p99 within 1.2x the first's": ratio is not None and max(ratio.values()) <= 1.2,
        "resident memory grows at most 5% after the warm-up": growth <= 0.05,
        "no sequence left in the batch": left.get("decoding", 1) == 0 and left.get("waiting", 1) == 0,
        "no traceback in the server log": tracebacks == 0,
    }
    payload = {
        "setting": {**vars(args), "environment": environment()},
        "requests": len(records),
        "seconds": seconds,
        **judged,
        "latency_ratio_last_to_first": ratio,
        "memory_mb": [(round(t), rss / 2**20) for t, rss in memory],
        "memory_growth_after_warmup": growth,
        "left_in_batch": left,
        "server_tracebacks": tracebacks,
        "targets": targets,
    }
    lines = [
        f"# Soak: {args.clients} streaming clients for {args.minutes:g} minutes on {args.model}",
        "",
        (
            f"`python -m benchmarks.soak --clients {args.clients} --minutes {args.minutes:g} --name {args.name}`"
            f" (loopback; {environment()['threads']} CPU threads)"
        ),
        "",
        f"{len(records)} requests in {seconds:.0f} s.",
        "",
        "| kind | outcome | requests |",
        "|---|---|---|",
    ]
    for kind, outcomes in sorted(judged["by_kind"].items()):
        for outcome, n in sorted(outcomes.items()):
            lines.append(f"| {kind} | {outcome} | {n} |")
    served = [r for r in records if r["kind"] == "good" and r.get("tokens") is not None]
    mean_tokens = sum(r["tokens"] for r in served) / max(len(served), 1)
    payload["mean_tokens_per_good_request"] = mean_tokens
    lines += [
        "",
        (
            f"A good request decoded {mean_tokens:.1f} tokens on average (at most {args.new_tokens}); a leaving "
            "client closed its stream after the first piece of text, or had its whole answer first."
        ),
        "",
        "| good requests | served | p50 latency (s) | p99 latency (s) |",
        "|---|---|---|---|",
    ]
    for title, w in (("first minute", first), ("last minute", last)):
        lines.append(
            f"| {title} | {w.get('requests', 0)} | {w.get('p50', float('nan')):.2f} | {w.get('p99', float('nan')):.2f} |"
        )
    if ratio:
        lines.append(f"\nLast minute against the first: p50 x{ratio['p50']:.2f}, p99 x{ratio['p99']:.2f}.")
    mb = [rss / 2**20 for _, rss in memory]
    lines += [
        (
            f"\nServer resident memory: {mb[0]:.0f} MB at the start, {warm[0] / 2**20:.0f} MB after {warmup:.0f} s of warm-up, "
            f"{max(warm) / 2**20:.0f} MB at most after that ({growth:+.1%}), {mb[-1]:.0f} MB at the end "
            f"({len(memory)} samples, every 5 s)."
        ),
        (
            f"Sequences in the continuous batch once every client had gone: {left.get('decoding')} decoding, "
            f"{left.get('waiting')} waiting. Tracebacks in the server log: {tracebacks}."
        ),
        "",
        "| target | met |",
        "|---|---|",
    ]
    lines += [f"| {target} | {'yes' if met else 'no'} |" for target, met in targets.items()]
    write_results(args.name, payload, "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
