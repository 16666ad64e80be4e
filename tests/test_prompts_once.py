"""A causal decoder's virtual tokens computed once per batch and attached to the rows as a prefix
give what reading them in every row gives: logits, loss, gradients, generated tokens, mixed batches,
on both padding sides; and the rows no longer carry them."""

import pytest
import torch
from conftest import SENTENCES, task_config

from prompttune import Example, PromptModel, PromptSet, load_prompt, save_prompt
from prompttune.tasks import GenerationConfig

DECODERS = ("gpt2", "llama")
METHODS = {
    "soft_prompt": {"num_virtual_tokens": 5},
    "p_tuning": {"num_virtual_tokens": 4},
    "hybrid": {"num_virtual_tokens": 3},
}


def make(backbone, method, task=None):
    torch.manual_seed(0)
    name = "soft_prompt" if method == "hybrid" else method
    config = task or task_config(
        template="review , {text} it was {mask}" if method == "hybrid" else "{text} it was {mask}"
    )
    model = PromptModel.create(backbone, name, config, dict(METHODS[method]))
    with torch.no_grad():  # away from the initialisation, so that the prompt matters
        for p in model.method.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def switched(switch: str, model, run):
    """`run(model)` with the backbone's `switch` (prompts_once, packs_rows) on, then off."""
    setattr(model.backbone, switch, True)
    on = run(model)
    setattr(model.backbone, switch, False)
    try:
        off = run(model)
    finally:
        setattr(model.backbone, switch, True)
    return on, off


def both_ways(model, run):
    """`run(model)` with the prompt computed once, then read by every row."""
    return switched("prompts_once", model, run)


def attention_inputs(model, run) -> list[tuple[int, int]]:
    """(rows, tokens) of every input the first attention layer reads while `run()` runs, without
    gradients."""
    model.backbone.prefix_layout()  # measured by a forward of its own, before counting
    lengths = []
    hook = model.backbone.attention_sites[0][2].register_forward_hook(
        lambda module, args, kwargs, out: lengths.append(
            tuple(kwargs.get("hidden_states", args[0] if args else None).shape[:2])
        ),
        with_kwargs=True,
    )
    try:
        with torch.no_grad():
            run()
    finally:
        hook.remove()
    return lengths


# One long row beside the short ones: packing puts short rows together into sequences of its width.
LONG = ("a long and winding review of a film that goes on and on", "0")


def examples():
    return [Example(t, label=l, origin=f"row {i}") for i, (t, l) in enumerate(SENTENCES + [LONG])]


def packed_sequences(model, batch) -> int:
    """How many sequences the rows of `batch` run in (packed: fewer than its rows)."""
    return attention_inputs(model, lambda: model(batch))[-1][0]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("family", DECODERS)
def test_logits_loss_and_gradients_equal_reading_the_prompt_in_every_row(load, family, method, side):
    model = make(load(family, padding_side=side), method)
    batch = model.task.collate([model.task.encode(e) for e in examples()])

    def run(m):
        m.zero_grad(set_to_none=True)
        m.parameter_groups(1e-3, 1e-3)
        logits = m(batch)
        loss = m.task.loss(logits, batch)
        loss.backward()
        return logits.detach(), loss.detach(), {n: p.grad.clone() for n, p in m.method.named_parameters()}

    (logits, loss, grads), (logits_full, loss_full, grads_full) = both_ways(model, run)
    torch.testing.assert_close(logits, logits_full, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loss, loss_full, atol=1e-6, rtol=1e-5)
    assert grads.keys() == grads_full.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], grads_full[name], atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("family", DECODERS)
def test_generation_equals_reading_the_prompt_in_every_row(load, family):
    model = make(load(family), "soft_prompt", GenerationConfig(max_target_length=6))
    sources = [Example("the movie was great"), Example("dull"), Example("a terrible film and a dull plot")]
    for options in ({}, {"num_beams": 3, "num_return_sequences": 2}):
        once, every_row = both_ways(model, lambda m: m.task.generate_texts(m, sources, **options))
        assert once == every_row and len(once) == len(sources) * options.get("num_return_sequences", 1)


@pytest.mark.parametrize("family", DECODERS)
def test_a_mixed_batch_and_a_saved_prompt_equal_the_prompt_alone(load, family, tmp_path):
    backbone = load(family)
    models = {name: make(backbone, name) for name in ("soft_prompt", "p_tuning")}
    torch.manual_seed(1)
    models["prefix"] = PromptModel.create(
        backbone, "prefix", task_config(), {"num_virtual_tokens": 3, "hidden_size": 8}
    )
    rows = [(name, e) for e in examples() for name in models]
    prompts = PromptSet(backbone)
    for name, model in models.items():
        prompts.add(name, load_prompt(save_prompt(model, tmp_path / name), backbone=backbone))
    mixed = prompts.classify(rows)
    backbone.prompts_once = False
    alone = {name: model.predict_proba([e for n, e in rows if n == name]) for name, model in models.items()}
    backbone.prompts_once = True
    seen = {name: 0 for name in models}
    for (name, _), result in zip(rows, mixed):
        expected = alone[name][seen[name]]
        seen[name] += 1
        torch.testing.assert_close(torch.tensor(list(result["probabilities"].values())), expected, atol=1e-5, rtol=1e-4)


def test_the_rows_no_longer_carry_the_virtual_tokens(load):
    model = make(load("llama"), "soft_prompt")
    model.backbone.packs_rows = False  # the padded batch, to see its shape
    batch = model.task.collate([model.task.encode(e) for e in examples()])
    lengths = attention_inputs(model, lambda: both_ways(model, lambda m: m(batch)))
    rows, length = batch["input_ids"].shape
    # Once: one row of the 5 virtual tokens, then the rows alone; every row: the rows with them.
    assert lengths == [(1, 5), (rows, length), (rows, length + 5)]


def both_layouts(model, run):
    """`run(model)` with the rows packed into one sequence, then as a padded batch."""
    return switched("packs_rows", model, run)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize(
    "method,task",
    [
        ("soft_prompt", "classification"),
        ("prefix", "classification"),
        ("hard_prompt", "classification"),
        ("linear_probe", "classification"),
        ("soft_prompt", "generation"),
        ("prefix", "generation"),
    ],
)
@pytest.mark.parametrize("family", DECODERS)
def test_packed_rows_equal_the_padded_batch(load, family, method, task, side):
    backbone = load(family, padding_side=side)
    torch.manual_seed(0)
    config = GenerationConfig(max_target_length=6) if task == "generation" else task_config()
    options = {"soft_prompt": {"num_virtual_tokens": 4}, "prefix": {"num_virtual_tokens": 3, "hidden_size": 8}}.get(
        method, {}
    )
    model = PromptModel.create(backbone, method, config, options)
    rows = [Example(t, label=l, targets=(t.split()[-1] + " film",)) for t, l in SENTENCES + [LONG]]
    batch = model.task.collate(model.task.training_features(rows))
    assert packed_sequences(model, batch) < len(rows)  # packing runs

    def run(m):
        m.zero_grad(set_to_none=True)
        groups = m.parameter_groups(1e-3, 1e-3)
        out = m(batch)
        loss = m.task.loss(out, batch)
        if loss.requires_grad:  # (a hard prompt trains nothing)
            loss.backward()
        grads = {id(p): p.grad.clone() for g in groups for p in g["params"] if p.grad is not None}
        return out.detach(), loss.detach(), grads

    (out, loss, grads), (out_padded, loss_padded, grads_padded) = both_layouts(model, run)
    assert bool(grads) == (method != "hard_prompt")
    if task == "generation":  # the logits at the real positions (padding's are unused)
        keep = batch["attention_mask"].bool()
        out, out_padded = out[keep], out_padded[keep]
    torch.testing.assert_close(out, out_padded, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(loss, loss_padded, atol=1e-6, rtol=1e-5)
    assert grads.keys() == grads_padded.keys()
    for key in grads:
        torch.testing.assert_close(grads[key], grads_padded[key], atol=1e-6, rtol=1e-4)


def test_packed_rows_run_in_fewer_sequences_than_the_padded_batch(load):
    model = make(load("llama", padding_side="left"), "soft_prompt")
    texts = ["a long and winding review of a film that goes on and on", "good", "bad", "a fine film", "so dull", "wow"]
    batch = model.task.collate([model.task.encode(Example(t, label="0")) for t in texts])
    lengths = attention_inputs(model, lambda: both_layouts(model, lambda m: m(batch)))
    rows, length = batch["input_ids"].shape
    sizes = batch["attention_mask"].sum(1).tolist()
    assert sizes == [16, 4, 4, 6, 5, 4] and length == 16
    # Longest first, each into the first sequence with room: [16], [6, 5, 4], [4, 4]: 3 sequences of
    # the batch's width instead of 6 rows.
    assert lengths == [(1, 5), (3, length), (1, 5), (rows, length)]
