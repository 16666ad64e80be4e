"""Mixed-task batches: every row of one batch under its own prompt gives what that prompt gives alone,
for every method that shares the frozen model and every family; ensembles of prompts."""

import pytest
import torch
from conftest import FAMILIES, task_config

GEN_FAMILIES = ("gpt2", "llama", "t5", "bart")
from prompttune import Example, PromptModel, load_prompt, save_prompt
from prompttune.errors import ConfigError
from prompttune.inference.mixed import PromptSet, combine_members
from prompttune.tasks import GenerationConfig

# name -> (method, options, task changes): lengths differ so rows need padding and masking.
CLASSIFIERS = {
    "soft3": ("soft_prompt", {"num_virtual_tokens": 3}, {}),
    "soft6": ("soft_prompt", {"num_virtual_tokens": 6, "init": "random"}, {"template": "review : {text} so {mask} ."}),
    "prefix2": ("prefix", {"num_virtual_tokens": 2, "hidden_size": 16}, {}),
    "deep4": ("deep_prompt", {"num_virtual_tokens": 4}, {}),
    "ptuning4": ("p_tuning", {"num_virtual_tokens": 4}, {}),
    "hard": ("hard_prompt", {}, {"template": "{text} , it was {mask}"}),
    "calibrated": ("hard_prompt", {}, {"template": "{text} so {mask}", "calibrate": "content_free"}),
    "probe": ("linear_probe", {}, {}),
}
GENERATORS = {
    "soft2": ("soft_prompt", {"num_virtual_tokens": 2}),
    "soft5": ("soft_prompt", {"num_virtual_tokens": 5}),
    "prefix3": ("prefix", {"num_virtual_tokens": 3, "hidden_size": 16}),
    "deep1": ("deep_prompt", {"num_virtual_tokens": 1}),
    "ptuning3": ("p_tuning", {"num_virtual_tokens": 3}),
}


def _perturb(model):
    """Move every trained tensor away from its initial value, so prompts differ clearly."""
    with torch.no_grad():
        for p in list(model.method.parameters()) + list(model.task.parameters()):
            p.add_(torch.randn_like(p) * 0.5 * (p.float().std() if p.numel() > 1 else 1.0))


def _classifiers(backbone, tmp_path):
    dirs = {}
    for name, (method, options, changes) in CLASSIFIERS.items():
        config = task_config(**changes)
        if not backbone.has_lm_head and method == "hard_prompt":
            config = task_config(template="{text} it was {mask} .")
        model = PromptModel.create(backbone, method, config, dict(options))
        _perturb(model)
        dirs[name] = save_prompt(model, tmp_path / name)
    return dirs


def _alone(directory, backbone, example):
    model = load_prompt(directory, backbone=backbone)
    batch = model.task.collate([model.task.encode(example)], with_labels=False)
    with torch.no_grad():
        return model(batch)[0]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_batch_equals_each_prompt_alone(load, examples, tmp_path, family, side):
    backbone = load(family, padding_side=side)
    dirs = _classifiers(backbone, tmp_path)
    prompts = PromptSet.load(dirs, backbone=backbone)
    for name in prompts.prompts:  # each prompt's tokens and prefixes were computed once, when loaded
        prompts[name].method.parts = None
    names = list(dirs)
    rows = [(names[i % len(names)], e) for i, e in enumerate(examples + examples[::-1])]
    mixed = prompts.logits(rows, batch_size=len(rows))
    for (name, example), got in zip(rows, mixed):
        torch.testing.assert_close(
            got,
            _alone(dirs[name], backbone, example),
            atol=2e-5,
            rtol=1e-4,
            msg=lambda m: f"{family}, prompt {name}, {example.text!r}: {m}",
        )
    # Batching the same rows differently changes nothing either.
    for options in ({"batch_size": 3}, {"max_tokens": 24}):
        again = prompts.logits(rows, **options)
        torch.testing.assert_close(torch.stack(again), torch.stack(mixed), atol=2e-5, rtol=1e-4)


def test_forwards_take_rows_by_length_within_the_token_budget(load):
    prompts = PromptSet(load("bert"))
    prompts._parts = {"a": None, "b": None}
    prompts._forward_key = lambda name: 0
    names = ["a", "b", "a", "b", "a", "b", "a"]
    lengths = [9, 3, 5, 12, 3, 4, 7]
    batches = prompts._batches(names, lengths, batch_size=3, max_tokens=16)
    assert sorted(i for b in batches for i in b) == list(range(len(names)))
    for batch in batches:
        assert len(batch) <= 3
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= 16
    assert [[lengths[i] for i in b] for b in batches] == [[3, 3, 4], [5, 7], [9], [12]]


@pytest.mark.parametrize("family", GEN_FAMILIES)
def test_mixed_generation_equals_each_prompt_alone(load, tmp_path, family):
    backbone = load(family)
    dirs = {}
    for name, (method, options) in GENERATORS.items():
        model = PromptModel.create(backbone, method, GenerationConfig(max_target_length=6), dict(options))
        _perturb(model)
        dirs[name] = save_prompt(model, tmp_path / name)
    prompts = PromptSet.load(dirs, backbone=backbone)
    sources = ["the movie was great", "a terrible film that i saw", "dull", "the best film of the year"]
    names = list(dirs)
    rows = [(names[i % len(names)], s) for i, s in enumerate(sources * 3)]
    for options in ({}, {"num_beams": 2, "num_return_sequences": 2}):
        mixed = prompts.generate(rows, **options)
        for (name, source), got in zip(rows, mixed):
            single = load_prompt(dirs[name], backbone=backbone)
            alone = single.task.generate_texts(single, [Example(text=source)], **options)
            assert got == alone, (family, name, source, options)


def test_ensemble_combines_members_run_together(load, examples, tmp_path):
    backbone = load("bert")
    dirs = _classifiers(backbone, tmp_path)
    prompts = PromptSet.load(dirs, backbone=backbone)
    members = ["soft3", "prefix2", "deep4"]
    result = prompts.ensemble(members, examples, combine="mean")
    for k, name in enumerate(members):
        alone = torch.stack([_alone(dirs[name], backbone, e).softmax(-1) for e in examples])
        torch.testing.assert_close(result["members"][name], alone, atol=2e-5, rtol=1e-4)
    stacked = torch.stack([result["members"][n] for n in members], 1)
    torch.testing.assert_close(result["probabilities"], stacked.mean(1))
    assert result["predictions"] == stacked.mean(1).argmax(-1).tolist()
    vote = prompts.ensemble(members, examples, combine="vote")
    for i, prediction in enumerate(vote["predictions"]):
        ballots = stacked[i].argmax(-1).tolist()
        counts = {c: ballots.count(c) for c in set(ballots)}
        assert counts[prediction] == max(counts.values())


def test_votes_break_ties_by_mean_probability():
    # Input 0: members vote a, a, b -> a. Input 1: a weakly and b strongly, one vote each -> b.
    probs = torch.tensor([[[0.6, 0.4], [0.7, 0.3], [0.1, 0.9]], [[0.55, 0.45], [0.05, 0.95], [0.5, 0.5]]])
    probs[1, 2] = torch.tensor([0.6, 0.4])  # a third member breaks nothing: a, b, a -> a
    mean, predictions = combine_members(probs, "vote")
    assert predictions == [0, 0]
    mean, predictions = combine_members(probs[:, :2], "vote")
    assert predictions == [0, 1]
    _, by_mean = combine_members(probs, "mean")
    assert by_mean == probs.mean(1).argmax(-1).tolist()


def test_prompts_that_cannot_share_the_model_are_refused(load, model_dirs, tmp_path):
    backbone = load("bert")
    prompts = PromptSet(backbone)
    with pytest.raises(ConfigError, match="changes the model's own weights"):
        prompts.add("ft", PromptModel.create(backbone, "full_finetune", task_config()))
    other = load("gpt2")
    soft = save_prompt(
        PromptModel.create(other, "soft_prompt", task_config(), {"num_virtual_tokens": 2}), tmp_path / "gpt2"
    )
    with pytest.raises(Exception, match="made for base model"):
        prompts.add("gpt2", soft)
    with pytest.raises(ConfigError, match="another backbone"):
        prompts.add("gpt2", load_prompt(soft, backbone=other))
    prompts.add("soft", PromptModel.create(backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 2}))
    with pytest.raises(ConfigError, match="unknown prompt 'nope'"):
        prompts.classify([("nope", "the movie")])
    with pytest.raises(ConfigError, match="is a classification prompt, which is run by .classify., not .generate."):
        prompts.generate([("soft", "the movie")])
    with pytest.raises(ConfigError, match="input 1: the text is empty"):
        prompts.classify([("soft", "  ")])


@pytest.mark.parametrize(
    "method, options",
    [("prefix", {"num_virtual_tokens": 2, "hidden_size": 16}), ("p_tuning", {"num_virtual_tokens": 3})],
)
def test_moving_a_loaded_prompt_moves_what_its_reparameterisation_computed(load, tmp_path, method, options):
    """A reparameterised prompt loaded for inference keeps only its computed output, in plain
    tensors: `.to()` must move them with the parameters (checked on the meta device and in float64,
    which a machine without a GPU has)."""
    backbone = load("gpt2")
    model = PromptModel.create(backbone, method, task_config(), options, seed=0)
    loaded = load_prompt(save_prompt(model, tmp_path / "p"), backbone=backbone)
    fixed = loaded.method.fixed
    assert fixed is not None  # inference-only: the reparameterisation is gone
    texts = [Example("the movie was great"), Example("a terrible film")]
    expected = loaded.predict_proba(texts).double()
    loaded.to(torch.float64)
    moved = loaded.method.fixed
    for tensor in moved.values() if isinstance(moved, dict) else [moved]:
        assert tensor.dtype == torch.float64
    torch.testing.assert_close(loaded.predict_proba(texts).double(), expected, rtol=1e-4, atol=1e-5)
    loaded.to("meta")
    for tensor in loaded.method.fixed.values() if isinstance(loaded.method.fixed, dict) else [loaded.method.fixed]:
        assert tensor.device.type == "meta"


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert"])
def test_moving_a_prompt_set_recomputes_the_parts_it_keeps(load, family):
    backbone = load(family)
    prompts = PromptSet(backbone)
    for name, (method, options, changes) in list(CLASSIFIERS.items())[:4]:
        prompts.add(
            name, _perturb_and_return(PromptModel.create(backbone, method, task_config(**changes), options, seed=1))
        )
    rows = [(name, text) for name in prompts.prompts for text in ("the movie was great", "a terrible film")]
    before = prompts.classify(rows)
    prompts.to(torch.float64)
    for parts in prompts._parts.values():
        tensors = ([parts.virtual] if parts.virtual is not None else []) + list((parts.prefix or {}).values())
        assert tensors and all(t.dtype == torch.float64 for t in tensors)
    after = prompts.classify(rows)
    for a, b in zip(after, before):
        assert a["label"] == b["label"]
        for label, p in b["probabilities"].items():
            assert a["probabilities"][label] == pytest.approx(p, abs=1e-4)


def _perturb_and_return(model):
    _perturb(model)
    return model


@pytest.mark.parametrize("family", ["gpt2", "t5"])
def test_streamed_tokens_are_the_generated_ones_and_a_stopped_row_stops_while_the_others_go_on(load, family):
    """What a server streams and how it stops a row a client left: `on_token` reports each row's
    tokens as decoded (they are the tokens `generate` returns), and a row that `stop_rows` names
    is decoded no further while the other rows run to their length."""
    backbone = load(family)
    prompts = PromptSet(backbone)
    for name, method, options in (
        ("soft", "soft_prompt", {"num_virtual_tokens": 2}),
        ("prefix", "prefix", {"num_virtual_tokens": 2, "hidden_size": 8}),
    ):
        prompts.add(name, PromptModel.create(backbone, method, GenerationConfig(max_target_length=6), options, seed=1))
    rows = [("soft", "the movie was great"), ("prefix", "a dull plot"), ("soft", "i loved it")]
    options = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False)
    plain = prompts.generate(rows, details=True, **options)
    seen: dict[int, list[int]] = {}
    streamed = prompts.generate(
        rows, details=True, on_token=lambda r, s, t, end: seen.setdefault(r, []).append(t), **options
    )
    assert [s[0]["text"] for s in streamed] == [s[0]["text"] for s in plain]
    assert all(len(seen[r]) == 6 for r in range(3))
    task = prompts["soft"].task
    assert [task.decode(torch.tensor([seen[r]]))[0] for r in range(3)] == [s[0]["text"] for s in plain]

    counted: dict[int, int] = {}

    def on_token(row, sequence, token, end):
        counted[row] = counted.get(row, 0) + 1

    stopped = prompts.generate(
        rows,
        details=True,
        on_token=on_token,
        min_new_tokens=6,
        max_new_tokens=6,
        do_sample=False,
        stop_rows=lambda row: row == 1 and counted.get(1, 0) >= 2,
    )
    # Told after its second token, it stops at the next step (transformers hands a step's tokens to
    # the streamer before or after its stopping check, depending on the version).
    assert stopped[1][0]["tokens"] in (2, 3) and plain[1][0]["tokens"] == 6
    assert [stopped[i][0]["text"] for i in (0, 2)] == [plain[i][0]["text"] for i in (0, 2)]
    assert [stopped[i][0]["tokens"] for i in (0, 2)] == [plain[i][0]["tokens"] for i in (0, 2)]
