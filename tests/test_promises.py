"""What prompttune promises (docs/promises.md), one test per promise, and each hostile or careless
use that once broke a promise, as it was found: against the server and the raters' app started for
real on loopback ports, and the commands that write a user's folders."""

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from conftest import task_config
from servers import TOKEN, populated_registry, running_server, running_study_server

from prompttune.serving.openai_api import STOP_CHARS, StopScanner

AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}
LIMITS = (
    "--max-inputs",
    "8",
    "--max-chars",
    "2000",
    "--max-request-tokens",
    "1000",
    "--max-batch-size",
    "32",
    "--body-timeout",
    "1",
)
BODY_LIMIT = 8 * (2 * 2000 * 6 + 64) + 65536  # --max-body-bytes' default for those limits


@pytest.fixture(scope="module")
def server(model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("promises")
    registry = populated_registry(model_dirs, root)
    with running_server(model_dirs["gpt2"], registry, root / "server.log", *LIMITS) as (url, process):
        yield {"url": url, "root": root, "log": root / "server.log", "process": process}


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def read_all(raw: socket.socket) -> str:
    """What the server sends until it closes the connection."""
    answer = b""
    while chunk := raw.recv(65536):
        answer += chunk
    return answer.decode("utf-8", "replace")


def raw_request(url: str, head: bytes, body: bytes = b"", timeout: float = 30) -> str:
    """What the server answers to bytes sent as they are."""
    with socket.create_connection(address(url), timeout=timeout) as raw:
        raw.sendall(head + body)
        return read_all(raw)


def healthy(url: str) -> bool:
    return httpx.get(url + "/health", timeout=10).status_code == 200


# ---- the server: one request never holds the others ----------------------------------------------


def test_stop_strings_cost_what_the_text_costs():
    """The hold-back of a streamed completion reads each character once per stop string: 4 stop
    strings of the longest length, over a text fed a character at a time, cost a few reads per
    character and stop string (copying every prefix of every stop string at every token cost millions)."""
    reads = [0]

    class Counted(str):
        def __getitem__(self, index):
            reads[0] += 1
            return str.__getitem__(self, index)

    stops = [Counted("a" * (STOP_CHARS - 1) + tail) for tail in "bcde"]
    scanner = StopScanner(stops)
    text = "a" * 3000
    for end in range(1, len(text) + 1):
        scanner.feed(text[:end])
    assert scanner.cut is None and scanner.held == STOP_CHARS - 1
    assert reads[0] <= 4 * len(stops) * (len(text) + STOP_CHARS), reads[0]  # the old hold-back: millions
    scanner.feed(text + "c")  # then the stop string that ends first is found, and the text cut before it
    assert scanner.cut == len(text) + 1 - STOP_CHARS


@pytest.mark.parametrize(
    "stop,message",
    [
        (["x" * (STOP_CHARS + 1)], f"string 0 has {STOP_CHARS + 1} characters; each is 1 to {STOP_CHARS}"),
        (["a", "b", "c", "d", "e"], "5 strings; at most 4"),
        ("", "string 0 has 0 characters"),
    ],
)
def test_stop_strings_are_bounded_in_count_and_length(server, stop, message):
    response = httpx.post(
        server["url"] + "/v1/completions",
        headers=AUTH,
        timeout=30,
        json={"model": "describe", "prompt": "the movie", "stream": True, "stop": stop},
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "stop", response.text
    assert message in response.json()["error"]["message"]


def test_a_stream_with_the_longest_stop_strings_leaves_health_answering(server):
    """Four stop strings of the longest length that never match, streamed: the completion ends
    with its own finish reason, and /health answers while it streams."""
    stops = [("ab" * STOP_CHARS)[: STOP_CHARS - 1] + c for c in "wxyz"]
    body = {
        "model": "describe",
        "prompt": "the movie was great",
        "stream": True,
        "stop": stops,
        "max_tokens": 20,
        "temperature": 0,
    }
    answered_during = []
    with httpx.stream("POST", server["url"] + "/v1/completions", headers=AUTH, json=body, timeout=60) as stream:
        assert stream.status_code == 200
        lines = []
        for line in stream.iter_lines():
            if line and not answered_during:
                answered_during.append(healthy(server["url"]))  # asked while the stream is open
            lines.append(line)
    assert answered_during == [True]
    assert lines[-2:] == ["data: [DONE]", ""] or lines[-1] == "data: [DONE]", lines[-3:]
    events = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert events[-1]["choices"][0]["finish_reason"] in {"stop", "length"}


LONE = b'"a\\udfff"'
PATHS = {
    "/v1/classify": (b'{"prompt": "sentiment", "inputs": [%s]}', 422),
    "/v1/generate": (b'{"prompt": "describe", "inputs": [%s]}', 422),
    "/v1/completions": (b'{"model": "describe", "prompt": %s, "stream": true}', 400),
    "/v1/chat/completions": (b'{"model": "describe", "messages": [{"role": "user", "content": %s}]}', 400),
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    "text,found",
    [(LONE, "\\udfff at byte"), (b'"a\xed\xbf\xbfb"', "is not UTF-8"), (b'"\\ud83d x"', "\\ud83d at byte")],
    ids=["escape", "utf8-bytes", "high-alone"],
)
def test_text_that_is_not_unicode_is_refused_with_where_it_is(server, path, text, found):
    template, status = PATHS[path]
    response = httpx.post(server["url"] + path, headers=JSON, content=template % text, timeout=30)
    assert response.status_code == status, response.text
    assert found in response.text and "Traceback" not in server["log"].read_text()


def test_a_surrogate_pair_and_an_escaped_backslash_are_text(server):
    for text in (b'"smile \\ud83d\\ude00"', b'"a \\\\udfff b"'):
        response = httpx.post(
            server["url"] + "/v1/classify",
            headers=JSON,
            timeout=30,
            content=b'{"prompt": "sentiment", "inputs": [%s]}' % text,
        )
        assert response.status_code == 200, response.text


def test_a_body_that_does_not_arrive_is_answered_408_while_others_are_served(server):
    with socket.create_connection(address(server["url"]), timeout=30) as raw:
        raw.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: "
            b"Bearer " + TOKEN.encode() + b"\r\nContent-Length: 1000\r\n\r\n0123456789"
        )
        assert healthy(server["url"])  # the slow client holds nothing
        answer = read_all(raw)
    assert answer.startswith("HTTP/1.1 408") and "did not arrive within 1 s (10 bytes came)" in answer, answer


def test_a_body_too_large_is_refused_at_the_limit_while_health_answers(server):
    """A chunked body is answered 413 as soon as the limit is passed, and /health answers while
    the upload is still open (the order of events, not the clock)."""
    with socket.create_connection(address(server["url"]), timeout=30) as raw:
        raw.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: "
            b"Bearer " + TOKEN.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        piece = b"a" * 65536
        sent = 0
        while sent <= BODY_LIMIT:
            raw.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
            if sent < BODY_LIMIT:
                assert healthy(server["url"])  # mid-upload
        answer = read_all(raw)
    assert answer.startswith("HTTP/1.1 413") and f"request body over {BODY_LIMIT} bytes" in answer, answer


def test_the_token_is_checked_before_the_body_is_read_and_guards_the_schema(server):
    url = server["url"]
    malformed = httpx.post(
        url + "/v1/completions", content=b"{not json", timeout=30, headers={"Content-Type": "application/json"}
    )
    assert malformed.status_code == 401 and malformed.json()["error"]["type"] == "authentication_error"
    declared = raw_request(url, b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
    assert declared.startswith("HTTP/1.1 401"), declared
    for path in ("/openapi.json", "/docs", "/redoc", "/metrics", "/v1/models"):
        assert httpx.get(url + path, timeout=30).status_code == 401, path
        assert httpx.get(url + path, headers=AUTH, timeout=30).status_code == 200, path
    assert httpx.get(url + "/health", timeout=30).status_code == 200


def test_malformed_json_names_where_it_breaks_not_a_parameter(server):
    response = httpx.post(
        server["url"] + "/v1/completions", headers=JSON, content=b'{"model": "describe", ', timeout=30
    )
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] is None and "not valid JSON at character" in error["message"]


@pytest.mark.parametrize(
    "field,value", [("max_tokens", "5"), ("max_tokens", True), ("n", 1.0), ("stream", 1), ("temperature", "0")]
)
def test_numbers_and_flags_are_json_numbers_and_booleans(server, field, value):
    response = httpx.post(
        server["url"] + "/v1/completions",
        headers=AUTH,
        timeout=30,
        json={"model": "describe", "prompt": "the movie", field: value},
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == field, response.text
    native = httpx.post(
        server["url"] + "/v1/generate",
        headers=AUTH,
        timeout=30,
        json={"prompt": "describe", "inputs": ["x"], "max_new_tokens": "5"},
    )
    assert native.status_code == 422


@pytest.mark.parametrize("name", ["sentiment\n", "sentiment@²", "-lead", "a" * 250])
def test_a_name_no_prompt_can_have_is_a_400_and_an_absent_one_a_404(server, name):
    response = httpx.post(
        server["url"] + "/v1/classify", headers=AUTH, json={"prompt": name, "inputs": ["x"]}, timeout=30
    )
    assert response.status_code == 400 and len(response.text) < 400, response.text
    chat = httpx.post(
        server["url"] + "/v1/chat/completions",
        headers=AUTH,
        timeout=30,
        json={"model": name, "messages": [{"role": "user", "content": "x"}]},
    )
    assert chat.status_code == 400 and chat.json()["error"]["param"] == "model"
    absent = httpx.post(
        server["url"] + "/v1/classify", headers=AUTH, json={"prompt": "nope", "inputs": ["x"]}, timeout=30
    )
    assert absent.status_code == 404


def test_sigterm_stops_the_server(model_dirs, tmp_path):
    registry = populated_registry(model_dirs, tmp_path)
    with running_server(model_dirs["gpt2"], registry, tmp_path / "server.log", *LIMITS) as (url, process):
        assert healthy(url)
        process.terminate()
        assert process.wait(timeout=30) is not None


# ---- the raters' app ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study_server(tmp_path_factory):
    from test_human_eval import _data, _outputs

    from prompttune.human_eval.study import Design, Study, create_study, parse_systems

    root = tmp_path_factory.mktemp("study")
    files = {
        "data": _data(root),
        "alpha": _outputs(root, "alpha", lambda i: f"Alpha {i}."),
        "beta": _outputs(root, "beta", lambda i: f"Beta {i}."),
    }
    systems = parse_systems([f"alpha=outputs:{files['alpha']}", f"beta=outputs:{files['beta']}"])
    create_study(
        root / "study",
        str(files["data"]),
        systems,
        Design(raters=("ann",), items=3),
        source_column="mr",
        target_column="ref",
    )
    study = Study(root / "study")
    token = study.raters()[0]["token"]
    log = root / "study.log"
    with running_study_server(study.folder, log, "--body-timeout", "1", "--log-level", "info") as (url, process):
        yield {"url": url, "token": token, "study": study, "log": log}


def test_the_raters_app_refuses_a_large_body_before_reading_it(study_server):
    answer = raw_request(
        study_server["url"],
        b"POST /api/made-up/judgements HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000000\r\n\r\n",
    )
    assert answer.startswith("HTTP/1.1 413") and "request body of 100000000 bytes" in answer, answer


def test_the_raters_app_answers_a_slow_body_408(study_server):
    with socket.create_connection(address(study_server["url"]), timeout=30) as raw:
        raw.sendall(b"POST /api/x/judgements HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
        assert httpx.get(study_server["url"] + "/healthz", timeout=10).status_code == 200
        answer = read_all(raw)
    assert answer.startswith("HTTP/1.1 408"), answer


@pytest.mark.parametrize(
    "change",
    [
        {"task": 9223372036854775808},
        {"task": -1},
        {"seconds": 1e300},
        {"ratings": {"fluency": 9223372036854775808}},
        {"study": "s" * 1000},
    ],
)
def test_the_raters_app_refuses_out_of_range_values_with_422(study_server, change):
    state = httpx.get(f"{study_server['url']}/api/{study_server['token']}/next", timeout=30).json()
    body = {"study": state["study"], "task": state["task"]["id"], "preference": "left", **change}
    response = httpx.post(f"{study_server['url']}/api/{study_server['token']}/judgements", json=body, timeout=30)
    assert response.status_code == 422 and "nothing was recorded" in response.text, response.text
    assert study_server["study"].judgements() == []


def test_the_raters_app_refuses_text_that_is_not_unicode(study_server):
    response = httpx.post(
        f"{study_server['url']}/api/{study_server['token']}/judgements",
        timeout=30,
        headers={"Content-Type": "application/json"},
        content=b'{"study": "a\\udfff", "task": 1}',
    )
    assert response.status_code == 422 and "surrogate" in response.json()["error"]["message"]


def test_the_raters_page_is_locked_down_and_tokens_stay_out_of_the_log(study_server):
    page = httpx.get(f"{study_server['url']}/rate/{study_server['token']}", timeout=30)
    assert page.status_code == 200
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'sha256-" in policy and "frame-ancestors 'none'" in policy
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"
    httpx.get(f"{study_server['url']}/start?who={study_server['token']}", timeout=30)
    httpx.get(f"{study_server['url']}/api/{study_server['token']}/next", timeout=30)
    deadline = time.monotonic() + 10
    while "/api/***/next" not in study_server["log"].read_text() and time.monotonic() < deadline:
        time.sleep(0.1)  # the access log is written after the answer
    log = study_server["log"].read_text()
    assert "/rate/***" in log and "/api/***/next" in log and "who=***" in log, log
    access = [line for line in log.splitlines() if 'HTTP/1.1"' in line]  # not the links announced at the start
    assert access and not [line for line in access if study_server["token"] in line], access


# ---- a user's files -------------------------------------------------------------------------------


def _train_args(model_dirs, tmp_path):
    data = tmp_path / "train.tsv"
    data.write_text("text\tlabel\nthe movie was great\t1\na terrible film\t0\n")
    return [
        "train",
        "--model",
        str(model_dirs["bert"]),
        "--method",
        "soft_prompt",
        "--train",
        str(data),
        "--max-steps",
        "1",
        "--option",
        "num_virtual_tokens=2",
        "--template",
        "{text} it was {mask} .",
        "--verbalizer",
        "0:bad,1:good",
        "--no-progress",
    ]


def test_train_refuses_a_folder_with_a_prompt_or_records_unless_forced(model_dirs, tmp_path, capsys):
    from prompttune.cli import main

    out = tmp_path / "mine"
    out.mkdir()
    mine = {
        "prompt.json": "{}",
        "metrics.json": '{"mine": 1}',
        "log.jsonl": "mine\n",
        "train_args.json": "{}",
        "notes.txt": "my notes",
    }
    for name, text in mine.items():
        (out / name).write_text(text)
    code = main(_train_args(model_dirs, tmp_path) + ["--output", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and "already holds prompt.json, metrics.json, train_args.json, log.jsonl" in err, err
    assert {p.name: p.read_text() for p in out.iterdir()} == mine  # nothing touched
    assert main(_train_args(model_dirs, tmp_path) + ["--output", str(out), "--force"]) == 0
    assert json.loads((out / "metrics.json").read_text())["method"] == "soft_prompt"
    assert (out / "notes.txt").read_text() == "my notes"


def test_pull_force_keeps_the_run_records_and_says_so(model_dirs, tmp_path, capsys):
    from prompttune import Backbone, PromptModel, save_prompt
    from prompttune.artifacts.registry import Registry
    from prompttune.cli import main

    registry = Registry(tmp_path / "registry")
    backbone = Backbone.from_pretrained(str(model_dirs["bert"]))
    registry.push(
        save_prompt(
            PromptModel.create(backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 2}), tmp_path / "p"
        ),
        "p",
    )
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / "log.jsonl").write_text("my log\n")
    (folder / "train_args.json").write_text('{"mine": true}')
    code = main(["registry", "--registry", str(registry.root), "pull", "p", str(folder), "--force"])
    err = capsys.readouterr().err
    assert code == 0 and (folder / "prompt.json").is_file()
    assert (folder / "log.jsonl").read_text() == "my log\n" and (
        folder / "train_args.json"
    ).read_text() == '{"mine": true}'
    assert "kept train_args.json, log.jsonl" in err, err


def test_the_gguf_cache_checks_its_config_as_well_as_its_weights(tmp_path, monkeypatch):
    import tiny

    from prompttune.core.weights import resolve_model
    from prompttune.errors import ModelError
    from prompttune.storage import sha256_file

    monkeypatch.setenv("PROMPTTUNE_CACHE", str(tmp_path / "cache"))
    gguf = tiny.save_gguf(tmp_path / "tiny-q8_0.gguf")
    folder, _ = resolve_model(str(gguf))
    config = Path(folder) / "config.json"
    edited = json.loads(config.read_text())
    edited["num_hidden_layers"] = 1
    config.write_text(json.dumps(edited))
    with pytest.raises(ModelError, match="config.json: missing or not the file"):
        resolve_model(folder)  # the cache folder named directly is refused
    again, _ = resolve_model(str(gguf))  # through its GGUF file it is made again
    assert json.loads(Path(again, "config.json").read_text())["num_hidden_layers"] != 1
    (Path(again) / "extra.json").write_text("{}")
    with pytest.raises(ModelError, match="holds extra.json"):
        resolve_model(again)
    assert sha256_file(gguf)  # the GGUF file itself is untouched


# ---- schema fuzzing, with text that is not Unicode and integers past every range -------------------


def _hostile_values():
    from hypothesis import strategies as st

    lone = st.characters(categories=["Cs"])  # surrogate code points: json.dumps writes them as \udXXX
    text = st.builds(lambda a, s, b: a + s + b, st.text(max_size=5), lone, st.text(max_size=5))
    huge = st.one_of(st.integers(min_value=2**63), st.integers(max_value=-(2**63) - 1))
    return st.one_of(text, huge, st.lists(text, min_size=1, max_size=3))


def test_the_server_refuses_generated_hostile_values_with_4xx(server):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    bodies = {
        "/v1/classify": {"prompt": "sentiment", "inputs": ["x"]},
        "/v1/generate": {"prompt": "describe", "inputs": ["x"], "max_new_tokens": 2},
        "/v1/completions": {"model": "describe", "prompt": "x", "max_tokens": 2},
        "/v1/chat/completions": {"model": "describe", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2},
    }

    @given(
        path=st.sampled_from(sorted(bodies)),
        field=st.sampled_from(
            ["prompt", "inputs", "model", "max_tokens", "n", "seed", "stop", "max_new_tokens", "messages"]
        ),
        value=_hostile_values(),
    )
    @settings(max_examples=80, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
    def run(path, field, value):
        body = {**bodies[path], field: value}
        response = httpx.post(server["url"] + path, headers=JSON, content=json.dumps(body).encode(), timeout=30)
        assert 400 <= response.status_code < 500, (path, field, value, response.status_code, response.text)

    run()
    assert healthy(server["url"]) and "Traceback" not in server["log"].read_text()


def test_the_raters_app_gives_no_server_error_to_generated_requests(tmp_path):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode
    from schemathesis.checks import negative_data_rejection, not_a_server_error
    from schemathesis.config import SchemathesisConfig
    from test_human_eval import _data, _outputs

    from prompttune.human_eval.app import build_app
    from prompttune.human_eval.study import Design, Study, create_study, parse_systems

    files = {
        "alpha": _outputs(tmp_path, "alpha", lambda i: f"Alpha {i}."),
        "beta": _outputs(tmp_path, "beta", lambda i: f"Beta {i}."),
    }
    systems = parse_systems([f"alpha=outputs:{files['alpha']}", f"beta=outputs:{files['beta']}"])
    create_study(
        tmp_path / "study",
        str(_data(tmp_path)),
        systems,
        Design(raters=("ann",), items=3, mode="both"),
        source_column="mr",
        target_column="ref",
    )
    study = Study(tmp_path / "study")
    token = study.raters()[0]["token"]
    config = SchemathesisConfig.from_dict(
        {"checks": {"negative_data_rejection": {"expected-statuses": [400, 404, 409, 413, 422]}}}
    )
    schema = schemathesis.openapi.from_dict(build_app(study).openapi(), config=config)
    real = st.sampled_from([None, token])

    def with_token(pair):
        case, chosen = pair
        if chosen is not None and case.path_parameters and "token" in case.path_parameters:
            case.path_parameters["token"] = chosen
        return case

    seen = {}
    with running_study_server(study.folder, tmp_path / "study.log") as (url, _):
        for result in schema.get_all_operations():
            operation = result.ok()
            posts = operation.method.upper() == "POST"
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE) if posts else (GenerationMode.POSITIVE,):
                checks = [not_a_server_error] + ([negative_data_rejection] if mode is GenerationMode.NEGATIVE else [])
                strategy = st.tuples(operation.as_strategy(generation_mode=mode), real).map(with_token)

                @given(case=strategy)
                @settings(
                    max_examples=40 if posts else 10,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def run(case):
                    response = case.call_and_validate(base_url=url, checks=checks)
                    seen.setdefault((operation.label, mode.value), set()).add(response.status_code)

                run()

            if posts:  # and values no schema forbids in its own terms: surrogates, integers past SQLite's

                @given(
                    field=st.sampled_from(["study", "task", "ratings", "preference", "seconds"]),
                    value=_hostile_values(),
                )
                @settings(
                    max_examples=40,
                    deadline=None,
                    derandomize=True,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def hostile(field, value):
                    state = httpx.get(f"{url}/api/{token}/next", timeout=30).json()
                    task = (state.get("task") or {}).get("id", 1)
                    body = {"study": study.id, "task": task, "preference": "left", field: value}
                    response = httpx.post(
                        f"{url}/api/{token}/judgements",
                        content=json.dumps(body).encode(),
                        headers={"Content-Type": "application/json"},
                        timeout=30,
                    )
                    assert 400 <= response.status_code < 500, (field, value, response.status_code, response.text)

                hostile()
        log = (tmp_path / "study.log").read_text()
    assert "Traceback" not in log and "Internal Server Error" not in log
    assert any(200 in statuses for (label, _), statuses in seen.items() if "next" in label), seen


def test_every_promise_names_a_test():
    import re

    page = (Path(__file__).parent.parent / "docs" / "promises.md").read_text()
    named = re.findall(r"tests/(\w+\.py)::(\w+)", page)
    assert len(named) >= 25
    for filename, name in named:
        source = (Path(__file__).parent / filename).read_text()
        assert re.search(rf"^def {name}\(", source, re.MULTILINE), (
            f"docs/promises.md names {filename}::{name}, which is not there"
        )
