"""The OpenAI-compatible endpoints of `prompttune serve`, driven by OpenAI's own Python client
against a real server on loopback: models, completions (one and several prompts, greedy and
seeded sampling, n, stop, usage), chat completions, several prompts at once, bad model names,
limits, unserved parameters and token auth, each error in OpenAI's shape."""

import concurrent.futures

import httpx
import openai
import pytest
from servers import TOKEN, populated_registry, running_server

LIMITS = ("--max-inputs", "4", "--max-request-tokens", "64")


@pytest.fixture(scope="module")
def server(model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("openai")
    registry = populated_registry(model_dirs, root)
    with running_server(model_dirs["gpt2"], registry, root / "server.log", *LIMITS) as (url, _):
        yield {"url": url, "registry": registry}


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=TOKEN, max_retries=0, timeout=60)


def native(server, prompt, inputs, **options):
    """What prompttune's own /v1/generate answers for the same prompt and options."""
    response = httpx.post(
        server["url"] + "/v1/generate",
        json={"prompt": prompt, "inputs": inputs, **options},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=60,
    )
    response.raise_for_status()
    return [r["generations"] for r in response.json()["results"]]


def test_models_lists_every_prompt_by_name_version_and_alias(server, client):
    server["registry"].set_alias("describe@1", "production")
    ids = {m.id for m in client.models.list().data}
    assert {"describe", "describe@1", "describe@production", "rewrite", "rewrite@1", "sentiment@1"} <= ids


def test_a_greedy_completion_is_the_prompts_own_generation_with_finish_reason_and_usage(server, client):
    answer = client.completions.create(
        model="describe", prompt=["the movie was great", "a dull plot"], max_tokens=5, temperature=0
    )
    expected = native(server, "describe", ["the movie was great", "a dull plot"], max_new_tokens=5)
    assert [c.text for c in answer.choices] == [g[0] for g in expected]
    assert answer.model == "describe@1" and answer.object == "text_completion"
    for source in ("the movie was great", "a dull plot"):
        # "length" exactly when max_tokens were decoded (the end-of-sequence token is not counted)
        one = client.completions.create(model="describe", prompt=source, max_tokens=5, temperature=0)
        assert one.choices[0].finish_reason == ("length" if one.usage.completion_tokens == 5 else "stop")
    short = client.completions.create(model="describe", prompt="the movie was great", max_tokens=1, temperature=0)
    assert short.choices[0].finish_reason == ("length" if short.usage.completion_tokens == 1 else "stop")
    assert answer.usage.completion_tokens <= 2 * 5 and answer.usage.prompt_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    # n copies of the one greedy sequence; a stop string cuts it
    three = client.completions.create(model="describe", prompt="the movie was great", max_tokens=5, temperature=0, n=3)
    assert [c.text for c in three.choices] == [expected[0][0]] * 3
    words = expected[0][0].split()
    if len(words) > 1:
        cut = client.completions.create(
            model="describe", prompt="the movie was great", max_tokens=5, temperature=0, stop=[" " + words[1]]
        )
        assert cut.choices[0].text == words[0] and cut.choices[0].finish_reason == "stop"


def test_seeded_sampling_repeats_and_n_draws_several(server, client):
    first = client.completions.create(model="rewrite", prompt="a dull plot", max_tokens=4, temperature=1.5, seed=7, n=3)
    again = client.completions.create(model="rewrite", prompt="a dull plot", max_tokens=4, temperature=1.5, seed=7, n=3)
    assert len(first.choices) == 3 and [c.text for c in first.choices] == [c.text for c in again.choices]


def test_chat_completions_answer_one_user_message(server, client):
    answer = client.chat.completions.create(
        model="describe@1", messages=[{"role": "user", "content": "a dull plot"}], max_tokens=5, temperature=0
    )
    assert answer.object == "chat.completion" and answer.choices[0].message.role == "assistant"
    assert answer.choices[0].message.content == native(server, "describe", ["a dull plot"], max_new_tokens=5)[0][0]
    with pytest.raises(openai.BadRequestError, match="send one user message") as caught:
        client.chat.completions.create(
            model="describe",
            max_tokens=5,
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "a dull plot"}],
        )
    assert caught.value.body["param"] == "messages"


def test_several_prompts_at_once(server, client):
    def ask(name):
        return client.completions.create(model=name, prompt="the movie was great", max_tokens=4, temperature=0)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, ["describe", "rewrite"] * 4))
    assert [a.model for a in answers] == ["describe@1", "rewrite@1"] * 4
    assert len({a.choices[0].text for a in answers[0::2]}) == 1  # the same prompt answers the same


def test_errors_come_in_openais_shape(server, client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="no-such-prompt", prompt="x", max_tokens=2)
    assert caught.value.body["param"] == "model" and caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="a classification prompt|use /v1/classify"):
        client.completions.create(model="sentiment", prompt="x", max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="an integer from 0 to 5"):
        client.completions.create(model="describe", prompt="x", max_tokens=2, logprobs=6)
    with pytest.raises(openai.BadRequestError, match="served without stream"):
        client.completions.create(model="describe", prompt="x", max_tokens=2, logprobs=1, stream=True)
    with pytest.raises(openai.BadRequestError, match="top_logprobs: needs logprobs true"):
        client.chat.completions.create(model="describe", messages=[{"role": "user", "content": "x"}], top_logprobs=2)
    with pytest.raises(openai.BadRequestError, match="presence_penalty is not served"):
        client.completions.create(model="describe", prompt="x", max_tokens=2, presence_penalty=0.5)
    with pytest.raises(openai.BadRequestError, match="Unrecognized request argument supplied: colour"):
        client.completions.create(model="describe", prompt="x", max_tokens=2, extra_body={"colour": "red"})
    with pytest.raises(openai.APIStatusError, match="decodes up to 320 tokens") as caught:
        client.completions.create(model="describe", prompt="x", max_tokens=64, n=5, temperature=1)
    assert caught.value.status_code == 413
    with pytest.raises(openai.APIStatusError, match="5 prompts; at most 4"):
        client.completions.create(model="describe", prompt=["x"] * 5, max_tokens=2)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model="describe", prompt="x", max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="exceed the model's 128 positions"):  # refused, not decoded
        client.completions.create(model="describe", prompt="the movie was great " * 30, max_tokens=64)
    wrong = openai.OpenAI(base_url=server["url"] + "/v1", api_key="not-the-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="missing or wrong bearer token"):
        wrong.models.list()


def test_a_streamed_completion_arrives_token_by_token_and_matches_the_answer(server, client):
    expected = native(server, "describe", ["the movie was great"], max_new_tokens=5)[0][0]
    chunks = list(
        client.completions.create(
            model="describe",
            prompt="the movie was great",
            max_tokens=5,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    texts = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert len(texts) >= 2 and "".join(texts).strip() == expected  # more than one piece: token by token
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    whole = client.completions.create(model="describe", prompt="the movie was great", max_tokens=5, temperature=0)
    assert finals == [whole.choices[0].finish_reason] == ["length" if whole.usage.completion_tokens == 5 else "stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 5
    chat = list(
        client.chat.completions.create(
            model="describe",
            messages=[{"role": "user", "content": "the movie was great"}],
            max_tokens=5,
            temperature=0,
            stream=True,
        )
    )
    assert chat[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chat).strip() == expected
    assert chat[-1].choices[0].finish_reason == whole.choices[0].finish_reason
    # Two prompts and n copies stream under their own choice indices.
    many = list(
        client.completions.create(
            model="describe",
            prompt=["the movie was great", "a dull plot"],
            max_tokens=5,
            temperature=0,
            n=2,
            stream=True,
        )
    )
    by_index = {}
    for chunk in many:
        for choice in chunk.choices:
            by_index[choice.index] = by_index.get(choice.index, "") + choice.text
    assert sorted(by_index) == [0, 1, 2, 3] and by_index[0].strip() == by_index[1].strip() == expected


def test_a_stream_cut_by_a_stop_string_or_left_by_its_client(server, client):
    expected = native(server, "rewrite", ["a dull plot"], max_new_tokens=5)[0][0]
    words = expected.split()
    if len(words) > 1:
        chunks = list(
            client.completions.create(
                model="rewrite", prompt="a dull plot", max_tokens=5, temperature=0, stream=True, stop=[" " + words[1]]
            )
        )
        assert "".join(c.choices[0].text for c in chunks if c.choices).strip() == words[0]
        assert chunks[-1].choices[0].finish_reason == "stop"
    # A client that reads one event and goes away: the server carries on serving.
    with httpx.stream(
        "POST",
        server["url"] + "/v1/completions",
        headers={"Authorization": f"Bearer {TOKEN}"},
        json={"model": "rewrite", "prompt": "a dull plot", "max_tokens": 8, "stream": True, "temperature": 0},
        timeout=60,
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        first = next(response.iter_lines())
        assert first.startswith("data: {")
    again = client.completions.create(model="rewrite", prompt="a dull plot", max_tokens=5, temperature=0)
    assert again.choices[0].text == expected


def test_requests_with_different_options_decode_together_as_they_would_alone(server, client):
    """Greedy and seeded sampled requests, streamed or not, for two prompts and different lengths,
    sent at once: each answer is the one it gets alone (sampled draws come from the request's own
    seed, whatever shares its steps), and they went through the continuous batch's steps."""
    asks = [
        dict(model="describe", prompt="the movie was great", max_tokens=6, temperature=0),
        dict(model="rewrite", prompt="a dull plot", max_tokens=3, temperature=1.2, top_p=0.9, seed=3, n=2),
        dict(model="describe", prompt="a dull plot", max_tokens=4, temperature=0.7, seed=8),
        dict(model="rewrite", prompt="i loved it", max_tokens=5, temperature=0, stream=True),
    ]

    def ask(options):
        if options.get("stream"):
            return ["".join(c.choices[0].text for c in client.completions.create(**options) if c.choices)]
        return [c.text for c in client.completions.create(**options).choices]

    alone = [ask(options) for options in asks]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        together = list(pool.map(ask, asks * 2))
    assert together == alone * 2
    metrics = httpx.get(server["url"] + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    steps = [line for line in metrics.splitlines() if line.startswith("prompttune_decoding_sequences_count")]
    assert steps and float(steps[0].split()[-1]) > 0


def test_static_batching_decodes_in_the_micro_batchers_batches(model_dirs, tmp_path):
    registry = populated_registry(model_dirs, tmp_path)
    with running_server(model_dirs["gpt2"], registry, tmp_path / "server.log", *LIMITS, "--batching", "static") as (
        url,
        _,
    ):
        client = openai.OpenAI(base_url=url + "/v1", api_key=TOKEN, max_retries=0, timeout=60)
        answer = client.completions.create(
            model="describe", prompt=["the movie was great", "a dull plot"], max_tokens=5, temperature=0
        )
        expected = native({"url": url}, "describe", ["the movie was great", "a dull plot"], max_new_tokens=5)
        streamed = "".join(
            c.choices[0].text
            for c in client.completions.create(
                model="describe", prompt="a dull plot", max_tokens=5, temperature=0, stream=True
            )
            if c.choices
        )
        metrics = httpx.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert [c.text for c in answer.choices] == [g[0] for g in expected] and streamed.strip() == expected[1][0]
    assert "prompttune_decoding_sequences_count 0.0" in metrics  # no continuous step ran


def test_log_probabilities_of_completions_and_chat(server, client):
    answer = client.completions.create(
        model="describe", prompt=["the movie was great", "a dull plot"], max_tokens=6, temperature=0, logprobs=3
    )
    for choice in answer.choices:
        lp = choice.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) > 0
        assert "".join(lp.tokens).strip() == choice.text
        for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs):
            ranked = sorted(top.values(), reverse=True)
            # greedy: the chosen token is the most likely one, listed first among the 3
            assert logprob <= 0 and len(top) <= 3 and logprob == pytest.approx(ranked[0], abs=1e-5)
        assert lp.text_offset == sorted(lp.text_offset) and lp.text_offset[0] == 0
    # the same request alone gives the same log-probabilities
    alone = client.completions.create(model="describe", prompt="a dull plot", max_tokens=6, temperature=0, logprobs=3)
    assert alone.choices[0].logprobs.token_logprobs == pytest.approx(
        answer.choices[1].logprobs.token_logprobs, abs=1e-4
    )
    zero = client.completions.create(model="describe", prompt="a dull plot", max_tokens=6, temperature=0, logprobs=0)
    assert zero.choices[0].logprobs.top_logprobs is None and len(zero.choices[0].logprobs.token_logprobs) > 0
    # a stop string cuts the tokens with the text
    words = answer.choices[1].text.split()
    if len(words) > 1:
        cut = client.completions.create(
            model="describe", prompt="a dull plot", max_tokens=6, temperature=0, logprobs=1, stop=[" " + words[1]]
        )
        assert cut.choices[0].text == words[0]
        assert len(cut.choices[0].logprobs.tokens) < len(answer.choices[1].logprobs.tokens)
        assert "".join(cut.choices[0].logprobs.tokens).strip().startswith(words[0])
    chat = client.chat.completions.create(
        model="describe",
        messages=[{"role": "user", "content": "a dull plot"}],
        max_tokens=6,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    content = chat.choices[0].logprobs.content
    assert "".join(c.token for c in content).strip() == chat.choices[0].message.content
    assert all(c.bytes == list(c.token.encode()) and len(c.top_logprobs) == 2 for c in content)
    assert [c.logprob for c in content] == pytest.approx(alone.choices[0].logprobs.token_logprobs, abs=1e-4)
    plain = client.chat.completions.create(
        model="describe", messages=[{"role": "user", "content": "a dull plot"}], max_tokens=6, temperature=0
    )
    assert plain.choices[0].logprobs is None
