"""The training loop: resumable, early-stopping, accumulating, logging."""

import json

import pytest
import torch
from conftest import task_config

from prompttune import PromptModel, TrainConfig, train
from prompttune.training import checkpoint


def fresh(load, method="soft_prompt"):
    torch.manual_seed(0)
    options = {"num_virtual_tokens": 4} if method == "soft_prompt" else {}
    return PromptModel.create(load("bert"), method, task_config(), options)


class Crash(Exception):
    pass


def crash_at_step(model, step: int, monkeypatch) -> None:
    """Make `model`'s training fail in the forward pass of `step`."""
    calls = {"n": 0}
    original = model.task.loss

    def crashing(logits, labels):
        calls["n"] += 1
        if calls["n"] == step:
            raise Crash()
        return original(logits, labels)

    monkeypatch.setattr(model.task, "loss", crashing)


def test_resume_after_a_crash_ends_where_an_uninterrupted_run_ends(load, examples, tmp_path, monkeypatch):
    config = TrainConfig(max_steps=12, batch_size=2, lr=0.05, eval_every=3, checkpoint_every=4, progress=False, seed=3)
    reference = fresh(load)
    train(reference, examples, examples, config, output_dir=tmp_path / "a")
    expected = reference.trainable_state()

    interrupted = fresh(load)
    crash_at_step(interrupted, 7, monkeypatch)
    with pytest.raises(Crash):
        train(interrupted, examples, examples, config, output_dir=tmp_path / "b")
    assert checkpoint.load(tmp_path / "b")["trainer"]["step"] == 4

    resumed = fresh(load)
    result = train(resumed, examples, examples, config, output_dir=tmp_path / "b", resume=True)
    assert result.steps == 12
    for name, tensor in resumed.trainable_state().items():
        torch.testing.assert_close(tensor, expected[name], atol=1e-6, rtol=1e-5)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["log.jsonl"], (
        "a finished run leaves no checkpoint behind"
    )

    def log(folder):
        return [
            {k: v for k, v in json.loads(line).items() if k != "time"}
            for line in (folder / "log.jsonl").read_text().splitlines()
        ]

    assert [e["step"] for e in log(tmp_path / "b") if "eval" in e] == [3, 6, 9, 12]
    # Every logged loss, the first after the resume included, averages the same steps as the
    # uninterrupted run's.
    losses = {
        "a": [e for e in log(tmp_path / "a") if "loss" in e],
        "b": [e for e in log(tmp_path / "b") if "loss" in e],
    }
    assert [e["step"] for e in losses["b"]] == [e["step"] for e in losses["a"]] == [10, 12]
    for ours, theirs in zip(losses["b"], losses["a"]):
        assert ours["loss"] == pytest.approx(theirs["loss"], rel=1e-5)


def test_resume_without_a_checkpoint_is_an_error(load, examples, tmp_path):
    from prompttune import ConfigError

    with pytest.raises(ConfigError, match="no checkpoint"):
        train(fresh(load), examples, None, TrainConfig(max_steps=2, progress=False), output_dir=tmp_path, resume=True)


def test_early_stopping_keeps_the_best_prompt(load, examples):
    model = fresh(load)
    # A learning rate this large makes dev accuracy wander; patience 1 stops at the first drop.
    result = train(
        model,
        examples,
        examples,
        TrainConfig(max_steps=200, batch_size=4, lr=5.0, eval_every=1, patience=1, warmup_ratio=0.0, progress=False),
    )
    assert result.stopped_early and result.steps < 200
    best = max(h["accuracy"] for h in result.history)
    assert result.dev_metrics["accuracy"] == best


def test_gradient_accumulation_matches_a_full_batch(load, examples):
    a, b = fresh(load, "linear_probe"), fresh(load, "linear_probe")
    common = dict(max_steps=3, lr=0.1, head_lr=0.1, warmup_ratio=0.0, max_grad_norm=None, progress=False)
    train(a, examples, None, TrainConfig(batch_size=8, **common))
    train(b, examples, None, TrainConfig(batch_size=8, grad_accum=4, **common))
    for name, tensor in a.trainable_state().items():
        torch.testing.assert_close(tensor, b.trainable_state()[name], atol=1e-5, rtol=1e-4)


def test_adafactor_trains(load, examples):
    model = fresh(load)
    before = model.method.prompt.detach().clone()
    train(model, examples, None, TrainConfig(max_steps=3, optimizer="adafactor", lr=0.3, progress=False))
    assert not torch.equal(before, model.method.prompt)


def test_bf16_autocast_trains_and_keeps_the_prompt_in_float32(load, examples):
    """The path a GPU run takes (Accelerate's bf16 autocast), exercised on the CPU."""
    model = fresh(load)
    before = model.method.prompt.detach().clone()
    result = train(
        model,
        examples,
        examples,
        TrainConfig(max_steps=4, batch_size=4, lr=0.1, mixed_precision="bf16", progress=False),
    )
    assert model.method.prompt.dtype == torch.float32
    assert not torch.equal(before, model.method.prompt)
    assert result.dev_metrics["count"] == len(examples)


def test_runs_in_one_process_may_use_different_precisions(load, examples):
    """A bf16 run leaves nothing behind: the float32 runs before and after it end bit-identical, and
    the bf16 run's prompt, also float32, differs from theirs."""
    prompts = []
    for precision in ("no", "bf16", "no"):
        model = fresh(load)
        before = model.method.prompt.detach().clone()
        train(
            model,
            examples,
            None,
            TrainConfig(max_steps=2, batch_size=4, lr=0.1, mixed_precision=precision, progress=False),
        )
        assert model.method.prompt.dtype == torch.float32 and not torch.equal(before, model.method.prompt)
        prompts.append(model.method.prompt.detach().clone())
    assert torch.equal(prompts[0], prompts[2])
    assert not torch.equal(prompts[0], prompts[1])


@pytest.mark.parametrize("optimizer", ["adamw", "adafactor"])
def test_checkpoints_are_read_without_unpickling(load, examples, tmp_path, monkeypatch, optimizer):
    config = TrainConfig(
        max_steps=6,
        batch_size=2,
        lr=0.05,
        eval_every=2,
        checkpoint_every=2,
        progress=False,
        seed=1,
        optimizer=optimizer,
    )
    reference = fresh(load)
    train(reference, examples, examples, config)
    interrupted = fresh(load)
    crash_at_step(interrupted, 5, monkeypatch)
    with pytest.raises(Crash):
        train(interrupted, examples, examples, config, output_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["checkpoint.json", "log.jsonl", "state.json", "state.safetensors"]

    def no_pickle(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    monkeypatch.setattr(torch, "load", no_pickle)
    resumed = fresh(load)
    train(resumed, examples, examples, config, output_dir=tmp_path, resume=True)
    for name, tensor in reference.trainable_state().items():
        assert torch.equal(resumed.trainable_state()[name], tensor), name


def test_inputs_are_cut_to_the_positions_the_prompt_leaves(load, examples):
    from prompttune import ConfigError, Example

    backbone = load("bert")  # 128 learned positions
    long_text = " ".join(["great"] * 400)
    # 100 virtual tokens leave 28 positions: the default max_length (256) is lowered to them, and a
    # dev text longer than the model trains and evaluates (instead of failing at the first evaluation).
    model = PromptModel.create(backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 100})
    assert len(model.task.encode(Example(long_text, label="1"))["input_ids"]) == 28
    result = train(
        model,
        examples,
        examples + [Example(long_text, label="1", origin="dev, row 9")],
        TrainConfig(max_steps=2, batch_size=4, progress=False),
    )
    assert result.dev_metrics["count"] == len(examples) + 1
    assert model.predict_proba([Example(long_text)]).shape == (1, 2)
    with pytest.raises(
        ConfigError,
        match=r"the prompt takes 125 of the model's 128 positions, leaving 3 for the input "
        r"\(at least 8 needed\); use fewer virtual tokens",
    ):
        PromptModel.create(backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 125})


@pytest.mark.parametrize("family,method", [("gpt2", "soft_prompt"), ("bert", "prefix"), ("t5", "soft_prompt")])
def test_forwards_over_rows_of_similar_length_give_the_batchs_loss_and_gradient(load, family, method):
    from conftest import task_config as classification

    from prompttune import Example
    from prompttune.tasks import GenerationConfig
    from prompttune.training.loop import batch_loss

    backbone = load(family)
    generation = family == "t5"
    torch.manual_seed(0)
    model = PromptModel.create(
        backbone,
        method,
        GenerationConfig(max_target_length=6) if generation else classification(),
        {"num_virtual_tokens": 3} if method == "soft_prompt" else {"num_virtual_tokens": 2, "hidden_size": 8},
    )
    texts = [
        "great",
        "the movie was great",
        "a terrible film and a dull plot and awful acting",
        "dull",
        "i loved the story and the acting was really wonderful",
        "bad",
    ]
    examples = [
        Example(t, label=str(i % 2), targets=(t.split()[0] + " film",), origin=f"row {i}") for i, t in enumerate(texts)
    ]
    rows = model.task.training_features(examples)
    model.parameter_groups(1e-3, 1e-3)
    backbone.prefix_layout()  # measured by a forward of its own, before counting
    results = {}
    for budget in (None, 24):
        model.zero_grad(set_to_none=True)
        forwards = []
        hook = backbone.model.register_forward_pre_hook(lambda *a: forwards.append(1))
        loss, _ = batch_loss(model, model.task, rows, TrainConfig(max_batch_tokens=budget), backbone.device)
        hook.remove()
        loss.backward()
        results[budget] = (
            loss.detach(),
            {n: p.grad.clone() for n, p in model.method.named_parameters()},
            len(forwards),
        )
    (whole, whole_grads, one), (split, split_grads, several) = results[None], results[24]
    assert one == 1 and several > 1
    torch.testing.assert_close(split, whole, atol=1e-6, rtol=1e-5)
    for name in whole_grads:
        torch.testing.assert_close(split_grads[name], whole_grads[name], atol=1e-6, rtol=1e-4)
