"""The invariants every method must keep on every model family (tiny random models, offline)."""

import hashlib

import pytest
import torch
from conftest import FAMILIES, LM_FAMILIES, task_config

from prompttune import Example, PromptModel, TrainConfig, load_prompt, save_prompt, train
from prompttune.core.backbone import ModelInputs
from prompttune.errors import ConfigError
from prompttune.methods import METHODS, PromptMethod
from prompttune.tasks import GenerationConfig


def _slots(cls) -> bool:
    return cls.prompt_slots.__func__ is not PromptMethod.prompt_slots.__func__


# Discovered from the registry: a new method is tested without editing these.
# Methods whose backbone stays frozen (searched prompts are tested in test_searched.py).
PROMPTS = tuple(sorted(n for n, c in METHODS.items() if c.shares_backbone and not _slots(c)))
FROZEN_TRAINED = tuple(n for n in PROMPTS if METHODS[n].trains)


def make(backbone, method, **options):
    if method == "hard_prompt" and not backbone.has_lm_head:
        config = task_config(template="{text} it was {mask} .")  # similarity readout
    else:
        config = task_config()
    if method in ("soft_prompt", "prefix", "deep_prompt", "p_tuning"):
        options.setdefault("num_virtual_tokens", 5)
    if method == "prefix":
        options.setdefault("hidden_size", 16)
    return PromptModel.create(backbone, method, config, options)


def logits(model, examples):
    model.eval()
    features = [model.task.encode(e) for e in examples]
    batch = model.task.collate(features, with_labels=False)
    with torch.no_grad():
        return model(batch)


def digest(module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", PROMPTS)
def test_padding_side_and_batching_do_not_change_outputs(load, examples, family, method):
    """Left padding, right padding and one example at a time give the same scores: virtual tokens,
    attention mask and position ids account for padding (PEFT issue 1093)."""
    results = {}
    for side in ("left", "right"):
        torch.manual_seed(0)
        model = make(load(family, padding_side=side), method)
        results[side] = logits(model, examples)
        alone = torch.cat([logits(model, [e]) for e in examples])
        torch.testing.assert_close(results[side], alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(results["left"], results["right"], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_task_sees_only_real_positions(load, examples, family):
    model = make(load(family), "soft_prompt", num_virtual_tokens=7)
    features = [model.task.encode(e) for e in examples]
    batch = model.task.collate(features, with_labels=False)
    seen = {}
    original = model.task.logits

    def spy(output, inputs, mask):
        seen["hidden"], seen["inputs"] = output.hidden, inputs
        return original(output, inputs, mask)

    model.task.logits = spy
    with torch.no_grad():
        model(batch)
    length = batch["input_ids"].shape[1]
    assert seen["hidden"].shape[:2] == (len(examples), length)
    inputs: ModelInputs = seen["inputs"]
    if model.backbone.kind == "decoder":
        # A causal decoder's virtual tokens are computed once and reach the rows as a 7-slot prefix.
        assert inputs.inputs_embeds.shape[1] == length and inputs.prefix.length == 7 and inputs.real_index is None
        return
    assert inputs.inputs_embeds.shape[1] == length + 7
    # The real tokens' embeddings are where real_index says, untouched by the prompt.
    embedded = model.backbone.embed(batch["input_ids"])
    index = inputs.real_index.unsqueeze(-1).expand(-1, -1, embedded.shape[-1])
    torch.testing.assert_close(inputs.inputs_embeds.gather(1, index), embedded)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", FROZEN_TRAINED)
def test_backbone_is_bit_identical_after_training(load, examples, family, method):
    model = make(load(family), method)
    before = digest(model.backbone)
    prompt_before = {k: v.clone() for k, v in model.trainable_state().items()}
    train(model, examples, config=TrainConfig(max_steps=5, batch_size=4, lr=0.1, head_lr=0.1, progress=False))
    assert digest(model.backbone) == before
    changed = [k for k, v in model.trainable_state().items() if not torch.equal(v, prompt_before[k])]
    assert changed, "training changed nothing"
    assert not any(p.requires_grad for p in model.backbone.parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_soft_prompt_overfits_a_handful_of_examples(load, examples, family):
    """A soft prompt alone (verbalizer over the LM head, or the head for an encoder without one)
    must be able to fit 8 examples exactly, even on a tiny random model."""
    torch.manual_seed(0)
    model = make(load(family), "soft_prompt", num_virtual_tokens=16, init="sample_vocab")
    result = train(
        model,
        examples,
        examples,
        TrainConfig(max_steps=200, batch_size=8, lr=0.1, head_lr=0.1, warmup_ratio=0.0, eval_every=25, progress=False),
    )
    assert result.dev_metrics["accuracy"] == 1.0, result.history


@pytest.mark.parametrize("family", LM_FAMILIES)
def test_verbalizer_readout_is_used_where_there_is_an_lm_head(load, family):
    assert make(load(family), "soft_prompt").task.config.readout == "verbalizer"
    assert make(load(family), "linear_probe").task.config.readout == "head"


def test_encoder_without_lm_head_uses_a_head_or_similarity(load):
    assert make(load("bert_encoder"), "soft_prompt").task.config.readout == "head"
    assert make(load("bert_encoder"), "hard_prompt").task.config.readout == "similarity"


@pytest.mark.parametrize("family", LM_FAMILIES)
def test_readout_logits_equal_the_full_lm_logits_at_that_position(load, examples, family):
    """Only the readout position goes through the LM head; the result is the model's own logits there."""
    model = make(load(family), "hard_prompt")
    backbone = model.backbone
    batch = model.task.collate([model.task.encode(e) for e in examples], with_labels=False)
    inputs = ModelInputs(
        backbone.embed(batch["input_ids"]), batch["attention_mask"], readout_index=batch["readout_index"]
    )
    with torch.no_grad():
        picked = backbone(inputs).readout_logits  # (B, V)
        kwargs = dict(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask)
        if backbone.kind == "encoder_decoder":
            full = backbone.model(**kwargs, decoder_input_ids=backbone.decoder_start_ids(len(examples))).logits[:, 0]
        else:
            full = backbone.model(**kwargs, position_ids=backbone.position_ids(inputs.attention_mask)).logits
            full = full[torch.arange(len(examples)), batch["readout_index"]]
    assert picked.shape == (len(examples), backbone.input_embeddings.num_embeddings)
    torch.testing.assert_close(picked, full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", ["t5", "bart"])
def test_a_seq2seq_verbalizer_reads_where_the_decoder_predicts_the_masked_span(load, family):
    """T5 answers a masked input with "<extra_id_0> span": the label is read after the sentinel, as
    OpenPrompt feeds "<pad> <extra_id_0>". BART rewrites its input: the label is read at the mask's
    own position of the shifted input. Both checked against the model's own logits there."""
    backbone = load(family)
    model = PromptModel.create(backbone, "hard_prompt", task_config(), seed=0).eval()
    texts = [Example("the movie was great"), Example("a terrible film , really")]
    features = [model.task.encode(e) for e in texts]
    with torch.no_grad():
        scores = model(model.task.collate(features, with_labels=False))
        for row, feature in zip(scores, features):
            tokens = backbone.tokenizer.convert_ids_to_tokens(feature["decoder_input_ids"])
            if family == "t5":
                assert tokens[1:] == ["<extra_id_0>"] and feature["decoder_index"] == 1
            else:
                assert feature["decoder_input_ids"][1:] == feature["input_ids"][:-1]
                assert feature["input_ids"][feature["decoder_index"]] == backbone.tokenizer.mask_token_id
            logits = backbone.model(
                input_ids=torch.tensor([feature["input_ids"]]),
                decoder_input_ids=torch.tensor([feature["decoder_input_ids"]]),
            ).logits
            expected = logits[0, feature["decoder_index"]].float().log_softmax(-1)[model.task.word_ids]
            torch.testing.assert_close(row, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_prompt_starts_from_its_seed_alone(load, method):
    """Initial values come from a generator seeded by the run's seed, not from whatever the process
    drew before; without a seed, two prompts made one after another differ."""
    backbone = load("gpt2")
    config = (
        task_config(template="{prompt} {text} it was {mask} .")
        if METHODS[method].prompt_slots.__func__ is not PromptMethod.prompt_slots.__func__
        else task_config()
    )
    options = {"num_tokens": 2} if "num_tokens" in METHODS[method].Config.__dataclass_fields__ else {}

    def state(seed):
        model = PromptModel.create(backbone, method, config, dict(options), seed=seed)
        return {k: v.clone() for k, v in model.trainable_state().items()}

    first = state(7)
    torch.rand(100)  # other draws in between change nothing
    again = state(7)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    if method in ("soft_prompt", "prefix", "deep_prompt", "p_tuning", "pez", "linear_probe"):
        one, two = state(None), state(None)
        assert any(not torch.equal(one[k], two[k]) for k in one)


# ---- every registered task with every registered method, on every family -------------------------

TAGS = ("O", "B-LOC", "B-MISC", "B-PER", "I-PER")


class TaskCase:
    """How the matrix makes a prompt of one task: its config, a few examples, and which methods or
    families the task refuses (refusals are asserted, not skipped)."""

    def __init__(self, config, examples, refuses):
        self.config, self.examples, self.refuses = config, examples, refuses


def _classification_config(method, backbone):
    if _slots(METHODS[method]):
        return task_config(
            template="{prompt} {text} it was {mask} ." if backbone.has_lm_head else "{prompt} {text}",
            verbalizer=(("bad",), ("good",)) if backbone.has_lm_head else None,
        )
    if method == "hard_prompt" and not backbone.has_lm_head:
        return task_config(template="{text} it was {mask} .")  # similarity readout
    return task_config()


def _generation_examples():
    from conftest import SENTENCES

    return [
        Example(text, origin=f"row {i}", targets=("good" if label == "1" else "bad",))
        for i, (text, label) in enumerate(SENTENCES, 1)
    ]


def _token_examples():
    from prompttune.tasks.token_classification import TokenExample

    rows = [
        ("the movie was great", "O B-MISC O O"),
        ("a terrible film", "O B-PER I-PER"),
        ("i loved the story", "O O O B-LOC"),
    ]
    return [TokenExample.from_tokens(t.split(), g.split(), f"row {i}") for i, (t, g) in enumerate(rows, 1)]


def _token_config(method, backbone):
    from prompttune.tasks.token_classification import TokenClassificationConfig

    return TokenClassificationConfig(labels=TAGS)


TASK_CASES = {
    "classification": TaskCase(
        _classification_config,
        lambda: [
            Example(t, label=l, origin=f"row {i}") for i, (t, l) in enumerate(__import__("conftest").SENTENCES, 1)
        ],
        lambda method, backbone: False,
    ),
    "generation": TaskCase(
        lambda method, backbone: GenerationConfig(max_source_length=16, max_target_length=4),
        _generation_examples,
        lambda method, backbone: _slots(METHODS[method]) or backbone.kind == "encoder",
    ),
    "token_classification": TaskCase(
        _token_config, _token_examples, lambda method, backbone: _slots(METHODS[method]) or not METHODS[method].trains
    ),
}


def test_every_registered_task_has_a_case_in_the_matrix():
    from prompttune.tasks import TASKS

    assert set(TASK_CASES) == set(TASKS)


def _options(method):
    fields = METHODS[method].Config.__dataclass_fields__
    options = {}
    if "num_virtual_tokens" in fields:
        options["num_virtual_tokens"] = 3
    if "num_tokens" in fields:
        options["num_tokens"] = 2
    if method == "prefix":
        options["hidden_size"] = 16
    return options


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("task", sorted(TASK_CASES))
def test_every_task_with_every_method(load, tmp_path, task, method, family):
    """Gradients reach exactly what trains (nothing of a frozen backbone), a step changes it, and a
    saved prompt loaded onto a fresh copy of the model gives bit-identical scores; what a task
    cannot take is refused with a message."""
    case = TASK_CASES[task]
    backbone = load(family)
    config = case.config(method, backbone)
    if case.refuses(method, backbone):
        with pytest.raises(ConfigError):
            PromptModel.create(backbone, method, config, _options(method), seed=0)
        return
    model = PromptModel.create(backbone, method, config, _options(method), seed=0)
    batch = model.task.collate(model.task.training_features(case.examples()))
    groups = model.parameter_groups(lr=1e-2, head_lr=1e-2) if model.trains else []
    # (autoprompt with a verbalizer trains nothing by gradient: its search is tested in test_searched.py)
    if groups:
        model.train()
        model.loss(batch).backward()
        trainable = {id(p) for g in groups for p in g["params"]}
        for name, p in model.backbone.model.named_parameters():
            if model.method.shares_backbone:
                assert p.grad is None, f"frozen backbone parameter {name} got a gradient"
            else:
                assert id(p) in trainable
        for g in groups:
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in g["params"]), g["name"]
        before = {k: v.clone() for k, v in model.trainable_state().items()}
        torch.optim.SGD(groups, lr=0.1).step()
        assert any(not torch.equal(v, before[k]) for k, v in model.trainable_state().items())
    model.eval()
    with torch.no_grad():
        expected = model(batch)
    save_prompt(model, tmp_path / "prompt")
    loaded = load_prompt(tmp_path / "prompt", backbone=load(family))
    with torch.no_grad():
        assert torch.equal(loaded(batch), expected)
    assert loaded.task.config == model.task.config and loaded.method.config == model.method.config
