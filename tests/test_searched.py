"""Searched discrete prompts (autoprompt, pez): the search finds a planted trigger, lowers the
objective, and the exported hard prompt gives the searched prompt's outputs."""

import json
from dataclasses import replace

import pytest
import torch
from conftest import FAMILIES, SENTENCES, task_config

from prompttune import Example, PromptModel, TrainConfig, load_prompt, train
from prompttune.api import train_prompt
from prompttune.errors import ConfigError
from prompttune.model import run_backbone


def _scores(model, examples):
    batch = model.task.collate([model.task.encode(e) for e in examples], with_labels=False)
    model.eval()
    with torch.no_grad():
        return model(batch)


def _plant(backbone, model, batch, token, steps=100):
    """Give `token` an input embedding that, in every trigger slot, makes the model predict the
    batch's labels: a trigger planted in the vocabulary."""
    row = backbone.input_embeddings.weight[token].detach().clone().requires_grad_(True)
    optimizer = torch.optim.Adam([row], lr=0.1)
    for _ in range(steps):
        inputs = model.task.model_inputs(batch, backbone.embed(batch["input_ids"]))
        embeds = inputs.inputs_embeds.clone()
        embeds[:, batch["slot_index"][0]] = row
        loss = model.task.loss(
            model.task.logits(run_backbone(backbone, replace(inputs, inputs_embeds=embeds)), inputs, batch), batch
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        backbone.input_embeddings.weight[token] = row.detach()


def test_autoprompt_finds_a_planted_trigger(load):
    backbone = load("bert")
    model = PromptModel.create(backbone, "autoprompt", task_config(), {"num_tokens": 2, "num_candidates": 3})
    examples = [Example(text, label="1") for text, _ in SENTENCES]
    batch = model.task.collate([model.task.encode(e) for e in examples])
    planted = int(model.method.allowed[-1])
    assert planted not in model.method.trigger_ids.tolist()
    _plant(backbone, model, batch, planted)
    with torch.no_grad():
        before = float(model.loss(batch))
    train(model, examples, None, TrainConfig(max_steps=12, batch_size=8, progress=False))
    assert model.method.trigger_ids.tolist() == [planted, planted]
    with torch.no_grad():
        assert float(model.loss(batch)) < before / 5


@pytest.mark.parametrize("method", ["autoprompt", "pez"])
def test_search_lowers_the_objective(load, examples, method):
    backbone = load("bert")
    options = {"num_tokens": 3} if method == "pez" else {"num_tokens": 3, "num_candidates": 8}
    model = PromptModel.create(backbone, method, task_config(), options)
    batch = model.task.collate([model.task.encode(e) for e in examples])
    with torch.no_grad():
        before = float(model.loss(batch))
    train(model, examples, None, TrainConfig(max_steps=20, batch_size=8, progress=False, warmup_ratio=0.0))
    with torch.no_grad():
        after = float(model.loss(batch))
    assert after < before


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", ["autoprompt", "pez"])
def test_the_exported_hard_prompt_gives_the_searched_prompts_outputs(model_dirs, examples, tmp_path, family, method):
    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in SENTENCES))
    template = "{text} it was {mask} ." if family != "bert_encoder" else None
    result = train_prompt(
        model=str(model_dirs[family]),
        method=method,
        train=str(data),
        output=str(tmp_path / "out"),
        template=template,
        verbalizer="0:bad,1:good" if template else None,
        method_options={"num_tokens": 3},
        max_steps=6,
        batch_size=4,
        progress=False,
    )
    meta = json.loads((tmp_path / "out" / "prompt.json").read_text())
    assert meta["method"] == "hard_prompt" and meta["searched"]["method"] == method
    text = meta["searched"]["prompt_text"]
    assert text in meta["task_config"]["template"] and "{prompt}" not in meta["task_config"]["template"]
    hard = load_prompt(tmp_path / "out")
    # The same prompt as a searched prompt: the tokens in the slots of the template.
    searched = PromptModel.create(
        hard.backbone,
        method,
        task_config(template=template, verbalizer=(("bad",), ("good",)))
        if template
        else task_config(template=None, verbalizer=None),
        {"num_tokens": 3},
    )
    ids = hard.backbone.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        if method == "autoprompt":
            searched.method.trigger_ids.copy_(torch.tensor(ids))
        else:
            searched.method.vectors.copy_(hard.backbone.input_embeddings.weight[torch.tensor(ids)])
        if hard.task.config.readout == "head":
            searched.task.head.load_state_dict(hard.task.head.state_dict())
    torch.testing.assert_close(_scores(hard, examples), _scores(searched, examples), atol=1e-5, rtol=1e-4)
    # What trained: pez's vectors or autoprompt's nothing (its tokens are searched), and a head if any.
    assert result["parameters"]["trainable"] == searched.count_parameters()["trainable"]
    assert result["parameters"]["trainable"] == (3 * hard.backbone.hidden_size if method == "pez" else 0) + sum(
        p.numel() for p in hard.task.parameters()
    )


def test_searched_prompts_refuse_what_they_cannot_do(load):
    backbone = load("bert")
    with pytest.raises(ConfigError, match="init_text"):
        PromptModel.create(backbone, "autoprompt", task_config(), {"num_tokens": 2, "init_text": "the movie was"})
    with pytest.raises(ConfigError, match="classification"):
        from prompttune.tasks import GenerationConfig

        PromptModel.create(load("gpt2"), "pez", GenerationConfig(), {"num_tokens": 2})
    with pytest.raises(ConfigError, match=r"\{prompt\} marks where"):
        PromptModel.create(backbone, "soft_prompt", task_config(template="{prompt} {text} {mask}"))


def test_inspect_finds_the_words_a_soft_prompt_started_from(load, model_dirs, tmp_path):
    from prompttune import save_prompt
    from prompttune.analysis.inspection import format_report, inspect_prompt, plot_report

    backbone = load("bert")
    model = PromptModel.create(
        backbone,
        "soft_prompt",
        task_config(),
        {"num_virtual_tokens": 3, "init": "text", "init_text": "great movie story"},
    )
    save_prompt(model, tmp_path / "soft")
    report = inspect_prompt(tmp_path / "soft", top=3)
    assert [row["nearest"][0]["token"] for row in report["virtual_tokens"]] == ["great", "movie", "story"]
    assert all(abs(row["nearest"][0]["cosine"] - 1) < 1e-5 for row in report["virtual_tokens"])
    assert set(report["virtual_tokens"][0]["labels"]) == {"0:bad", "1:good"}
    assert "great 1.00" in format_report(report)
    assert plot_report(report, tmp_path / "soft.png").stat().st_size > 1000

    # A prefix on a causal LM: position 0 of every layer holds exactly the keys and values the
    # model computes for the first word read alone.
    gpt2 = load("gpt2")
    prefix = PromptModel.create(
        gpt2, "deep_prompt", task_config(), {"num_virtual_tokens": 2, "init": "text", "init_text": "story great"}
    )
    save_prompt(prefix, tmp_path / "prefix")
    report = inspect_prompt(tmp_path / "prefix", top=2)
    assert len(report["prefix"]) == gpt2.prefix_layout()["self"][0]
    for layer in report["prefix"]:
        assert layer["positions"][0]["nearest"][0]["token"] == "story"
        assert abs(layer["positions"][0]["nearest"][0]["cosine"] - 1) < 1e-4
    assert plot_report(report, tmp_path / "prefix.png").stat().st_size > 1000


def test_with_a_head_the_last_steps_fit_the_head_to_the_prompt_found(load, examples):
    model = PromptModel.create(
        load("bert_encoder"),
        "autoprompt",
        task_config(template=None, verbalizer=None),
        {"num_tokens": 2, "num_candidates": 4, "search_fraction": 0.5},
    )
    assert model.task.config.readout == "head"
    rounds = []
    original = model.method.search_step

    def spy(m, batch, progress=0.0):
        found = original(m, batch, progress)
        rounds.append(found is not None)
        return found

    model.method.search_step = spy
    train(model, examples, None, TrainConfig(max_steps=8, batch_size=4, progress=False))
    assert rounds == [True] * 4 + [False] * 4


def test_a_head_pools_the_inputs_own_tokens_not_the_templates(load):
    """With a template, a trained head reads the mean of the input's own tokens: changing the
    template's words changes them through attention only, never by being averaged in."""
    backbone = load("bert_encoder")
    model = PromptModel.create(
        backbone, "linear_probe", task_config(template="review : {text} , it was great", verbalizer=None)
    )
    feature = model.task.encode(Example("the movie was great"))
    tokens = backbone.tokenizer.convert_ids_to_tokens(feature["input_ids"])
    pooled = [t for t, m in zip(tokens, feature["pool_mask"]) if m]
    assert pooled == ["the", "movie", "was", "great"]
    batch = model.task.collate([feature, model.task.encode(Example("dull"))], with_labels=False)
    captured = {}
    original = model.task.pool

    def spy(hidden, mask):
        captured["mask"] = mask
        return original(hidden, mask)

    model.task.pool = spy
    with torch.no_grad():
        model(batch)
    assert torch.equal(captured["mask"], batch["pool_mask"]) and batch["pool_mask"].sum().item() == 5


def test_a_time_budget_stops_the_search_and_evaluates_once_more(load, examples, monkeypatch):
    import prompttune.training.loop as training

    clock = iter(range(0, 10_000, 10))  # every reading of the clock is 10 s later
    monkeypatch.setattr(training.time, "perf_counter", lambda: float(next(clock)))
    model = PromptModel.create(load("bert"), "autoprompt", task_config(), {"num_tokens": 2, "num_candidates": 2})
    result = train(
        model,
        examples,
        examples,
        TrainConfig(max_steps=50, batch_size=4, max_seconds=25, progress=False, eval_every=100),
    )
    assert result.stopped_early and result.steps < 50
    assert result.dev_metrics is not None and result.best_step == result.steps


@pytest.mark.parametrize("method", ["autoprompt", "pez"])
def test_a_failed_export_keeps_the_search_to_resume(model_dirs, tmp_path, monkeypatch, method):
    """The search's final state stays on disk until the prompt it found is saved: after an export
    that fails, --resume saves the same prompt without searching again."""
    from prompttune.api import interrupted_run
    from prompttune.methods import method_class
    from prompttune.storage import PRIVATE
    from prompttune.training import checkpoint

    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in SENTENCES))
    args = dict(
        model=str(model_dirs["gpt2"]),
        method=method,
        train=str(data),
        template="{text} it was {mask} .",
        verbalizer="0:bad,1:good",
        method_options={"num_tokens": 2},
        max_steps=4,
        batch_size=4,
        progress=False,
    )
    train_prompt(output=str(tmp_path / "whole"), **args)
    expected = json.loads((tmp_path / "whole" / "prompt.json").read_text())["searched"]["prompt_text"]

    cls = method_class(method)
    original = cls.exported
    monkeypatch.setattr(cls, "exported", lambda self, model: (_ for _ in ()).throw(ConfigError("disk trouble")))
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="disk trouble .*continue with --resume"):
        train_prompt(output=str(out), **args)
    assert not (out / "prompt.json").exists()
    assert checkpoint.exists(out / PRIVATE / "run") and interrupted_run(out) is not None
    searched = []
    monkeypatch.setattr(cls, "search_step", lambda self, *a, **k: searched.append(1))  # no search on resume
    monkeypatch.setattr(cls, "exported", original)
    result = train_prompt(output=str(out), resume=True, **args)
    assert searched == [] and result["training"]["steps"] == 4
    assert json.loads((out / "prompt.json").read_text())["searched"]["prompt_text"] == expected
    assert not (out / PRIVATE / "run").exists()
