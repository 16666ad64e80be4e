"""Continuous batching (prompttune/inference/continuous.py): requests that join a batch while it
decodes, for different prompts and options, get what each prompt generates alone; sequences leave
at their end; seeded sampling does not depend on what else is in the batch; stopped requests stop."""

import pytest
import torch
from test_mixed import GENERATORS as PROMPTS  # soft prompts, a prefix, a deep prompt, P-tuning

from prompttune import Example, PromptModel
from prompttune.errors import ConfigError
from prompttune.inference.continuous import ContinuousDecoder, Request, supports
from prompttune.inference.mixed import PromptSet
from prompttune.tasks import GenerationConfig

SOURCES = ["the movie was great", "a terrible film that i saw", "dull", "the best film of the year", "i loved it"]


def _prompt_set(backbone) -> PromptSet:
    prompts = PromptSet(backbone)
    for k, (name, (method, options)) in enumerate(PROMPTS.items()):
        model = PromptModel.create(backbone, method, GenerationConfig(max_target_length=8), dict(options), seed=k)
        with torch.no_grad():
            for p in model.method.parameters():
                p.add_(torch.randn_like(p) * 0.5)  # prompts that change what the model says
        prompts.add(name, model)
    return prompts


class Collect:
    """A request's outcome and every token it was told."""

    def __init__(self):
        self.results, self.error, self.tokens, self.lengths = None, None, {}, {}

    def request(self, rows, **options) -> Request:
        return Request(
            rows=[(n, Example(text=s, origin=f"input {i}")) for i, (n, s) in enumerate(rows)],
            options=options,
            done=self.done,
            on_token=self.token,
            on_prompt=self.lengths.__setitem__,
        )

    def done(self, results, error):
        assert self.results is None and self.error is None, "told twice"
        self.results, self.error = results, error

    def token(self, row, sequence, token, end):
        self.tokens.setdefault((row, sequence), []).append(token)


def _drain(decoder: ContinuousDecoder, limit: int = 200) -> None:
    for _ in range(limit):
        if not decoder.busy:
            return
        decoder.step()
    raise AssertionError("the decoder did not finish")


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_requests_joining_a_running_batch_decode_what_each_prompt_decodes_alone(load, family):
    backbone = load(family)
    prompts = _prompt_set(backbone)
    names = list(PROMPTS)
    decoder = ContinuousDecoder(prompts, max_rows=16)
    requests = []
    # A long request starts alone; others arrive at later steps, for other prompts and lengths.
    first = Collect()
    decoder.submit(first.request([(names[0], SOURCES[0]), (names[2], SOURCES[1])], max_new_tokens=8))
    requests.append((first, [(names[0], SOURCES[0]), (names[2], SOURCES[1])], 8))
    schedule = {
        2: [(names[1], SOURCES[2])],
        3: [(names[3], SOURCES[3]), (names[4], SOURCES[4])],
        5: [(names[2], SOURCES[4])],
    }
    for step in range(1, 7):
        decoder.step()
        for rows in [schedule.get(step)] if step in schedule else []:
            collect = Collect()
            decoder.submit(collect.request(rows, max_new_tokens=5))
            requests.append((collect, rows, 5))
    _drain(decoder)
    assert decoder.widest >= 4  # later requests decoded in the same steps as the first
    for collect, rows, limit in requests:
        assert collect.error is None
        expected = prompts.generate(rows, details=True, max_new_tokens=limit)
        for row, (got, want) in enumerate(zip(collect.results, expected)):
            assert [s["text"] for s in got] == [s["text"] for s in want], (family, rows[row])
            assert got[0]["tokens"] == want[0]["tokens"] and got[0]["finished"] == want[0]["finished"]
            assert got[0]["prompt_tokens"] == want[0]["prompt_tokens"] == collect.lengths[row]
            streamed = collect.tokens[(row, 0)]
            kept = streamed[:-1] if got[0]["finished"] else streamed
            assert prompts[rows[row][0]].task.decode(torch.tensor([kept]))[0] == got[0]["text"]
    assert decoder.sequences == [] and decoder.cache is None  # everything left the batch


def test_sequences_leave_at_their_end_token_and_the_cache_shrinks(load):
    backbone = load("llama")
    prompts = _prompt_set(backbone)
    probe = Collect()
    decoder = ContinuousDecoder(prompts)
    decoder.submit(probe.request([("soft2", SOURCES[0]), ("prefix3", SOURCES[1])], max_new_tokens=8, eos_token_id=0))
    _drain(decoder)
    short_tokens, long_tokens = probe.tokens[(0, 0)], probe.tokens[(1, 0)]
    never = next(t for t in range(backbone.tokenizer.vocab_size) if t not in long_tokens)
    end = short_tokens[1]  # the short request's second token is made its end-of-sequence token
    short, long_ = Collect(), Collect()
    decoder.submit(long_.request([("prefix3", SOURCES[1])], max_new_tokens=8, eos_token_id=never))
    decoder.step()
    steps, width = decoder.steps, decoder.mask.shape[1]
    decoder.submit(short.request([("soft2", SOURCES[0])], max_new_tokens=6, eos_token_id=end))
    while short.results is None:
        decoder.step()
    assert short.results[0][0]["finished"] and short.results[0][0]["tokens"] == short_tokens.index(end)
    assert short.tokens[(0, 0)][-1] == end  # told the end token, flagged as the end
    # The long request alone again: the short one's columns are gone with it.
    assert len(decoder.sequences) == 1 and decoder.mask.shape[1] == width + decoder.steps - steps
    _drain(decoder)
    assert long_.results[0][0]["tokens"] == 8 and not long_.results[0][0]["finished"]
    assert long_.tokens[(0, 0)] == long_tokens


def test_seeded_sampling_draws_the_same_whatever_shares_the_batch(load):
    backbone = load("gpt2")
    prompts = _prompt_set(backbone)
    options = dict(max_new_tokens=6, do_sample=True, temperature=1.3, top_p=0.9, num_return_sequences=3, seed=11)

    def run(company: bool):
        decoder = ContinuousDecoder(prompts)
        mine = Collect()
        if company:
            other = Collect()
            decoder.submit(other.request([("deep1", SOURCES[3])], max_new_tokens=8, do_sample=True, seed=5))
            decoder.step()
        decoder.submit(mine.request([("soft5", SOURCES[2])], **options))
        _drain(decoder)
        return [s["text"] for s in mine.results[0]]

    alone, together = run(False), run(True)
    assert alone == together and len(alone) == 3
    assert len(set(alone)) > 1  # three different draws
    unseeded = ContinuousDecoder(prompts)
    again = Collect()
    unseeded.submit(again.request([("soft5", SOURCES[2])], **{**options, "seed": 12}))
    _drain(unseeded)
    assert [s["text"] for s in again.results[0]] != alone


def test_a_stopped_request_leaves_and_a_bad_one_fails_alone(load):
    backbone = load("gpt2")
    prompts = _prompt_set(backbone)
    decoder = ContinuousDecoder(prompts)
    stop = {"now": False}
    left, stays, bad = Collect(), Collect(), Collect()
    request = left.request([("soft2", SOURCES[0])], max_new_tokens=8)
    request.stopped = lambda: stop["now"]
    decoder.submit(request)
    decoder.submit(stays.request([("prefix3", SOURCES[1])], max_new_tokens=8))
    decoder.submit(bad.request([("soft2", SOURCES[2])], max_new_tokens=10_000))  # beyond gpt2's positions
    decoder.step()  # the admitting forward draws each first token, the step a second
    decoder.step()
    stop["now"] = True
    _drain(decoder)
    assert left.results[0][0]["tokens"] == 3 and len(left.tokens[(0, 0)]) == 3 and not left.results[0][0]["finished"]
    assert isinstance(bad.error, ConfigError) and "exceed the model's" in str(bad.error) and "input 0" in str(bad.error)
    alone = prompts.generate([("prefix3", SOURCES[1])], details=True, max_new_tokens=8)
    assert stays.results[0][0]["text"] == alone[0][0]["text"]


def test_what_a_continuous_batch_decodes(load):
    assert supports(load("llama"), {"max_new_tokens": 4, "do_sample": True, "top_p": 0.5})
    assert not supports(load("llama"), {"max_new_tokens": 4, "num_beams": 2})
    assert not supports(load("llama"), {"max_new_tokens": 4, "repetition_penalty": 1.2})
    assert not supports(load("t5"), {"max_new_tokens": 4})
    with pytest.raises(ConfigError, match="decoder-only"):
        ContinuousDecoder(PromptSet(load("bart")))


def test_a_step_loop_serves_requests_from_other_threads_and_shutting_down_fails_the_rest(load):
    import threading

    from prompttune.serving.batcher import StepLoop

    prompts = _prompt_set(load("gpt2"))
    decoder = ContinuousDecoder(prompts)
    loop = StepLoop(decoder, threading.Lock())
    loop.start()
    finished = threading.Event()
    served = Collect()
    request = served.request([("soft2", SOURCES[0]), ("prefix3", SOURCES[1])], max_new_tokens=4)
    request.done = lambda results, error: (served.done(results, error), finished.set())
    loop.submit(request)
    assert finished.wait(60) and served.error is None
    assert [r[0]["text"] for r in served.results] == [
        r[0]["text"]
        for r in prompts.generate([("soft2", SOURCES[0]), ("prefix3", SOURCES[1])], details=True, max_new_tokens=4)
    ]
    loop.stop()
    with pytest.raises(RuntimeError, match="shutting down"):
        loop.submit(Collect().request([("soft2", SOURCES[0])], max_new_tokens=4))
    # What is running or waiting when the server stops fails with a reason, rather than hanging.
    running, waiting = Collect(), Collect()
    decoder.submit(running.request([("soft2", SOURCES[0])], max_new_tokens=8))
    decoder.step()
    decoder.submit(waiting.request([("deep1", SOURCES[2])], max_new_tokens=8))
    decoder.fail_all(RuntimeError("the server is shutting down"), waiting=True)
    assert "shutting down" in str(running.error) and "shutting down" in str(waiting.error) and not decoder.busy


def test_a_half_precision_model_decodes_with_float32_prompts(model_dirs):
    """A bfloat16 model (float32 prompt parameters, attached in the model's type) decodes in the
    continuous batch, with finite log-probabilities."""
    from prompttune import Backbone

    backbone = Backbone.from_pretrained(str(model_dirs["llama"]), dtype="bfloat16")
    prompts = PromptSet(backbone)
    for name, (method, options) in (("prefix3", PROMPTS["prefix3"]), ("soft2", PROMPTS["soft2"])):
        prompts.add(name, PromptModel.create(backbone, method, GenerationConfig(max_target_length=6), dict(options)))
    decoder = ContinuousDecoder(prompts)
    first, second = Collect(), Collect()
    decoder.submit(first.request([("prefix3", SOURCES[0])], max_new_tokens=6))
    decoder.step()
    request = second.request([("soft2", SOURCES[1])], max_new_tokens=6)
    request.logprobs = 2
    decoder.submit(request)
    _drain(decoder)
    assert first.error is None and second.error is None and first.results[0][0]["tokens"] > 0
    logprobs = second.results[0][0]["logprobs"]
    assert len(logprobs) == second.results[0][0]["tokens"]
    assert all(torch.isfinite(torch.tensor(lp)) and lp <= 0 and len(top) == 2 for _, lp, top in logprobs)
