"""Generation and per-layer prefixes on every family that can generate (tiny random models, offline)."""

import pytest
import torch

from prompttune import PromptModel, TrainConfig, load_prompt, save_prompt, train
from prompttune.core.backbone import ModelInputs
from prompttune.tasks import GenerationConfig
from prompttune.tasks.data import Example

GEN_FAMILIES = ("gpt2", "llama", "t5", "bart")
METHODS = ("prefix", "deep_prompt", "soft_prompt", "p_tuning")
SOURCES = [f"{a} {b}" for a in ("red", "blue", "green", "one") for b in ("cat", "dog", "house", "tree")]  # 16
TARGET = "the movie was great ."


def make(backbone, method, **options):
    options.setdefault("num_virtual_tokens", 4)
    if method == "prefix":
        options.setdefault("hidden_size", 32)
    return PromptModel.create(backbone, method, GenerationConfig(max_source_length=16, max_target_length=8), options)


def fixed_target_examples():
    return [Example(text=s, targets=(TARGET,), origin=f"row {i}") for i, s in enumerate(SOURCES, 1)]


def batch_loss(model, examples):
    batch = model.task.collate(model.task.training_features(examples))
    with torch.no_grad():
        return model.loss(batch).item()


def greedy_by_recomputation(model, examples, steps):
    """Greedy decoding that runs the whole sequence through the training forward at every step
    (no KV cache): the reference `generate` must agree with. End-of-sequence is never chosen (as
    `min_new_tokens` makes `generate` do)."""
    task = model.task

    def pick(logits):
        logits[:, task.eos_id] = float("-inf")
        return logits.argmax(-1).tolist()

    features = [task.encode(e) for e in examples]
    model.eval()
    if model.backbone.kind == "decoder":
        rows = [list(f["input_ids"]) for f in features]
        for _ in range(steps):
            batch = task.collate([{"input_ids": r} for r in rows], with_labels=False, for_generation=True)
            with torch.no_grad():
                logits = model(batch)[:, -1]  # left padded: each row's last token is last
            for row, token in zip(rows, pick(logits)):
                row.append(token)
        return [r[len(f["input_ids"]) :] for r, f in zip(rows, features)]
    start = task.decoder_start
    generated = [[] for _ in features]
    for _ in range(steps):
        batch = task.collate(features, with_labels=False)
        batch["decoder_input_ids"] = torch.tensor([[start] + g for g in generated])
        with torch.no_grad():
            logits = model(batch)[:, -1]
        for row, token in zip(generated, pick(logits)):
            row.append(token)
    return generated


@pytest.mark.parametrize("family", GEN_FAMILIES)
def test_prefix_learns_a_fixed_target_and_emits_it_under_greedy_decoding(load, family):
    torch.manual_seed(0)
    model = make(load(family), "prefix")
    data = fixed_target_examples()
    before = batch_loss(model, data)
    train(model, data, config=TrainConfig(max_steps=150, batch_size=16, lr=3e-2, warmup_ratio=0.0, progress=False))
    after = batch_loss(model, data)
    assert after <= 0.1 * before, (before, after)
    assert model.task.generate_texts(model, data, batch_size=16) == [TARGET] * len(data)


@pytest.mark.parametrize("family", GEN_FAMILIES)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("side", ("left", "right"))
def test_generate_with_kv_cache_equals_recomputing_every_step(load, family, method, side):
    """The prompt placed once in the cache (prefix) or processed once (virtual tokens) gives the
    same tokens as running the training forward over the whole sequence at every step."""
    model = make(load(family, padding_side=side), method)
    examples = [Example(text=s) for s in ("red cat", "the blue dog was very good", "one")]
    expected = greedy_by_recomputation(model, examples, steps=5)
    batch = model.task.collate([model.task.encode(e) for e in examples], with_labels=False, for_generation=True)
    got = model.generate(batch, max_new_tokens=5, min_new_tokens=5).tolist()
    assert got == expected


@pytest.mark.parametrize("family", GEN_FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_save_load_gives_identical_generations_and_loss(load, tmp_path, family, method):
    model = make(load(family), method)
    data = fixed_target_examples()[:8]
    train(model, data, config=TrainConfig(max_steps=3, batch_size=4, progress=False))
    texts = model.task.generate_texts(model, data, num_beams=2, max_new_tokens=6)
    loss = batch_loss(model, data)
    save_prompt(model, tmp_path / "p")
    loaded = load_prompt(tmp_path / "p", backbone=load(family))
    assert loaded.task.generate_texts(loaded, data, num_beams=2, max_new_tokens=6) == texts
    assert batch_loss(loaded, data) == pytest.approx(loss, abs=1e-6)


@pytest.mark.parametrize("family", ("gpt2", "llama"))
@pytest.mark.parametrize("method", ("prefix", "soft_prompt"))
def test_padding_side_does_not_change_the_loss(load, family, method):
    data = fixed_target_examples()[:5] + [Example(text="the very long red cat and the dog", targets=("a b",))]
    losses = {}
    for side in ("left", "right"):
        torch.manual_seed(0)
        losses[side] = batch_loss(make(load(family, padding_side=side), method), data)
    assert losses["left"] == pytest.approx(losses["right"], rel=1e-5)


@pytest.mark.parametrize("family", GEN_FAMILIES + ("bert",))
def test_every_attention_site_receives_its_prefix(load, family):
    """Changing one site's prefix (encoder, decoder, cross-attention; or the only one) changes the
    output; the prefix has each site's own KV-head count."""
    backbone = load(family)
    layout = backbone.prefix_layout()
    expected = {"self"} if backbone.kind != "encoder_decoder" else {"encoder", "decoder", "cross"}
    assert set(layout) == expected
    if family == "llama":
        assert layout["self"][1] == backbone.config.num_key_value_heads == 2
    model = PromptModel.create(
        backbone,
        "deep_prompt",
        GenerationConfig(max_target_length=8) if family != "bert" else _cls_config(),
        {"num_virtual_tokens": 3},
    )
    ids = torch.tensor([[20, 21, 22, 23]])
    inputs = model.method.prepare(
        ModelInputs(
            backbone.embed(ids), torch.ones_like(ids), readout_index=torch.tensor([3]), full_logits=family != "bert"
        ),
        backbone,
    )

    def out(prefix):
        with torch.no_grad():
            result = backbone(
                ModelInputs(
                    inputs.inputs_embeds,
                    inputs.attention_mask,
                    readout_index=inputs.readout_index,
                    prefix=prefix,
                    full_logits=inputs.full_logits,
                )
            )
        return result.logits if result.logits is not None else result.hidden

    reference = out(inputs.prefix)
    assert not torch.allclose(reference, out(None))
    for site in layout:
        changed = dict(inputs.prefix.kv)
        changed[site] = changed[site] * 2
        from prompttune.core.kv_prefix import Prefix

        assert not torch.allclose(reference, out(Prefix(changed, inputs.prefix.mask))), site


def _cls_config():
    from conftest import task_config

    return task_config()


@pytest.mark.parametrize("family", ("gpt2", "llama"))
@pytest.mark.parametrize("method", ("prefix", "deep_prompt"))
def test_text_initialisation_is_the_models_own_activations_of_those_words(load, family, method):
    """A decoder with a prefix initialised from words W reading input X gives what it gives reading
    W followed by X (Li & Liang's real-word initialisation; the prefix takes W's positions)."""
    backbone = load(family)
    words = "the movie was"
    model = make(backbone, method, init="text", init_text=words, num_virtual_tokens=3)
    w = backbone.tokenizer(words, add_special_tokens=False)["input_ids"]
    x = backbone.tokenizer("really good fun", add_special_tokens=False)["input_ids"]
    ids = torch.tensor([x])
    inputs = model.method.prepare(ModelInputs(backbone.embed(ids), torch.ones_like(ids), full_logits=True), backbone)
    joined = torch.tensor([w + x])
    with torch.no_grad():
        with_prefix = backbone(inputs).logits
        reading = backbone(ModelInputs(backbone.embed(joined), torch.ones_like(joined), full_logits=True)).logits[
            :, len(w) :
        ]
    torch.testing.assert_close(with_prefix, reading, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("family", ("gpt2", "t5", "bart", "bert"))
@pytest.mark.parametrize("method", ("prefix", "soft_prompt"))
def test_gradient_checkpointing_recomputes_and_gives_the_same_gradients(load, family, method):
    def gradients(checkpointing):
        torch.manual_seed(0)
        backbone = load(family)
        if family == "bert":
            model = PromptModel.create(backbone, method, _cls_config(), {"num_virtual_tokens": 4})
            batch = model.task.collate(
                [
                    model.task.encode(Example("the movie was great", label="1")),
                    model.task.encode(Example("awful", label="0")),
                ]
            )
        else:
            model = make(backbone, method)
            batch = model.task.collate(model.task.training_features(fixed_target_examples()[:3]))
        calls = []
        backbone.prefix_layout()  # measured once, by a forward of its own, before counting
        # An attention module inside the first layer: called again when that layer is recomputed.
        backbone.attention_sites[0][2].register_forward_hook(lambda *a: calls.append(1))
        backbone.set_gradient_checkpointing(checkpointing)
        model.parameter_groups(1e-3, 1e-3)
        model.loss(batch).backward()
        grads = {n: p.grad.clone() for n, p in model.method.named_parameters() if p.grad is not None}
        return grads, len(calls)

    plain, plain_calls = gradients(False)
    checkpointed, checkpointed_calls = gradients(True)
    assert plain and plain.keys() == checkpointed.keys()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-5, rtol=1e-4)
    assert checkpointed_calls == 2 * plain_calls  # the layer ran again during backward


@pytest.mark.parametrize("family", GEN_FAMILIES)
def test_beam_search_and_sampling_with_a_prefix(load, family):
    model = make(load(family), "prefix")
    examples = [Example(text="red cat"), Example(text="the blue dog")]
    beams = model.task.generate_texts(model, examples, num_beams=3, num_return_sequences=2, max_new_tokens=4)
    assert len(beams) == 4
    torch.manual_seed(1)
    sampled = model.task.generate_texts(
        model, examples, do_sample=True, top_k=5, num_return_sequences=3, max_new_tokens=4
    )
    torch.manual_seed(1)
    again = model.task.generate_texts(
        model, examples, do_sample=True, top_k=5, num_return_sequences=3, max_new_tokens=4
    )
    assert len(sampled) == 6 and sampled == again


@pytest.mark.parametrize("method", ("prefix", "p_tuning"))
def test_reparameterised_prompts_export_their_output_and_keep_what_resuming_needs(load, tmp_path, method):
    model = make(load("gpt2"), method)
    train(model, fixed_target_examples()[:4], config=TrainConfig(max_steps=2, batch_size=4, progress=False))
    save_prompt(model, tmp_path / "p")
    from safetensors.torch import load_file

    exported = load_file(str(tmp_path / "p" / "prompt.safetensors"))
    resume = load_file(str(tmp_path / "p" / "training_state.safetensors"))
    if method == "prefix":
        layers, _, heads, length, size = exported["method.prefix.self"].shape
        assert (layers, heads, length, size) == (2, 4, 4, 8)
        assert any(k.startswith("mlp.") for k in resume)
    else:
        assert exported["method.prompt"].shape == (4, 32)
        assert any(k.startswith("encoder.") for k in resume)
    # Inference loads only the exported tensors; continuing training loads the reparameterisation too.
    inference = load_prompt(tmp_path / "p", backbone=load("gpt2"))
    assert inference.method.training_state() == {}
    resumed = load_prompt(tmp_path / "p", backbone=load("gpt2"), with_training_state=True)
    for name, tensor in model.trainable_state().items():
        torch.testing.assert_close(resumed.trainable_state()[name], tensor)


@pytest.mark.parametrize("family", GEN_FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_generation_training_touches_only_the_prompt(load, family, method):
    from test_matrix import digest

    model = make(load(family), method)
    before = digest(model.backbone)
    prompt_before = {k: v.clone() for k, v in model.trainable_state().items()}
    model.parameter_groups(1e-2, 1e-2)
    model.train()
    batch = model.task.collate(model.task.training_features(fixed_target_examples()[:4]))
    model.loss(batch).backward()
    for name, p in model.backbone.model.named_parameters():
        assert p.grad is None, f"frozen backbone parameter {name} got a gradient"
    assert all(p.grad is not None for p in model.method.parameters())
    train(model, fixed_target_examples()[:4], config=TrainConfig(max_steps=2, batch_size=4, lr=0.1, progress=False))
    assert digest(model.backbone) == before
    assert any(not torch.equal(v, prompt_before[k]) for k, v in model.trainable_state().items())


def test_generating_past_the_models_positions_is_a_clear_error(load):
    from prompttune.errors import ConfigError

    options = {"num_virtual_tokens": 3, "hidden_size": 8}
    with pytest.raises(
        ConfigError,
        match=r"the prompt \(3 positions\) and max_target_length 200 leave -77 of the "
        r"model's 128 positions for the source",
    ):
        PromptModel.create(load("gpt2"), "prefix", GenerationConfig(max_target_length=200), options)
    model = PromptModel.create(load("gpt2"), "prefix", GenerationConfig(max_target_length=20), options)
    with pytest.raises(ConfigError, match="exceed the model's 128 positions"):
        model.task.generate_texts(model, [Example(text="the movie was great")], max_new_tokens=200)
    # A source too long for what the prompt and the target leave is cut to fit.
    long_source = Example(text=" ".join(["great"] * 300), targets=("good",))
    assert len(model.task.encode(long_source, "good")["input_ids"]) <= 128 - 3
    assert len(model.task.generate_texts(model, [long_source])) == 1
