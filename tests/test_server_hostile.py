"""`prompttune serve` against hostile and careless clients: oversized bodies (a bounded load test:
/health stays fast), too many inputs, too costly generation, echoes of huge names, inputs that used
to crash the model, and requests generated from the committed OpenAPI schema by schemathesis (no
5xx, every response as the schema says)."""

import json
import socket
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from servers import TOKEN, populated_registry, running_server

AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMITS = (
    "--max-inputs",
    "8",
    "--max-chars",
    "2000",
    "--max-request-tokens",
    "1000",
    "--max-batch-size",
    "32",
    "--max-wait-ms",
    "5",
)
BODY_LIMIT = 8 * (2 * 2000 * 6 + 64) + 65536  # what those limits allow a body: --max-body-bytes' default


@pytest.fixture(scope="module")
def server(model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    registry = populated_registry(model_dirs, root)
    with running_server(model_dirs["gpt2"], registry, root / "server.log", *LIMITS) as (url, process):
        yield {"url": url, "root": root, "registry": registry, "log": root / "server.log"}


def post(server, path, body, **kwargs):
    return httpx.post(server["url"] + path, json=body, headers=AUTH, timeout=60, **kwargs)


def test_an_oversized_body_is_refused_unread(server):
    host, port = server["url"].removeprefix("http://").split(":")
    # Declared too large: answered from the headers, before any byte of the body is sent.
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 12500000\r\n\r\n"
        )
        answer = b""
        while chunk := raw.recv(4096):  # the server closes the connection after its answer
            answer += chunk
        answer = answer.decode()
    assert answer.startswith("HTTP/1.1 413") and "--max-body-bytes" in answer, answer

    # A chunked body cut off at the limit while /health answers: tests/test_promises.py.


def test_counts_are_checked_before_inputs_are_validated(server):
    # 15,000 inputs that are all invalid (numbers): one 413 about the count, not 15,000 errors.
    response = post(server, "/v1/classify", {"prompt": "sentiment", "inputs": [1] * 15000})
    assert response.status_code == 413 and response.json() == {"detail": "15000 inputs; at most 8 per request"}
    response = post(server, "/v1/classify", {"prompt": "sentiment", "inputs": [{"text": "x", "text_pair": "y" * 2001}]})
    assert response.status_code == 413 and "input 0: 2001 characters; at most 2000" in response.json()["detail"]
    assert len(json.dumps({"prompt": "sentiment", "inputs": [1] * 15000})) < BODY_LIMIT


def test_generation_work_is_bounded_by_a_token_budget(server):
    response = post(
        server,
        "/v1/generate",
        {"prompt": "describe", "inputs": ["the movie"] * 8, "num_beams": 16, "max_new_tokens": 100},
    )
    assert response.status_code == 413
    assert response.json()["detail"] == (
        "this request decodes up to 12800 tokens (8 inputs x 16 beams or sequences x "
        "100 new tokens); at most 1000 per request (the server's --max-request-tokens)"
    )
    ok = post(
        server, "/v1/generate", {"prompt": "describe", "inputs": ["the movie"] * 2, "num_beams": 2, "max_new_tokens": 5}
    )
    assert ok.status_code == 200 and len(ok.json()["results"]) == 2


def test_errors_quote_little_and_name_no_server_path(server):
    long_name = "a" * 250
    response = post(server, "/v1/classify", {"prompt": long_name, "inputs": ["x"]})
    assert response.status_code == 400 and len(response.json()["detail"]) < 200, response.text
    huge = "b" * 60000  # over the field's 300 characters, within the body limit
    response = post(server, "/v1/classify", {"prompt": huge, "inputs": ["x"]})
    assert response.status_code == 422 and len(response.content) < 2000, len(response.content)
    for name in ("nope", "sentiment@7"):
        response = post(server, "/v1/classify", {"prompt": name, "inputs": ["x"]})
        assert response.status_code == 404 and str(server["root"]) not in response.text, response.text
    health = httpx.get(server["url"] + "/health").json()
    assert set(health) == {"status", "version", "loaded_prompts"} and "/" not in json.dumps(health)


@pytest.mark.parametrize(
    "path,body,status,message",
    [
        (
            "/v1/generate",
            {"prompt": "describe", "inputs": ["x"], "num_beams": 2, "num_return_sequences": 4},
            400,
            "num_return_sequences: 4 different sequences need do_sample with num_beams 1, or num_beams >= 4",
        ),
        (
            "/v1/generate",
            {"prompt": "describe", "inputs": ["x"], "num_return_sequences": 2},
            400,
            "num_return_sequences: 2 different sequences need do_sample with num_beams 1, or num_beams >= 2",
        ),
        # Beam sampling is beam search too (found by the schema fuzzer: transformers raised, the server answered 500).
        (
            "/v1/generate",
            {"prompt": "describe", "inputs": ["x"], "do_sample": True, "num_beams": 2, "num_return_sequences": 3},
            400,
            "num_beams >= 3 (beam search returns its best beams); num_beams is 2",
        ),
        (
            "/v1/generate",
            {"prompt": "describe", "inputs": ["x"], "do_sample": True, "temperature": 1e-9},
            422,
            "greater than or equal to 0.001",
        ),
        (
            "/v1/generate",
            {"prompt": "describe", "inputs": ["x"], "max_new_tokens": 1000, "num_beams": 1},
            400,
            "exceed the model's 128 positions",
        ),
        ("/v1/classify", {"prompt": "sentiment@99999999999999999999", "inputs": ["x"]}, 404, "has no alias"),
        ("/v1/classify", {"prompt": "sentiment@²", "inputs": ["x"]}, 400, "after '@' comes a version number"),
        ("/v1/classify", {"prompt": "sentiment\n", "inputs": ["x"]}, 400, "a prompt name is"),
    ],
    ids=[
        "more-sequences-than-beams",
        "greedy-with-sequences",
        "beam-sampling-with-more-sequences",
        "tiny-temperature",
        "past-the-positions",
        "version-overflow",
        "non-ascii-digit",
        "trailing-newline",
    ],
)
def test_inputs_that_crashed_the_server_get_4xx(server, path, body, status, message):
    response = post(server, path, body)
    assert response.status_code == status, response.text
    assert message in response.text


def test_nan_and_an_input_longer_than_the_model_are_handled(server):
    response = httpx.post(
        server["url"] + "/v1/generate",
        headers={**AUTH, "Content-Type": "application/json"},
        content=b'{"prompt": "describe", "inputs": ["x"], "do_sample": true, "temperature": NaN}',
    )
    assert response.status_code == 422
    # 330 tokens for a model of 128 positions: cut to fit after the prompt, and classified.
    response = post(server, "/v1/classify", {"prompt": "sentiment", "inputs": [" ".join(["great"] * 330)]})
    assert response.status_code == 200 and response.json()["results"][0]["label"] in ("0", "1")


def test_requests_generated_from_the_schema_get_no_server_error(server):
    from schemathesis.config import SchemathesisConfig

    # Invalid data is refused with 4xx; 413 included, since counts and sizes are checked first.
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": [400, 401, 404, 409, 413, 422]}}}
    )
    schema = schemathesis.openapi.from_dict(
        json.loads((Path(__file__).parent.parent / "docs" / "openapi.json").read_text()), config=config
    )
    # Most valid bodies name a prompt that exists, so requests reach the model too.
    names = st.sampled_from([None, "sentiment", "opinion@1", "describe", "rewrite@latest", "for-bert"])

    def named(pair):
        case, name = pair
        if name is not None and isinstance(case.body, dict):
            case.body["prompt"] = name
        return case

    seen = {}
    for result in schema.get_all_operations():
        operation = result.ok()
        posts = operation.method.upper() == "POST"  # GETs take no input to make invalid
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if posts else (GenerationMode.POSITIVE,):
            checks = [
                not_a_server_error,
                status_code_conformance,
                content_type_conformance,
                response_schema_conformance,
            ]
            strategy = operation.as_strategy(generation_mode=mode)
            if mode is GenerationMode.NEGATIVE:
                checks.append(negative_data_rejection)
            else:
                strategy = st.tuples(strategy, names).map(named)

            @given(case=strategy)
            @settings(
                max_examples=60 if posts else 5,
                deadline=None,
                derandomize=True,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def run(case):
                response = case.call_and_validate(base_url=server["url"], headers=AUTH, checks=checks)
                seen.setdefault((operation.label, mode.value), set()).add(response.status_code)

            run()
    assert any(200 in statuses for (label, _), statuses in seen.items() if label == "POST /v1/generate"), seen
    assert any(200 in statuses for (label, _), statuses in seen.items() if label == "POST /v1/classify"), seen
    assert "Traceback" not in server["log"].read_text()
