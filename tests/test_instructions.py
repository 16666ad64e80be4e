"""Instruction prompts: an instruction before the input, k labelled demonstrations drawn from the
training data with the seed, and the model's chat template around it all, for classification (the
label read at the assistant's first token) and generation (the target as the assistant's answer)."""

import json

import pytest
import torch
from conftest import SENTENCES

from prompttune import ConfigError, Example, PromptModel, load_prompt, save_prompt
from prompttune.api import train_prompt
from prompttune.tasks import ClassificationConfig, GenerationConfig
from prompttune.tasks.classification import domain_probes
from prompttune.tasks.data import pick_demonstrations

INSTRUCTION = "is it good ?"  # (in the tiny models' vocabulary)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in SENTENCES))
    return path


def config(**changes):
    values = dict(labels=("0", "1"), verbalizer=(("bad",), ("good",)), template="review , {text} it was {mask} .")
    values.update(changes)
    return ClassificationConfig(**values)


def decoded(model, text):
    feature = model.task.encode(Example(text))
    return model.task.tokenizer.decode(feature["input_ids"]), feature


def test_demonstrations_are_balanced_and_fixed_by_the_seed():
    examples = [Example(t, label=l, origin=f"row {i}") for i, (t, l) in enumerate(SENTENCES)]
    first = pick_demonstrations(examples, 4, seed=0, labels=("0", "1"))
    assert pick_demonstrations(examples, 4, seed=0, labels=("0", "1")) == first
    assert sorted(e.label for e in first) == ["0", "0", "1", "1"]
    assert pick_demonstrations(examples, 4, seed=1, labels=("0", "1")) != first
    assert [e.label for e in pick_demonstrations(examples, 3, seed=0, labels=("0", "1"))].count("0") in (1, 2)


def test_instruction_and_demonstrations_come_before_the_input(load):
    backbone = load("gpt2")
    demos = (("the best film", None, "1"), ("a terrible film", None, "0"))
    model = PromptModel.create(backbone, "hard_prompt", config(instruction=INSTRUCTION, demonstrations=demos))
    text, feature = decoded(model, "i loved the story")
    # (The tiny word-level tokenizer reads the blank lines between them as spaces.)
    assert text == (
        "is it good ? review , the best film it was good . review , a terrible film it was bad . "
        "review , i loved the story it was"
    )
    assert feature["readout_index"] == len(feature["input_ids"]) - 1  # the next token is the label word


def test_chat_wraps_the_prompt_and_reads_the_assistants_first_token(load):
    backbone = load("llama")
    demos = (("the best film", None, "1"),)
    model = PromptModel.create(
        backbone,
        "hard_prompt",
        config(template="review , {text}", instruction=INSTRUCTION, chat=True, demonstrations=demos),
    )
    messages = [
        {"role": "system", "content": INSTRUCTION},
        {"role": "user", "content": "review , the best film"},
        {"role": "assistant", "content": "good"},
        {"role": "user", "content": "review , i loved the story"},
    ]
    expected = backbone.tokenizer.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    _, feature = decoded(model, "i loved the story")
    assert feature["input_ids"] == list(expected)
    assert feature["readout_index"] == len(expected) - 1
    assert model.task.word_ids.tolist() == backbone.tokenizer.convert_tokens_to_ids(["bad", "good"])
    # A long input is cut; the chat turns and the demonstrations never are.
    _, long = decoded(model, " ".join(["great"] * 500))
    assert len(long["input_ids"]) == model.task.max_length and long["input_ids"][-3:] == list(expected)[-3:]


def test_a_model_without_a_chat_template_refuses_chat(load):
    for family in ("bert", "gpt2"):
        with pytest.raises(ConfigError, match="has no chat template; use --instruction without --chat"):
            PromptModel.create(load(family), "hard_prompt", config(chat=True))


def test_a_soft_prompt_trains_on_top_of_a_k_shot_chat_prompt_and_round_trips(model_dirs, data, tmp_path):
    common = dict(
        model=str(model_dirs["llama"]),
        train=str(data),
        eval=str(data),
        template="review , {text}",
        verbalizer="0:bad,1:good",
        instruction=INSTRUCTION,
        chat=True,
        shots=2,
        max_steps=3,
        batch_size=4,
        progress=False,
    )
    first = train_prompt(
        method="soft_prompt", output=str(tmp_path / "a"), method_options={"num_virtual_tokens": 2}, seed=0, **common
    )
    assert first["dev_metrics"]["count"] == len(SENTENCES)
    meta = json.loads((tmp_path / "a" / "prompt.json").read_text())
    demos = meta["task_config"]["demonstrations"]
    assert len(demos) == 2 and sorted(d[2] for d in demos) == ["0", "1"]
    assert meta["task_config"]["chat"] and meta["task_config"]["instruction"] == INSTRUCTION
    train_prompt(method="hard_prompt", output=str(tmp_path / "b"), seed=0, **common)
    assert json.loads((tmp_path / "b" / "prompt.json").read_text())["task_config"]["demonstrations"] == demos
    loaded = load_prompt(tmp_path / "a")
    again = load_prompt(save_prompt(loaded, tmp_path / "c"))
    texts = [Example("i loved the story"), Example("awful and boring")]
    torch.testing.assert_close(again.predict_proba(texts), loaded.predict_proba(texts), rtol=0, atol=0)


def test_generation_with_an_instruction_and_chat(load):
    backbone = load("llama")
    model = PromptModel.create(
        backbone,
        "soft_prompt",
        GenerationConfig(max_target_length=4, instruction=INSTRUCTION, chat=True),
        {"num_virtual_tokens": 2},
    )
    example = Example("the movie was great", targets=("good film",))
    feature = model.task.encode(example, "good film")
    messages = [{"role": "system", "content": INSTRUCTION}, {"role": "user", "content": "the movie was great"}]
    prompt = list(
        backbone.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
    )
    answer = backbone.tokenizer("good film", add_special_tokens=False)["input_ids"] + [backbone.tokenizer.eos_token_id]
    assert feature["input_ids"] == prompt + answer
    assert feature["labels"] == [-100] * len(prompt) + answer  # the loss covers the answer only
    assert model.task.encode(example)["input_ids"] == prompt
    assert len(model.task.generate_texts(model, [example], max_new_tokens=3)) == 1
    plain = PromptModel.create(
        backbone,
        "soft_prompt",
        GenerationConfig(max_target_length=4, instruction=INSTRUCTION),
        {"num_virtual_tokens": 2},
    )
    assert (
        backbone.tokenizer.decode(plain.task.encode(example)["input_ids"], skip_special_tokens=True)
        == "is it good ? the movie was great"
    )


def test_k_shot_generation_shows_distinct_training_pairs_as_chat_turns_and_never_cuts_them(load, tmp_path):
    """Generation takes --shots: k distinct training sources, drawn with the seed, each with its
    first reference, as earlier chat turns (or plain paragraphs); the source is cut, they are not."""
    from prompttune.tasks import GenerationTask

    pairs = [
        ("the movie was great", "good film"),
        ("the movie was great", "fine film"),
        ("awful plot", "bad film"),
        ("i loved it", "good"),
        ("boring", "bad"),
    ]
    train = [Example(s, targets=(t,)) for s, t in pairs]
    config = GenerationTask.new_config({"shots": 2, "chat": True, "instruction": INSTRUCTION}, train, None, seed=3)
    assert len(config.demonstrations) == 2 and len({s for s, _ in config.demonstrations}) == 2
    assert (
        config.demonstrations
        == GenerationTask.new_config({"shots": 2, "chat": True}, train, None, seed=3).demonstrations
    )  # fixed by the seed
    firsts = {s: t for s, t in reversed(pairs)}
    assert all(firsts[s] == t for s, t in config.demonstrations)  # a source's first reference
    with pytest.raises(Exception, match="--shots: 5 demonstrations asked for, the training data has 4 distinct"):
        GenerationTask.new_config({"shots": 5}, train, None, seed=0)

    backbone = load("llama")
    model = PromptModel.create(
        backbone, "soft_prompt", config.replace(max_source_length=4, max_target_length=4), {"num_virtual_tokens": 2}
    )
    example = Example("the movie was great and long and so on", targets=("good film",))
    messages = [{"role": "system", "content": INSTRUCTION}]
    for source, target in config.demonstrations:
        messages += [{"role": "user", "content": source}, {"role": "assistant", "content": target}]
    cut = backbone.tokenizer.decode(
        backbone.tokenizer("the movie was great and long and so on", add_special_tokens=False)["input_ids"][:4]
    )
    messages.append({"role": "user", "content": cut})
    expected = list(
        backbone.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=True)[
            "input_ids"
        ]
    )
    assert model.task.encode(example)["input_ids"] == expected
    again = load_prompt(save_prompt(model, tmp_path / "kshot"))
    assert again.task.config.demonstrations == config.demonstrations
    assert again.task.encode(example)["input_ids"] == expected

    plain = PromptModel.create(backbone, "hard_prompt", GenerationConfig(demonstrations=(("awful plot", "bad film"),)))
    # (the tiny tokenizer has no newline: the words, in order, are what can be read back)
    assert (
        backbone.tokenizer.decode(plain.task.encode(Example("i loved it"))["input_ids"], skip_special_tokens=True)
        == "awful plot bad film i loved it"
    )


def test_calibration_takes_out_the_prompts_lean_for_content_free_inputs(load):
    """Zhao et al.'s contextual calibration: the content-free inputs' mean label probabilities come
    out uniform, every input's label scores move by the same vector, and the prompt keeps it."""
    backbone = load("gpt2")
    demos = (("the best film", None, "1"), ("a terrible film", None, "0"))
    plain = PromptModel.create(backbone, "hard_prompt", config(instruction=INSTRUCTION, demonstrations=demos))
    calibrated = PromptModel.create(
        backbone, "hard_prompt", config(instruction=INSTRUCTION, demonstrations=demos, calibrate="content_free")
    )
    content_free = [Example("N/A"), Example("")]
    lean = plain.predict_proba(content_free).mean(0)
    assert abs(float(lean[0] - lean[1])) > 1e-3  # the tiny model leans one way
    assert calibrated.task.config.calibration == pytest.approx(tuple(lean.log().tolist()), abs=1e-6)
    # Probabilities averaged over the content-free inputs, then calibrated: equal for every label.
    fixed = (lean.log() - torch.tensor(calibrated.task.config.calibration)).softmax(-1)
    torch.testing.assert_close(fixed, torch.full((2,), 0.5))
    # Every input's label scores move by the same vector: its log-probabilities less the lean's.
    texts = [Example(t) for t, _ in SENTENCES[:6]]
    before, after = plain.predict_proba(texts).log(), calibrated.predict_proba(texts).log()
    torch.testing.assert_close(after, (before - lean.log()).log_softmax(-1), atol=1e-5, rtol=0)


def test_calibration_round_trips_and_is_refused_where_it_has_no_meaning(load, tmp_path):
    backbone = load("gpt2")
    calibrated = PromptModel.create(backbone, "hard_prompt", config(instruction=INSTRUCTION, calibrate="content_free"))
    loaded = load_prompt(save_prompt(calibrated, tmp_path / "p"), backbone=backbone)
    assert loaded.task.config.calibration == calibrated.task.config.calibration
    assert any(line.startswith("calibration (content_free)") for line in loaded.task.outside_tensors())
    texts = [Example(t) for t, _ in SENTENCES[:4]]
    torch.testing.assert_close(loaded.predict_proba(texts), calibrated.predict_proba(texts), rtol=0, atol=0)
    with pytest.raises(ConfigError, match="--calibrate: contextual calibration is for prompts that train nothing"):
        PromptModel.create(backbone, "soft_prompt", config(calibrate="domain"), {"num_virtual_tokens": 2})
    with pytest.raises(ConfigError, match="--calibrate: needs label words read from the LM head"):
        PromptModel.create(backbone, "hard_prompt", config(calibrate="content_free"), readout="similarity")
    with pytest.raises(ConfigError, match="calibration: is measured only for a prompt made with calibrate"):
        config(calibration=(0.0, 0.0))
    with pytest.raises(ConfigError, match="calibrate: must be one of"):
        config(calibrate="yes")
    with pytest.raises(ConfigError, match="--calibrate domain: draws its texts from the training data's words"):
        PromptModel.create(backbone, "hard_prompt", config(calibrate="domain"))
    with pytest.raises(ConfigError, match="--calibrate: not an option of the generation task"):
        from prompttune.tasks import task_class

        task_class("generation").check_options({"calibrate": "domain"})


def test_domain_calibration_draws_seeded_texts_of_training_words_at_their_mean_length(load, data, tmp_path):
    examples = [Example(t, label=l) for t, l in SENTENCES]
    words = {w for t, _ in SENTENCES for w in t.split()}
    mean = round(sum(len(t.split()) for t, _ in SENTENCES) / len(SENTENCES))
    probes = domain_probes(examples, pair=False, seed=3)
    assert len(probes) == 20 and len({p.text for p in probes}) > 1
    assert all(len(p.text.split()) == mean and set(p.text.split()) <= words for p in probes)
    assert [p.text for p in domain_probes(examples, pair=False, seed=3)] == [p.text for p in probes]
    assert [p.text for p in domain_probes(examples, pair=False, seed=4)] != [p.text for p in probes]
    # What the prompt keeps is the mean of its label probabilities over those texts.
    backbone = load("gpt2")
    demos = (("the best film", None, "1"), ("a terrible film", None, "0"))
    plain = PromptModel.create(backbone, "hard_prompt", config(demonstrations=demos))
    model = PromptModel.create(
        backbone, "hard_prompt", config(demonstrations=demos, calibrate="domain"), seed=3, examples=examples
    )
    assert model.task.config.calibration == pytest.approx(
        tuple(plain.predict_proba(probes).mean(0).log().tolist()), abs=1e-6
    )


def test_train_prompt_calibrates_on_its_training_file_with_its_seed(model_dirs, load, data, tmp_path):
    common = dict(
        model=str(model_dirs["gpt2"]),
        method="hard_prompt",
        train=str(data),
        eval=str(data),
        template="review , {text} it was {mask} .",
        verbalizer="0:bad,1:good",
        shots=2,
        calibrate="domain",
        progress=False,
    )
    metrics = train_prompt(output=str(tmp_path / "a"), seed=5, **common)
    saved = json.loads((tmp_path / "a" / "prompt.json").read_text())["task_config"]
    assert saved["calibrate"] == "domain" and len(saved["calibration"]) == 2
    examples = [Example(t, label=l) for t, l in SENTENCES]
    again = PromptModel.create(
        load("gpt2"),
        "hard_prompt",
        ClassificationConfig.from_dict({**saved, "calibration": None}),
        seed=5,
        examples=examples,
    )
    assert list(again.task.config.calibration) == pytest.approx(saved["calibration"], abs=1e-6)
    other = train_prompt(output=str(tmp_path / "b"), seed=6, **common)
    assert (
        json.loads((tmp_path / "b" / "prompt.json").read_text())["task_config"]["calibration"] != saved["calibration"]
    )
    assert metrics["dev_metrics"]["count"] == other["dev_metrics"]["count"] == len(SENTENCES)
