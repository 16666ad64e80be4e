"""Token classification (NER): CoNLL and JSONL data, sub-word alignment, entity metrics, every method
that trains on every family, artifacts, mixed batches with other tasks' prompts, the server and
sweeps."""

import json

import pytest
import torch
from conftest import FAMILIES, task_config

from prompttune import Backbone, PromptModel, load_prompt, save_prompt
from prompttune.api import evaluate_prompt, predict, train_prompt
from prompttune.errors import ConfigError, DataError
from prompttune.inference.mixed import PromptSet
from prompttune.methods import METHODS, PromptMethod
from prompttune.tasks import TASKS
from prompttune.tasks.token_classification import (
    TokenClassificationConfig,
    TokenClassificationTask,
    TokenExample,
    tagging_metrics,
)

SENTENCES = [
    ("the movie was great", "O B-MISC O O"),
    ("a terrible film", "O B-PER I-PER"),
    ("i loved the story", "O O O B-LOC"),
    ("the plot is dull", "O B-PER O O"),
]
CONLL = "-DOCSTART- -X- -X- O\n\n" + "".join(
    "".join(f"{w} X X {t}\n" for w, t in zip(text.split(), tags.split())) + "\n" for text, tags in SENTENCES
)
TAGS = ("O", "B-LOC", "B-MISC", "B-PER", "I-PER")


def examples():
    return [
        TokenExample.from_tokens(text.split(), tags.split(), f"test, sentence {i}")
        for i, (text, tags) in enumerate(SENTENCES, 1)
    ]


def trainable_methods():
    """Every registered method a token task can train (discovered, not listed): those that train
    something and need no trigger slots in a template."""
    return sorted(
        name
        for name, cls in METHODS.items()
        if cls.trains and cls.prompt_slots.__func__ is PromptMethod.prompt_slots.__func__
    )


@pytest.fixture
def conll(tmp_path):
    path = tmp_path / "train.txt"
    path.write_text(CONLL)
    return path


# ---- data ----------------------------------------------------------------------------------------


def test_conll_files_are_read_by_sentence_with_iob2_tags(conll):
    read = TokenClassificationTask.read_examples(str(conll), TokenClassificationTask.resolve_columns({}))
    assert [e.tokens for e in read] == [tuple(t.split()) for t, _ in SENTENCES]
    assert [e.tags for e in read] == [tuple(t.split()) for _, t in SENTENCES]
    assert read[1].origin == f"{conll}, line 8"
    config = TokenClassificationTask.new_config({}, read, None, 0)
    assert config.labels == TAGS  # O first, then by entity type, B before I


def test_jsonl_rows_with_token_and_tag_lists(tmp_path):
    path = tmp_path / "ner.jsonl"
    path.write_text("".join(json.dumps({"words": t.split(), "ner": g.split()}) + "\n" for t, g in SENTENCES))
    columns = TokenClassificationTask.resolve_columns({"text": "words", "label": "ner"})
    read = TokenClassificationTask.read_examples(str(path), columns)
    assert [e.tags for e in read] == [tuple(g.split()) for _, g in SENTENCES]
    unlabelled = TokenClassificationTask.read_examples(str(path), columns, labelled=False)
    assert all(e.tags is None for e in unlabelled)


@pytest.mark.parametrize(
    "content, message",
    [
        ("the O\nmovie\n", "line 2: expected a token and its tag, got 'movie'"),
        ("the O\nmovie PER\n", "line 2: tag 'PER' is not IOB2"),
    ],
)
def test_bad_conll_lines_are_named(tmp_path, content, message):
    path = tmp_path / "bad.conll"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        TokenClassificationTask.read_examples(str(path), TokenClassificationTask.resolve_columns({}))


def test_bad_jsonl_rows_are_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"tokens": ["a", "film"], "tags": ["O"]}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl, line 1, column 'tags': expected a list of 2 tags"):
        TokenClassificationTask.read_examples(str(path), TokenClassificationTask.resolve_columns({}))


def test_options_of_other_tasks_are_refused(conll, tmp_path):
    with pytest.raises(ConfigError, match="--template: not an option of the token_classification task"):
        train_prompt(
            model="never-loaded",
            method="soft_prompt",
            task="token_classification",
            train=str(conll),
            output=str(tmp_path / "x"),
            template="{text}",
        )
    with pytest.raises(ConfigError, match="--source-column: not a column of the token_classification task"):
        TokenClassificationTask.resolve_columns({"source": "mr"})


def test_an_unseen_tag_in_dev_data_names_the_sentence(conll, tmp_path):
    dev = tmp_path / "dev.txt"
    dev.write_text("the O\nfilm B-ORG\n")
    read = TokenClassificationTask.read_examples(str(conll), TokenClassificationTask.resolve_columns({}))
    held = TokenClassificationTask.read_examples(str(dev), TokenClassificationTask.resolve_columns({}))
    with pytest.raises(ConfigError, match=rf"{dev}, line 1: tag 'B-ORG' is not one of"):
        TokenClassificationTask.new_config({}, read, held, 0)


def test_raw_text_is_split_into_words_with_character_offsets():
    example = TokenExample.from_text("Peter Blackburn went to  Brussels.")
    assert example.tokens == ("Peter", "Blackburn", "went", "to", "Brussels", ".")
    assert [example.text[a:b] for a, b in example.spans] == list(example.tokens)


# ---- sub-word alignment (real WordPiece) ---------------------------------------------------------


@pytest.mark.real_model
def test_the_first_sub_token_of_each_word_carries_its_tag():
    backbone = Backbone.from_pretrained("all-MiniLM-L6-v2", head="none")
    task = TokenClassificationTask(TokenClassificationConfig(labels=("O", "B-PER", "I-PER", "B-LOC")), backbone)
    example = TokenExample.from_tokens(
        ["Arnold", "Schwarzenegger", "visited", "Ouagadougou"], ["B-PER", "I-PER", "O", "B-LOC"]
    )
    feature = task.encode(example)
    pieces = backbone.tokenizer.convert_ids_to_tokens(feature["input_ids"])
    assert len(pieces) > len(example.tokens) + 2  # some words are several sub-tokens
    assert [pieces[i] for i in feature["word_index"]] == [
        p for p in pieces if p not in ("[CLS]", "[SEP]") and not p.startswith("##")
    ]
    labelled = [(pieces[i], task.config.labels[t]) for i, t in enumerate(feature["labels"]) if t != -100]
    assert labelled == [(pieces[i], tag) for i, tag in zip(feature["word_index"], example.tags)]
    # Cut short, the words that no longer fit are marked, and predicted O.
    task.max_length = 4
    short = task.encode(example)
    assert short["word_index"][-1] == -1 and short["word_index"][0] >= 0


# ---- metrics -------------------------------------------------------------------------------------


def test_entity_metrics_against_a_hand_computed_case():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-LOC"]]
    # Entities: gold {PER, LOC, ORG}, predicted {PER, ORG, LOC at another place}: 2 of 3 right both ways.
    scores = tagging_metrics(gold, predicted)
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    assert scores["per_type"]["LOC"]["f1-score"] == 0.0
    assert scores["per_type"]["PER"]["f1-score"] == 1.0


# ---- every method that trains, on every family ----------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", trainable_methods())
def test_every_method_learns_tags_and_saves_and_loads(load, family, method, tmp_path):
    backbone = load(family)
    options = {"num_virtual_tokens": 3} if "num_virtual_tokens" in METHODS[method].Config.__dataclass_fields__ else {}
    if method == "prefix":
        options["hidden_size"] = 16
    model = PromptModel.create(backbone, method, TokenClassificationConfig(labels=TAGS), options, seed=0)
    data = examples()
    batch = {k: v for k, v in model.task.collate([model.task.encode(e) for e in data]).items()}
    before = float(model.loss(batch).detach())
    optimizer = torch.optim.AdamW(model.parameter_groups(1e-2, 5e-2))
    model.train()
    for _ in range(25):
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    model.eval()
    after = float(model.loss(batch).detach())
    assert after < before * 0.7, (before, after)
    scores = model.task.evaluate(model, data)
    tags = [t for e in data for t in e.tags]
    every_tag_o = tags.count("O") / len(tags)  # what predicting O for every word scores
    assert scores["accuracy"] > every_tag_o, (scores, every_tag_o)
    if not model.method.shares_backbone:
        return  # full fine-tuning saves the whole model: covered by the artifact tests
    folder = save_prompt(model, tmp_path / "p")
    loaded = load_prompt(folder, backbone=backbone)
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch), model(batch), rtol=0, atol=0)


def test_padding_side_does_not_change_tags(load):
    results = {}
    for side in ("left", "right"):
        model = PromptModel.create(
            load("gpt2", padding_side=side),
            "soft_prompt",
            TokenClassificationConfig(labels=TAGS),
            {"num_virtual_tokens": 3},
            seed=0,
        )
        model.eval()
        rows = model.task.results(*_logits(model, examples()), examples())
        alone = [model.task.results(*_logits(model, [e]), [e])[0] for e in examples()]
        assert [r["tags"] for r in rows] == [r["tags"] for r in alone]
        results[side] = rows
    assert [r["tags"] for r in results["left"]] == [r["tags"] for r in results["right"]]


def _logits(model, data):
    batch = model.task.collate([model.task.encode(e) for e in data], with_labels=False)
    with torch.no_grad():
        return model(batch), batch


# ---- the API, mixed batches, sweeps ---------------------------------------------------------------


def test_train_predict_evaluate_through_the_api(model_dirs, conll, tmp_path):
    out = tmp_path / "ner"
    metrics = train_prompt(
        model=str(model_dirs["bert"]),
        method="deep_prompt",
        task="token_classification",
        train=str(conll),
        eval=str(conll),
        output=str(out),
        method_options={"num_virtual_tokens": 2},
        max_steps=40,
        batch_size=4,
        lr=1e-2,
        head_lr=5e-2,
        seed=0,
        progress=False,
    )
    assert set(TokenClassificationTask.metrics) <= set(metrics["dev_metrics"])
    assert metrics["dev_metrics"]["f1"] == 1.0
    assert evaluate_prompt(str(out), str(conll))["f1"] == 1.0
    [row] = predict(str(out), ["a terrible film"])
    assert row["tags"] == ["O", "B-PER", "I-PER"]
    assert row["entities"] == [
        {"text": "terrible film", "label": "PER", "start": 2, "end": 15, "score": row["entities"][0]["score"]}
    ]
    with pytest.raises(ConfigError, match="use `prompttune predict`"):
        from prompttune.api import generate

        generate(str(out), ["a film"])


def test_token_rows_and_classification_rows_share_a_mixed_batch(load, tmp_path):
    backbone = load("gpt2")
    torch.manual_seed(0)
    tagger = PromptModel.create(
        backbone, "prefix", TokenClassificationConfig(labels=TAGS), {"num_virtual_tokens": 2, "hidden_size": 16}, seed=1
    )
    classifier = PromptModel.create(backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 3}, seed=2)
    prompts = PromptSet(backbone)
    prompts.add("ner", tagger)
    prompts.add("sentiment", classifier)
    texts = [t for t, _ in SENTENCES]
    rows = [("ner", t) if i % 2 == 0 else ("sentiment", t) for i, t in enumerate(texts + texts)]
    mixed = prompts.classify(rows, batch_size=8)
    for (name, text), got in zip(rows, mixed):
        alone = prompts.classify([(name, text)])[0]
        if name == "ner":
            assert got["tags"] == alone["tags"]
            assert [{**e, "score": None} for e in got["entities"]] == [{**e, "score": None} for e in alone["entities"]]
            for a, b in zip(got["entities"], alone["entities"]):
                assert a["score"] == pytest.approx(b["score"], abs=1e-5)
        else:
            assert got["label"] == alone["label"]
            for label, p in alone["probabilities"].items():
                assert abs(got["probabilities"][label] - p) < 1e-5


def test_a_sweep_over_token_classification(model_dirs, conll, tmp_path):
    from prompttune.sweeps.compare import SweepSpec, run_sweep

    spec = SweepSpec.from_dict(
        {
            "model": str(model_dirs["bert_encoder"]),
            "train": str(conll),
            "eval": str(conll),
            "task": "token_classification",
            "methods": ["linear_probe", "soft_prompt"],
            "lengths": [2],
            "train_sizes": [2, "full"],
            "train_options": {"max_steps": 3, "batch_size": 2},
        },
        "test",
    )
    rows = run_sweep(spec, tmp_path / "sweep", progress=lambda line: None)
    assert [r["status"] for r in rows] == ["done"] * 4
    assert all(0.0 <= r["f1"] <= 1.0 for r in rows)
    assert {r["train_examples"] for r in rows} == {2, len(SENTENCES)}
    summary = (tmp_path / "sweep" / "summary.md").read_text()
    assert "| f1 | precision | recall | accuracy |" in summary


def test_the_task_is_registered():
    assert TASKS["token_classification"] is TokenClassificationTask


def test_served_by_classify_with_entities_and_character_offsets(model_dirs, tmp_path):
    from servers import TOKEN, perturb, running_server

    from prompttune.artifacts.registry import Registry
    from prompttune.serving.client import Client, ServerError

    backbone = Backbone.from_pretrained(str(model_dirs["gpt2"]))
    tagger = perturb(
        PromptModel.create(
            backbone, "soft_prompt", TokenClassificationConfig(labels=TAGS), {"num_virtual_tokens": 2}, seed=3
        )
    )
    registry = Registry(tmp_path / "registry")
    registry.push(save_prompt(tagger, tmp_path / "ner"), "ner")
    texts = ["the movie was great", "a terrible film , i loved the story"]
    local = PromptSet(backbone)
    local.add("ner", load_prompt(tmp_path / "ner", backbone=backbone))
    expected = local.classify([("ner", t) for t in texts])
    with running_server(model_dirs["gpt2"], registry, tmp_path / "server.log") as (url, _):
        with Client(url, token=TOKEN) as client:
            got = client.classify("ner", texts)
            assert [g["tags"] for g in got] == [e["tags"] for e in expected]
            for g, e, text in zip(got, expected, texts):
                assert [(x["label"], x["start"], x["end"]) for x in g["entities"]] == [
                    (x["label"], x["start"], x["end"]) for x in e["entities"]
                ]
                assert all(text[x["start"] : x["end"]] == x["text"] for x in g["entities"])
            assert any(g["entities"] for g in got)  # the perturbed prompt finds something to report
            with pytest.raises(ServerError) as wrong:
                client.generate("ner", ["a film"])
            assert wrong.value.status == 400 and "use /v1/classify" in str(wrong.value)
            with pytest.raises(ServerError) as pair:
                client.classify("ner", [("a film", "a story")])
            assert pair.value.status == 400 and "text_pair is not read" in str(pair.value)
            counted = [
                line for line in client.metrics().splitlines() if line.startswith("prompttune_predictions_total{")
            ]
            assert sum(float(line.rsplit(" ", 1)[1]) for line in counted) == sum(len(g["entities"]) for g in got)
