"""`prompttune serve` started for real on a loopback port and called over HTTP: results equal to
running the prompts locally, new versions served without a restart, bad requests answered with 4xx,
a failing request isolated, concurrent clients batched together, the bearer token, the metrics and
the committed OpenAPI schema."""

import json
import os
import threading
from pathlib import Path

import httpx
import pytest
import torch
from conftest import task_config
from servers import TOKEN, perturb, populated_registry, running_server

from prompttune import Backbone, PromptModel, save_prompt
from prompttune.inference.mixed import PromptSet
from prompttune.serving.client import Client, ServerError

TEXTS = ["the movie was great", "a terrible film", "i loved the story", "the plot is dull"]
SOURCES = ["the movie was great", "dull", "the best film of the year"]


@pytest.fixture(scope="module")
def server(model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("serve")
    registry = populated_registry(model_dirs, root)
    with running_server(
        model_dirs["gpt2"],
        registry,
        root / "server.log",
        "--max-batch-size",
        "32",
        "--max-wait-ms",
        "30",
        "--max-inputs",
        "8",
        "--max-chars",
        "200",
    ) as (url, process):
        yield {"url": url, "registry": registry, "root": root, "model_dir": model_dirs["gpt2"], "process": process}


@pytest.fixture
def client(server):
    with Client(server["url"], token=TOKEN) as c:
        yield c


def _local(server, names=("sentiment", "opinion", "describe", "rewrite")) -> PromptSet:
    """Version 1 of each prompt, loaded here onto a model of our own."""
    registry = server["registry"]
    backbone = Backbone.from_pretrained(str(server["model_dir"]))
    return PromptSet.load({f"{n}@1": registry.checkout(f"{n}@1") for n in names}, backbone=backbone)


def test_results_equal_running_the_prompts_locally(server, client):
    local = _local(server)
    for name in ("sentiment", "opinion"):
        got = client.classify(name, TEXTS)
        expected = local.classify([(f"{name}@1", t) for t in TEXTS])
        assert [g["label"] for g in got] == [e["label"] for e in expected]
        for g, e in zip(got, expected):
            for label, p in e["probabilities"].items():
                assert abs(g["probabilities"][label] - p) < 1e-5
    for name in ("describe", "rewrite"):
        assert client.generate(name, SOURCES) == local.generate([(f"{name}@1", s) for s in SOURCES])
        assert client.generate(name, SOURCES, num_beams=2, num_return_sequences=2) == local.generate(
            [(f"{name}@1", s) for s in SOURCES], num_beams=2, num_return_sequences=2
        )
    assert {p["name"] for p in client.prompts()} == {"sentiment", "opinion", "describe", "rewrite", "for-bert"}
    assert client.health()["status"] == "ok"


def test_a_new_version_is_served_without_restart(server, client, model_dirs):
    registry, root = server["registry"], server["root"]
    before = client.classify("sentiment", TEXTS)
    backbone = Backbone.from_pretrained(str(server["model_dir"]))
    torch.manual_seed(7)
    newer = perturb(PromptModel.create(backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 5}))
    version = registry.push(save_prompt(newer, root / "sentiment-v2"), "sentiment")["version"]
    registry.set_alias("sentiment@1", "stable")
    response = httpx.post(
        server["url"] + "/v1/classify",
        json={"prompt": "sentiment", "inputs": TEXTS},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.json()["prompt"] == f"sentiment@{version}"
    assert response.json()["results"] != before
    assert client.classify("sentiment@stable", TEXTS) == before


def test_bad_requests_get_4xx_with_a_message(server, client):
    url, auth = server["url"], {"Authorization": f"Bearer {TOKEN}"}
    cases = [
        ({"prompt": "nope", "inputs": ["x"]}, 404, "no prompt named 'nope'"),
        ({"prompt": "sentiment@99", "inputs": ["x"]}, 404, "has no version 99"),
        ({"prompt": "sentiment@canary", "inputs": ["x"]}, 404, "has no alias 'canary'"),
        ({"prompt": "describe", "inputs": ["x"]}, 400, "is a generation prompt"),
        ({"prompt": "for-bert", "inputs": ["x"]}, 409, "made for base model"),
        ({"prompt": "sentiment", "inputs": ["x"] * 9}, 413, "at most 8 per request"),
        ({"prompt": "sentiment", "inputs": ["x" * 201]}, 413, "at most 200"),
    ]
    for body, status, message in cases:
        response = httpx.post(url + "/v1/classify", json=body, headers=auth)
        assert response.status_code == status, (body, response.text)
        assert message in response.json()["detail"], (body, response.text)
    for body in (
        {"prompt": "sentiment"},
        {"prompt": "sentiment", "inputs": []},
        {"prompt": "sentiment", "inputs": ["x"], "extra": 1},
        {"prompt": "describe", "inputs": ["x"], "num_beams": 0},
    ):
        response = httpx.post(
            url + "/v1/classify" if "num_beams" not in body else url + "/v1/generate", json=body, headers=auth
        )
        assert response.status_code == 422, (body, response.text)
    for inputs, where in (
        (["x", "  "], ["body", "inputs", 1]),
        ([{"text": "x", "text_pair": "\n"}], ["body", "inputs", 0, "text_pair"]),
    ):
        response = httpx.post(url + "/v1/classify", json={"prompt": "sentiment", "inputs": inputs}, headers=auth)
        assert response.status_code == 422 and response.json()["detail"] == [
            {
                "loc": where,
                "msg": "the text is empty or only white space",
                "type": "string_pattern_mismatch",
                "input": inputs[1] if where[-1] == 1 else "\n",
            }
        ], response.text
    response = httpx.post(
        url + "/v1/classify", content=b"{not json", headers={**auth, "Content-Type": "application/json"}
    )
    assert response.status_code == 422 and "JSON" in response.text
    with pytest.raises(ServerError) as error:
        client.generate("sentiment", ["x"])
    assert error.value.status == 400 and "use /v1/classify" in error.value.detail


def test_bearer_token(server):
    url = server["url"]
    assert httpx.post(url + "/v1/classify", json={"prompt": "sentiment", "inputs": ["x"]}).status_code == 401
    wrong = httpx.post(
        url + "/v1/classify", json={"prompt": "sentiment", "inputs": ["x"]}, headers={"Authorization": "Bearer nope"}
    )
    assert wrong.status_code == 401 and wrong.json()["detail"] == "missing or wrong bearer token"
    assert httpx.get(url + "/metrics").status_code == 401
    assert httpx.get(url + "/health").status_code == 200  # liveness stays open


def test_a_failing_request_does_not_take_others_down(server, client, model_dirs):
    """A version whose stored file is damaged fails alone, as the server's fault (500) without the
    store's paths; requests batched with it succeed; pushing the artifact again repairs it."""
    registry, root = server["registry"], server["root"]
    backbone = Backbone.from_pretrained(str(server["model_dir"]))
    artifact = save_prompt(
        PromptModel.create(backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 4}), root / "damaged"
    )
    record = registry.push(artifact, "damaged")
    blob = registry.root / "blobs" / record["digest"][:2] / record["digest"]
    os.chmod(blob, 0o644)
    blob.write_bytes(b"damaged")
    results, errors = {}, {}

    def call(name):
        try:
            results[name] = client.classify(name, TEXTS)
        except ServerError as error:
            errors[name] = error

    threads = [threading.Thread(target=call, args=(n,)) for n in ("damaged", "sentiment@1", "opinion")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == {"sentiment@1", "opinion"} and set(errors) == {"damaged"}
    assert errors["damaged"].status == 500 and "damaged" in errors["damaged"].detail
    assert str(server["root"]) not in errors["damaged"].detail
    assert client.health()["status"] == "ok"
    registry.push(artifact, "damaged")  # the same files again: the stored copy is replaced
    assert len(client.classify("damaged@1", TEXTS)) == len(TEXTS)


def test_concurrent_clients_are_batched_together(server, client):
    local = _local(server)
    expected = {name: local.classify([(f"{name}@1", t) for t in TEXTS]) for name in ("sentiment", "opinion")}
    failures, done = [], []

    def worker(k):
        with Client(server["url"], token=TOKEN) as c:
            for i in range(6):
                name = ("sentiment@1", "opinion")[(k + i) % 2]
                got = c.classify(name, TEXTS)
                want = expected[name.split("@")[0]]
                if [g["label"] for g in got] != [w["label"] for w in want]:
                    failures.append((k, i, name))
                done.append(1)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures and len(done) == 48
    metrics = client.metrics()
    assert 'prompttune_predictions_total{label="' in metrics and 'prompt="opinion@1"' in metrics
    assert 'prompttune_requests_total{endpoint="/v1/classify",status="200"}' in metrics


def _metric(text: str, name: str) -> float:
    return float(next(line for line in text.splitlines() if line.startswith(name + " ")).rsplit(" ", 1)[1])


def test_requests_that_arrive_together_share_one_forward(server, tmp_path):
    """Four requests for two prompts, 2 inputs each, on a server whose batches hold 8 rows and wait
    (far longer than the requests take to arrive) for that many: exactly one forward runs, joining
    all four, and each request gets what its prompt gives alone."""
    local = _local(server, names=("sentiment", "opinion"))
    with running_server(
        server["model_dir"],
        server["registry"],
        tmp_path / "server.log",
        "--max-batch-size",
        "8",
        "--max-wait-ms",
        "120000",
        "--max-inputs",
        "2",
    ) as (url, _):
        results = {}

        def worker(k):
            name = ("sentiment@1", "opinion@1")[k % 2]
            with Client(url, token=TOKEN, timeout=300) as c:
                results[k] = (name, c.classify(name, TEXTS[k % 2 * 2 : k % 2 * 2 + 2]))

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with Client(url, token=TOKEN) as c:
            metrics = c.metrics()
    assert _metric(metrics, "prompttune_batch_rows_count") == 1 and _metric(metrics, "prompttune_batch_rows_sum") == 8
    assert _metric(metrics, "prompttune_batch_requests_sum") == 4
    for k, (name, got) in results.items():
        expected = local.classify([(name, t) for t in TEXTS[k % 2 * 2 : k % 2 * 2 + 2]])
        assert [g["label"] for g in got] == [e["label"] for e in expected]


def test_the_committed_openapi_schema_matches_the_server(server):
    assert httpx.get(server["url"] + "/openapi.json").status_code == 401  # behind the server's token
    served = httpx.get(server["url"] + "/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    committed = json.loads((Path(__file__).parent.parent / "docs" / "openapi.json").read_text())
    assert served == committed, "docs/openapi.json is stale: python -m prompttune.serving.server > docs/openapi.json"
    assert set(served["paths"]) == {
        "/v1/classify",
        "/v1/generate",
        "/v1/prompts",
        "/health",
        "/metrics",
        "/v1/models",
        "/v1/completions",
        "/v1/chat/completions",
    }
