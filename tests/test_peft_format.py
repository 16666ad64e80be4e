"""PEFT's prompt-learning adapters read as prompttune prompts: adapters made and saved by PEFT itself
on the tiny decoders give, loaded by prompttune, PEFT's logits and PEFT's greedy continuations.

PEFT 0.21's own forward passes a prefix as `past_key_values`, which transformers 5.24 renamed, and
its `generate` reuses a prompt-tuned cache in a way 5.24 no longer reads; so the reference here is
PEFT's own prompt (`get_prompt`, which lays the saved tensor out as the model reads it) run through
the base model with the cache argument this transformers takes, and greedy decoding by repeated
full forwards of that reference, which holds on every supported transformers."""

import json

import pytest
import torch
from peft import PeftModel, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, TaskType, get_peft_model
from transformers import AutoModelForCausalLM

from prompttune import ArtifactError, load_prompt
from prompttune.core.backbone import cache_argument

VIRTUAL = 3
KINDS = {
    "prompt_tuning": lambda: PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=VIRTUAL),
    "p_tuning": lambda: PromptEncoderConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=VIRTUAL, encoder_hidden_size=16
    ),
    "prefix_tuning": lambda: PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=VIRTUAL),
    "prefix_tuning_projection": lambda: PrefixTuningConfig(
        task_type=TaskType.CAUSAL_LM, num_virtual_tokens=VIRTUAL, prefix_projection=True, encoder_hidden_size=16
    ),
}


def make_adapter(model_dir, kind: str, folder, seed: int = 1):
    """A PEFT adapter of `kind` with its trainable weights moved away from their initial values,
    saved by PEFT; and PEFT's model loaded back from that folder."""
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir), KINDS[kind]())
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.5)
    model.save_pretrained(folder)
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), folder).eval()


def reference_logits(reference, ids: torch.Tensor) -> torch.Tensor:
    """PEFT's prompt through the base model: logits at the input's own positions."""
    base = reference.get_base_model()
    prompt = reference.get_prompt(ids.shape[0])
    mask = torch.ones(ids.shape[0], VIRTUAL + ids.shape[1], dtype=torch.long)
    with torch.no_grad():
        if reference.peft_config["default"].peft_type.value == "PREFIX_TUNING":
            return base(
                input_ids=ids, attention_mask=mask, **{cache_argument(base.forward) or "past_key_values": prompt}
            ).logits
        embeds = torch.cat([prompt.to(base.dtype), base.get_input_embeddings()(ids)], dim=1)
        return base(inputs_embeds=embeds, attention_mask=mask).logits[:, VIRTUAL:]


def prompttune_logits(model, ids: torch.Tensor) -> torch.Tensor:
    from dataclasses import replace

    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        inputs = replace(model.prepare(batch), full_logits=True)
        return model.task.logits(model.backbone(inputs), inputs, batch)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_peft_adapter_loads_and_gives_peft_outputs(family, kind, model_dirs, load, tmp_path):
    folder = tmp_path / kind
    reference = make_adapter(model_dirs[family], kind, folder)
    backbone = load(family)
    model = load_prompt(folder, backbone=backbone)
    assert model.method.name == ("deep_prompt" if kind.startswith("prefix") else "soft_prompt")
    tokenizer = backbone.tokenizer
    ids = torch.tensor([tokenizer("the movie was very good", add_special_tokens=True)["input_ids"]])
    expected = reference_logits(reference, ids)
    ours = prompttune_logits(model, ids)
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
    bare = AutoModelForCausalLM.from_pretrained(model_dirs[family]).eval()
    with torch.no_grad():
        assert (bare(input_ids=ids).logits - expected).abs().max() > 1e-2  # the prompt changes the outputs

    # Greedy continuation: prompttune's cached generation against repeated full forwards of PEFT's.
    sequence = ids
    for _ in range(6):
        sequence = torch.cat([sequence, reference_logits(reference, sequence)[:, -1].argmax(-1, keepdim=True)], dim=1)
    feature = model.task.collate([{"input_ids": ids[0].tolist()}], with_labels=False, for_generation=True)
    generated = model.generate(feature, max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert generated[0].tolist() == sequence[0, ids.shape[1] :].tolist()


def test_generate_and_the_command_line_take_a_peft_folder(model_dirs, tmp_path, capsys):
    from prompttune.api import generate
    from prompttune.cli import main

    folder = tmp_path / "adapter"
    make_adapter(model_dirs["llama"], "prompt_tuning", folder)
    rows = generate(str(folder), texts=["the movie was"], model=str(model_dirs["llama"]), max_new_tokens=4)
    assert len(rows) == 1 and rows[0]["source"] == "the movie was" and isinstance(rows[0]["generations"][0], str)
    # base_model_name_or_path is the folder PEFT was given: the command line finds the model by itself.
    assert main(["generate", "--prompt", str(folder), "the movie was", "--max-new-tokens", "4"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["generations"] == rows[0]["generations"]


def test_adapters_prompttune_cannot_read_are_refused_with_the_reason(model_dirs, load, tmp_path):
    backbone = load("llama")
    folder = tmp_path / "prefix"
    make_adapter(model_dirs["llama"], "prefix_tuning", folder)
    config = json.loads((folder / "adapter_config.json").read_text())

    def variant(name, **changes):
        path = tmp_path / name
        path.mkdir()
        (path / "adapter_config.json").write_text(json.dumps({**config, **changes}))
        (path / "adapter_model.safetensors").write_bytes((folder / "adapter_model.safetensors").read_bytes())
        return path

    with pytest.raises(
        ArtifactError,
        match=r"task_type 'SEQ_CLS'; prompttune reads PEFT's prompt adapters for "
        r"generation, \['CAUSAL_LM', 'SEQ_2_SEQ_LM'\]",
    ):
        load_prompt(variant("cls", task_type="SEQ_CLS"), backbone=backbone)
    with pytest.raises(ArtifactError, match="a SEQ_2_SEQ_LM PREFIX_TUNING adapter; PEFT's seq2seq prefix reaches only"):
        load_prompt(variant("s2s-prefix", task_type="SEQ_2_SEQ_LM"), backbone=load("t5"))
    with pytest.raises(ArtifactError, match=r"field 'peft_type' is 'LORA'"):
        load_prompt(variant("lora", peft_type="LORA"), backbone=backbone)
    with pytest.raises(ArtifactError, match=r"prompt_embeddings is \(3, 64\) for 3 layers"):
        load_prompt(variant("layers", num_layers=3), backbone=backbone)  # an adapter for another model
    with pytest.raises(ArtifactError, match="a CAUSAL_LM adapter, and T5ForConditionalGeneration is not"):
        load_prompt(folder, backbone=load("t5"))
    broken = variant("broken")
    (broken / "adapter_model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError, match="adapter_model.safetensors: not a readable safetensors file"):
        load_prompt(broken, backbone=backbone)
    (broken / "adapter_model.safetensors").unlink()
    with pytest.raises(ArtifactError, match="adapter_model.safetensors: missing"):
        load_prompt(broken, backbone=backbone)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("method", ["soft_prompt", "p_tuning", "prefix", "deep_prompt"])
def test_an_exported_prompt_runs_in_peft_as_in_prompttune(family, method, model_dirs, load, tmp_path):
    """export -> PEFT's `PeftModel.from_pretrained` -> PEFT's prompt gives prompttune's logits; the
    export lists what PEFT does not hold (the separator prompttune puts between source and target),
    and reading the adapter back gives the same prompt."""
    from prompttune import PromptModel, save_prompt
    from prompttune.artifacts.peft_format import export_peft
    from prompttune.tasks import GenerationConfig

    backbone = load(family)
    options = {"num_virtual_tokens": VIRTUAL} | ({"hidden_size": 16} if method == "prefix" else {})
    model = PromptModel.create(backbone, method, GenerationConfig(max_target_length=8), options, seed=3)
    saved = save_prompt(model, tmp_path / "prompt")
    report = export_peft(saved, tmp_path / "adapter", backbone=backbone)
    assert report["peft_type"] == ("PREFIX_TUNING" if method in ("prefix", "deep_prompt") else "PROMPT_TUNING")
    assert any("separator" in item for item in report["left_out"])
    assert any("reparameterisation" in item for item in report["left_out"]) == (method in ("prefix", "p_tuning"))
    peft_model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(model_dirs[family]), tmp_path / "adapter"
    ).eval()
    ids = torch.tensor([backbone.tokenizer("the movie was very good")["input_ids"]])
    expected = prompttune_logits(load_prompt(saved, backbone=backbone), ids)
    torch.testing.assert_close(reference_logits(peft_model, ids), expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        prompttune_logits(load_prompt(tmp_path / "adapter", backbone=backbone), ids), expected, rtol=1e-4, atol=1e-4
    )


def test_export_says_what_peft_leaves_out_and_refuses_what_it_cannot_hold(model_dirs, load, tmp_path):
    from prompttune import ClassificationConfig, ConfigError, PromptModel, save_prompt
    from prompttune.artifacts.peft_format import export_peft
    from prompttune.cli import main

    backbone = load("llama")
    config = ClassificationConfig(
        labels=("0", "1"),
        template="review , {text} it was {mask}",
        verbalizer=(("bad",), ("good",)),
        instruction="is it good ?",
    )
    verbalized = save_prompt(
        PromptModel.create(backbone, "soft_prompt", config, {"num_virtual_tokens": 2}, seed=0), tmp_path / "verbalized"
    )
    report = export_peft(verbalized, tmp_path / "out", backbone=backbone)
    left = " | ".join(report["left_out"])
    assert "the template 'review , {text} it was'" in left and "'0': ['bad']" in left and "'is it good ?'" in left
    headed = save_prompt(
        PromptModel.create(backbone, "soft_prompt", config, {"num_virtual_tokens": 2}, readout="head", seed=0),
        tmp_path / "headed",
    )
    with pytest.raises(ConfigError, match=r"its task has trained weights \['head.bias', 'head.weight'\]"):
        export_peft(headed, tmp_path / "out2", backbone=backbone)
    hard = save_prompt(PromptModel.create(backbone, "hard_prompt", config), tmp_path / "hard")
    with pytest.raises(ConfigError, match="has no prompt tensors to export"):
        export_peft(hard, tmp_path / "out3", backbone=backbone)
    t5 = load("t5")
    from prompttune.tasks import GenerationConfig

    seq2seq = save_prompt(
        PromptModel.create(t5, "prefix", GenerationConfig(), {"num_virtual_tokens": 2, "hidden_size": 8}, seed=0),
        tmp_path / "t5",
    )
    with pytest.raises(ConfigError, match="an encoder-decoder's prefix; PEFT's seq2seq prefix tuning"):
        export_peft(seq2seq, tmp_path / "out4", backbone=t5)
    encoder = load("bert_encoder")
    from conftest import task_config

    headless = save_prompt(
        PromptModel.create(
            encoder, "soft_prompt", task_config(), {"num_virtual_tokens": 2}, readout="similarity", seed=0
        ),
        tmp_path / "encoder",
    )
    with pytest.raises(ConfigError, match="an encoder; PEFT adapters are written for decoder-only and encoder-decoder"):
        export_peft(headless, tmp_path / "out5", backbone=encoder)
    # A folder with other files is not written into unless asked; with --force only the adapter's files change.
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="busy is not empty"):
        export_peft(verbalized, tmp_path / "busy", backbone=backbone)
    assert (
        main(
            [
                "export",
                str(verbalized),
                str(tmp_path / "busy"),
                "--format",
                "peft",
                "--force",
                "--model",
                str(model_dirs["llama"]),
            ]
        )
        == 0
    )
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
        "notes.txt",
    ]


def test_a_peft_adapter_pushed_to_the_registry_is_stored_as_the_prompt_it_is(model_dirs, load, tmp_path):
    """registry push reads the adapter onto its base model and stores a prompttune prompt,
    fingerprinted against that model and recording where it came from; pulled back, it gives
    PEFT's logits."""
    from prompttune import Registry

    folder = tmp_path / "adapter"
    reference = make_adapter(model_dirs["llama"], "prefix_tuning_projection", folder)
    registry = Registry(tmp_path / "registry")
    record = registry.push(folder, "imported")
    assert (record["name"], record["version"], record["method"], record["task"]) == (
        "imported",
        1,
        "deep_prompt",
        "generation",
    )
    pulled = registry.pull("imported@1", tmp_path / "pulled")
    meta = json.loads((pulled / "prompt.json").read_text())
    assert meta["imported_from"]["peft_type"] == "PREFIX_TUNING" and len(meta["imported_from"]["adapter_sha256"]) == 64
    backbone = load("llama")
    ids = torch.tensor([backbone.tokenizer("the movie was very good")["input_ids"]])
    torch.testing.assert_close(
        prompttune_logits(load_prompt(pulled, backbone=backbone), ids),
        reference_logits(reference, ids),
        rtol=1e-4,
        atol=1e-4,
    )
    assert not list((tmp_path / "registry").glob(".peft-import-*"))  # the staging folder is gone


def test_evaluate_and_inspect_take_a_peft_folder(model_dirs, tmp_path):
    """A PEFT adapter is scored on a source/target file like a prompttune generation prompt, and
    inspected like one (its virtual tokens' nearest vocabulary tokens)."""
    from prompttune.analysis.inspection import inspect_prompt
    from prompttune.api import evaluate_prompt

    folder = tmp_path / "adapter"
    make_adapter(model_dirs["llama"], "prompt_tuning", folder)
    data = tmp_path / "pairs.jsonl"
    data.write_text('{"source": "the movie was", "target": "very good"}\n{"source": "a film", "target": "bad"}\n')
    scores = evaluate_prompt(str(folder), str(data), batch_size=2)
    assert scores["count"] == 2 and 0.0 <= scores["bleu"] <= 100.0
    report = inspect_prompt(folder, top=2)
    assert report["method"] == "soft_prompt" and report["task"] == "generation"
    assert len(report["virtual_tokens"]) == VIRTUAL and all(
        len(row["nearest"]) == 2 for row in report["virtual_tokens"]
    )


S2S_KINDS = {
    "prompt_tuning": lambda: PromptTuningConfig(
        task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=VIRTUAL, num_transformer_submodules=1
    ),
    "p_tuning": lambda: PromptEncoderConfig(
        task_type=TaskType.SEQ_2_SEQ_LM,
        num_virtual_tokens=VIRTUAL,
        encoder_hidden_size=16,
        num_transformer_submodules=1,
    ),
    # PEFT's default for SEQ_2_SEQ_LM: 2V rows saved, of which its forward and generate read the first V.
    "prompt_tuning_2": lambda: PromptTuningConfig(task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=VIRTUAL),
    "p_tuning_2": lambda: PromptEncoderConfig(
        task_type=TaskType.SEQ_2_SEQ_LM, num_virtual_tokens=VIRTUAL, encoder_hidden_size=16
    ),
}


@pytest.mark.parametrize("family", ["t5", "bart"])
@pytest.mark.parametrize("kind", list(S2S_KINDS))
def test_an_encoder_decoder_soft_prompt_goes_both_ways(family, kind, model_dirs, load, tmp_path):
    """A PEFT SEQ_2_SEQ_LM soft prompt on the encoder's input reads as a prompttune soft prompt with
    PEFT's logits and greedy output; exported back, PEFT reads it to the same logits."""
    from transformers import AutoModelForSeq2SeqLM

    from prompttune import Example
    from prompttune.artifacts.peft_format import export_peft

    torch.manual_seed(1)
    model = get_peft_model(AutoModelForSeq2SeqLM.from_pretrained(model_dirs[family]), S2S_KINDS[kind]())
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.5)
    model.save_pretrained(tmp_path / "adapter")
    reference = PeftModel.from_pretrained(
        AutoModelForSeq2SeqLM.from_pretrained(model_dirs[family]), tmp_path / "adapter"
    ).eval()
    backbone = load(family)
    ours = load_prompt(tmp_path / "adapter", backbone=backbone)
    batch = ours.task.collate(
        [ours.task.encode(Example("the movie was very good", targets=("good film",)), "good film")]
    )

    def peft_logits(peft_model):
        with torch.no_grad():
            return peft_model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                decoder_input_ids=batch["decoder_input_ids"],
            ).logits

    def our_logits(prompt):
        from dataclasses import replace

        with torch.no_grad():
            inputs = replace(prompt.prepare(batch), full_logits=True)
            return prompt.task.logits(prompt.backbone(inputs), inputs, batch)

    expected = peft_logits(reference)
    torch.testing.assert_close(our_logits(ours), expected, rtol=1e-4, atol=1e-4)
    bare = AutoModelForSeq2SeqLM.from_pretrained(model_dirs[family]).eval()
    with torch.no_grad():
        plain = bare(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            decoder_input_ids=batch["decoder_input_ids"],
        ).logits
    assert (plain - expected).abs().max() > 1e-2  # the prompt changes the outputs
    source = ours.task.collate(
        [ours.task.encode(Example("the movie was very good"))], with_labels=False, for_generation=True
    )
    generated = ours.generate(source, max_new_tokens=5, min_new_tokens=5, do_sample=False)[0].tolist()
    theirs = reference.generate(
        input_ids=source["input_ids"],
        attention_mask=source["attention_mask"],
        max_new_tokens=5,
        min_new_tokens=5,
        do_sample=False,
    )[0].tolist()
    assert theirs[-5:] == generated  # (PEFT's output starts with the decoder's start token)

    report = export_peft(tmp_path / "adapter", tmp_path / "again", backbone=backbone)
    assert report["peft_type"] == "PROMPT_TUNING"
    assert json.loads((tmp_path / "again" / "adapter_config.json").read_text())["task_type"] == "SEQ_2_SEQ_LM"
    again = PeftModel.from_pretrained(
        AutoModelForSeq2SeqLM.from_pretrained(model_dirs[family]), tmp_path / "again"
    ).eval()
    torch.testing.assert_close(peft_logits(again), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_soft_prompt_trains_as_peft_prompt_tuning_does(family, model_dirs, load):
    """Started from the same prompt, prompttune's training loop and PEFT's prompt tuning (its own
    forward and loss, trained with AdamW at prompttune's learning rate, linear schedule and clipping)
    end at the same prompt: the loss over the target tokens, its gradient and the update are PEFT's,
    so any difference between the two methods' results comes from where the prompt starts."""
    from transformers import get_scheduler

    from prompttune import Example, PromptModel, TrainConfig, train
    from prompttune.methods import method_class
    from prompttune.tasks import GenerationConfig

    examples = [
        Example(f"{a} {b}", targets=(f"a {b} that is {a}",), origin=f"row {i}")
        for i, (a, b) in enumerate([(a, b) for a in ("red", "blue", "green") for b in ("cat", "dog", "house")], 1)
    ]
    ours = PromptModel.create(
        load(family),
        "soft_prompt",
        GenerationConfig(max_source_length=16, max_target_length=8),
        {"num_virtual_tokens": VIRTUAL, "init": "sample_vocab"},
        seed=0,
    )
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dirs[family])
    theirs = get_peft_model(base, KINDS["prompt_tuning"]())
    prompt = theirs.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        prompt.copy_(ours.method.prompt)
    start = prompt.detach().clone()
    steps, config = 5, TrainConfig(max_steps=5, batch_size=len(examples), seed=0, progress=False)
    train(ours, examples, config=config)

    # PEFT's side: the whole set as one batch each step (so no order to match), prompttune's encoding.
    batch = ours.task.collate(ours.task.training_features(examples))
    optimizer = torch.optim.AdamW([prompt], lr=method_class("soft_prompt").default_lr, weight_decay=config.weight_decay)
    schedule = get_scheduler(
        "linear", optimizer, num_warmup_steps=int(config.warmup_ratio * steps), num_training_steps=steps
    )
    theirs.train()
    base.eval()
    for _ in range(steps):
        theirs(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_([prompt], config.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    moved = (prompt.detach() - start).norm()
    assert moved > 1e-3  # both trained
    torch.testing.assert_close(ours.method.prompt.detach(), prompt.detach(), rtol=0, atol=1e-5 * float(moved))


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_prefix_tuning_trains_as_peft_prefix_tuning_does(family, model_dirs, load):
    """Given PEFT's shape (`embedding_size` the keys' and values' width, which grouped-query
    attention makes half the tiny Llama's) and PEFT's starting weights, prompttune's prefix tuning
    and PEFT's (its prefix encoder and its layout of the keys and values, trained with AdamW at
    prompttune's learning rate, linear schedule and clipping) end at the same embedding and MLP:
    the two differ only in where they start and how wide the embedding is."""
    from transformers import get_scheduler

    from prompttune import Example, PromptModel, TrainConfig, train
    from prompttune.methods import method_class
    from prompttune.tasks import GenerationConfig

    examples = [
        Example(f"{a} {b}", targets=(f"a {b} that is {a}",), origin=f"row {i}")
        for i, (a, b) in enumerate([(a, b) for a in ("red", "blue", "green") for b in ("cat", "dog", "house")], 1)
    ]
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dirs[family])
    theirs = get_peft_model(base, KINDS["prefix_tuning_projection"]())
    encoder = theirs.prompt_encoder["default"]
    width = encoder.embedding.weight.shape[1]
    config = base.config
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    assert width == heads * config.hidden_size // config.num_attention_heads  # PEFT's keys' and values' width
    ours = PromptModel.create(
        load(family),
        "prefix",
        GenerationConfig(max_source_length=16, max_target_length=8),
        {"num_virtual_tokens": VIRTUAL, "hidden_size": 16, "embedding_size": width},
        seed=0,
    )
    theirs_params = [encoder.embedding.weight, *encoder.transform[0].parameters(), *encoder.transform[2].parameters()]
    ours_params = [ours.method.embedding, *ours.method.mlp[0].parameters(), *ours.method.mlp[2].parameters()]
    assert sum(p.numel() for p in ours.method.parameters() if p.requires_grad) == sum(p.numel() for p in theirs_params)
    with torch.no_grad():
        for mine, peft_param in zip(ours_params, theirs_params):
            mine.copy_(peft_param)
    start = [p.detach().clone() for p in theirs_params]
    steps, train_config = 5, TrainConfig(max_steps=5, batch_size=len(examples), seed=0, progress=False)
    train(ours, examples, config=train_config)

    # PEFT's side: its prompt (`get_prompt`: the encoder's output laid out as every layer's keys and
    # values) through the base model, the whole set as one batch each step, prompttune's encoding.
    batch = ours.task.collate(ours.task.training_features(examples))
    rows = batch["input_ids"].shape[0]
    mask = torch.cat([torch.ones(rows, VIRTUAL, dtype=batch["attention_mask"].dtype), batch["attention_mask"]], dim=1)
    optimizer = torch.optim.AdamW(
        theirs_params, lr=method_class("prefix").default_lr, weight_decay=train_config.weight_decay
    )
    schedule = get_scheduler(
        "linear", optimizer, num_warmup_steps=int(train_config.warmup_ratio * steps), num_training_steps=steps
    )
    theirs.train()
    base.eval()
    for _ in range(steps):
        prompt = theirs.get_prompt(rows)
        base(
            input_ids=batch["input_ids"],
            attention_mask=mask,
            labels=batch["labels"],
            **{cache_argument(base.forward) or "past_key_values": prompt},
        ).loss.backward()
        torch.nn.utils.clip_grad_norm_(theirs_params, train_config.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
    moved = torch.cat([(p.detach() - s).flatten() for p, s in zip(theirs_params, start)]).norm()
    assert moved > 1e-3  # both trained
    for mine, peft_param in zip(ours_params, theirs_params):
        torch.testing.assert_close(mine.detach(), peft_param.detach(), rtol=0, atol=1e-5 * float(moved))
