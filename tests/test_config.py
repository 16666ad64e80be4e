import pytest
import torch
from conftest import task_config

from prompttune import ConfigError, PromptModel
from prompttune.tasks.classification import parse_verbalizer
from prompttune.training.loop import TrainConfig


def test_unknown_method_option_is_an_error(load):
    with pytest.raises(ConfigError, match=r"--method linear_probe: unknown LinearProbeConfig field\(s\) \['init'\]"):
        PromptModel.create(load("bert"), "linear_probe", task_config(), {"init": "random"})


def test_unknown_method(load):
    with pytest.raises(ConfigError, match=r"unknown method 'lora'"):
        PromptModel.create(load("bert"), "lora", task_config())


@pytest.mark.parametrize(
    "options,message",
    [
        ({"num_virtual_tokens": 0}, "num_virtual_tokens: must be a positive integer"),
        ({"init": "zeros"}, "init: must be one of"),
        ({"init": "text"}, "init_text: init=text needs a non-empty init_text"),
        ({"common_tokens": 0}, "common_tokens: must be a positive integer or null, got 0"),
        ({"common_tokens": True}, "common_tokens: must be a positive integer or null, got True"),
        ({"common_tokens": "5000"}, "common_tokens: must be a positive integer or null, got '5000'"),
    ],
)
def test_soft_prompt_config_checks(load, options, message):
    with pytest.raises(ConfigError, match=message):
        PromptModel.create(load("bert"), "soft_prompt", task_config(), options)


@pytest.mark.parametrize(
    "options,message",
    [
        ({"embedding_size": 0}, "embedding_size: must be a positive integer or null, got 0"),
        ({"embedding_size": True}, "embedding_size: must be a positive integer or null, got True"),
        ({"embedding_size": "16"}, "embedding_size: must be a positive integer or null, got '16'"),
    ],
)
def test_prefix_config_checks(load, options, message):
    with pytest.raises(ConfigError, match=message):
        PromptModel.create(load("llama"), "prefix", task_config(), options)


def test_the_prefix_embedding_takes_the_width_asked_for_and_the_artifact_keeps_it(load, tmp_path):
    from prompttune import load_prompt, save_prompt

    backbone = load("llama")
    default = PromptModel.create(backbone, "prefix", task_config(), {"num_virtual_tokens": 3, "hidden_size": 8})
    narrow = PromptModel.create(
        backbone, "prefix", task_config(), {"num_virtual_tokens": 3, "hidden_size": 8, "embedding_size": 5}, seed=1
    )
    assert default.method.embedding.shape == (3, backbone.hidden_size)
    assert narrow.method.embedding.shape == (3, 5) and narrow.method.mlp[0].in_features == 5
    save_prompt(narrow, tmp_path / "narrow")
    again = load_prompt(str(tmp_path / "narrow"), backbone=backbone, with_training_state=True)
    assert again.method.config.embedding_size == 5
    torch.testing.assert_close(again.method.embedding, narrow.method.embedding)


@pytest.mark.parametrize("init", ["sample_vocab", "class_labels"])
def test_common_tokens_draws_the_start_from_the_first_ids_of_the_vocabulary(load, init):
    """Lester et al.'s sampled vocabulary: each sampled row is the embedding of one of the first N
    token ids, never a special token; without the option, draws reach past them."""

    backbone = load("bert")
    weight = backbone.input_embeddings.weight.detach()
    special = set(backbone.tokenizer.all_special_ids)

    def start_ids(**options):
        model = PromptModel.create(
            backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 40, "init": init, **options}, seed=1
        )
        rows = model.method.prompt.detach()
        if init == "class_labels":
            rows = rows[len(model.task.init_words()) :]  # the label words' rows come first
        return [int((weight - row).abs().sum(-1).argmin()) for row in rows]

    first = weight.shape[0] // 3
    common = start_ids(common_tokens=first)
    assert all(i < first and i not in special for i in common)
    assert len(set(common)) > 5
    assert max(start_ids()) >= first


def test_common_tokens_that_are_all_special_are_refused(load):
    backbone = load("bert")  # ids 0-4 are [PAD] [UNK] [CLS] [SEP] [MASK]
    assert set(range(5)) <= set(backbone.tokenizer.all_special_ids)
    with pytest.raises(ConfigError, match="common_tokens: the first 5 token ids are all special tokens"):
        PromptModel.create(backbone, "soft_prompt", task_config(), {"init": "sample_vocab", "common_tokens": 5})


def test_template_checks(load):
    with pytest.raises(ConfigError, match=r"template: must contain \{text\}"):
        task_config(template="It was {mask}.")
    with pytest.raises(ConfigError, match=r"unknown placeholder\(s\) \['label'\]"):
        task_config(template="{text} {label}")
    with pytest.raises(ConfigError, match=r"a masked LM reads the label at \{mask\}"):
        PromptModel.create(load("bert"), "soft_prompt", task_config(template="{text}"))


def test_verbalizer_words_must_not_collide(load):
    with pytest.raises(ConfigError, match=r"start with the same token"):
        PromptModel.create(load("bert"), "hard_prompt", task_config(verbalizer=(("good",), ("good", "bad"))))


def test_verbalizer_parsing():
    assert parse_verbalizer("0:terrible,1:great|good", ("0", "1")) == (("terrible",), ("great", "good"))
    assert parse_verbalizer('{"0": "bad", "1": ["good"]}', ("0", "1")) == (("bad",), ("good",))
    with pytest.raises(ConfigError, match=r"missing \['1'\]"):
        parse_verbalizer("0:bad", ("0", "1"))


def test_hard_prompt_cannot_use_an_untrained_head(load):
    with pytest.raises(ConfigError, match="trains nothing"):
        PromptModel.create(load("bert"), "hard_prompt", task_config(), readout="head")


def test_train_config_checks():
    with pytest.raises(ConfigError, match="grad_accum: must divide batch_size"):
        TrainConfig(batch_size=6, grad_accum=4)
    with pytest.raises(ConfigError, match=r"unknown TrainConfig field\(s\) \['learning_rate'\]"):
        TrainConfig.from_dict({"learning_rate": 1})


def test_multi_word_labels_and_truncation_keep_the_mask(load):
    from prompttune import Example

    config = task_config(verbalizer=(("bad", "awful"), ("good", "great")), max_length=12)
    model = PromptModel.create(load("bert"), "hard_prompt", config)
    long = Example(" ".join(["the movie was really very good"] * 10), label="1")
    feature = model.task.encode(long)
    assert len(feature["input_ids"]) <= 12
    assert feature["input_ids"][feature["readout_index"]] == model.backbone.tokenizer.mask_token_id
    assert model.task.word_ids.numel() == 4


def test_the_command_line_derives_its_training_flags_from_the_config():
    """Every TrainConfig field is a `train` flag named after it, with its docstring as help; a
    field added to a config appears by itself, typed, with its choices."""
    import argparse
    import dataclasses
    from dataclasses import dataclass, field

    from prompttune.cli import build_parser
    from prompttune.config import ConfigBase, add_config_arguments, config_arguments
    from prompttune.options import TASK_OPTION_CLASSES
    from prompttune.training.config import TrainConfig

    train = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "train")[1]
    flags = {option for action in train._actions for option in action.option_strings}
    task_fields = tuple(f for cls in TASK_OPTION_CLASSES for f in dataclasses.fields(cls))
    for f in dataclasses.fields(TrainConfig) + task_fields:
        name = f.name.replace("_", "-")
        assert (f"--no-{name}" if f.default is True else f"--{name}") in flags, f.name

    @dataclass(frozen=True)
    class Toy(ConfigBase):
        warmup_steps: int | None = None
        """Steps of warmup."""
        kind: str = field(default="a", metadata={"choices": ("a", "b")})
        """Which kind."""
        fast: bool = False
        """Go fast."""
        verbose: bool = True
        """Talk."""

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Toy)
    assert "Steps of warmup." in parser.format_help()
    args = parser.parse_args(["--warmup-steps", "7", "--kind", "b", "--fast", "--no-verbose"])
    assert Toy.from_dict(config_arguments(args, Toy)) == Toy(warmup_steps=7, kind="b", fast=True, verbose=False)
    assert config_arguments(parser.parse_args([]), Toy) == {}  # nothing given: the config's defaults
    with pytest.raises(SystemExit):
        parser.parse_args(["--kind", "c"])


def test_task_options_come_from_one_dataclass_on_the_command_line_in_python_and_in_sweeps():
    """`train`'s task flags parse into the task's `Options` fields (a list for --labels),
    `train_prompt` takes every field by name and refuses what is neither one of the task's options
    nor a TrainConfig field, and a sweep's prompt_options are checked against the same class."""
    import dataclasses

    from prompttune.api import _split_options
    from prompttune.cli import build_parser
    from prompttune.config import union_arguments
    from prompttune.options import TASK_OPTION_CLASSES, ClassificationOptions, GenerationOptions
    from prompttune.sweeps.compare import SweepSpec

    args = build_parser().parse_args(
        [
            "train",
            "--model",
            "m",
            "--method",
            "soft_prompt",
            "--train",
            "t.csv",
            "--output",
            "o",
            "--labels",
            "neg, pos",
            "--shots",
            "2",
            "--chat",
            "--readout",
            "head",
            "--lr",
            "0.1",
        ]
    )
    given = union_arguments(args, TASK_OPTION_CLASSES)
    assert given == {"labels": ("neg", "pos"), "shots": 2, "chat": True, "readout": "head"}
    task_settings, train_options = _split_options("classification", {**given, "lr": 0.1, "max_steps": 3})
    assert task_settings == ClassificationOptions(labels=("neg", "pos"), shots=2, chat=True, readout="head")
    assert train_options == {"lr": 0.1, "max_steps": 3}
    assert task_settings.columns() == {"text": None, "text_pair": None, "label": None}
    generation, _ = _split_options("generation", {"num_beams": 4, "source_column": "mr"})
    assert generation == GenerationOptions(num_beams=4, source_column="mr")
    assert generation.columns() == {"source": "mr", "target": None}

    with pytest.raises(ConfigError, match=r"unknown option\(s\) \['text_colum'\].*ClassificationOptions fields"):
        _split_options("classification", {"text_colum": "sentence"})
    with pytest.raises(ConfigError, match="--num-beams: not an option of the classification task"):
        _split_options("classification", {"num_beams": 4})
    with pytest.raises(ConfigError, match="--readout: not an option of the generation task"):
        _split_options("generation", {"readout": "head"})
    with pytest.raises(ConfigError, match="--text-column: not a column of the generation task, which reads source"):
        _split_options("generation", {"text_column": "x"})
    with pytest.raises(ConfigError, match="shots: must be a whole number"):
        _split_options("classification", {"shots": -1})
    with pytest.raises(ConfigError, match="readout: must be one of"):
        _split_options("classification", {"readout": "logits"})
    with pytest.raises(ConfigError, match="readout: token classification reads tags with a trained head"):
        _split_options("token_classification", {"readout": "verbalizer"})
    with pytest.raises(ConfigError, match="labels: must be a non-empty list"):
        _split_options("classification", {"labels": []})

    base = {"model": "m", "train": "t.csv", "eval": "d.csv", "methods": ["soft_prompt"]}
    own = set(SweepSpec.__dataclass_fields__)
    values = {"labels": ["a", "b"], "chat": True, "readout": "head", "head": "none", "calibrate": "domain"}
    for cls in TASK_OPTION_CLASSES:
        for f in dataclasses.fields(cls):
            if f.name not in own:  # every field of a task's options the spec does not hold itself
                value = values.get(f.name, f.default if f.default is not None else "x")
                spec = SweepSpec.from_dict({**base, "task": cls.task, "prompt_options": {f.name: value}}, "spec")
                assert spec.prompt_options == {f.name: value}
                assert getattr(spec.task_options(), f.name) == (tuple(value) if isinstance(value, list) else value)
    with pytest.raises(ConfigError, match="spec, field 'prompt_options': max_length: must be a positive"):
        SweepSpec.from_dict({**base, "prompt_options": {"max_length": 0}}, "spec")
    with pytest.raises(ConfigError, match="spec, field 'prompt_options': --num-beams: not an option of the class"):
        SweepSpec.from_dict({**base, "prompt_options": {"num_beams": 2}}, "spec")
    with pytest.raises(ConfigError, match="spec: --template: not an option of the generation task"):
        SweepSpec.from_dict({**base, "task": "generation", "template": "{text}"}, "spec")
    with pytest.raises(ConfigError, match="prompt_options': a mapping with keys from"):
        SweepSpec.from_dict({**base, "prompt_options": {"lr": 0.1}}, "spec")


def test_each_task_declares_its_options_and_its_columns_come_from_them():
    """A task's `Options` is the one class its columns, its `train` flags and its checks come from:
    every registered task has one, named after it, and every field of it is a `train` flag whose help
    names the task; the sweep spec's column fields are exactly the tasks' column options."""
    import dataclasses

    from prompttune.cli import build_parser
    from prompttune.options import COLUMN_OPTIONS, TASK_OPTION_CLASSES
    from prompttune.sweeps.compare import SweepSpec
    from prompttune.tasks import TASKS

    assert {cls.Options for cls in TASKS.values()} == set(TASK_OPTION_CLASSES)
    train = _subcommand(build_parser(), "train")
    helps = {option: action.help for action in train._actions for option in action.option_strings}
    for name, cls in TASKS.items():
        assert cls.Options.task == name
        assert cls.columns == {
            f.metadata["column"]: f.metadata["default"]
            for f in dataclasses.fields(cls.Options)
            if "column" in f.metadata
        }
        for f in dataclasses.fields(cls.Options):
            assert name in helps["--" + f.name.replace("_", "-")], f.name
    assert TASKS["token_classification"].columns == {"text": "tokens", "label": "tags"}
    assert "[generation]" in helps["--num-beams"] and "classification" not in helps["--num-beams"]
    assert {f for f in SweepSpec.__dataclass_fields__ if f.endswith("_column") and f != "group_column"} == set(
        COLUMN_OPTIONS
    )


def _subcommand(parser, *path):
    for name in path:
        parser = parser._subparsers._group_actions[0].choices[name]
    return parser


def test_decoding_options_are_defined_once_and_derived_by_the_command_line_the_server_and_the_check():
    """Decoding's fields are `generate`'s flags and `/v1/generate`'s request fields, each bounded
    where the field says; the check every generation runs refuses what the field refuses."""
    import dataclasses

    from prompttune.cli import build_parser
    from prompttune.decoding import Decoding, check_decoding
    from prompttune.serving.schema import GenerateRequest

    parser = build_parser()
    generate = _subcommand(parser, "generate")
    flags = {option for action in generate._actions for option in action.option_strings}
    names = [f.name for f in dataclasses.fields(Decoding)]
    assert {f"--{n.replace('_', '-')}" for n in names} <= flags
    created = _subcommand(parser, "human-eval", "create")
    created_flags = {option for action in created._actions for option in action.option_strings}
    assert {f"--{n.replace('_', '-')}" for n in names if n != "num_return_sequences"} <= created_flags
    args = parser.parse_args(["generate", "--prompt", "p", "x", "--top-p", "0.5", "--do-sample"])
    from prompttune.cli import _generation_options

    assert _generation_options(args) == {"top_p": 0.5, "do_sample": True}

    schema = GenerateRequest.model_json_schema()["properties"]
    for f in dataclasses.fields(Decoding):
        assert f.name in schema, f.name
        if "low" not in f.metadata:
            continue
        bounds = schema[f.name]["anyOf"][0]
        low = "exclusiveMinimum" if f.metadata["exclusive"] else "minimum"
        assert bounds[low] == f.metadata["low"], f.name
        assert bounds.get("maximum") == (f.metadata["served"] or f.metadata["high"]), f.name
        below = f.metadata["low"] - (0 if f.metadata["exclusive"] else 1)
        with pytest.raises(ConfigError, match=f"{f.name}: .* out of range"):
            check_decoding({f.name: below}, 8, 1)
        if f.metadata["high"] is not None:
            with pytest.raises(ConfigError, match=f"{f.name}: .* out of range"):
                check_decoding({f.name: f.metadata["high"] + 1}, 8, 1)
    assert check_decoding({"top_k": None}, 8, 2) == {"max_new_tokens": 8, "num_beams": 2, "do_sample": False}


def test_the_server_limits_are_defined_once_and_are_serve_flags():
    """Every Limits field is a `serve` flag (continuous is --batching), with its docstring as help;
    a bad limit is refused naming its field."""
    import dataclasses

    from prompttune.cli import build_parser
    from prompttune.config import config_arguments
    from prompttune.serving.limits import Limits

    parser = build_parser()
    serve = _subcommand(parser, "serve")
    by_dest = {action.dest: action for action in serve._actions}
    for f in dataclasses.fields(Limits):
        if f.name == "continuous":
            assert by_dest["batching"].choices == ("continuous", "static")
            continue
        assert f.name in by_dest, f.name
    assert by_dest["body_timeout_s"].option_strings == ["--body-timeout"]
    assert "rows per model forward" in serve.format_help()
    args = parser.parse_args(["serve", "--model", "m", "--max-inputs", "8", "--body-timeout", "2.5"])
    assert Limits.from_dict(config_arguments(args, Limits)) == Limits(max_inputs=8, body_timeout_s=2.5)
    with pytest.raises(ConfigError, match="max_inputs: 100 exceeds max_batch_size 64"):
        Limits(max_inputs=100)
    with pytest.raises(ConfigError, match="max_chars: must be >= 1"):
        Limits(max_chars=0)
